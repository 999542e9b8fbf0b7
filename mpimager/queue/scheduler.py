"""The pure scheduler: which ready task goes to which free worker rank(s), and what that causes. No MPI.

Rules: a task is ready when every dependency succeeded (one that failed or was skipped skips it, and what
waits on it); among ready tasks the largest `cost` goes first; a task with a `host` goes to a rank there (if no
rank runs there: noted once, runs anywhere); at most `max_per_host` slot-bound tasks (per rank of their group)
run on a host at once; a task of `nranks` ranks gets a group on distinct hosts when the free ranks allow (a
note says when they do not), and free ranks are held for it rather than given to smaller tasks behind it.
Every start, end and note is recorded as an `Event`, in order.

The host map {rank: host} is injected (the workers' own `host_name()` replies under MPI, this host serially),
so these rules are tested on any hosts without MPI; nothing here reads the environment.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from mpimager.errors import MpimagerError
from mpimager.queue.tasks import FAILED, INTERRUPTED, OK, SKIPPED, Event, Outcome, Placement, Reply, Task

log = logging.getLogger(__name__)


class Scheduler:
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
        """The events recorded since the last call, in order (and forget them)."""
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
        """Record the `reply` of rank `leader`: free its group, release or give up on the tasks that wait for
        it; return the task's Outcome."""
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
        """Skip every waiting task for `reason` (used only if nothing runs and nothing can be placed: never
        expected)."""
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



def idle_ranks(workers: Mapping[int, str], max_per_host: int | None) -> dict[str, list[int]]:
    """Host -> the worker ranks on it beyond `max_per_host` (ranks that can never run a slot-bound task), for
    `workers` {rank: host}."""
    by_host: dict[str, list[int]] = {}
    for r, h in sorted(workers.items()):
        by_host.setdefault(h, []).append(r)
    return {h: rs[max_per_host:] for h, rs in by_host.items() if max_per_host is not None and len(rs) > max_per_host}


def _warn_idle(workers: Mapping[int, str], max_per_host: int | None) -> None:
    for host, ranks in idle_ranks(workers, max_per_host).items():
        n = len(ranks) + (max_per_host or 0)
        log.warning(
            "[worker] max_concurrent = %d: rank%s %s of the %d worker ranks on %s stay%s idle (remove max_concurrent "
            "to run a job on every worker rank, or start fewer ranks)", max_per_host, "s" * (len(ranks) > 1),
            ", ".join(map(str, ranks)), n, host, "" if len(ranks) > 1 else "s")

