"""The MPI work queue over real distinct hosts: ranks started by `srun --mpi=pmix` on the two nodes of the
multi-node test cluster (tests/fixtures.slurm.py), each reporting its own host (n1 or n2).

The queue driver (tests/mpi_scripts/queue_driver.py) runs a task list; rank 0 prints the outcomes as JSON.
Which host each rank runs on is set by SLURM_HOSTFILE (srun --distribution=arbitrary), rank 0 first.
The same rules are also tested without MPI on injected host maps (tests/test_mpiqueue.py)."""

from __future__ import annotations

import json
import sys

import pytest
from test_mpiqueue import DIAMOND, SCRIPTS, by_id, max_overlap

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]


def srun_queue(cluster, where, hosts, tasks, max_per_host=None) -> dict:
    """Run the task list over one rank per entry of `hosts` (rank 0 first); return rank 0's JSON document."""
    (where / "tasks.json").write_text(json.dumps(tasks))
    (where / "hosts").write_text("\n".join(hosts) + "\n")
    argv = ["srun", "--mpi=pmix", "--distribution=arbitrary", f"--ntasks={len(hosts)}", "--overcommit",
            sys.executable, str(SCRIPTS / "queue_driver.py"), str(where / "tasks.json")]
    argv += ["--max-per-host", str(max_per_host)] if max_per_host else []
    proc = cluster.run(argv, cwd=where, timeout=120, env={"SLURM_HOSTFILE": str(where / "hosts")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(o["task_id"] for o in result["outcomes"]) == sorted(t["id"] for t in tasks)
    return result


def test_each_rank_reports_its_own_node_and_dependencies_still_order_tasks(slurm_multinode, multinode_tmp):
    hosts = ["n1", "n1", "n2"]
    result = srun_queue(slurm_multinode, multinode_tmp, hosts, DIAMOND)
    out = by_id(result)
    assert {o["status"] for o in out.values()} == {"ok"}
    for o in out.values():
        assert o["host"] == hosts[o["rank"]] == o["value"]["host"]  # the queue's host is the rank's real node
    for task in DIAMOND:
        for dep in task.get("deps", []):
            assert out[task["id"]]["start"] >= out[dep]["end"]


def test_max_per_host_caps_concurrent_slot_bound_tasks_on_each_real_host(slurm_multinode, multinode_tmp):
    hosts = ["n1", "n1", "n1", "n2", "n2"]  # workers 1, 2 on n1; 3, 4 on n2
    tasks = [{"id": f"t{i}", "payload": {"sleep": 0.4}} for i in range(6)]
    out = srun_queue(slurm_multinode, multinode_tmp, hosts, tasks, max_per_host=1)["outcomes"]
    assert {o["status"] for o in out} == {"ok"}
    assert {o["host"] for o in out} == {"n1", "n2"}
    for host in ("n1", "n2"):
        assert max_overlap([(o["start"], o["end"]) for o in out if o["host"] == host]) == 1


def test_tasks_run_on_their_real_host_and_a_missing_host_is_noted_once(slurm_multinode, multinode_tmp):
    hosts = ["n1", "n1", "n2", "n2"]  # workers: 1 on n1; 2, 3 on n2
    tasks = ([{"id": f"a{i}", "host": "n1", "payload": {"sleep": 0.1}} for i in range(3)]
             + [{"id": f"b{i}", "host": "n2", "payload": {"sleep": 0.1}} for i in range(3)]
             + [{"id": f"x{i}", "host": "node007"} for i in range(2)]
             + [{"id": f"any{i}"} for i in range(2)])
    result = srun_queue(slurm_multinode, multinode_tmp, hosts, tasks)
    out = by_id(result)
    assert {o["status"] for o in out.values()} == {"ok"}
    for task in tasks:
        if task.get("host") in ("n1", "n2"):
            assert out[task["id"]]["host"] == task["host"] == out[task["id"]]["value"]["host"]
    notes = [e["message"] for e in result["events"] if e["kind"] == "note"]
    assert [m for m in notes if "node007" in m] == ["no rank runs on host node007: its tasks run anywhere"]


def test_group_tasks_get_ranks_on_both_nodes_and_the_others_stay_reserved(slurm_multinode, multinode_tmp):
    hosts = ["n1", "n1", "n1", "n2", "n2"]  # workers 1, 2 on n1; 3, 4 on n2
    tasks = ([{"id": f"g{i}", "nranks": 2, "cost": 5, "payload": {"sleep": 0.5}} for i in range(2)]
             + [{"id": f"s{i}", "payload": {"sleep": 0.3}} for i in range(4)])
    out = by_id(srun_queue(slurm_multinode, multinode_tmp, hosts, tasks))
    assert {o["status"] for o in out.values()} == {"ok"}
    for gid in ("g0", "g1"):
        group = out[gid]
        placed = group["value"]
        assert len(placed["ranks"]) == 2 and sorted(placed["hosts"]) == ["n1", "n2"]
        assert placed["ranks"][0] == group["rank"] == placed["rank"]
        assert [hosts[r] for r in placed["ranks"]] == placed["hosts"]
        reserved = placed["ranks"][1]
        for other in out.values():  # the reserved rank ran nothing while the group ran
            if other["task_id"] != gid and other["rank"] == reserved:
                assert other["end"] <= group["start"] or other["start"] >= group["end"], (gid, other["task_id"])
