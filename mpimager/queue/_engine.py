"""The private engine: the one queue loop (`drive`) and the collective entry points built on it.

`drive` feeds the scheduler, launches what it assigns and waits for replies. Its three modes differ only in
how a task is launched and how a reply comes back: serially (one rank: every task runs in this process, packed
and unpacked as on the wire, with the same outcomes and events), on rank 0 (a `protocol.Client`) and on a
worker (`protocol.serve`, which needs no loop of its own). `root_first` is the collective start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mpimager.errors import MpimagerError
from mpimager.queue.protocol import Client, Failure, announce_start, await_start, handle, pack_task, serve, unpack_reply
from mpimager.queue.scheduler import Scheduler
from mpimager.queue.tasks import INTERRUPTED, Event, Outcome, Placement, Reply, Task
from mpimager.queue.world import host_name, world

T = TypeVar("T")


def drive(sched: Scheduler, launch: Callable[[Task, Placement], None],
          next_reply: Callable[..., tuple[int, Reply] | None], on_event: Callable[[Event], None] | None,
          stop: Callable[[], str | None] | None = None, halt: Callable[[str], None] | None = None,
          admit: Callable[[Task], bool] | None = None) -> list[Outcome]:
    """The queue loop: start what can start, wait for one reply, repeat. Returns outcomes as they end.

    `sched` decides; `launch(task, placement)` starts a task; `next_reply()` waits for one (leader, Reply);
    `on_event(event)` gets every event in order; `admit` is handed to `Scheduler.assign`.
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
    sched = Scheduler(tasks, {me: host_name()}, max_per_host)
    replies: list[tuple[int, Reply]] = []

    def launch(task, placement):
        replies.append((me, unpack_reply(handle(execute, pack_task(task, placement), me))))

    return drive(sched, launch, lambda *_: replies.pop(), on_event, stop=stop, admit=admit)


def _run_root(tasks, comm, max_per_host, on_event, stop=None, admit=None) -> list[Outcome]:
    """Rank 0: learn the workers' hosts, dispatch, collect; always release the workers before returning."""
    client = Client(comm)
    hosts = client.hosts()
    try:
        sched = Scheduler(tasks, hosts, max_per_host)
    except MpimagerError as exc:
        client.release(Failure.of(exc))
        raise
    try:
        outcomes = drive(sched, client.launch, client.next_reply, on_event, stop=stop, halt=client.halt, admit=admit)
    except Exception as exc:  # a bug or a raising on_event: let running tasks end, then stop every rank alike
        if client.sent:
            client.halt(f"{type(exc).__name__} on rank 0")
        while client.sent:
            got = client.next_reply(lambda: None)
            if got is not None and got[0] in sched.running:
                sched.finish(*got)
        client.release(Failure.of(exc))
        raise
    client.release(None)
    return outcomes


def run_tasks(tasks: Sequence[Task], execute: Callable[[Task, Placement], Any], *, comm=None,
              max_per_host: int | None = None, on_event: Callable[[Event], None] | None = None,
              stop: Callable[[], str | None] | None = None, admit: Callable[[Task], bool] | None = None
              ) -> list[Outcome] | None:
    """Collective: run `tasks` (rank 0's; others may pass []) over the ranks of `comm` (default: world).

    Rank 0 dispatches and returns every task's Outcome in the order they ended; workers call
    `execute(task, placement)` for what they are sent and return None. With a single rank, rank 0 executes
    every task itself. `max_per_host`: at most this many slot-bound tasks run at once on a host (None: no
    limit). `on_event(event)` is called on rank 0 only, for every Event in order. An invalid task list
    (duplicate ids, nranks < 1) or max_per_host < 1 raises MpimagerError on every rank.

    Stopping: on rank 0, once `stop()` gives a reason (or a task comes back interrupted: `Interrupted` raised
    by execute), nothing more starts, every worker gets a TAG_STOP message (`stop_message` reads it) and the
    running tasks' outcomes are awaited; the tasks never started get no outcome. On a worker, a reason its
    `stop()` gives while it waits for a task goes to rank 0. `admit(task)` False (rank 0) keeps a ready task
    from starting; the run then ends when nothing else runs, without an outcome for it."""
    comm = comm or world()
    if comm.Get_size() == 1:
        return _run_serial(list(tasks), execute, comm, max_per_host, on_event, stop, admit)
    if comm.Get_rank() == 0:
        return _run_root(list(tasks), comm, max_per_host, on_event, stop, admit)
    serve(execute, comm, stop)
    return None


def root_first(fn: Callable[[], T], comm=None) -> T | None:
    """Collective start-up over `comm` (default: world): rank 0 runs `fn()`; the others wait (sleeping) for
    its verdict.

    On success rank 0 returns fn()'s result and the other ranks return None (they get their work from
    run_tasks). If fn raises, rank 0 re-raises it and every other rank raises the same class with the same
    message (rebuilt from class name and args), so all ranks leave through the same error handling and
    exit code: no hang, no MPI abort."""
    comm = comm or world()
    if comm.Get_size() == 1:
        return fn()
    if comm.Get_rank() != 0:
        await_start(comm)
        return None
    try:
        result = fn()
    except BaseException as exc:
        announce_start(comm, Failure.of(exc))
        raise
    announce_start(comm, None)
    return result
