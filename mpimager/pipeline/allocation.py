"""Near the end of a Slurm allocation: which job may still start (its estimated duration fits in the time left).

`allocation_end()` asks Slurm (`squeue -h -j $SLURM_JOB_ID -o %e`) when the allocation ends; None outside
Slurm or without a limit. `Estimates` guesses a job's duration: its own last duration in the run directory's
journal (an earlier run of it, even one that failed or was interrupted: at least that long), else the
seconds per unit of plan cost of the jobs of its kind that ended in this run, else unknown (then it starts).
`Deadline.fits` admits a job when now + estimate x SAFETY + MARGIN_S is before the end.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field

SAFETY = 1.1  # estimates are scaled by this
MARGIN_S = 10.0  # seconds kept free at the end (the run's summary, manifest and report)


def allocation_end(env: dict | None = None) -> float | None:
    """The Slurm allocation's end (epoch seconds), None outside Slurm, without a limit or if Slurm says nothing.

    `env`: the environment to read SLURM_JOB_ID from (None: ours)."""
    job = (os.environ if env is None else env).get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        r = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else ""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:  # "N/A", "UNLIMITED", nothing
        return None


@dataclass
class Estimates:
    """Durations seen: per job id (from the journal), per kind (seconds per cost unit, this run)."""

    previous: dict[str, float] = field(default_factory=dict)
    spent: dict[str, list[float]] = field(default_factory=dict)  # kind -> [seconds, cost]

    @classmethod
    def from_records(cls, records) -> Estimates:
        """`records`: the run directory's journal (every `end` with a start and an end time counts)."""
        previous = {}
        for r in records:
            if r.get("event") == "end" and isinstance(r.get("start"), (int, float)) and \
                    isinstance(r.get("end"), (int, float)) and r.get("status") != "skipped":
                previous[r["job"]] = float(r["end"]) - float(r["start"])
        return cls(previous)

    def ended(self, kind: str, cost: float, seconds: float) -> None:
        """A job of `kind` with plan cost `cost` took `seconds`."""
        total = self.spent.setdefault(kind, [0.0, 0.0])
        total[0] += seconds
        total[1] += cost

    def seconds(self, job_id: str, kind: str, cost: float) -> float | None:
        """The guessed seconds of the job `job_id` of `kind` and plan cost `cost`: its duration in the journal,
        else this run's seconds per cost unit of its kind x `cost`, else None (unknown)."""
        if job_id in self.previous:
            return self.previous[job_id]
        total = self.spent.get(kind)
        if total and total[1] > 0:
            return total[0] / total[1] * cost
        return None


@dataclass
class Deadline:
    """The allocation's end and the estimates: `fits(job)` says whether a job may start now."""

    end: float | None
    estimates: Estimates
    refused: list[str] = field(default_factory=list)

    def fits(self, job_id: str, kind: str, cost: float, now: float | None = None) -> bool:
        """Whether the job `job_id` (of `kind` and plan cost `cost`) may start at `now` (default: the clock): always
        outside an allocation or without an estimate, else when its estimate x SAFETY + MARGIN_S ends before the
        allocation does. A job refused is added to `refused`."""
        if self.end is None:
            return True
        guess = self.estimates.seconds(job_id, kind, cost)
        now = time.time() if now is None else now
        if guess is None or now + guess * SAFETY + MARGIN_S <= self.end:
            return True
        self.refused.append(job_id)
        return False
