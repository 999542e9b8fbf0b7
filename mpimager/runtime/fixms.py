"""FixMS on one MeasurementSet, once, safely: every state an ASKAP beam arrives in, a fix that is all or nothing.

Owns what the FixMS step does to an MS (the states are told by `mpimager.inputs.msstate`):

| state                | what the step does                                                        | image    |
| raw                  | fix_ms_dir + fix_ms_corrs, FIELD set to the beam if fix_ms_dir left it     | output   |
| fixed (by mpimager)  | nothing (our completion record matches the options)                       | output   |
| fixed-externally     | nothing, unless FIELD is not at the beam: then FIELD is repaired           | output   |
| preprocessed         | never rotates again; FIELD repaired if it is provably wrong               | DATA     |
| split-after-fix      | nothing (FIELD at the beam, zero offset, sky-frame data)                   | as found |
| interrupted          | the killed fix's working copy is removed (the MS was never touched), redo | output   |
| foreign-column, fixed-differently, unknown: refused, naming the MS and the evidence                 |

A fix is a transaction by copy and atomic swap. The step builds a working copy next to the MS
(`<parent>/.<name>.mpimager-fixms`): the bulk files of tiled storage managers (`table.f*_TSM*`, DATA, FLAG,
...) are hard links (only ever read), every other file is copied; fixms runs on the copy, the result is
checked (NaN-safe, flag-aware, phase centre within 0.01" of the beam direction), the completion record is
written into the copy, all of it is fsynced, and then copy and MS are exchanged in one `renameat2(
RENAME_EXCHANGE)`. The MS is therefore at every instant either exactly as it was (byte for byte: no HISTORY
row, no byte of disk added) or completely fixed; a SIGKILL at any moment leaves at most the working copy,
which the next run removes before it fixes the MS again. After the exchange the old MS (now at the working
path) is removed. A file system without RENAME_EXCHANGE gets two renames, repaired by the next run if a kill
lands between them.

An exclusive flock on the MS directory serialises concurrent runs on one MS; a waiting run then finds the MS
fixed and skips. The fix needs the MS directory, its table files and its parent directory writable; if they
are not, nothing is changed and the error says which (the planner refuses such an MS before any job).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mpimager.errors import JobError, MpimagerError, MSError
from mpimager.inputs import msstate
from mpimager.inputs.msstate import IRA, RECORD_NAME, REFUSED, MSState, Verdict, needs_write, work_dir, write_problem
from mpimager.inputs.sky import separation_arcsec
from mpimager.states import StrEnum

logger = logging.getLogger(__name__)

RECORD_FORMAT = 2
FIELD_DIR_COLUMNS = ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR")
SAMPLE_ROWS = 64  # rows checked at the start, middle and end of the output column
LINKED_FILE = re.compile(r"^table\.f\d+_TSM\d+$")  # bulk data of tiled storage managers: only read by fixms

# Compatibility names for the states (fixms_state returns MSState, a str Enum: these compare equal)
RAW, FIXED, FIXED_EXTERNALLY, INTERRUPTED = MSState.RAW, MSState.FIXED_BY_MPIMAGER, MSState.FIXED_UPSTREAM, \
    MSState.INTERRUPTED
FOREIGN_COLUMN, FIXED_DIFFERENTLY, RUNNING = MSState.FOREIGN_COLUMN, MSState.FIXED_DIFFERENTLY, MSState.RUNNING


class Outcome(StrEnum):
    """What a run of the step did."""

    FIXED = "fixed"  # FixMS ran now
    ALREADY_FIXED = "already-fixed"  # our record; nothing touched
    FIXED_EXTERNALLY = "fixed-externally"  # fixed before, not by us; nothing touched
    AS_IS = "imaged-as-is"  # preprocessed or split after a fix: the data are in the sky frame, nothing touched
    DIRECTION_REPAIRED = "direction-repaired"  # only FIELD was wrong (not at the beam) and was set right
    COMPLETED_INTERRUPTED = "completed-interrupted"  # a killed fix's copy was removed and the fix redone


DID_FIX, ALREADY_FIXED, COMPLETED_INTERRUPTED = Outcome.FIXED, Outcome.ALREADY_FIXED, Outcome.COMPLETED_INTERRUPTED


@dataclass(frozen=True)
class FixMSOptions:
    """What FixMS reads and writes: the column it corrects, the new column it makes, ASKAP's factor 2."""

    data_column: str = "DATA"
    corrected_data_column: str = "CORRECTED_DATA"
    fix_stokes_factor: bool = True


# ----------------------------------------------------------------------------------------------
# State (read-only)
# ----------------------------------------------------------------------------------------------


def verdict(ms, options: FixMSOptions = FixMSOptions(), evidence: msstate.Evidence | None = None) -> Verdict:
    """The state of `ms` for these options and the evidence it was told from (see msstate.classify)."""
    ev = evidence if evidence is not None else msstate.read_evidence(ms)
    return msstate.classify(ev, options.data_column, options.corrected_data_column, options.fix_stokes_factor)


def fixms_state(ms, options: FixMSOptions = FixMSOptions()) -> MSState:
    """What FixMS has done to `ms` for these options, without changing anything (an MSState)."""
    ms = _real(Path(ms).absolute())
    if _lock_is_held(ms):
        return MSState.RUNNING
    if work_dir(ms).exists() and msstate.read_record(ms) is None:
        return MSState.INTERRUPTED
    return verdict(ms, options).state


# ----------------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------------


def run_fixms(ms, options: FixMSOptions = FixMSOptions(), log=None) -> Outcome:
    """Bring `ms` to the fixed state for `options` and say what was done (an Outcome).

    `ms`: the MeasurementSet; `options`: columns and the Stokes factor; `log`: a file that receives the
    state found, fixms' log and casacore's console output (appended); None keeps only fixms' warnings.
    Raises JobError for an MS whose state is refused (a column FixMS did not make, contradicting evidence),
    an MS it cannot fix (fixms' error, e.g. a non-equatorial mount) or cannot write; the MS is then unchanged.
    """
    ms = _real(Path(ms).absolute())
    log = Path(log).absolute() if log is not None else None
    try:
        _recover_swap(ms)
        msstate.read_evidence(ms)  # MSError for what is not an MS
        with _ms_lock(ms):
            interrupted = work_dir(ms).exists()
            if interrupted:  # a killed fix: its copy (or the old MS after the swap) is all it left
                _remove_tree(work_dir(ms))
                if msstate.read_record(ms) is not None:
                    interrupted = False  # it had finished: the copy was the old MS
            ev = msstate.read_evidence(ms)
            v = verdict(ms, options, ev)
            _say(log, f"FixMS {ms}: found {v.state} ({v.evidence})")
            if v.state in REFUSED:
                raise JobError(f"{ms}: {v.evidence}; {_override_hint(options)}", log=log)
            if not needs_write(v, ev):
                if v.state == MSState.RAW:
                    raise AssertionError("unreachable")
                _check_direction(ms, ev, log)
                return {MSState.FIXED_BY_MPIMAGER: Outcome.ALREADY_FIXED,
                        MSState.FIXED_UPSTREAM: Outcome.FIXED_EXTERNALLY}.get(v.state, Outcome.AS_IS)
            problem = write_problem(ms)
            if problem is not None:
                raise JobError(f"{ms}: FixMS must change this MS ({v.state}) but {problem}; nothing was changed",
                               log=log)
            _transaction(ms, options, v, ev, log)
            if v.state != MSState.RAW:
                return Outcome.DIRECTION_REPAIRED
            return Outcome.COMPLETED_INTERRUPTED if interrupted else Outcome.FIXED
    except MSError as exc:
        raise JobError(str(exc), log=log) from None


def _override_hint(options: FixMSOptions) -> str:
    return (f"to image a column as it is set [fixms] enabled = false and [inputs] data_column; to fix into "
            f"another column set [fixms] corrected_data_column (now {options.corrected_data_column})")


def _check_direction(ms: Path, ev: msstate.Evidence, log: Path | None) -> None:
    """Say how the phase centre was verified for an MS the step leaves as it is."""
    error, expected = ev.phase_centre_error_arcsec, ev.beam_direction_deg
    if error is not None and expected is not None:
        _say(log, f"FixMS {ms}: FIELD is {error:.3f} arcsec from the beam direction "
                  f"{expected[0]:.6f} {expected[1]:.6f} deg")
    elif ev.field_moved:
        _say(log, f"FixMS {ms}: FIELD is off the boresight by a beam offset no longer recorded (zero BEAM_OFFSET, "
                  f"no FEED_OLD): taken as the beam direction")
    else:
        _say(log, f"FixMS {ms}: zero BEAM_OFFSET and no record of another: FIELD taken as the beam direction")


def _transaction(ms: Path, options: FixMSOptions, v: Verdict, ev: msstate.Evidence, log: Path | None) -> None:
    """Fix a working copy, check it, record it, swap it in. On any error: remove the copy, JobError."""
    work = work_dir(ms)
    started = time.time()
    run_id = uuid.uuid4().hex
    try:
        linked, copied = _working_copy(ms, work)
        _say(log, f"FixMS {ms}: working copy {work} ({copied / 1e6:.1f} MB copied, {linked / 1e6:.1f} MB linked)")
        with _quiet(log):
            if v.state == MSState.RAW:
                from fixms.fix_ms_corrs import fix_ms_corrs
                from fixms.fix_ms_dir import fix_ms_dir

                if options.data_column not in ev.columns:
                    raise JobError(f"{ms}: no column {options.data_column} to fix ([fixms] data_column)")
                fix_ms_dir(str(work))
            repaired = _set_direction(work, ev)
            if v.state == MSState.RAW:
                fix_ms_corrs(work, data_column=options.data_column,
                             corrected_data_column=options.corrected_data_column,
                             fix_stokes_factor=options.fix_stokes_factor)
                pol_axis_deg = _verify(work, options, ms)
            else:
                pol_axis_deg = None
        if repaired:
            _say(log, repaired)
        fixed_ev = msstate.read_evidence(work)
        error = separation_arcsec(ev.beam_direction_deg, fixed_ev.field_deg) \
            if ev.beam_direction_deg is not None else None
        if error is not None and error > msstate.SAME_DIRECTION_ARCSEC:
            raise JobError(f"{ms}: FIELD is {error:.3f} arcsec from the beam direction after the fix")
        _write_record(work, ms, options, run_id, started, pol_axis_deg, repaired, v)
        _fsync_tree(work)
    except (Exception, SystemExit) as exc:
        _remove_tree(work)
        if isinstance(exc, JobError):
            raise JobError(f"{exc} (the MS was not changed)", log=log) from None
        raise JobError(f"{ms}: FixMS failed: {_one_line(exc)} (the MS was not changed)", log=log) from None
    _exchange(work, ms)
    _remove_tree(work)  # the old MS
    done = "fixed" if v.state == MSState.RAW else "FIELD repaired"
    _say(log, f"FixMS {ms}: {done} in {time.time() - started:.1f} s"
              + (f", pol axis {pol_axis_deg:.3f} deg" if pol_axis_deg is not None else ""))


def _set_direction(work: Path, ev: msstate.Evidence) -> str | None:
    """Point FIELD at the beam direction computed from the original evidence, if it is not there already
    (fix_ms_dir moves nothing without antenna-0 autocorrelations). Returns what was done, None if nothing."""
    from casacore import tables as ct

    expected = ev.beam_direction_deg
    if expected is None:
        return None
    with ct.table(str(work / "FIELD"), readonly=False, ack=False) as field:
        now = msstate.direction_deg(field.getcol("PHASE_DIR")[0, 0])
        error = separation_arcsec(expected, now)
        if error <= msstate.SAME_DIRECTION_ARCSEC:
            return None
        ra = math.radians(expected[0])
        direction = np.array([[[ra - 2 * math.pi if ra > math.pi else ra, math.radians(expected[1])]]])
        for col in FIELD_DIR_COLUMNS:
            field.putcol(col, np.repeat(direction, field.nrows(), axis=0))
    return (f"FixMS {ev.path}: FIELD was {error:.1f} arcsec from the beam direction: set to "
            f"{expected[0]:.6f} {expected[1]:.6f} deg (boresight shifted by the beam's FEED offset)")


def corrections_match(fixed: np.ndarray, expected: np.ndarray, flag: np.ndarray | None = None) -> bool:
    """Whether fixms' output `fixed` equals the `expected` rotation: NaN equal to NaN, the tolerance built from
    the finite values, flagged samples (`flag` True) not compared. Arrays of one shape (rows, chans, corrs)."""
    finite = np.isfinite(expected)
    scale = float(np.abs(expected[finite]).max()) if finite.any() else 0.0
    ok = np.isclose(fixed, expected, rtol=1e-4, atol=1e-6 * (1 + scale), equal_nan=True)
    if flag is not None:
        ok |= flag
    return bool(ok.all())


def _verify(work: Path, options: FixMSOptions, ms: Path) -> float:
    """Check what fixms left in the working copy: the output column holds the rotated data column on sample
    rows at the start, middle and end, FEED keeps the beam's instrument angle. Returns the pol axis (deg)."""
    import astropy.units as u
    from casacore import tables as ct
    from fixms.fix_ms_corrs import convert_correlations

    instrument = msstate.beam_receptor_angle_deg(work, IRA)
    if instrument is None:
        raise JobError(f"{ms}: fix_ms_corrs did not write FEED.{IRA} "
                       f"(it corrects nothing with a 0 deg pol axis and fix_stokes_factor=false)")
    pol_axis_deg = 45.0 - instrument
    with ct.table(str(work), ack=False) as main:
        if options.corrected_data_column not in main.colnames():
            raise JobError(f"{ms}: fix_ms_corrs did not write {options.corrected_data_column}")
        n = main.nrows()
        for start in sorted({0, max(0, n // 2 - SAMPLE_ROWS // 2), max(0, n - SAMPLE_ROWS)}):
            count = min(SAMPLE_ROWS, n - start)
            data = main.getcol(options.data_column, startrow=start, nrow=count)
            fixed = main.getcol(options.corrected_data_column, startrow=start, nrow=count)
            flag = main.getcol("FLAG", startrow=start, nrow=count) if "FLAG" in main.colnames() else None
            expected = convert_correlations(data, pol_axis_deg * u.deg, options.fix_stokes_factor)
            if not corrections_match(fixed, np.asarray(expected), flag):
                raise JobError(f"{ms}: {options.corrected_data_column} rows {start}-{start + count - 1} "
                               f"do not hold the corrected {options.data_column}")
    return pol_axis_deg


def _write_record(work: Path, ms: Path, options: FixMSOptions, run_id: str, started: float,
                  pol_axis_deg: float | None, repaired: str | None, v: Verdict) -> None:
    record = msstate.read_record(work) or {}
    fixes = [f for f in record.get("fixes", []) if f.get("corrected_data_column") != options.corrected_data_column]
    entry = {
        **asdict(options),
        "run_id": run_id,
        "state_found": str(v.state),
        "evidence": v.evidence,
        "field_repaired": bool(repaired),
        "pol_axis_deg": pol_axis_deg,
        "phase_dir_deg": list(msstate.read_evidence(work).field_deg),
        "host": socket.gethostname(),
        "started_utc": _utc(started),
        "finished_utc": _utc(time.time()),
        "seconds": round(time.time() - started, 3),
    }
    if v.state == MSState.RAW:
        fixes.append(entry)
        record = {"format": RECORD_FORMAT, "tool": "mpimager", "versions": _versions(), "fixes": fixes}
    else:
        record = {**record, "format": RECORD_FORMAT, "tool": "mpimager", "versions": _versions(),
                  "repairs": [*record.get("repairs", []), entry]}
    _write_json_atomic(work / RECORD_NAME, record)


# ----------------------------------------------------------------------------------------------
# Working copy and swap
# ----------------------------------------------------------------------------------------------


def _working_copy(ms: Path, work: Path) -> tuple[int, int]:
    """Build `work` as a copy of `ms`: tiled bulk files hard-linked, all else copied. Returns (bytes linked,
    bytes copied)."""
    if work.exists():
        _remove_tree(work)
    linked = copied = 0
    for root, _dirs, files in os.walk(ms):
        target = work / Path(root).relative_to(ms)
        target.mkdir(mode=0o755)
        shutil.copystat(root, target)
        for name in files:
            src, dst = Path(root) / name, target / name
            size = src.stat().st_size
            if LINKED_FILE.match(name):
                try:
                    os.link(src, dst)
                    linked += size
                    continue
                except OSError:
                    pass  # a file system without hard links: copy
            shutil.copy2(src, dst)
            copied += size
    return linked, copied


def _exchange(work: Path, ms: Path) -> None:
    """Swap the fixed copy and the MS: renameat2(RENAME_EXCHANGE), else two renames (repaired by
    _recover_swap if a kill lands between them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(work), at_fdcwd, os.fsencode(ms), rename_exchange) == 0:
            _fsync_dir(ms.parent)
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, f"cannot swap {work} and {ms}: {os.strerror(err)}")
    old = _old_path(ms)
    os.rename(ms, old)
    os.rename(work, ms)
    os.rename(old, work)
    _fsync_dir(ms.parent)


def _old_path(ms: Path) -> Path:
    return ms.with_name(f".{ms.name}{msstate.WORK_SUFFIX}.old")


def _recover_swap(ms: Path) -> None:
    """Finish a two-rename swap a kill interrupted (the fixed copy is complete before the first rename)."""
    old, work = _old_path(ms), work_dir(ms)
    if not old.exists():
        return
    if not ms.exists():
        os.rename(work if work.exists() else old, ms)  # the fixed copy if it is still there, else the old MS
    if old.exists():
        _remove_tree(old)


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
        _fsync_dir(path.parent)


def _fsync_tree(root: Path) -> None:
    """fsync every regular file (one link: the new and copied ones) and directory under root."""
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if os.stat(path).st_nlink == 1:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(directory))


# ----------------------------------------------------------------------------------------------
# Small helpers (files, locks, console)
# ----------------------------------------------------------------------------------------------


def _real(ms: Path) -> Path:
    """The MS directory itself (a symlinked MS is fixed where it lives)."""
    return Path(os.path.realpath(ms))


def _say(log: Path | None, line: str) -> None:
    """One line of what the step found or did: to this module's logger (the job log: main() sends it to
    stdout) and to `log`."""
    logger.info(line)
    if log is not None:
        with open(log, "a") as fh:
            fh.write(line + "\n")


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
def _ms_lock(ms: Path) -> Iterator[None]:
    """An exclusive flock on the MS directory (released by the kernel if we die). The MS is swapped for its
    fixed copy under the lock, so a waiter re-takes it when the path names another directory by then."""
    while True:
        fd = os.open(ms, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise
            # a file system without flock: run unlocked (the planner runs one FixMS job per MS)
        if os.fstat(fd).st_ino == os.stat(ms).st_ino:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def _lock_is_held(ms: Path) -> bool:
    try:
        fd = os.open(ms, os.O_RDONLY | os.O_DIRECTORY)
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
def _quiet(log: Path | None):
    """Send fixms' log records and the console output (python-casacore prints "Successful read/write
    open" for every HISTORY row fixms adds) to `log`, or drop INFO records and stdout when log is None.
    Redirects sys.stdout/sys.stderr and file descriptors 1/2 (C++ output): meant for a worker
    running one job at a time."""
    from fixms.logger import logger as fixms_logger

    saved_handlers, saved_propagate = list(fixms_logger.handlers), fixms_logger.propagate
    target = open(log, "a") if log is not None else open(os.devnull, "w")  # noqa: SIM115 - closed below
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

    found: dict[str, str | None] = {"mpimager": mpimager.__version__}
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
    """`python -m mpimager.runtime.fixms [options] MS` with `argv` (None: sys.argv): fix the MS (or with
    `--state` print its state), print the outcome; returns 0, or the error's exit code with the error on stderr."""
    parser = argparse.ArgumentParser(prog="python -m mpimager.runtime.fixms", description=__doc__.splitlines()[0])
    parser.add_argument("ms", type=Path)
    parser.add_argument("--data-column", default=FixMSOptions.data_column)
    parser.add_argument("--corrected-data-column", default=FixMSOptions.corrected_data_column)
    parser.add_argument("--no-stokes-factor", action="store_true", help="do not apply ASKAP's factor 2")
    parser.add_argument("--log", type=Path, help="append fixms' and casacore's output to this file")
    parser.add_argument("--state", action="store_true", help="only print the state, change nothing")
    args = parser.parse_args(argv)
    options = FixMSOptions(args.data_column, args.corrected_data_column, not args.no_stokes_factor)
    handler = logging.StreamHandler(sys.stdout)  # the state found and what was done: the job log
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
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
