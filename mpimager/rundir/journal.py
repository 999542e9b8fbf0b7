"""The run directory's journal: an append-only, fsync'd record of every job, and what a re-run may skip.

`RUN_DIR/journal.jsonl` holds one JSON object per line: `plan` (the run's jobs with their argv),
`start` (job, rank, host, time), `end` (status, exit code, attempts, outputs with sizes, log) and
`run` lines (start/end of a run, pid, host). Only rank 0 writes it. A line is complete or absent: a write
that fails (a full disk) is cut back off, and a writer starts on a new line after a torn last line (a run
killed while writing), so a fragment never swallows the next record. The reader takes what is valid and
warns, naming the line, about the rest: a torn or foreign line, JSON that is not a record, a job record
without its `job`.

A job is done, and skipped on a re-run, when its last `end` was ok with the same argv and every output
it recorded still exists with the recorded size, and no job it depends on runs again.
`RUN_DIR/lock` is held (flock) for a run's whole life: a second run on the same directory is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mpimager.errors import InputError, MpimagerError
from mpimager.rundir.layout import JOURNAL, LOCK

log = logging.getLogger(__name__)

JOB_EVENTS = ("start", "end", "skip")  # the records that must name their job


class JournalError(MpimagerError):
    """The journal cannot be written (a full disk, ...): the run stops; what was written stays valid."""


def read_records(run_dir: Path) -> list[dict]:
    """Every valid record of the journal of `run_dir` (none if there is no journal); a warning names each
    line skipped.

    The last line, torn by a kill while it was written, is skipped without a warning.
    """
    path = Path(run_dir) / JOURNAL
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record, problem = _parse(line)
        if record is not None:
            records.append(record)
        elif number < len(lines) or lines[-1] == b"":  # not the unterminated last line
            log.warning("%s line %d skipped: %s", path, number, problem)
    return records


def _parse(line: bytes) -> tuple[dict | None, str]:
    """(the record of one journal line, "") or (None, what is wrong with it)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None, "not valid JSON (a torn write?)"
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return None, "not a journal record (no 'event')"
    if record["event"] in JOB_EVENTS and not isinstance(record.get("job"), str):
        return None, f"a {record['event']!r} record without its 'job'"
    return record, ""


class Journal:
    """The writer: one line per record, flushed and fsync'd before `write` returns (JournalError if it fails)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / JOURNAL
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.lseek(self._fd, 0, os.SEEK_END)
            if size > 0:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    torn = f.read(1) != b"\n"
                if torn:  # a killed writer's fragment: start on a fresh line
                    self._append(b"\n")
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc.strerror or exc}") from None

    def write(self, event: str, **fields) -> None:
        """Append one `event` record with the time and `fields`, fsync'd; JournalError when it cannot be written."""
        record = {"event": event, "time": round(time.time(), 3), **fields}
        try:
            self._append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc.strerror or exc}") from None

    def _append(self, data: bytes) -> None:
        """Write `data` whole and fsync it; on failure cut the file back to where it was (no partial line)."""
        offset = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, offset)
            raise

    def close(self) -> None:
        """Close the journal's file."""
        os.close(self._fd)


@dataclass(frozen=True)
class Done:
    """What the journal says of a job that ended well."""

    argv: tuple[str, ...]
    outputs: tuple[tuple[str, int], ...]  # (path, size)
    end: float


def finished_jobs(records: Iterable[dict]) -> dict[str, Done]:
    """job id -> its last successful end, for the jobs whose last end in `records` was a success."""
    done: dict[str, Done] = {}
    for r in records:
        if r.get("event") != "end":
            continue
        if r.get("status") == "ok":
            done[r["job"]] = Done(tuple(r.get("argv", ())), tuple((o["path"], o["size"]) for o in r.get("outputs", ())),
                                  r.get("time", 0.0))
        else:
            done.pop(r["job"], None)
    return done


def _outputs_intact(done: Done) -> bool:
    """Whether every output `done` recorded still exists with its recorded size."""
    for path, size in done.outputs:
        try:
            if os.path.getsize(path) != size:
                return False
        except OSError:
            return False
    return True


def jobs_to_skip(jobs: Sequence, records: Iterable[dict]) -> dict[str, str]:
    """job id -> why it is skipped, for the `jobs` (in plan order) that `records` show done before with the
    same argv and intact outputs.

    A job whose dependency runs again runs again too (its inputs change).
    """
    done = finished_jobs(records)
    skip: dict[str, str] = {}
    for job in jobs:  # the plan lists dependencies before their dependents
        d = done.get(job.id)
        if d is None or d.argv != tuple(job.argv) or not _outputs_intact(d):
            continue
        if all(dep in skip for dep in job.depends_on):
            skip[job.id] = f"done at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d.end))}"
    return skip


class RunLock:
    """An exclusive flock on RUN_DIR/lock for the life of a run; refused with the holder's identity."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if not isinstance(exc, BlockingIOError):
                os.close(self._fd)
                raise InputError(no_lock_message(self.path, exc)) from None
            holder = os.read(self._fd, 200).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise InputError(f"{run_dir}: the run directory is in use by another mpimager run ({holder}); "
                             f"wait for it or use another --run-dir") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())

    def release(self) -> None:
        """Release the lock (close its file; the holder line written in it stays)."""
        os.close(self._fd)


NO_LOCK_ERRNOS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def no_lock_message(path: Path, exc: OSError) -> str:
    """The one line for a file system that cannot take a lock (some Lustre or NFS mounts), or for another
    failure `exc` of flock on `path`."""
    if exc.errno in NO_LOCK_ERRNOS:
        return (f"{path}: the file system cannot lock files (flock: {exc.strerror}); put the run directory "
                f"(--run-dir) on a file system that can, such as a local disk or a Lustre mount with -o flock")
    return f"{path}: cannot lock it (flock: {exc.strerror or exc})"


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the lock of `run_dir`, or None when no run is going on or the file system cannot lock
    (for `mpimager status`)."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "a running mpimager"
    except OSError as exc:  # no locks on this file system: nobody can hold one
        log.warning("%s", no_lock_message(path, exc))
        return None
    finally:
        os.close(fd)
    return None
