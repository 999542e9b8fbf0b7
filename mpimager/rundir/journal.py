"""The run directory's journal: an append-only, fsync'd record of every job, and what a re-run may skip.

`RUN_DIR/journal.jsonl` holds one JSON object per line: `plan` (the run's jobs with their argv),
`start` (job, rank, host, time), `end` (status, exit code, attempts, outputs with sizes, log) and
`run` lines (start/end of a run, pid, host). Only rank 0 writes it. A line is complete or absent:
a torn last line (a run killed while writing) is ignored when read.

A job is done, and skipped on a re-run, when its last `end` was ok with the same argv and every output
it recorded still exists with the recorded size, and no job it depends on runs again.
`RUN_DIR/lock` is held (flock) for a run's whole life: a second run on the same directory is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from mpimager.errors import InputError
from mpimager.rundir.layout import JOURNAL, LOCK



def read_records(run_dir: Path) -> list[dict]:
    """Every complete record of the journal (none if there is no journal)."""
    path = Path(run_dir) / JOURNAL
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # the torn tail of a killed run, or an empty line
    return records


class Journal:
    """The writer: one line per record, flushed and fsync'd before `write` returns."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / JOURNAL
        self._f = open(self.path, "ab")

    def write(self, event: str, **fields) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._f.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


@dataclass(frozen=True)
class Done:
    """What the journal says of a job that ended well."""

    argv: tuple[str, ...]
    outputs: tuple[tuple[str, int], ...]  # (path, size)
    end: float


def finished_jobs(records: Iterable[dict]) -> dict[str, Done]:
    """job id -> its last successful end, for jobs whose last end was a success."""
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


def outputs_intact(done: Done) -> bool:
    for path, size in done.outputs:
        try:
            if os.path.getsize(path) != size:
                return False
        except OSError:
            return False
    return True


def jobs_to_skip(jobs: Sequence, records: Iterable[dict]) -> dict[str, str]:
    """job id -> why it is skipped, for jobs done before with the same argv and intact outputs.

    A job whose dependency runs again runs again too (its inputs change)."""
    done = finished_jobs(records)
    skip: dict[str, str] = {}
    for job in jobs:  # the plan lists dependencies before their dependents
        d = done.get(job.id)
        if d is None or d.argv != tuple(job.argv) or not outputs_intact(d):
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
        except BlockingIOError:
            holder = os.read(self._fd, 200).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise InputError(f"{run_dir}: the run directory is in use by another mpimager run ({holder}); "
                             f"wait for it or use another --run-dir") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())

    def release(self) -> None:
        os.close(self._fd)


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run directory's lock, or None when no run is going on (for `mpimager status`)."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "a running mpimager"
    finally:
        os.close(fd)
    return None
