"""Every message this package sends between ranks: the tags, the values on the wire, and each exchange as its
sending side next to its receiving side. Every wait for a message goes through `backoff`.

run_tasks, rank 0 (`Client`) with each worker (`serve`):
- TAG_HELLO: a worker first sends its host name (`host_name()`); rank 0 builds its host map from them;
- TAG_TASK: rank 0 sends `pickle((task, placement))`; `None` means "stop", a `Failure` "stop and raise this";
- TAG_REPLY: the worker answers `pickle(Reply)`;
- TAG_STOP: a stop request (its reason): rank 0 -> every worker once the run is told to stop, or a worker ->
  rank 0 when a signal reaches it while it waits; `stop_message` reads it.
Tasks and replies are pickled here, not by mpi4py, so a payload or result that does not (un)pickle fails its
task instead of killing a rank; the serial mode packs and unpacks them the same way, in one process.

root_first (TAG_START): rank 0 sends each worker `None` (go on) or the `Failure` its start-up raised.
The sleeping collectives (`barrier`, `bcast`, `gather`: TAG_COLLECTIVE, point-to-point on the caller's
communicator): the blocking ones of Open MPI spin a core at 100% while they wait (e.g. while rank 0 writes the
report).

`Failure` is the one way an exception crosses ranks: its class by module and name, its args and its message,
rebuilt as the same class on the other side (an `MpimagerError` naming it if it cannot be). `root_first`,
the end of `run_tasks` and any exception given to `bcast`/`gather` travel so.
"""

from __future__ import annotations

import importlib
import pickle
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from mpimager.errors import Interrupted, JobError, MpimagerError
from mpimager.queue.backoff import recv, wait, wait_for
from mpimager.queue.tasks import Placement, Reply, Task
from mpimager.queue.world import host_name, mpi, world

T = TypeVar("T")

# message tags (high values, away from anything else on the communicator)
TAG_START = 0x6D70  # root_first: rank 0 -> workers: None (go on) or Failure
TAG_HELLO = 0x6D71  # run_tasks: worker -> rank 0: host name
TAG_TASK = 0x6D72   # run_tasks: rank 0 -> worker: pickled (Task, Placement), None (stop) or Failure
TAG_REPLY = 0x6D73  # run_tasks: worker -> rank 0: pickled Reply
TAG_STOP = 0x6D74   # run_tasks: a stop request (its reason, a str): rank 0 -> workers, or a worker -> rank 0
TAG_COLLECTIVE = 0x6D76  # bcast/gather: point-to-point messages on the caller's communicator


class Failure(NamedTuple):
    """An exception as it travels to other ranks: its class by name, its args and its message."""

    module: str
    qualname: str
    args: tuple
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """`exc` made ready to travel (args that do not pickle are replaced by its message)."""
        try:
            args = pickle.loads(pickle.dumps(exc.args))
        except Exception:
            args = (str(exc),)
        return cls(type(exc).__module__, type(exc).__qualname__, args, str(exc))

    def rebuild(self) -> BaseException:
        """The same class with the same args; MpimagerError("Name: message") if it cannot be rebuilt."""
        try:
            found: Any = importlib.import_module(self.module)
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


# ------------------------------------------------------------------------------------ run_tasks: the task


def pack_task(task: Task, placement: Placement) -> bytes:
    """What rank 0 sends for `task` to run at `placement` (the serial mode packs it the same way)."""
    return pickle.dumps((task, placement))


def handle(execute: Callable[[Task, Placement], Any], message: bytes, me: int) -> bytes:
    """Unpickle a task `message`, run it with `execute` on rank `me`, pickle the reply; a (un)pickling problem
    fails the task, not the rank."""
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


def unpack_reply(data: bytes) -> Reply:
    """The `Reply` a worker sent as `data`; a failed reply if it does not unpickle here."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        now = time.time()
        return Reply(None, f"{type(exc).__name__}: result could not be unpickled on rank 0: {exc}",
                     traceback.format_exc(), now, now)


# ------------------------------------------------------------------------ run_tasks: rank 0 and a worker


class Client:
    """Rank 0's side of run_tasks over `comm`; each method names the part of `serve` that answers it."""

    def __init__(self, comm):
        self.comm = comm
        self.sent: set[int] = set()  # leaders a task was sent to and no reply came from yet

    def hosts(self) -> dict[int, str]:
        """{worker rank: host}, from each worker's first message (`serve` sends it on TAG_HELLO)."""
        return dict(recv(self.comm, source, TAG_HELLO) for source in range(1, self.comm.Get_size()))

    def launch(self, task: Task, placement: Placement) -> None:
        """Send `task` to its `placement`'s leader (`serve` runs it and replies on TAG_REPLY)."""
        self.comm.send(pack_task(task, placement), dest=placement.rank, tag=TAG_TASK)
        self.sent.add(placement.rank)

    def next_reply(self, stopping: Callable[[], str | None] = lambda: None) -> tuple[int, Reply] | None:
        """(leader rank, its Reply): the next reply from any worker, or None as soon as `stopping()` gives a
        reason."""
        MPI = mpi()
        status = MPI.Status()
        message = wait(lambda: self.comm.improbe(MPI.ANY_SOURCE, TAG_REPLY, status)
                       or (False if stopping() else None))
        if message is False:
            return None
        source = status.Get_source()
        self.sent.discard(source)
        return source, unpack_reply(message.recv())

    def halt(self, reason: str) -> None:
        """Ask every worker to stop, for `reason` (a worker's `stop_message` reads it)."""
        _tell_workers(self.comm, TAG_STOP, f"{reason} on rank 0" if reason.startswith("SIG") else reason)

    def release(self, failure: Failure | None) -> None:
        """End every worker's `serve`: it returns (`failure` None) or raises `failure` rebuilt."""
        _tell_workers(self.comm, TAG_TASK, failure)


def serve(execute: Callable[[Task, Placement], Any], comm, stop: Callable[[], str | None] | None = None) -> None:
    """A worker's side of run_tasks over `comm`: say where it runs, then `execute` tasks until `Client.release`.

    While it waits, a reason `stop()` gives (a signal this rank received) is sent on to rank 0, once each."""
    comm.send(host_name(), dest=0, tag=TAG_HELLO)
    told: set[str] = set()
    MPI = mpi()

    def poll():
        reason = stop() if stop is not None else None
        if reason and reason not in told:
            told.add(reason)
            comm.send(f"{reason} on rank {comm.Get_rank()}", dest=0, tag=TAG_STOP)
        return comm.improbe(0, TAG_TASK, status)

    while True:
        status = MPI.Status()
        message = wait(poll).recv()
        if message is None:
            return None
        if isinstance(message, Failure):
            raise message.rebuild()
        data = handle(execute, message, comm.Get_rank())
        comm.send(data, dest=0, tag=TAG_REPLY)


def stop_message(comm) -> str | None:
    """A stop request sent to this rank of `comm` (rank 0: by any worker; a worker: by rank 0), received; else
    None. Never waits."""
    if comm is None or comm.Get_size() == 1:
        return None
    source = mpi().ANY_SOURCE if comm.Get_rank() == 0 else 0
    message = comm.improbe(source, TAG_STOP)
    return None if message is None else str(message.recv())


# ------------------------------------------------------------------------------------------- root_first


def announce_start(comm, failure: Failure | None) -> None:
    """Rank 0: tell every worker of `comm` how start-up went (`failure` None: it succeeded)."""
    _tell_workers(comm, TAG_START, failure)


def await_start(comm) -> None:
    """A worker: wait (asleep) for rank 0's `announce_start` on `comm`; raise its failure rebuilt, if any."""
    _, verdict = recv(comm, 0, TAG_START)
    if verdict is not None:
        raise verdict.rebuild()


# ---------------------------------------------------------------------------------- sleeping collectives


def _outgoing(obj):
    return Failure.of(obj) if isinstance(obj, BaseException) else obj


def _incoming(obj):
    return obj.rebuild() if isinstance(obj, Failure) else obj


def barrier(comm=None) -> None:
    """A barrier over `comm` (default: `world()`) that sleeps instead of spinning while it waits."""
    comm = comm or world()
    if comm.Get_size() == 1:
        return
    wait_for(comm.Ibarrier())


def bcast(obj: T, comm, root: int = 0) -> T:
    """`comm.bcast(obj, root)` whose waiting ranks sleep: every rank of `comm` returns `root`'s `obj`. An
    exception travels as a `Failure` (the other ranks get it rebuilt: same class, same args)."""
    if comm.Get_size() == 1:
        return obj
    if comm.Get_rank() == root:
        for r in range(comm.Get_size()):
            if r != root:
                comm.send(_outgoing(obj), dest=r, tag=TAG_COLLECTIVE)
        return obj
    return _incoming(recv(comm, root, TAG_COLLECTIVE)[1])


def gather(obj: T, comm, root: int = 0) -> list[T] | None:
    """`comm.gather(obj, root)` whose root sleeps while it waits: the list of every rank's `obj` on `root`
    (an exception rebuilt from its `Failure`), else None."""
    if comm.Get_rank() != root:
        comm.send(_outgoing(obj), dest=root, tag=TAG_COLLECTIVE)
        return None
    return [obj if r == root else _incoming(recv(comm, r, TAG_COLLECTIVE)[1]) for r in range(comm.Get_size())]
