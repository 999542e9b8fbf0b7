"""The MPI work queue (mpimager.queue), run for real under mpirun with 1, 3, 4 and 5 ranks.

Each MPI test launches tests/mpi_scripts/queue_driver.py (or root_first_driver.py) with a task list and reads
the JSON that rank 0 prints: outcomes with the worker's start/end times, rank and host, and the events.
Every rank here is on this one host. Placement over several hosts (affinity, max_per_host, groups on distinct
hosts) is tested twice: here without MPI, the queue's loop driven on an injected host map with a virtual clock,
and over the real nodes of the multi-node Slurm cluster (tests/test_multinode_queue.py).
"""

from __future__ import annotations

import heapq
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpimager.errors import MpimagerError
from mpimager.queue import Task
from mpimager.queue._engine import drive
from mpimager.queue.scheduler import Scheduler
from mpimager.queue.tasks import Reply

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "mpi_scripts"
ENV_SH = ROOT / "scripts" / "env.sh"
TIMEOUT = 90  # seconds: a hang fails the test instead of the suite


def mpirun(n, script, *args, mpirun_options=(), timeout=TIMEOUT):
    """Run `mpirun -n N python SCRIPT ARGS` with scripts/env.sh sourced; n=0 means plain python, no mpirun."""
    env = {k: v for k, v in os.environ.items() if k != "SLURMD_NODENAME"}
    command = [sys.executable, str(script), *map(str, args)]
    if n:
        command = ["mpirun", "--oversubscribe", *mpirun_options, "-n", str(n), *command]
    return subprocess.run(["bash", "-c", '. "$0" && exec "$@"', str(ENV_SH), *command], env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_queue(tmp_path, n, tasks, max_per_host=None):
    """Run a task list (dicts with Task fields and a payload) over n ranks; return rank 0's JSON document."""
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    args = [path] + (["--max-per-host", max_per_host] if max_per_host else [])
    proc = mpirun(n, SCRIPTS / "queue_driver.py", *args)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(o["task_id"] for o in result["outcomes"]) == sorted(t["id"] for t in tasks)
    return result


def by_id(result):
    return {o["task_id"]: o for o in result["outcomes"]}


def max_overlap(intervals):
    """Largest number of (start, end) intervals open at once."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    most = now = 0
    for _, step in points:
        now += step
        most = max(most, now)
    return most


# ------------------------------------------------------------------------------------------------ MPI runs

DIAMOND = [
    {"id": "prep", "payload": {"sleep": 0.2}},
    {"id": "left", "deps": ["prep"], "payload": {"sleep": 0.2}},
    {"id": "right", "deps": ["prep"], "payload": {"sleep": 0.1}},
    {"id": "join", "deps": ["left", "right"], "payload": {"sleep": 0.1}},
    {"id": "free1", "payload": {"sleep": 0.1}},
    {"id": "free2", "payload": {"sleep": 0.1}},
]


def test_serial_without_mpirun_runs_every_task_in_this_process(tmp_path):
    result = run_queue(tmp_path, 0, DIAMOND)
    assert result["size"] == 1
    assert {o["status"] for o in result["outcomes"]} == {"ok"}
    assert {o["rank"] for o in result["outcomes"]} == {0}
    assert len({o["value"]["pid"] for o in result["outcomes"]}) == 1


@pytest.mark.parametrize("n", [1, 3, 4])
def test_tasks_start_only_after_their_dependencies_end(tmp_path, n):
    result = run_queue(tmp_path, n, DIAMOND)
    out = by_id(result)
    assert all(o["status"] == "ok" for o in out.values())
    for task in DIAMOND:
        for dep in task.get("deps", []):
            assert out[task["id"]]["start"] >= out[dep]["end"], (task["id"], dep)
    workers = {0} if n == 1 else set(range(1, n))
    assert {o["rank"] for o in out.values()} <= workers  # with workers, the master executes nothing
    # every task's "start" event comes before its "end" event, each exactly once
    kinds = [(e["kind"], e["task_id"]) for e in result["events"] if e["kind"] != "note"]
    for task in DIAMOND:
        assert kinds.count(("start", task["id"])) == kinds.count(("end", task["id"])) == 1
        assert kinds.index(("start", task["id"])) < kinds.index(("end", task["id"]))


@pytest.mark.parametrize("n", [1, 3])
def test_ready_tasks_start_largest_cost_first(tmp_path, n):
    costs = [3, 10, 1, 7, 5, 2]
    tasks = [{"id": f"c{c}", "cost": c, "payload": {"sleep": 0.05}} for c in costs]
    result = run_queue(tmp_path, n, tasks)
    started = [e["task_id"] for e in result["events"] if e["kind"] == "start"]
    assert started == [f"c{c}" for c in sorted(costs, reverse=True)]


@pytest.mark.parametrize("n", [1, 3])
def test_failure_comes_back_with_rank_and_host_and_skips_only_its_dependents(tmp_path, n):
    tasks = [
        {"id": "bad", "cost": 10, "payload": {"fail": "boom in /data/a.ms"}},
        {"id": "after_bad", "deps": ["bad"]},
        {"id": "after_after", "deps": ["after_bad"]},
        {"id": "pickle", "payload": {"result": "unpicklable"}},
        *({"id": f"ok{i}", "payload": {"sleep": 0.1}} for i in range(5)),
    ]
    out = by_id(run_queue(tmp_path, n, tasks))
    bad = out["bad"]
    assert bad["status"] == "failed" and bad["error"] == "ValueError: boom in /data/a.ms"
    assert "boom in /data/a.ms" in bad["traceback"]
    assert bad["rank"] in ({0} if n == 1 else {1, 2})
    assert bad["host"] == socket.gethostname()
    assert out["after_bad"]["status"] == "skipped" and "'bad' failed" in out["after_bad"]["error"]
    assert out["after_after"]["status"] == "skipped" and "'after_bad' skipped" in out["after_after"]["error"]
    assert out["pickle"]["status"] == "failed" and "cannot be pickled" in out["pickle"]["error"]
    assert all(out[f"ok{i}"]["status"] == "ok" for i in range(5))
    # the rank whose task failed lives on: it ran a later task
    assert any(o["rank"] == bad["rank"] and o["start"] >= bad["end"] and o["status"] == "ok" for o in out.values())


def test_idle_master_and_idle_workers_sleep_instead_of_spinning(tmp_path):
    # 3 ranks, one 3-second task: the master waits 3 s for it and one worker has nothing to do at all
    result = run_queue(tmp_path, 3, [{"id": "long", "payload": {"sleep": 3.0}}])
    (long,) = result["outcomes"]
    assert long["end"] - long["start"] >= 3.0
    idle = 3 - long["rank"]  # the worker that got no task
    assert result["cpu"][0] < 0.5, result["cpu"]
    assert result["cpu"][idle] < 0.5, result["cpu"]


# ------------------------------------------------------------------------------------------- start-up (root_first)


def rank_reports(outdir):
    return sorted((json.loads(p.read_text()) for p in outdir.glob("rank*.json")), key=lambda d: d["rank"])


def test_root_first_gives_rank0_the_plan_and_workers_none_then_the_queue_runs(tmp_path):
    proc = mpirun(3, SCRIPTS / "root_first_driver.py", "ok", tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = rank_reports(tmp_path)
    assert [d["rank"] for d in lines] == [0, 1, 2]
    assert lines[0]["plan"] == {"tasks": ["a", "b", "c"]} and lines[0]["ran"] == {"a": "ok", "b": "ok", "c": "ok"}
    assert lines[1]["plan"] is None and lines[2]["plan"] is None


def test_root_first_bad_input_ends_every_rank_with_exit_2_and_one_message(tmp_path):
    began = time.monotonic()
    proc = mpirun(3, SCRIPTS / "root_first_driver.py", "bad", tmp_path)
    elapsed = time.monotonic() - began
    assert proc.returncode == 2, proc.stderr
    message = "mpimager: error: /data/run.toml: [wsclean] niter must be an integer, not 'many'"
    assert proc.stderr.count(message) == 1
    assert "Traceback" not in proc.stderr and "MPI_ABORT" not in proc.stderr
    assert elapsed < 20  # start-up (~1 s) + the plan (1 s) + everyone leaving; never a hang


@pytest.mark.parametrize("mode, code, error", [
    ("bad", 2, "ConfigError: /data/run.toml: [wsclean] niter must be an integer, not 'many'"),
    ("bug", 3, "KeyError: 'spw'"),
    ("dupes", 1, "MpimagerError: duplicate task id(s) in the task list: 'a'"),
])
def test_every_rank_raises_the_same_error_class_and_message(tmp_path, mode, code, error):
    # Open MPI kills the other ranks once one exits non-zero; turned off here so every rank can report
    proc = mpirun(3, SCRIPTS / "root_first_driver.py", mode, tmp_path,
                  mpirun_options=("--mca", "orte_abort_on_non_zero_status", "0"))
    lines = rank_reports(tmp_path)
    assert [(d["rank"], d["exit"], d["error"]) for d in lines] == [(r, code, error) for r in range(3)], proc.stderr


# ------------------------------------------------------------------------------- the scheduler's pure logic


def drain(sched):
    """Assign, then finish the running tasks one by one (ok) until nothing is left; return start order."""
    order = []
    while not sched.done:
        started = sched.assign()
        order += [(t.id, p.ranks) for t, p in started]
        leader = min(sched.running)
        sched.finish(leader, Reply(None, None, "", 0.0, 0.0))
    return order


def test_scheduler_non_slot_bound_tasks_ignore_max_per_host():
    sched = Scheduler([Task("fix", None, slot_bound=False), Task("fix2", None, slot_bound=False),
                        Task("img", None), Task("img2", None)], {1: "h", 2: "h", 3: "h"}, max_per_host=1)
    started = [t.id for t, _ in sched.assign()]
    assert started == ["fix", "fix2", "img"]  # img2 waits: host h already runs one slot-bound task


def test_scheduler_group_shares_a_host_when_no_distinct_one_is_free_and_says_so():
    sched = Scheduler([Task("g", None, nranks=2)], {1: "hA", 2: "hA", 3: "hB"}, None)
    sched.free.discard(3)  # hB busy
    ((_task, placement),) = sched.assign()
    assert placement.hosts == ("hA", "hA")
    assert any(e.kind == "note" and "share hosts hA, hA" in e.message for e in sched.pop_events())


def test_scheduler_group_larger_than_the_workers_runs_on_all_of_them_with_a_note():
    sched = Scheduler([Task("g", None, nranks=8)], {1: "hA", 2: "hB"}, None)
    ((_task, placement),) = sched.assign()
    assert placement.ranks == (1, 2)
    assert any("asks for 8 ranks; only 2 can be given" in e.message for e in sched.pop_events())


def test_scheduler_waiting_group_keeps_free_ranks_from_smaller_tasks():
    # ranks 1 and 2 free, rank 3 busy; the big group task needs 3 ranks, so the small one must not take 1 or 2
    sched = Scheduler([Task("big", None, nranks=3, cost=9), Task("small", None, cost=1)],
                       {1: "h1", 2: "h2", 3: "h3"}, None)
    sched.free.discard(3)
    assert sched.assign() == []
    sched.free.add(3)
    assert [(t.id, p.ranks) for t, p in sched.assign()] == [("big", (1, 2, 3))]


def test_scheduler_skips_unknown_dependencies_and_cycles_at_once():
    sched = Scheduler([Task("a", None, deps=("nope",)), Task("b", None, deps=("a",)),
                        Task("c", None, deps=("d",)), Task("d", None, deps=("c",)), Task("e", None)], {1: "h"}, None)
    skipped = {e.task_id: e.outcome.error for e in sched.pop_events() if e.kind == "end"}
    assert skipped == {"a": "depends on unknown task 'nope'", "b": "dependency 'a' skipped",
                       "c": "its dependencies form a cycle", "d": "its dependencies form a cycle"}
    assert drain(sched) == [("e", (1,))]


def test_scheduler_refuses_duplicate_ids():
    with pytest.raises(MpimagerError, match="duplicate task id"):
        Scheduler([Task("a", None), Task("a", None)], {1: "h"}, None)


def simulate(tasks, workers, max_per_host=None):
    """The queue's own loop (`drive`) over an injected host map {rank: host}, with a virtual clock: a task
    takes its payload's "sleep" seconds. Returns (outcomes by id, events), as the MPI driver reports them."""
    sched = Scheduler([Task(t["id"], t.get("payload", {}), tuple(t.get("deps", ())), t.get("cost", 1.0),
                             t.get("host"), t.get("nranks", 1), t.get("slot_bound", True)) for t in tasks],
                       workers, max_per_host)
    clock, running, events = [0.0], [], []

    def launch(task, placement):
        heapq.heappush(running, (clock[0] + task.payload.get("sleep", 0.1), placement.rank, clock[0], task.id))

    def next_reply():
        end, leader, start, _ = heapq.heappop(running)
        clock[0] = end
        return leader, Reply(None, None, "", start, end)

    outcomes = drive(sched, launch, next_reply, events.append)
    return {o.task_id: o for o in outcomes}, events


def placed(events, task_id):
    """The ranks and hosts of a group task, from its start event (`... with ranks 1,3 on hA,hB`)."""
    (start,) = [e for e in events if e.kind == "start" and e.task_id == task_id]
    ranks, hosts = start.message.split(" with ranks ")[1].split(" on ")
    return [int(r) for r in ranks.split(",")], hosts.split(",")


def test_scheduler_max_per_host_caps_concurrent_slot_bound_tasks_on_each_host():
    workers = {1: "hA", 2: "hA", 3: "hB", 4: "hB"}
    out, _ = simulate([{"id": f"t{i}", "payload": {"sleep": 0.4}} for i in range(6)], workers, max_per_host=1)
    assert {o.status for o in out.values()} == {"ok"}
    assert {o.host for o in out.values()} == {"hA", "hB"}
    for host in ("hA", "hB"):
        assert max_overlap([(o.start, o.end) for o in out.values() if o.host == host]) == 1
    unlimited, _ = simulate([{"id": f"t{i}", "payload": {"sleep": 0.4}} for i in range(6)], workers)
    assert max_overlap([(o.start, o.end) for o in unlimited.values() if o.host == "hA"]) == 2


def test_scheduler_tasks_run_on_their_host_and_a_missing_host_is_noted_once():
    tasks = ([{"id": f"a{i}", "host": "hA", "payload": {"sleep": 0.1}} for i in range(3)]
             + [{"id": f"b{i}", "host": "hB", "payload": {"sleep": 0.1}} for i in range(3)]
             + [{"id": f"x{i}", "host": "node007"} for i in range(2)]
             + [{"id": f"any{i}"} for i in range(2)])
    workers = {1: "hA", 2: "hB", 3: "hB"}
    out, events = simulate(tasks, workers)
    assert {o.status for o in out.values()} == {"ok"}
    for task in tasks:
        if task.get("host") in ("hA", "hB"):
            assert out[task["id"]].host == task["host"] == workers[out[task["id"]].rank]
    notes = [e.message for e in events if e.kind == "note"]
    assert [m for m in notes if "node007" in m] == ["no rank runs on host node007: its tasks run anywhere"]


def test_scheduler_group_tasks_get_ranks_on_distinct_hosts_and_the_others_stay_reserved():
    workers = {1: "hA", 2: "hA", 3: "hB", 4: "hB"}
    tasks = ([{"id": f"g{i}", "nranks": 2, "cost": 5, "payload": {"sleep": 0.5}} for i in range(2)]
             + [{"id": f"s{i}", "payload": {"sleep": 0.3}} for i in range(4)])
    out, events = simulate(tasks, workers)
    assert {o.status for o in out.values()} == {"ok"}
    for gid in ("g0", "g1"):
        ranks, hosts = placed(events, gid)
        assert len(ranks) == 2 and sorted(hosts) == ["hA", "hB"]
        assert ranks[0] == out[gid].rank and [workers[r] for r in ranks] == hosts
        for other in out.values():  # the reserved rank ran nothing while the group ran
            if other.task_id != gid and other.rank == ranks[1]:
                assert other.end <= out[gid].start or other.start >= out[gid].end, (gid, other.task_id)


def test_an_exception_crosses_ranks_as_its_class_and_args_or_an_mpimager_error_naming_it():
    from mpimager.errors import ConfigError
    from mpimager.queue.protocol import Failure

    def travel(exc):
        return pickle.loads(pickle.dumps(Failure.of(exc))).rebuild()

    same = travel(ConfigError("[worker] threads: must be at least 1"))
    assert type(same) is ConfigError and str(same) == "[worker] threads: must be at least 1"

    class Local(Exception):  # not importable by name on another rank
        pass

    lost = travel(Local("gone"))
    assert type(lost) is MpimagerError and str(lost) == f"{Local.__qualname__}: gone"
    odd = travel(ValueError(lambda: None))  # args that do not pickle travel as the message
    assert type(odd) is ValueError and str(odd).startswith("<function")
