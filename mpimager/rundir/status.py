"""The state of every job of a run, read from its journal: for `mpimager status` and the report.

Pure (`job_states`: journal records -> `RunStatus`), plus `read_status` (reads RUN_DIR's journal and
lock) and `format_table` (the text `mpimager status` prints). Works on a finished run and on one
going on: the journal is append-only and fsync'd, and a torn last line is ignored.

Rules. A run directory may hold several runs (each resume appends a `run`, a `plan`, `skip`s, ...):
- the jobs are those of the LAST `plan` record, in its order; its run is the "current" run: the
  records after that plan (up to a later `run` start, if any) say what happened to them;
- `done` / `failed` / `skipped`: the job's last `end` in the current run (`ok` is shown as done;
  `skipped` there means a dependency failed, and the reason says which);
- `skipped` also when the current run wrote a `skip` record for it: it was done by an earlier run
  (same argv, outputs intact); its host, times, attempts, log and outputs come from that earlier run's
  last successful `end` (an earlier `end` counts only through such a `skip` record);
- `running`: a `start` without `end` while the run is alive, that is its lock (RUN_DIR/lock) is held
  by the process that wrote the current run's `run` record;
- `interrupted`: a `start` without `end` and the run is not alive (killed or crashed while the job ran:
  a re-run starts it again);
- `pending`: planned, never started in the current run.
A job whose `end` says `interrupted` (the run was told to stop while it ran) is `interrupted` too.
The run itself is `running` (lock held by its process), `finished` (its `run` end record is there),
`stopped` (its `run` record says it was interrupted, or stopped before the Slurm allocation's end) or
`died` (none of these: killed or crashed). Log paths: a failure's `log` (its last attempt; in older journals
the log its error names), the last of the `logs` of a success, else RUN_DIR/logs/ID.log where a job
that started writes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mpimager.errors import InputError
from mpimager.rundir.journal import lock_holder, read_records
from mpimager.rundir.layout import JOURNAL, log_path
from mpimager.states import JobState, RunState

STATES = tuple(JobState)
RUN_RUNNING, RUN_FINISHED, RUN_DIED, RUN_NONE = RunState.RUNNING, RunState.FINISHED, RunState.DIED, RunState.NONE
RUN_STOPPED = RunState.STOPPED

_LOG_IN_ERROR = re.compile(r"\(log: ([^()]+)\)\s*$")
_ATTEMPTS_IN_ERROR = re.compile(r"after (\d+) attempts")
_HOLDER_PID = re.compile(r"\bpid (\d+)")


@dataclass(frozen=True)
class JobStatus:
    """One job of the current plan and what the journal says of it."""

    id: str
    kind: str  # a JobKind's value as the journal recorded it
    state: JobState
    rank: int | None = None
    host: str | None = None
    start: float | None = None
    end: float | None = None
    attempts: int | None = None
    log: str | None = None
    error: str | None = None  # failed: the error; skipped: the reason
    earlier: bool = False  # what is shown comes from an earlier run of this directory
    argv: tuple[str, ...] = ()  # as run (the last attempt's argv when it ended well)
    outputs: tuple[str, ...] = ()
    cost: float = 0.0
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def retries(self) -> int | None:
        return None if self.attempts is None else self.attempts - 1

    def duration(self, now: float) -> float | None:
        """Wall seconds from start to end; for a running job, to `now`; None when it has not started (or
        started and stopped without an end)."""
        if self.start is None:
            return None
        if self.end is not None:
            return self.end - self.start
        return now - self.start if self.state == "running" else None


@dataclass(frozen=True)
class RunStatus:
    """The current run of a run directory and its jobs."""

    run_dir: str
    state: RunState
    jobs: tuple[JobStatus, ...] = ()
    holder: str | None = None  # who holds the lock
    started: float | None = None
    ended: float | None = None
    ranks: int | None = None
    runs: int = 0  # runs recorded in the journal
    now: float = 0.0
    last_record: float | None = None
    notes: tuple[str, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        """The number of jobs in each state, for every state (0s included), in `JobState` order."""
        return {s: sum(j.state == s for j in self.jobs) for s in STATES}


def job_states(records: Sequence[dict], run_dir: str, *, holder: str | None = None,
               now: float | None = None) -> RunStatus:
    """The status of the current run of `run_dir` from its journal's `records` (see the module docstring).

    `holder`: who holds RUN_DIR/lock now (journal.lock_holder), None if nobody does. `now`: the time durations
    run to (default: the clock).
    """
    now = time.time() if now is None else now
    run_dir = str(run_dir)
    runs = [i for i, r in enumerate(records) if r.get("event") == "run" and r.get("state") == "start"]
    plans = [i for i, r in enumerate(records) if r.get("event") == "plan"]
    last_time = records[-1].get("time") if records else None
    if not plans:
        live = holder is not None
        return RunStatus(run_dir, RUN_RUNNING if live else RUN_NONE, holder=holder, runs=len(runs), now=now,
                         last_record=last_time)
    p = plans[-1]
    run_start = max((i for i in runs if i < p), default=None)
    next_run = min((i for i in runs if i > p), default=len(records))
    current = records[p + 1:next_run]
    earlier = records[:p]
    head = records[run_start] if run_start is not None else {}

    ended = next((r for r in current if r.get("event") == "run" and r.get("state") in ("end", "interrupted",
                                                                                        "stopped")), None)
    holder_pid = _HOLDER_PID.search(holder or "")
    alive = (holder is not None and next_run == len(records)
             and (holder_pid is None or head.get("pid") is None or int(holder_pid.group(1)) == head.get("pid")))
    state = (RUN_FINISHED if ended.get("state") == "end" else RUN_STOPPED) if ended is not None else \
        RUN_RUNNING if alive else RUN_DIED

    last_ok: dict[str, dict] = {}
    for r in earlier:
        if r.get("event") == "end":
            if r.get("status") == "ok":
                last_ok[r["job"]] = r
            else:
                last_ok.pop(r["job"], None)
    skips = {r["job"]: r.get("reason", "") for r in current if r.get("event") == "skip"}
    starts = {r["job"]: r for r in current if r.get("event") == "start"}
    ends = {r["job"]: r for r in current if r.get("event") == "end"}

    jobs = []
    for job in records[p].get("jobs", ()):
        job_id = job["id"]
        base = dict(id=job_id, kind=job.get("kind", ""), argv=tuple(job.get("argv", ())),
                    cost=float(job.get("cost", 0.0)), tags=tuple(sorted((job.get("tags") or {}).items())))
        if job_id in ends:
            jobs.append(_ended(base, ends[job_id], run_dir))
        elif job_id in skips:
            before = last_ok.get(job_id)
            fields = _ended(base, before, run_dir) if before else JobStatus(**base, state=JobState.SKIPPED)
            jobs.append(_with(fields, state=JobState.SKIPPED, error=skips[job_id] or "done before", earlier=True))
        elif job_id in starts:
            s = starts[job_id]
            jobs.append(JobStatus(**base, state=JobState.RUNNING if state == RUN_RUNNING else JobState.INTERRUPTED,
                                  rank=s.get("rank"), host=s.get("host"), start=s.get("time"),
                                  log=log_path(run_dir, job_id)))
        else:
            jobs.append(JobStatus(**base, state=JobState.PENDING))
    notes = tuple(r.get("message", "") for r in current if r.get("event") == "note")
    return RunStatus(run_dir, state, tuple(jobs), holder=holder, started=head.get("time"),
                     ended=ended.get("time") if ended else None, ranks=head.get("ranks"), runs=len(runs), now=now,
                     last_record=last_time, notes=notes)


def _with(job: JobStatus, **changes) -> JobStatus:
    return JobStatus(**{**asdict(job), **changes})


def _ended(base: dict, r: dict, run_dir: str) -> JobStatus:
    status = r.get("status")
    error = r.get("error")
    if status == "ok":
        logs = r.get("logs") or []
        return JobStatus(**{**base, "argv": tuple(r.get("argv_run") or base["argv"])}, state=JobState.DONE,
                         rank=r.get("rank"), host=r.get("host"), start=r.get("start"), end=r.get("end"),
                         attempts=r.get("attempts"), log=logs[-1] if logs else log_path(run_dir, base["id"]),
                         outputs=tuple(o["path"] for o in r.get("outputs", ())))
    if status == "skipped":  # a dependency failed: it never ran
        return JobStatus(**base, state=JobState.SKIPPED, error=error)
    if status == "interrupted":
        return JobStatus(**base, state=JobState.INTERRUPTED, rank=r.get("rank"), host=r.get("host"),
                         start=r.get("start"), end=r.get("end"), attempts=r.get("attempts"), log=r.get("log"),
                         error=error)
    m = _LOG_IN_ERROR.search(error or "")
    log = r.get("log") or (m.group(1) if m else None)
    tries = _ATTEMPTS_IN_ERROR.search(error or "")
    attempts = r.get("attempts") or (int(tries.group(1)) if tries else 1)
    return JobStatus(**base, state=JobState.FAILED, rank=r.get("rank"), host=r.get("host"), start=r.get("start"),
                     end=r.get("end"), attempts=attempts, log=log, error=error)


def read_status(run_dir, now: float | None = None) -> RunStatus:
    """The status of the current run of `run_dir` (durations to `now`, default the clock); InputError if
    `run_dir` is not a directory or holds no journal."""
    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    if not (run_dir / JOURNAL).is_file():
        raise InputError(f"{run_dir}: not a run directory (no {JOURNAL}); give the --run-dir of a run")
    holder = lock_holder(run_dir)
    return job_states(read_records(run_dir), str(run_dir), holder=holder, now=now)


# ------------------------------------------------------------------------------------------------ text


def format_duration(seconds: float) -> str:
    """`seconds` rounded, as 3 s, 4m05s or 2h03m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _clock(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def describe_run(status: RunStatus) -> str:
    """One line of `status`: where, what state, since when."""
    if status.state == RUN_NONE:
        return f"{status.run_dir}: no run has written its plan yet"

    ranks = f", {status.ranks} ranks" if status.ranks else ""
    if status.state == RUN_RUNNING:
        what = f"running ({status.holder})" if status.holder else "running"
        span = f"elapsed {format_duration(status.now - status.started)}" if status.started else ""
    elif status.state == RUN_STOPPED:
        what = "stopped early (interrupted, or the allocation's end was near): a re-run resumes"
        span = (f"wall {format_duration(status.ended - status.started)}"
                if status.started and status.ended else "")
    elif status.state == RUN_FINISHED:
        what = "finished"
        span = (f"wall {format_duration(status.ended - status.started)}"
                if status.started and status.ended else "")
    else:
        what = "stopped without finishing (killed or crashed)"
        span = f"last record {_clock(status.last_record)}"
    again = f"; run {status.runs} of this directory" if status.runs > 1 else ""
    return f"{status.run_dir}: {what}; started {_clock(status.started)}{ranks}; {span}{again}"


def count_line(status: RunStatus) -> str:
    """The job count of `status` and the count in each state it has: '5 jobs: 3 done, 2 failed'."""
    counts = status.counts()
    return f"{len(status.jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def format_table(status: RunStatus) -> str:
    """The text of `mpimager status`: the run, the job table, then each failure with its log."""
    lines = [describe_run(status)]
    if status.state == RUN_NONE:
        return "\n".join(lines) + "\n"
    lines.append(count_line(status))
    width = max([len(j.id) for j in status.jobs] + [3])
    host_w = max([len(j.host or "-") for j in status.jobs] + [4])
    lines.append(f"\n{'job':<{width}}  {'state':<11}  {'host':<{host_w}}  {'rank':>4}  {'wall s':>8}  "
                 f"{'retries':>7}  log / reason")
    for j in status.jobs:
        d = j.duration(status.now)
        wall = "-" if d is None else f"{d:.1f}" + ("+" if j.state == "running" else "")
        retries = "-" if j.retries is None else str(j.retries)
        if j.state in ("failed", "done", "running", "interrupted"):
            tail = j.log or "-"
        elif j.state == "skipped":
            tail = j.error or ""
        else:
            tail = ""
        rank = "-" if j.rank is None else str(j.rank)
        lines.append(f"{j.id:<{width}}  {j.state:<11}  {j.host or '-':<{host_w}}  {rank:>4}  {wall:>8}  "
                     f"{retries:>7}  {tail}".rstrip())
    if any(j.state == "interrupted" for j in status.jobs):
        lines.append("\ninterrupted: the job was running when the run stopped; a re-run starts it again")
    failed = [j for j in status.jobs if j.state == "failed"]
    if failed:
        lines.append("\nfailures:")
        for j in failed:
            lines.append(f"  {j.id}: {j.error}")
            lines.append(f"    log: {j.log or '-'}")
    return "\n".join(lines) + "\n"


def to_json(status: RunStatus) -> dict:
    """`mpimager status --json`: the run and its jobs as plain JSON values."""
    d = asdict(status)
    d["counts"] = status.counts()
    for j, job in zip(d["jobs"], status.jobs):
        j["tags"] = dict(job.tags)
        j["duration"] = job.duration(status.now)
        j["retries"] = job.retries
    return d


def dumps(status: RunStatus) -> str:
    """`to_json` of `status` as indented JSON text."""
    return json.dumps(to_json(status), indent=1)

