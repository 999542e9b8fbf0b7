"""FixMS on one MeasurementSet, once, safely, in place.

Owns the decision whether an MS needs FixMS, the run of `fixms.fix_ms_dir` + `fixms.fix_ms_corrs`, and
the files that make the run safe to repeat and to kill. MSs are user data, so a run is a transaction:

* `<ms>/MPIMAGER_FIXMS.inprogress.json` is written (atomically) BEFORE anything is changed. It holds
  a snapshot of everything FixMS modifies: FIELD directions, FEED.BEAM_OFFSET / RECEPTOR_ANGLE /
  INSTRUMENT_RECEPTOR_ANGLE, which of FIELD_OLD / FEED_OLD existed and the main table's columns.
* `<ms>/MPIMAGER_FIXMS.json`, the completion record (versions, times, columns, pol axis), is written
  (temp file + fsync + rename) only after both fixes finished and the output column was checked
  against DATA on sample rows; then the in-progress file is removed.
* A run that finds an in-progress file (a run was killed) first rolls the MS back to the snapshot
  (removes the partial output column, restores FEED and FIELD, deletes FIELD_OLD / FEED_OLD it made),
  then fixes it again. A fixms error rolls back at once and becomes a JobError.
* `<ms>/MPIMAGER_FIXMS.lock` (flock) serialises concurrent runs on one MS; a waiting run then finds
  the MS fixed and skips.

Why files inside the MS and not a table keyword: they are written atomically without opening the MS
for writing (no table lock, no table.dat rewrite), read without casacore (a fixed MS is skipped in
milliseconds), move with the MS (`cp -r`, `mv`), and casacore ignores them. A copy made by casacore
(which drops them) shows up as "fixed-externally": still treated as done.

An existing output column that FixMS did not make (no record, no in-progress file, no
FEED.INSTRUMENT_RECEPTOR_ANGLE + FIELD_OLD) is never taken for fixed data: JobError.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mpimager.errors import JobError, MpimagerError, MSError

RECORD_NAME = "MPIMAGER_FIXMS.json"
MARKER_NAME = "MPIMAGER_FIXMS.inprogress.json"
LOCK_NAME = "MPIMAGER_FIXMS.lock"
RECORD_FORMAT = 1

IRA = "INSTRUMENT_RECEPTOR_ANGLE"
FIELD_DIR_COLUMNS = ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR")

# States (fixms_state) and outcomes (run_fixms)
RAW, FIXED, FIXED_EXTERNALLY, INTERRUPTED, FOREIGN_COLUMN = "raw", "fixed", "fixed-externally", "interrupted", "foreign-column"
FIXED_DIFFERENTLY, RUNNING = "fixed-differently", "running"
DID_FIX, ALREADY_FIXED, COMPLETED_INTERRUPTED = "fixed", "already-fixed", "completed-interrupted"

SAMPLE_ROWS = 64  # rows checked at the start, middle and end of the output column


@dataclass(frozen=True)
class FixMSOptions:
    """What FixMS reads and writes: the column it corrects, the new column it makes, ASKAP's factor 2."""

    data_column: str = "DATA"
    corrected_data_column: str = "CORRECTED_DATA"
    fix_stokes_factor: bool = True


# ----------------------------------------------------------------------------------------------
# State (read-only)
# ----------------------------------------------------------------------------------------------


def fixms_state(ms, options: FixMSOptions = FixMSOptions()) -> str:
    """What FixMS has done to `ms` for these options, without changing anything.

    "raw": the output column is absent (FixMS has to run);
    "fixed": our record says it was fixed with these options and the output column exists;
    "fixed-externally": output column + FIELD_OLD + FEED.INSTRUMENT_RECEPTOR_ANGLE, no record of ours;
    "interrupted": a run of ours was killed part-way (in-progress file left);
    "running": another process holds the lock and is fixing it now;
    "fixed-differently": we fixed it into this column with other options;
    "foreign-column": the output column exists and did not come from FixMS.
    """
    return _state(Path(ms).absolute(), options, probe_lock=True)


def _state(ms: Path, options: FixMSOptions, *, probe_lock: bool) -> str:
    _check_is_ms(ms)
    if probe_lock and _lock_is_held(ms):
        return RUNNING
    record = _read_json(ms / RECORD_NAME)
    marker = _read_json(ms / MARKER_NAME)
    entry = _record_entry(record, options.corrected_data_column)
    if marker is not None and not _marker_completed(record, marker):
        return INTERRUPTED
    columns = _main_columns(ms)
    if options.corrected_data_column not in columns:
        return RAW
    if entry is not None:
        same = (entry.get("data_column") == options.data_column
                and bool(entry.get("fix_stokes_factor")) == options.fix_stokes_factor)
        return FIXED if same else FIXED_DIFFERENTLY
    if record is not None and record.get("fixes"):
        return FOREIGN_COLUMN  # we rotated FEED for another column: this one is not ours
    if IRA in _sub_columns(ms, "FEED") and _table_exists(ms / "FIELD_OLD"):
        return FIXED_EXTERNALLY
    return FOREIGN_COLUMN


# ----------------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------------


def run_fixms(ms, options: FixMSOptions = FixMSOptions(), log=None) -> str:
    """Bring `ms` to the fixed state for `options` and say what was done.

    Returns "fixed" (FixMS ran now), "already-fixed" (our record; nothing touched),
    "fixed-externally" (FixMS ran before, not by us; nothing touched) or "completed-interrupted"
    (a killed run was rolled back and the fix redone). Raises JobError for a column FixMS did not
    make, an MS it cannot fix (fixms' error, e.g. a non-equatorial mount) or cannot write.
    `log`: a file that receives fixms' log and casacore's console output (appended); None keeps
    only fixms' warnings (stderr) and discards casacore's "Successful ... open" lines.
    """
    ms = Path(ms).absolute()
    log = Path(log).absolute() if log is not None else None
    try:
        outcome = _settled(ms, options, _state(ms, options, probe_lock=False))
        if outcome is not None:
            if (ms / MARKER_NAME).exists() and os.access(ms, os.W_OK):
                _drop_completed_marker(ms)
            return outcome
        if not os.access(ms, os.W_OK):
            raise JobError(f"{ms}: FixMS must change this MS but it is not writable", log=log)
        with _ms_lock(ms):
            state = _state(ms, options, probe_lock=False)  # again: another run may have just finished
            outcome = _settled(ms, options, state)
            if outcome is not None:
                return outcome
            if state == INTERRUPTED:
                _roll_back(ms, _read_json(ms / MARKER_NAME))
            _apply(ms, options, log)
            return COMPLETED_INTERRUPTED if state == INTERRUPTED else DID_FIX
    except MSError as exc:
        raise JobError(str(exc), log=log) from None


def _settled(ms: Path, options: FixMSOptions, state: str) -> Optional[str]:
    """The outcome when nothing is to be written, None when FixMS has to run."""
    if state == FIXED:
        return ALREADY_FIXED
    if state == FIXED_EXTERNALLY:
        return FIXED_EXTERNALLY
    if state == FOREIGN_COLUMN:
        why = "was not made by FixMS"
        if IRA in _sub_columns(ms, "FEED") and not _table_exists(ms / "FIELD_OLD"):
            why = "was made by fix_ms_corrs but fix_ms_dir never ran (no FIELD_OLD)"
        raise JobError(
            f"{ms}: column {options.corrected_data_column} exists but {why}; "
            f"set [fixms] corrected_data_column to another name, or disable fixms if the data are already fixed")
    if state == FIXED_DIFFERENTLY:
        entry = _record_entry(_read_json(ms / RECORD_NAME), options.corrected_data_column) or {}
        raise JobError(
            f"{ms}: {options.corrected_data_column} was made by FixMS from {entry.get('data_column')} with "
            f"fix_stokes_factor={entry.get('fix_stokes_factor')}, not as now configured; remove the column or "
            f"choose another corrected_data_column")
    return None


def _drop_completed_marker(ms: Path) -> None:
    """Remove an in-progress file whose run finished (killed between record and clean-up)."""
    with _ms_lock(ms):
        marker = _read_json(ms / MARKER_NAME)
        if marker is not None and _marker_completed(_read_json(ms / RECORD_NAME), marker):
            (ms / MARKER_NAME).unlink()
            _fsync_dir(ms)


def _apply(ms: Path, options: FixMSOptions, log: Optional[Path]) -> None:
    """Snapshot, fix, verify, record. On a fixms error: roll back, then JobError."""
    from fixms.fix_ms_corrs import fix_ms_corrs
    from fixms.fix_ms_dir import fix_ms_dir

    if options.data_column not in _main_columns(ms):
        raise JobError(f"{ms}: no column {options.data_column} to fix ([fixms] data_column)", log=log)
    started = time.time()
    marker = {
        "format": RECORD_FORMAT,
        "run_id": uuid.uuid4().hex,
        "options": asdict(options),
        "started_utc": _utc(started),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "before": _snapshot(ms),
    }
    _write_json_atomic(ms / MARKER_NAME, marker)
    try:
        with _quiet(log):
            _restore_instrument_angle(ms)  # fix_ms_corrs reads RECEPTOR_ANGLE, FixMS' earlier run moved it
            fix_ms_dir(str(ms))
            fix_ms_corrs(ms, data_column=options.data_column,
                         corrected_data_column=options.corrected_data_column,
                         fix_stokes_factor=options.fix_stokes_factor)
            pol_axis_deg = _verify(ms, options)
    except (Exception, SystemExit) as exc:
        message = _one_line(exc)
        try:
            _roll_back(ms, marker)
            (ms / MARKER_NAME).unlink()
            _fsync_dir(ms)
        except Exception as rollback_exc:  # leave the marker: the next run rolls back again
            raise JobError(f"{ms}: FixMS failed ({message}) and the roll-back failed too "
                           f"({_one_line(rollback_exc)}); run again to restore and fix it", log=log) from None
        raise JobError(f"{ms}: FixMS failed: {message} (the MS was restored as it was)", log=log) from None

    record = _read_json(ms / RECORD_NAME) or {}
    fixes = [f for f in record.get("fixes", []) if f.get("corrected_data_column") != options.corrected_data_column]
    fixes.append({
        **asdict(options),
        "run_id": marker["run_id"],
        "pol_axis_deg": pol_axis_deg,
        "phase_dir_deg": _field_directions_deg(ms),
        "started_utc": marker["started_utc"],
        "finished_utc": _utc(time.time()),
        "seconds": round(time.time() - started, 3),
    })
    record = {"format": RECORD_FORMAT, "tool": "mpimager", "versions": _versions(), "fixes": fixes}
    try:
        _write_json_atomic(ms / RECORD_NAME, record)
        (ms / MARKER_NAME).unlink()
        _fsync_dir(ms)
    except OSError as exc:  # the in-progress file stays: the next run rolls back and fixes again
        raise JobError(f"{ms}: FixMS ran but its record could not be written ({exc}); run again", log=log) from None


def _verify(ms: Path, options: FixMSOptions) -> float:
    """Check what fixms left: the output column matches the rotated data column on sample rows at
    the start, middle and end (a partial fill fails), FEED keeps the instrument angle. Returns the
    pol axis in degrees."""
    from casacore import tables as ct
    from fixms.fix_ms_corrs import convert_correlations
    import astropy.units as u

    if not _table_exists(ms / "FIELD_OLD"):
        raise JobError(f"{ms}: fix_ms_dir left no FIELD_OLD")
    with ct.table(str(ms / "FEED"), ack=False) as feed:
        if IRA not in feed.colnames():
            raise JobError(f"{ms}: fix_ms_corrs did not write FEED.{IRA} "
                           f"(it corrects nothing with a 0 deg pol axis and fix_stokes_factor=false)")
        instrument = feed.getcol(IRA)
    with ct.table(str(ms), ack=False) as main:
        if options.corrected_data_column not in main.colnames():
            raise JobError(f"{ms}: fix_ms_corrs did not write {options.corrected_data_column}")
        beam = int(main.getcell("FEED1", 0))
        pol_axis_deg = 45.0 - float(np.degrees(instrument[beam, 0]))
        n = main.nrows()
        for start in sorted({0, max(0, n // 2 - SAMPLE_ROWS // 2), max(0, n - SAMPLE_ROWS)}):
            count = min(SAMPLE_ROWS, n - start)
            data = main.getcol(options.data_column, startrow=start, nrow=count)
            fixed = main.getcol(options.corrected_data_column, startrow=start, nrow=count)
            expected = convert_correlations(data, pol_axis_deg * u.deg, options.fix_stokes_factor)
            if not np.allclose(fixed, expected, rtol=1e-4, atol=1e-6 * (1 + np.abs(expected).max())):
                raise JobError(f"{ms}: {options.corrected_data_column} rows {start}-{start + count - 1} "
                               f"do not hold the corrected {options.data_column}")
    return pol_axis_deg


# ----------------------------------------------------------------------------------------------
# Snapshot and roll-back
# ----------------------------------------------------------------------------------------------


def _snapshot(ms: Path) -> dict:
    """Everything fix_ms_dir / fix_ms_corrs change, as JSON-able values."""
    from casacore import tables as ct

    with ct.table(str(ms / "FIELD"), ack=False) as field:
        directions = {col: field.getcol(col).tolist() for col in FIELD_DIR_COLUMNS}
    with ct.table(str(ms / "FEED"), ack=False) as feed:
        feed_state = {
            "BEAM_OFFSET": feed.getcol("BEAM_OFFSET").tolist(),
            "RECEPTOR_ANGLE": feed.getcol("RECEPTOR_ANGLE").tolist(),
            IRA: feed.getcol(IRA).tolist() if IRA in feed.colnames() else None,
        }
    return {
        "main_columns": sorted(_main_columns(ms)),
        "field": directions,
        "feed": feed_state,
        "FIELD_OLD": _table_exists(ms / "FIELD_OLD"),
        "FEED_OLD": _table_exists(ms / "FEED_OLD"),
    }


def _roll_back(ms: Path, marker: Optional[dict]) -> None:
    """Put back what the snapshot in `marker` recorded. Idempotent: safe to repeat after a kill."""
    from casacore import tables as ct

    if not marker or "before" not in marker:
        raise JobError(f"{ms}: {MARKER_NAME} is unreadable; restore the MS from a copy, then remove that file")
    before = marker["before"]
    output = marker["options"]["corrected_data_column"]
    protected = set(before["main_columns"]) | {marker["options"]["data_column"]}
    with ct.table(str(ms), readonly=False, ack=False) as main:
        if output in main.colnames() and output not in protected:
            main.removecols([output])
    with ct.table(str(ms / "FEED"), readonly=False, ack=False) as feed:
        feed.putcol("BEAM_OFFSET", np.array(before["feed"]["BEAM_OFFSET"]))
        feed.putcol("RECEPTOR_ANGLE", np.array(before["feed"]["RECEPTOR_ANGLE"]))
        if IRA in feed.colnames():
            if before["feed"][IRA] is None:
                feed.removecols([IRA])
            else:
                feed.putcol(IRA, np.array(before["feed"][IRA]))
    with ct.table(str(ms / "FIELD"), readonly=False, ack=False) as field:
        for col in FIELD_DIR_COLUMNS:
            field.putcol(col, np.array(before["field"][col]))
    for sub in ("FIELD_OLD", "FEED_OLD"):
        if not before[sub] and (ms / sub).exists():
            shutil.rmtree(ms / sub)
    _fsync_dir(ms)


def _restore_instrument_angle(ms: Path) -> None:
    """If FixMS moved RECEPTOR_ANGLE before, put the instrument's angle back so fix_ms_corrs reads it."""
    from casacore import tables as ct

    with ct.table(str(ms / "FEED"), readonly=False, ack=False) as feed:
        if IRA in feed.colnames():
            feed.putcol("RECEPTOR_ANGLE", feed.getcol(IRA))


# ----------------------------------------------------------------------------------------------
# Small helpers (files, tables, console)
# ----------------------------------------------------------------------------------------------


def _check_is_ms(ms: Path) -> None:
    if not (ms / "table.dat").is_file():
        raise MSError(f"{ms}: not a MeasurementSet (no table.dat)")


def _table_exists(path: Path) -> bool:
    return (path / "table.dat").is_file()


def _main_columns(ms: Path) -> set[str]:
    from casacore import tables as ct

    with ct.table(str(ms), ack=False) as main:
        return set(main.colnames())


def _sub_columns(ms: Path, sub: str) -> set[str]:
    from casacore import tables as ct

    with ct.table(str(ms / sub), ack=False) as table:
        return set(table.colnames())


def _field_directions_deg(ms: Path) -> list:
    from casacore import tables as ct

    with ct.table(str(ms / "FIELD"), ack=False) as field:
        return np.degrees(field.getcol("PHASE_DIR")[:, 0, :]).tolist()


def _record_entry(record: Optional[dict], column: str) -> Optional[dict]:
    for entry in (record or {}).get("fixes", []):
        if entry.get("corrected_data_column") == column:
            return entry
    return None


def _marker_completed(record: Optional[dict], marker: dict) -> bool:
    """The run that wrote the marker also wrote the record (killed just before removing the marker)."""
    return any(f.get("run_id") == marker.get("run_id") for f in (record or {}).get("fixes", []))


def _read_json(path: Path) -> Optional[dict]:
    try:
        with open(path) as fh:
            value = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MSError(f"{path}: unreadable ({exc}); remove it only if you know the MS state") from None
    return value if isinstance(value, dict) else {}


def _write_json_atomic(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(value, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory
    finally:
        os.close(fd)


@contextlib.contextmanager
def _ms_lock(ms: Path):
    """An exclusive flock on <ms>/MPIMAGER_FIXMS.lock (released by the kernel if we die)."""
    fd = os.open(ms / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            # a file system without flock: run unlocked (the planner runs one FixMS job per MS)
        yield
    finally:
        os.close(fd)


def _lock_is_held(ms: Path) -> bool:
    try:
        fd = os.open(ms / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _quiet(log: Optional[Path]):
    """Send fixms' log records and the console output (python-casacore prints "Successful read/write
    open" for every HISTORY row fixms adds) to `log`, or drop INFO records and stdout when log is None.
    Redirects sys.stdout/sys.stderr and file descriptors 1/2 (C++ output): meant for a worker
    running one job at a time."""
    from fixms.logger import logger as fixms_logger

    saved_handlers, saved_propagate = list(fixms_logger.handlers), fixms_logger.propagate
    target = open(log, "a") if log is not None else open(os.devnull, "w")
    if log is not None:
        handler: logging.Handler = logging.StreamHandler(target)
        handler.setFormatter(logging.Formatter("%(asctime)s FixMS-%(levelname)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("FixMS-%(levelname)s %(message)s"))
    fds = (1, 2) if log is not None else (1,)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = {fd: os.dup(fd) for fd in fds}
    try:
        for fd in fds:
            os.dup2(target.fileno(), fd)
        fixms_logger.handlers = [handler]
        fixms_logger.propagate = False
        with contextlib.redirect_stdout(target):
            if log is None:
                yield
            else:
                with contextlib.redirect_stderr(target):
                    yield
    finally:
        handler.flush()
        target.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in saved_fds.items():
            os.dup2(saved, fd)
            os.close(saved)
        fixms_logger.handlers = saved_handlers
        fixms_logger.propagate = saved_propagate
        target.close()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import mpimager

    found = {"mpimager": mpimager.__version__}
    for package in ("fixms", "python-casacore"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        text = str(exc.code) if exc.code is not None else "sys.exit()"
    else:
        text = str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# ----------------------------------------------------------------------------------------------
# Command line: python -m mpimager.runtime.fixms [options] MS   (what the planned FixMS job runs)
# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpimager.runtime.fixms", description=__doc__.splitlines()[0])
    parser.add_argument("ms", type=Path)
    parser.add_argument("--data-column", default=FixMSOptions.data_column)
    parser.add_argument("--corrected-data-column", default=FixMSOptions.corrected_data_column)
    parser.add_argument("--no-stokes-factor", action="store_true", help="do not apply ASKAP's factor 2")
    parser.add_argument("--log", type=Path, help="append fixms' and casacore's output to this file")
    parser.add_argument("--state", action="store_true", help="only print the state, change nothing")
    args = parser.parse_args(argv)
    options = FixMSOptions(args.data_column, args.corrected_data_column, not args.no_stokes_factor)
    started = time.time()
    try:
        if args.state:
            print(fixms_state(args.ms, options))
            return 0
        outcome = run_fixms(args.ms, options, log=args.log)
    except MpimagerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"FixMS {args.ms.absolute()}: {outcome} ({time.time() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
