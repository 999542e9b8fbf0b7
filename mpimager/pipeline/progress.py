"""What rank 0 prints while a run goes on: one line per job start and end, a periodic summary, an ETA.

Owns the run's progress lines, written for Slurm log files: each is whole, time-stamped
(`[HH:MM:SS] ...`) and flushed at once. Lines:
- `start ID on rank R (HOST)` when a job is dispatched;
- `done ID in S s [n/N]` (with retry notes), `FAILED ID: ERROR [n/N]` (the error names the log) and
  `SKIPPED ID: REASON [n/N]` (a dependency failed) when it ends;
- every `interval` seconds (default 60, environment variable MPIMAGER_PROGRESS_INTERVAL), a summary:
  `progress: 7/20 done, 1 failed, 2 running (vm: 2), 10 waiting; elapsed 3m05s; ETA 4m10s (at 13:10:05)`.
A live bar is redrawn in place (`\\r`) below the last line only when stdout is a terminal and the
process was not started by an MPI launcher: mpirun hands its ranks a pseudo-terminal even when its own
output goes to a file (a Slurm log), so under a launcher a terminal cannot be told from a file.

ETA (`estimate_remaining`, pure): each kind of job (fixms, wsclean, reduce) has its own measured rate,
seconds per unit of the plan's cost estimate over the jobs of that kind that ended well; a kind with
none yet uses the mean duration of every finished job. Remaining work = the estimate of each waiting
job + what is left of each running one (estimate minus time already spent, never below zero), spread
over the workers (never more workers than remaining jobs), and never less than the longest single job
left. No estimate before the first job ends.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from mpimager.rundir.status import format_duration

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
ENV_INTERVAL = "MPIMAGER_PROGRESS_INTERVAL"
BAR_REFRESH_S = 1.0
BAR_WIDTH = 30


def interval_from_env(env: Mapping[str, str] | None = None) -> tuple[float, str | None]:
    """(seconds between summary lines, a warning if the value was unusable), from MPIMAGER_PROGRESS_INTERVAL
    in `env` (None: this process's environment)."""
    raw = (os.environ if env is None else env).get(ENV_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S, None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        return DEFAULT_INTERVAL_S, (f"{ENV_INTERVAL}={raw!r} is not a number of seconds > 0; "
                                    f"summary lines every {DEFAULT_INTERVAL_S:.0f} s")
    return value, None


def live_bar_wanted(stream) -> bool:
    """Whether `stream` is a terminal with no MPI launcher between it and us (see the module docstring)."""
    from mpimager.queue import launched

    try:
        return bool(stream.isatty()) and not launched()
    except (AttributeError, ValueError):
        return False


def estimate_remaining(waiting: Iterable[tuple[str, float]], running: Iterable[tuple[str, float, float]],
                       finished: Iterable[tuple[str, float, float]], workers: int) -> float | None:
    """Seconds until the last job ends, or None before any job finished (see the module docstring).

    `waiting`: (kind, cost) of each job not started; `running`: (kind, cost, seconds spent so far);
    `finished`: (kind, cost, seconds) of each job that ended well; `workers`: the ranks that execute jobs.
    """
    finished = list(finished)
    if not finished:
        return None
    seconds: defaultdict[str, float] = defaultdict(float)
    costs: defaultdict[str, float] = defaultdict(float)
    for kind, cost, took in finished:
        seconds[kind] += took
        costs[kind] += max(cost, 0.0)
    mean = sum(seconds.values()) / len(finished)

    def estimate(kind: str, cost: float) -> float:
        if costs[kind] > 0 and cost > 0:
            return seconds[kind] / costs[kind] * cost
        return mean

    left = [estimate(k, c) for k, c in waiting]
    left += [max(0.0, estimate(k, c) - spent) for k, c, spent in running]
    if not left:
        return 0.0
    slots = max(1, min(workers, len(left)))
    return max(sum(left) / slots, max(left))


class Progress:
    """Rank 0's progress printer, fed by the queue's events (`started`, `ended`, `say`).

    `jobs`: the jobs this run executes (id, kind, cost); `workers`: ranks that execute jobs.
    Thread-safe: `start_timer` starts a daemon thread printing the summary line every `interval` s
    (and redrawing the bar on a terminal); `stop` ends it and clears the bar."""

    def __init__(self, jobs: Sequence, workers: int, *, out=None, interval: float | None = None,
                 tty: bool | None = None, clock: Callable[[], float] = time.time):
        self.kinds = {j.id: j.kind for j in jobs}
        self.costs = {j.id: float(j.cost) for j in jobs}
        self.workers = max(1, workers)
        self._out = out
        if interval is None:
            interval, warning = interval_from_env()
        else:
            warning = None
        self.interval = interval
        self.tty = live_bar_wanted(self._stream()) if tty is None else tty
        self.clock = clock
        self.t0 = clock()
        self._last_summary = self.t0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar_shown = False
        self.running: dict[str, tuple[float, int | None, str | None]] = {}  # id -> (start, rank, host)
        self.finished: list[tuple[str, float, float]] = []  # (kind, cost, seconds) of jobs that ended well
        self.status: Counter = Counter()  # ended jobs per status
        self._ended: set[str] = set()
        if warning:
            self.say(warning)

    # --- output

    def _stream(self):
        return self._out if self._out is not None else sys.stdout

    def say(self, message: str) -> None:
        """`message` as one whole time-stamped line, flushed (the bar, on a terminal, is redrawn below it);
        without an `out` stream, through logging (the CLI's handler prints it)."""
        with self._lock:
            out = self._stream()
            if self._bar_shown:
                out.write("\r\033[K")
            if self._out is None:  # the run's own lines: through logging (the CLI's handler prints them)
                out.flush()
                log.info(message)
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(self.clock()))
                out.write(f"[{stamp}] {message}\n")
            if self.tty and not self._stop.is_set():
                out.write(self.bar())
                self._bar_shown = True
            out.flush()

    # --- events

    def started(self, job_id: str, rank: int | None, host: str | None, when: float | None = None) -> None:
        """The job `job_id` started on `rank` of `host` at `when` (default: now): print its start line."""
        with self._lock:
            self.running[job_id] = (self.clock() if when is None else when, rank, host)
            self.say(f"start {job_id} on rank {rank} ({host})")

    def ended(self, job_id: str, status: str, seconds: float, *, error: str | None = None,
              notes: Sequence[str] = ()) -> None:
        """The job `job_id` ended with `status` "ok", "failed" or "skipped" (a dependency failed) after `seconds`:
        print its end line, with the retry `notes` of a success or the `error` of a failure."""
        with self._lock:
            self.running.pop(job_id, None)
            self._ended.add(job_id)
            self.status[status] += 1
            count = f"[{self.done_count}/{len(self.kinds)}]"
            if status == "ok":
                self.finished.append((self.kinds.get(job_id, ""), self.costs.get(job_id, 0.0), seconds))
                self.say(f"done {job_id} in {seconds:.1f} s {count}" + (f" ({'; '.join(notes)})" if notes else ""))
            else:
                self.say(f"{status.upper()} {job_id}: {error} {count}")

    @property
    def done_count(self) -> int:
        """Jobs that ended, whatever their status."""
        return len(self._ended)

    # --- summary

    def eta(self, now: float | None = None) -> float | None:
        """Seconds from `now` (default: the clock) until the run ends (see the module docstring), None before a job
        ended."""
        now = self.clock() if now is None else now
        with self._lock:
            waiting = [(self.kinds[i], self.costs[i]) for i in self.kinds
                       if i not in self.running and i not in self._ended]
            running = [(self.kinds.get(i, ""), self.costs.get(i, 0.0), now - s)
                       for i, (s, _, _) in self.running.items()]
            return estimate_remaining(waiting, running, self.finished, self.workers)

    def summary(self, now: float | None = None) -> str:
        """The periodic line at `now` (default: the clock), without its time stamp."""
        now = self.clock() if now is None else now
        with self._lock:
            per_host = Counter(h or "?" for _, _, h in self.running.values())
            hosts = ", ".join(f"{h}: {n}" for h, n in sorted(per_host.items()))
            parts = [f"{self.status['ok']}/{len(self.kinds)} done"]
            if self.status["failed"]:
                parts.append(f"{self.status['failed']} failed")
            if self.status["skipped"]:
                parts.append(f"{self.status['skipped']} skipped")
            parts.append(f"{len(self.running)} running" + (f" ({hosts})" if hosts else ""))
            parts.append(f"{len(self.kinds) - len(self._ended) - len(self.running)} waiting")
            eta = self.eta(now)
        text = "progress: " + ", ".join(parts) + f"; elapsed {format_duration(now - self.t0)}"
        if eta is None:
            return text + "; ETA after the first job ends"
        at = time.strftime("%H:%M:%S", time.localtime(now + eta))
        return text + f"; ETA {format_duration(eta)} (at {at})"

    def bar(self) -> str:
        """The live bar (terminal only), without a newline."""
        total = max(1, len(self.kinds))
        filled = int(BAR_WIDTH * self.done_count / total)
        eta = self.eta()
        tail = f" ETA {format_duration(eta)}" if eta is not None else ""
        return (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done_count}/{len(self.kinds)}, "
                f"{len(self.running)} running{tail}")

    def tick(self, now: float | None = None) -> None:
        """Print the summary line if `interval` has passed since the last one at `now` (default: the clock), else
        redraw the bar."""
        now = self.clock() if now is None else now
        with self._lock:
            if now - self._last_summary >= self.interval:
                self._last_summary = now
                self.say(self.summary(now))
            elif self.tty and not self._stop.is_set():
                out = self._stream()
                out.write("\r\033[K" + self.bar())
                out.flush()
                self._bar_shown = True

    # --- the timer thread

    def start_timer(self) -> None:
        """Start the daemon thread that calls `tick` every `interval` s (every BAR_REFRESH_S on a terminal); once."""
        if self._thread is not None:
            return
        step = min(self.interval, BAR_REFRESH_S) if self.tty else self.interval

        def loop():
            while not self._stop.wait(step):
                try:
                    self.tick()
                except Exception:  # a closed stdout must never kill the run  # noqa: BLE001
                    return

        self._thread = threading.Thread(target=loop, name="mpimager-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the timer thread (waiting up to 5 s for it) and clear the bar."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._bar_shown:
                out = self._stream()
                out.write("\r\033[K")
                out.flush()
                self._bar_shown = False
