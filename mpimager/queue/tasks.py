"""The queue's values: what a task is (`Task`), where it runs (`Placement`), what the executing rank answers
(`Reply`), how it ended (`Outcome`) and what rank 0 reports as it goes (`Event`). Frozen, picklable, no MPI.

They sit below both the pure scheduler (which reads a `Reply` and makes the `Outcome`) and the protocol
(which pickles `(Task, Placement)` one way and a `Reply` the other), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from mpimager.states import Status

OK, FAILED, SKIPPED, INTERRUPTED = Status.OK, Status.FAILED, Status.SKIPPED, Status.INTERRUPTED


@dataclass(frozen=True)
class Task:
    """One unit of work. Only rank 0's tasks are read; `payload` travels to the executing rank."""

    id: str
    payload: Any                 # picklable; handed to execute() on the worker
    deps: tuple[str, ...] = ()   # ids that must succeed first; if one does not, this task is "skipped"
    cost: float = 1.0            # estimated cost: among ready tasks, the largest goes first
    host: str | None = None      # run on this host; if no rank runs there: noted once, runs anywhere
    nranks: int = 1              # ranks needed; the leader executes, the others are reserved until it ends
    slot_bound: bool = True      # counts against max_per_host (per rank of its group)


@dataclass(frozen=True)
class Placement:
    """Where a task runs: the executing rank (the group leader) and its whole group, leader first."""

    rank: int
    host: str
    ranks: tuple[int, ...]
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """How a task ended. `error` is "ExcType: message" (failed) or the reason (skipped), else None.

    A skipped task has rank None, host None and start == end == the time it was given up."""

    task_id: str
    status: Status
    value: Any
    error: str | None
    rank: int | None
    host: str | None
    start: float
    end: float
    traceback: str = ""          # the worker's formatted traceback when failed


@dataclass(frozen=True)
class Event:
    """What rank 0 reports, in order: "start" (dispatched), "end" (with the outcome), "note"."""

    kind: str
    task_id: str | None
    rank: int | None
    host: str | None
    time: float
    outcome: Outcome | None
    message: str


class Reply(NamedTuple):
    """A worker's answer for one task: (value, error) plus what the outcome records."""

    value: Any
    error: str | None
    traceback: str
    start: float
    end: float
    interrupted: bool = False  # the task was stopped because the run was told to stop
