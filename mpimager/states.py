"""The run's vocabularies, each an Enum whose members are also their strings (journal and JSON stay plain).

- `JobKind`: what a planned job does (`plan`): fixms, wsclean, reduce, mosaic.
- `Status`: how the queue says a task ended (`queue`): ok, failed, skipped (a dependency failed).
- `JobState`: a job as `mpimager status` and the report show it (`rundir.status`).
- `RunState`: a run directory's current run (`rundir.status`).
- `Retry`: what the runner does after a failed attempt (`runtime.runner`).
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """An Enum member that is its value: `==`, f-strings, `json.dumps` and sorting see the plain string."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


class JobKind(StrEnum):
    FIXMS = "fixms"
    WSCLEAN = "wsclean"
    REDUCE = "reduce"
    MOSAIC = "mosaic"


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"  # stopped because the run was told to stop (a signal, a full journal)


class JobState(StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    PENDING = "pending"


class RunState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    DIED = "died"
    STOPPED = "stopped"  # interrupted, or stopped before the Slurm allocation's end: a re-run resumes
    NONE = "no plan"


class Retry(StrEnum):
    SAME = "same command"
    LOWER_GAINS = "gain and mgain halved"
    NONE = "no retry"
