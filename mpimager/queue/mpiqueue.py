"""The MPI work queue: rank 0 hands tasks to worker ranks as they become free. Knows nothing of WSClean.

Owns the only `mpi4py` import of the package (imported lazily, so importing this module neither needs nor
initialises MPI). Rank 0 is the master, ranks 1..N-1 are workers; with a single rank (no mpirun) the same
scheduler runs every task in-process, one at a time, with the same outcomes and events.

Public layer: `Task` / `Placement` / `Outcome` / `Event` values, `run_tasks` (collective: the queue),
`root_first` (collective start-up: rank 0 plans, every rank fails alike), `host_name`, and small helpers
(`world`, `rank`, `size`, `barrier`) so that no other module imports mpi4py.

Engine, in three parts:
- `_Scheduler`: pure state, no MPI. Which ready task (dependencies succeeded) goes to which free worker(s):
  largest `cost` first, host affinity, at most `max_per_host` slot-bound tasks per host, groups of `nranks`
  ranks on distinct hosts when the free ranks allow. It records every event in order.
- `_drive`: the one loop that feeds the scheduler, launches what it assigns and waits for replies. The
  master and the serial mode differ only in how a task is launched and how a reply comes back.
- the protocol, as pairs: `_client_*` (rank 0) / `_server_*` (workers). A worker first sends its host name;
  then the master sends `pickle((task, placement))` and the worker replies `pickle(Reply)`; `None` means stop
  and a `_Failure` means "stop and raise this error". Messages are pickled by us, not by mpi4py, so a payload
  or result that does not (un)pickle fails its task instead of killing a rank.

Waiting: Open MPI's blocking receive spins a core (measured here: `comm.recv` held 2.2 s of CPU over a 3 s
wait), which on a node shared with WSClean steals a core. So every wait here (master for replies, workers for
tasks, workers during `root_first`) probes and sleeps with a backoff that grows with the time already waited
(up to `_MAX_SLEEP`): latency stays a small fraction of the wait and an idle rank costs almost no CPU
(measured: 0.01 s of CPU per rank over a 3 s wait). mpi4py.futures waits the same way (probe + backoff).
"""

from __future__ import annotations

import heapq
import importlib
import logging
import os
import pickle
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from mpimager.errors import Interrupted, JobError, MpimagerError
from mpimager.states import Status

T = TypeVar("T")

# message tags of our point-to-point protocol (high values, away from anything else on the communicator)
TAG_START = 0x6D70  # root_first: rank 0 -> workers: None (go on) or _Failure
TAG_HELLO = 0x6D71  # run_tasks: worker -> rank 0: host name
TAG_TASK = 0x6D72   # run_tasks: rank 0 -> worker: (Task, Placement), None (stop) or _Failure
TAG_REPLY = 0x6D73  # run_tasks: worker -> rank 0: Reply
TAG_STOP = 0x6D74   # run_tasks: a stop request (its reason, a str): rank 0 -> workers, or a worker -> rank 0

_MAX_SLEEP = 0.05   # longest sleep between two probes, seconds
_SLEEP_FRACTION = 0.125  # a sleep is at most this fraction of the time waited so far
_YIELD_FOR = 1e-4   # for the first 0.1 ms of a wait, poll again at once (a quick reply is common)

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


# ---------------------------------------------------------------------------------------------- MPI helpers


#: variables an MPI launcher sets in each rank's environment (Open MPI, PMIx/srun, MPICH/Intel hydra, MVAPICH)
_LAUNCH_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD", "MV2_COMM_WORLD_SIZE",
                   "MPI_LOCALNRANKS")


class SelfComm:
    """The communicator of a process no MPI launcher started: one rank, and MPI never initialised
    (which costs 0.4 s and more), so a plain `mpimager ...` runs serially at once."""

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def bcast(self, obj, root=0):
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def Barrier(self) -> None:
        pass


def launched() -> bool:
    """Was this process started by an MPI launcher (mpirun, mpiexec, srun with PMI/PMIx)?"""
    return any(k in os.environ for k in _LAUNCH_MARKERS)


def world():
    """MPI.COMM_WORLD (initialised on first use) under an MPI launcher, else a SelfComm."""
    if not launched():
        return SelfComm()
    from mpi4py import MPI

    return MPI.COMM_WORLD


def library_version() -> str:
    """mpi4py's version and the MPI library's version line (provenance). A process no launcher started
    does not initialise MPI for it (MPI allows asking before MPI_Init)."""
    import mpi4py

    if not launched() and "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.initialize = False
    from mpi4py import MPI

    return f"mpi4py {mpi4py.__version__}; {MPI.Get_library_version().splitlines()[0].strip()}"


def abort_if_parallel(code: int) -> None:
    """End every rank at once when this process fails with a bug (not a planned error) among several:
    the others would otherwise wait for it until the job's time limit."""
    if launched() and "mpi4py.MPI" in sys.modules:
        from mpi4py import MPI

        if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
            MPI.COMM_WORLD.Abort(code)


def ranks_on_node(comm) -> int:
    """How many ranks of `comm` share this node (1 for None or a SelfComm)."""
    if comm is None or comm.Get_size() == 1:
        return 1
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_size()
    finally:
        local.Free()


def rank(comm=None) -> int:
    return (comm or world()).Get_rank()


def size(comm=None) -> int:
    return (comm or world()).Get_size()


def host_name() -> str:
    """This rank's host: Slurm's name for the node inside a Slurm job step (SLURMD_NODENAME: the name that
    `srun --nodelist` takes), else MPI's processor name (the host name; `socket.gethostname()` without MPI)."""
    if os.environ.get("SLURMD_NODENAME"):
        return os.environ["SLURMD_NODENAME"]
    if not launched():
        import socket

        return socket.gethostname()
    from mpi4py import MPI

    return MPI.Get_processor_name()


def _wait(poll: Callable[[], Any]) -> Any:
    """Call poll() until it returns something other than None, sleeping more the longer it takes.

    A sleep is never less than the kernel's timer slack (about 60 us here), so the first 0.1 ms polls without
    sleeping: a worker's next task or a trivial task's reply is often that close (the bench shows it)."""
    began = time.monotonic()
    while True:
        got = poll()
        if got is not None:
            return got
        waited = time.monotonic() - began
        time.sleep(0 if waited < _YIELD_FOR else min(_MAX_SLEEP, _SLEEP_FRACTION * waited))


def _recv(comm, source: int, tag: int) -> tuple[int, Any]:
    """Wait (without spinning) for a message; return (source rank, the object sent)."""
    from mpi4py import MPI

    status = MPI.Status()
    message = _wait(lambda: comm.improbe(source, tag, status))
    return status.Get_source(), message.recv()


def barrier(comm=None) -> None:
    """A barrier that sleeps instead of spinning while it waits."""
    comm = comm or world()
    if comm.Get_size() == 1:
        return
    request = comm.Ibarrier()
    _wait(lambda: True if request.Test() else None)


TAG_COLLECTIVE = 0x6D76  # bcast/gather below: point-to-point messages on the caller's communicator


def bcast(obj: T, comm, root: int = 0) -> T:
    """`comm.bcast` whose waiting ranks sleep (Open MPI's blocking collectives spin a core at 100%, e.g. while
    rank 0 writes the report); the same back-off as every other wait here."""
    if comm.Get_size() == 1:
        return obj
    if comm.Get_rank() == root:
        for r in range(comm.Get_size()):
            if r != root:
                comm.send(obj, dest=r, tag=TAG_COLLECTIVE)
        return obj
    return _recv(comm, root, TAG_COLLECTIVE)[1]


def gather(obj: T, comm, root: int = 0) -> list[T] | None:
    """`comm.gather` whose root sleeps while it waits: the list of every rank's `obj` on `root`, else None."""
    if comm.Get_rank() != root:
        comm.send(obj, dest=root, tag=TAG_COLLECTIVE)
        return None
    return [obj if r == root else _recv(comm, r, TAG_COLLECTIVE)[1] for r in range(comm.Get_size())]


class _Failure(NamedTuple):
    """An exception as it travels to other ranks: its class by name, its args and its message."""

    module: str
    qualname: str
    args: tuple
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        try:
            args = pickle.loads(pickle.dumps(exc.args))
        except Exception:
            args = (str(exc),)
        return cls(type(exc).__module__, type(exc).__qualname__, args, str(exc))

    def rebuild(self) -> BaseException:
        """The same class with the same args; MpimagerError("Name: message") if it cannot be rebuilt."""
        try:
            found = importlib.import_module(self.module)
            for part in self.qualname.split("."):
                found = getattr(found, part)
            if isinstance(found, type) and issubclass(found, BaseException):
                return found(*self.args)
        except Exception:
            pass
        return MpimagerError(f"{self.qualname}: {self.message}")


def _tell_workers(comm, tag: int, message) -> None:
    for worker in range(1, comm.Get_size()):
        comm.send(message, dest=worker, tag=tag)


def root_first(fn: Callable[[], T], comm=None) -> T | None:
    """Collective start-up: rank 0 runs fn(); the others wait (sleeping) for its verdict.

    On success rank 0 returns fn()'s result and the other ranks return None (they get their work from
    run_tasks). If fn raises, rank 0 re-raises it and every other rank raises the same class with the same
    message (rebuilt from class name and args), so all ranks leave through the same error handling and
    exit code: no hang, no MPI abort."""
    comm = comm or world()
    if comm.Get_size() == 1:
        return fn()
    if comm.Get_rank() != 0:
        _, verdict = _recv(comm, 0, TAG_START)
        if verdict is not None:
            raise verdict.rebuild()
        return None
    try:
        result = fn()
    except BaseException as exc:
        _tell_workers(comm, TAG_START, _Failure.of(exc))
        raise
    _tell_workers(comm, TAG_START, None)
    return result


# ------------------------------------------------------------------------------------------------ scheduler


class _Scheduler:
    """Pure dispatch state over workers {rank: host}; records the events it causes in `self.events`.

    The host map is given (the workers' own `host_name()` replies under MPI, this host serially), so the
    placement rules are tested on any hosts without MPI; nothing here reads the environment.

    Ready tasks (every dependency succeeded) wait in heaps keyed (-cost, input order), one heap per kind of
    placement need (host, nranks, slot_bound): once a need cannot be met in a round of `assign`, no later
    task with the same need can be either (a round only uses up ranks), so each event costs
    O(kinds + started tasks) rather than a scan of every waiting task."""

    def __init__(self, tasks: Sequence[Task], workers: Mapping[int, str], max_per_host: int | None):
        ids = [t.id for t in tasks]
        dupes = sorted(i for i, c in Counter(ids).items() if c > 1)
        if dupes:
            raise MpimagerError(f"duplicate task id(s) in the task list: {', '.join(map(repr, dupes))}")
        bad = [t.id for t in tasks if t.nranks < 1]
        if bad:
            raise MpimagerError(f"task(s) {', '.join(map(repr, bad))}: nranks must be at least 1")
        if max_per_host is not None and max_per_host < 1:
            raise MpimagerError(f"max_per_host must be at least 1 (or None for no limit), not {max_per_host}")
        self.tasks = {t.id: t for t in tasks}
        self.order = {t.id: i for i, t in enumerate(tasks)}
        self.workers = dict(workers)
        self.max_per_host = max_per_host
        per_host = Counter(self.workers.values())
        self.hosts = set(per_host)
        self.most_ranks = sum(per_host.values())  # ranks a group can ever get; slot-bound: within the limit
        self.most_slot_ranks = self.most_ranks if max_per_host is None else \
            sum(min(c, max_per_host) for c in per_host.values())
        _warn_idle(self.workers, max_per_host)
        self.free = set(self.workers)
        self.load: Counter[str] = Counter()        # host -> ranks busy with slot-bound tasks
        self.running: dict[int, tuple[Task, Placement]] = {}  # leader rank -> its task and group
        self.waiting = dict.fromkeys(ids)          # not started, not given up; in input order
        self.status: dict[str, str] = {}           # finished task id -> ok | failed | skipped
        self.events: list[Event] = []
        self.ready: dict[tuple, list[tuple[float, int, str]]] = {}
        self.dependents: dict[str, list[str]] = {}
        self.unmet: dict[str, int] = {}            # waiting task -> dependencies not yet ok
        self._noted: set[str] = set()
        self.deferred: list[str] = []              # ready tasks `admit` kept from starting
        for t in tasks:
            self.unmet[t.id] = len(set(t.deps))
            for d in dict.fromkeys(t.deps):
                self.dependents.setdefault(d, []).append(t.id)
        for t in tasks:
            unknown = [d for d in t.deps if d not in self.tasks]
            if unknown and t.id in self.waiting:
                self._skip(t.id, f"depends on unknown task {unknown[0]!r}")
                self._skip_dependents(t.id)
        self._skip_cycles()
        for task_id in self.waiting:
            if self.unmet[task_id] == 0:
                self._make_ready(task_id)

    @property
    def done(self) -> bool:
        return not self.waiting and not self.running

    def pop_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    # --- what runs next

    def assign(self, admit: Callable[[Task], bool] | None = None) -> list[tuple[Task, Placement]]:
        """Start every ready task that can be placed now, largest cost first; return them with placements.

        `admit(task)` False keeps a ready task from starting (it stays waiting: `deferred`)."""
        held: set[int] = set()  # free ranks kept for a larger group task still waiting for ranks (held <= free)
        unmet_needs: set[tuple] = set()
        started = []
        while len(self.free) > len(held):
            heads = [(heap[0], need) for need, heap in self.ready.items() if need not in unmet_needs]
            if not heads:
                break
            (_, _, task_id), need = min(heads)
            task = self.tasks[task_id]
            if admit is not None and not admit(task):
                heapq.heappop(self.ready[need])
                if not self.ready[need]:
                    del self.ready[need]
                self.deferred.append(task_id)
                continue
            group = self._place(task, held)
            if group is None:
                unmet_needs.add(need)
                if task.nranks > 1:
                    held.update(self._usable(task, held)[: task.nranks])
                continue
            heapq.heappop(self.ready[need])
            if not self.ready[need]:
                del self.ready[need]
            started.append((task, self._start(task, group)))
        return started

    def _make_ready(self, task_id: str) -> None:
        t = self.tasks[task_id]
        heapq.heappush(self.ready.setdefault((t.host, t.nranks, t.slot_bound), []),
                       (-t.cost, self.order[task_id], task_id))

    def _usable(self, task: Task, held: set[int], extra: Counter | None = None) -> list[int]:
        """Free, unheld ranks on hosts with room for this task (max_per_host), lowest rank first."""
        extra = extra or Counter()

        def room(r):
            h = self.workers[r]
            return (not task.slot_bound or self.max_per_host is None
                    or self.load[h] + extra[h] < self.max_per_host)

        return [r for r in sorted(self.free - held) if room(r)]

    def _place(self, task: Task, held: set[int]) -> list[int] | None:
        want = self._wanted_host(task)
        n = self._group_size(task)
        leaders = [r for r in self._usable(task, held) if want is None or self.workers[r] == want]
        if not leaders:
            return None
        group = [min(leaders, key=lambda r: (self.load[self.workers[r]], r))]
        used = Counter([self.workers[group[0]]])
        while len(group) < n:
            others = [r for r in self._usable(task, held, used) if r not in group]
            if not others:
                return None
            pick = min(others, key=lambda r: (self.workers[r] in used,
                                              self.load[self.workers[r]] + used[self.workers[r]], r))
            group.append(pick)
            used[self.workers[pick]] += 1
        if len(used) < len(group):
            self._note(task.id, f"task {task.id}: not enough free ranks on distinct hosts; "
                                f"its {len(group)} ranks share hosts {', '.join(self.workers[r] for r in group)}")
        return group

    def _wanted_host(self, task: Task) -> str | None:
        if task.host is None or task.host in self.hosts:
            return task.host
        if task.host not in self._noted:
            self._noted.add(task.host)
            self._note(task.id, f"no rank runs on host {task.host}: its tasks run anywhere")
        return None

    def _group_size(self, task: Task) -> int:
        """nranks, cut to what the workers could ever give (all of them; slot-bound: within max_per_host)."""
        most = self.most_slot_ranks if task.slot_bound else self.most_ranks
        if task.nranks > most and f"size:{task.id}" not in self._noted:
            self._noted.add(f"size:{task.id}")
            self._note(task.id, f"task {task.id} asks for {task.nranks} ranks; only {most} can be given: "
                                f"runs on {most}")
        return min(task.nranks, most)

    def _start(self, task: Task, group: list[int]) -> Placement:
        hosts = tuple(self.workers[r] for r in group)
        placement = Placement(group[0], hosts[0], tuple(group), hosts)
        self.free.difference_update(group)
        if task.slot_bound:
            self.load.update(hosts)
        self.running[group[0]] = (task, placement)
        del self.waiting[task.id]
        with_group = "" if len(group) == 1 else \
            f" with ranks {','.join(map(str, group))} on {','.join(hosts)}"
        self.events.append(Event("start", task.id, group[0], hosts[0], time.time(), None,
                                 f"task {task.id} started on rank {group[0]} ({hosts[0]}){with_group}"))
        return placement

    # --- what ended

    def finish(self, leader: int, reply: Reply) -> Outcome:
        """Record a leader's reply: free its group, release or give up on the tasks that wait for it."""
        task, placement = self.running.pop(leader)
        self.free.update(placement.ranks)
        if task.slot_bound:
            self.load.subtract(placement.hosts)
        status = OK if reply.error is None else INTERRUPTED if reply.interrupted else FAILED
        outcome = Outcome(task.id, status, reply.value, reply.error, placement.rank, placement.host,
                          reply.start, reply.end, reply.traceback)
        self.status[task.id] = status
        said = "ok" if status == OK else f"failed: {reply.error}"
        self.events.append(Event("end", task.id, placement.rank, placement.host, time.time(), outcome,
                                 f"task {task.id} {said} (rank {placement.rank}, {placement.host}, "
                                 f"{reply.end - reply.start:.3f} s)"))
        if status == OK:
            for d in self.dependents.get(task.id, ()):
                self.unmet[d] -= 1
                if self.unmet[d] == 0 and d in self.waiting:
                    self._make_ready(d)
        elif status == FAILED:
            self._skip_dependents(task.id)
        return outcome

    def give_up(self, reason: str) -> None:
        """Skip every waiting task (used only if nothing runs and nothing can be placed: never expected)."""
        for task_id in list(self.waiting):
            self._skip(task_id, reason)
        self.ready.clear()

    def _note(self, task_id: str | None, message: str) -> None:
        self.events.append(Event("note", task_id, None, None, time.time(), None, message))

    def _skip(self, task_id: str, reason: str) -> None:
        now = time.time()
        outcome = Outcome(task_id, SKIPPED, None, reason, None, None, now, now)
        self.status[task_id] = SKIPPED
        del self.waiting[task_id]
        self.events.append(Event("end", task_id, None, None, now, outcome, f"task {task_id} skipped: {reason}"))

    def _skip_dependents(self, root: str) -> None:
        """Skip what waits, directly or not, on `root` (which failed or was skipped). None of it is ready."""
        queue = [root]
        while queue:
            gone = queue.pop(0)
            for d in self.dependents.get(gone, ()):
                if d in self.waiting:
                    self._skip(d, f"dependency {gone!r} {self.status[gone]}")
                    queue.append(d)

    def _skip_cycles(self) -> None:
        """Skip the waiting tasks that can never become ready because their dependencies loop."""
        unmet = {i: self.unmet[i] for i in self.waiting}
        queue = [i for i, n in unmet.items() if n == 0]
        while queue:
            for d in self.dependents.get(queue.pop(), ()):
                if d in unmet:
                    unmet[d] -= 1
                    if unmet[d] == 0:
                        queue.append(d)
        for task_id in [i for i, n in unmet.items() if n > 0]:
            if task_id in self.waiting:
                self._skip(task_id, "its dependencies form a cycle")


# ----------------------------------------------------------------------------------------------------- loop


def _call(execute: Callable[[Task, Placement], Any], task: Task, placement: Placement) -> Reply:
    """Run one task; any exception (SystemExit too) becomes a failed reply, never a dead rank.

    A `JobError`'s `result` travels with the failure as the Outcome's value (what a failed job still has to
    report: attempts, exit code, logs)."""
    start = time.time()
    try:
        value = execute(task, placement)
    except Interrupted as exc:
        return Reply(None, f"{type(exc).__name__}: {exc}", "", start, time.time(), True)
    except (Exception, SystemExit) as exc:
        value = exc.result if isinstance(exc, JobError) else None
        return Reply(value, f"{type(exc).__name__}: {exc}", traceback.format_exc(), start, time.time())
    return Reply(value, None, "", start, time.time())


def _drive(sched: _Scheduler, launch: Callable[[Task, Placement], None],
           next_reply: Callable[..., tuple[int, Reply] | None], on_event,
           stop: Callable[[], str | None] | None = None, halt: Callable[[str], None] | None = None,
           admit: Callable[[Task], bool] | None = None) -> list[Outcome]:
    """The queue loop: start what can start, wait for one reply, repeat. Returns outcomes as they end.

    Once `stop()` gives a reason (or a task comes back interrupted), nothing more starts, `halt(reason)` is
    called once and the loop waits for the running tasks only; the tasks not started stay without outcome.
    With `stop`, `next_reply(stopping)` may return None as soon as `stopping()` gives a reason."""
    outcomes: list[Outcome] = []
    halted: list[str] = []

    def flush():
        for event in sched.pop_events():
            if event.outcome is not None:
                outcomes.append(event.outcome)
                if event.outcome.status == INTERRUPTED and not halted:
                    halted.append(event.outcome.error or "interrupted")
            if on_event is not None:
                on_event(event)

    def stopping() -> str | None:
        if not halted and stop is not None and (reason := stop()):
            halted.append(reason)
        return halted[0] if halted else None

    flush()
    told = False
    while not sched.done:
        if stopping():
            if not told and halt is not None:
                halt(halted[0])
            told = True
            if not sched.running:
                break
        else:
            started = sched.assign(admit)
            flush()
            for task, placement in started:
                launch(task, placement)
            if not sched.running:
                if not sched.deferred:
                    sched.give_up("no rank can take it")
                    flush()
                break
        got = next_reply() if stop is None else next_reply(stopping if not told else lambda: None)
        if got is not None:
            sched.finish(*got)
            flush()
    return outcomes


def _run_serial(tasks, execute, comm, max_per_host, on_event, stop=None, admit=None) -> list[Outcome]:
    """One rank: the same loop, tasks and results pickled the same way, executed in this process."""
    me = comm.Get_rank()
    sched = _Scheduler(tasks, {me: host_name()}, max_per_host)
    replies: list[tuple[int, Reply]] = []

    def launch(task, placement):
        replies.append((me, _unpack_reply(_server_handle(execute, pickle.dumps((task, placement)), me))))

    return _drive(sched, launch, lambda *_: replies.pop(), on_event, stop=stop, admit=admit)


def _unpack_reply(data: bytes) -> Reply:
    try:
        return pickle.loads(data)
    except Exception as exc:
        now = time.time()
        return Reply(None, f"{type(exc).__name__}: result could not be unpickled on rank 0: {exc}",
                     traceback.format_exc(), now, now)


def idle_ranks(workers: Mapping[int, str], max_per_host: int | None) -> dict[str, list[int]]:
    """Host -> the worker ranks on it beyond `max_per_host` (ranks that can never run a slot-bound task)."""
    by_host: dict[str, list[int]] = {}
    for r, h in sorted(workers.items()):
        by_host.setdefault(h, []).append(r)
    return {h: rs[max_per_host:] for h, rs in by_host.items() if max_per_host is not None and len(rs) > max_per_host}


def _warn_idle(workers: Mapping[int, str], max_per_host: int | None) -> None:
    for host, ranks in idle_ranks(workers, max_per_host).items():
        n = len(ranks) + (max_per_host or 0)
        logging.getLogger(__name__).warning(
            "[worker] max_concurrent = %d: rank%s %s of the %d worker ranks on %s stay%s idle (remove max_concurrent "
            "to run a job on every worker rank, or start fewer ranks)", max_per_host, "s" * (len(ranks) > 1),
            ", ".join(map(str, ranks)), n, host, "" if len(ranks) > 1 else "s")


def _client_exec(tasks, comm, max_per_host, on_event, stop=None, admit=None) -> list[Outcome]:
    """Rank 0: learn the workers' hosts, dispatch, collect; always release the workers before returning."""
    from mpi4py import MPI

    hosts = dict(_recv(comm, source, TAG_HELLO) for source in range(1, comm.Get_size()))
    try:
        sched = _Scheduler(tasks, hosts, max_per_host)
    except MpimagerError as exc:
        _tell_workers(comm, TAG_TASK, _Failure.of(exc))
        raise
    sent: set[int] = set()  # leaders a task was sent to and no reply came from yet

    def launch(task, placement):
        comm.send(pickle.dumps((task, placement)), dest=placement.rank, tag=TAG_TASK)
        sent.add(placement.rank)

    def next_reply(stopping=lambda: None):
        """The next reply, or None as soon as `stopping()` gives a reason."""
        status = MPI.Status()
        message = _wait(lambda: comm.improbe(MPI.ANY_SOURCE, TAG_REPLY, status) or (False if stopping() else None))
        if message is False:
            return None
        source = status.Get_source()
        sent.discard(source)
        return source, _unpack_reply(message.recv())

    def halt(reason):
        _tell_workers(comm, TAG_STOP, f"{reason} on rank 0" if reason.startswith("SIG") else reason)

    try:
        outcomes = _drive(sched, launch, next_reply, on_event, stop=stop, halt=halt, admit=admit)
    except Exception as exc:  # a bug or a raising on_event: let running tasks end, then stop every rank alike
        if sent:
            halt(f"{type(exc).__name__} on rank 0")
        while sent:
            got = next_reply(lambda: None)
            if got is not None and got[0] in sched.running:
                sched.finish(*got)
        _tell_workers(comm, TAG_TASK, _Failure.of(exc))
        raise
    _tell_workers(comm, TAG_TASK, None)
    return outcomes


def stop_message(comm) -> str | None:
    """A stop request sent to this rank (rank 0: by any worker; a worker: by rank 0), received; else None."""
    if comm is None or comm.Get_size() == 1:
        return None
    from mpi4py import MPI

    source = MPI.ANY_SOURCE if comm.Get_rank() == 0 else 0
    message = comm.improbe(source, TAG_STOP)
    return None if message is None else str(message.recv())


def _server_handle(execute, message: bytes, me: int) -> bytes:
    """Unpickle a task, run it, pickle the reply; a (un)pickling problem fails the task, not the rank."""
    start = time.time()
    try:
        task, placement = pickle.loads(message)
    except Exception as exc:
        reply = Reply(None, f"{type(exc).__name__}: task could not be unpickled on rank {me}: {exc}",
                      traceback.format_exc(), start, time.time())
    else:
        reply = _call(execute, task, placement)
    try:
        return pickle.dumps(reply)
    except Exception as exc:
        return pickle.dumps(Reply(None, f"{type(exc).__name__}: result cannot be pickled: {exc}",
                                  traceback.format_exc(), reply.start, reply.end))


def _server_exec(execute, comm, stop=None) -> None:
    """A worker: say where it runs, then execute tasks until told to stop.

    While it waits, a reason `stop()` gives (a signal this rank received) is sent on to rank 0, once each."""
    from mpi4py import MPI

    comm.send(host_name(), dest=0, tag=TAG_HELLO)
    told: set[str] = set()

    def poll():
        reason = stop() if stop is not None else None
        if reason and reason not in told:
            told.add(reason)
            comm.send(f"{reason} on rank {comm.Get_rank()}", dest=0, tag=TAG_STOP)
        return comm.improbe(0, TAG_TASK, status)

    while True:
        status = MPI.Status()
        message = _wait(poll).recv()
        if message is None:
            return None
        if isinstance(message, _Failure):
            raise message.rebuild()
        data = _server_handle(execute, message, comm.Get_rank())
        comm.send(data, dest=0, tag=TAG_REPLY)


def run_tasks(tasks: Sequence[Task], execute: Callable[[Task, Placement], Any], *, comm=None,
              max_per_host: int | None = None, on_event: Callable[[Event], None] | None = None,
              stop: Callable[[], str | None] | None = None, admit: Callable[[Task], bool] | None = None
              ) -> list[Outcome] | None:
    """Collective: run `tasks` (rank 0's; others may pass []) over the ranks of `comm` (default: world).

    Rank 0 dispatches and returns every task's Outcome in the order they ended; workers call
    execute(task, placement) for what they are sent and return None. With a single rank, rank 0 executes
    every task itself. `on_event` is called on rank 0 only. An invalid task list (duplicate ids, nranks < 1)
    or max_per_host < 1 raises MpimagerError on every rank.

    Stopping: on rank 0, once `stop()` gives a reason (or a task comes back interrupted: `Interrupted` raised
    by execute), nothing more starts, every worker gets a TAG_STOP message (`stop_message` reads it) and the
    running tasks' outcomes are awaited; the tasks never started get no outcome. On a worker, a reason its
    `stop()` gives while it waits for a task goes to rank 0. `admit(task)` False (rank 0) keeps a ready task
    from starting; the run then ends when nothing else runs, without an outcome for it."""
    comm = comm or world()
    if comm.Get_size() == 1:
        return _run_serial(list(tasks), execute, comm, max_per_host, on_event, stop, admit)
    if comm.Get_rank() == 0:
        return _client_exec(list(tasks), comm, max_per_host, on_event, stop, admit)
    _server_exec(execute, comm, stop)
    return None
