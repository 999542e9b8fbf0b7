"""Sizing that fits the allocation: jobs at once per host, and `mpimager sbatch` from the partition's node size.

- `[worker] max_concurrent` unset: every worker rank on a host runs a job; set below the ranks: a warning at
  start-up names the idle ranks.
- `mpimager sbatch`: CPUs and memory per node from the partition (sinfo on the real local Slurm) or from
  --cpus-per-node/--mem-per-node, else a one-line refusal; memory per node covers the jobs' -abs-mem/-mem x
  tasks; more than a node has is refused, a --mem below it is a warning.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, small_config, snapshot

from mpimager.planner import sbatch as slurm
from mpimager.planner.jobs import Job
from mpimager.rundir.journal import read_records

GIB = 1024 ** 3


def wsclean_job(i: int, *extra: str) -> Job:
    argv = ("wsclean", "-size", "1024", "1024", "-channels-out", "4", *extra, "-name", f"/o/b{i}", "x.ms")
    return Job(id=f"wsclean:b{i}", kind="wsclean", ms=("x.ms",), argv=argv, cost=10, pols=("I",))


NODE_256 = slurm.NodeResources(cpus=64, mem_bytes=256 * GIB, source="partition work (sinfo)")


@pytest.mark.pure
def test_memory_per_node_covers_abs_mem_times_tasks():
    jobs = [wsclean_job(i, "-abs-mem", "100") for i in range(4)]
    assert slurm.memory_per_node(jobs, 2) == "201G"  # 2 x 100 GiB + 1 GiB (was 84G: two image floors)
    assert slurm.size_from_plan(jobs, 2, 8)["mem"] == "201G"


@pytest.mark.pure
def test_without_max_concurrent_the_tasks_are_what_a_node_holds_and_share_its_cpus():
    jobs = [wsclean_job(i, "-abs-mem", "100") for i in range(36)]
    values = slurm.size_from_plan(jobs, None, None, node=NODE_256)
    assert values["ntasks-per-node"] == "2" and values["cpus-per-task"] == "32" and values["mem"] == "201G"
    mem90 = [wsclean_job(i, "-mem", "90") for i in range(36)]  # each may take 90 % of the node: one at a time
    assert slurm.size_from_plan(mem90, None, None, node=NODE_256)["ntasks-per-node"] == "1"
    askap = [wsclean_job(i, "-mem", "90", "-abs-mem", "100") for i in range(36)]  # WSClean takes the smaller
    assert slurm.size_from_plan(askap, None, None, node=NODE_256)["ntasks-per-node"] == "2"


@pytest.mark.pure
def test_more_memory_than_a_node_has_is_refused_naming_the_job_and_the_partition():
    jobs = [wsclean_job(i, "-abs-mem", "100") for i in range(4)]
    small = slurm.NodeResources(cpus=16, mem_bytes=84 * GIB, source="partition small (sinfo)")
    with pytest.raises(slurm.SizingError, match=r"^2 jobs at once of wsclean:b0 \(abs-mem 100\) need 201G per node, "
                                                r"more than the 84G of a node of partition small \(sinfo\)"):
        slurm.size_from_plan(jobs, 2, 8, node=small)
    with pytest.raises(slurm.SizingError, match=r"one job needs 101G .* more than the 84G"):
        slurm.size_from_plan(jobs, None, None, node=small)


@pytest.mark.pure
def test_a_mem_below_what_the_jobs_may_use_is_a_warning():
    jobs = [wsclean_job(i, "-abs-mem", "100") for i in range(4)]
    (warning,) = slurm.check_memory(jobs, 2, "84G", NODE_256)
    assert warning.startswith("--mem=84G is less than the 201G that 2 jobs at once of wsclean:b0 (abs-mem 100)")
    assert slurm.check_memory(jobs, 2, "250G", NODE_256) == [] and slurm.check_memory(jobs, 2, "0", None) == []


@pytest.mark.pure
def test_without_a_node_size_the_sizing_says_what_to_give():
    with pytest.raises(slurm.SizingError, match="give --cpus-per-node and --mem-per-node"):
        slurm.size_from_plan([wsclean_job(0)], None, 4)
    with pytest.raises(slurm.SizingError, match="give --cpus-per-task, or --cpus-per-node"):
        slurm.size_from_plan([wsclean_job(0)], 2, None)


# ---------------------------------------------------------------------------------------------------------
# the command

def config(tmp_path, worker: str = "", options: str = ""):
    return small_config(tmp_path / "c.toml", worker, options + "\n[reduce]\nenabled = false")


def test_sbatch_without_a_node_size_is_refused_in_one_line_and_writes_nothing(tmp_path, tiny_ms_dir):
    c = config(tmp_path)
    before = snapshot(tmp_path, tiny_ms_dir)
    r = run_cli("sbatch", c, tiny_ms_dir, "--output", tmp_path / "job.sbatch", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("mpimager: error: cannot read the CPUs and memory of a node (sinfo -h -N -o %P|%c|%m: ")
    assert line.endswith("give --cpus-per-node and --mem-per-node, or --partition of a cluster sinfo can reach")
    assert snapshot(tmp_path, tiny_ms_dir) == before


def test_sbatch_refuses_two_abs_mem_100_jobs_on_an_84g_node(tmp_path, tiny_ms_dir):
    c = config(tmp_path, "[worker]\nmax_concurrent = 2", "abs-mem = 100")
    r = run_cli("sbatch", c, tiny_ms_dir, "--cpus-per-node", "16", "--mem-per-node", "84G", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == ("mpimager: error: 2 jobs at once of wsclean:obs0 (abs-mem 100) need 201G per node, "
                                "more than the 84G of a node of --cpus-per-node/--mem-per-node: lower [worker] "
                                "max_concurrent, abs-mem or mem")


def test_sbatch_warns_when_mem_is_below_abs_mem_times_tasks(tmp_path, tiny_ms_dir):
    c = config(tmp_path, "[worker]\nmax_concurrent = 2", "abs-mem = 100")
    r = run_cli("sbatch", c, tiny_ms_dir, "--cpus-per-node", "16", "--mem-per-node", "256G", "--mem", "84G",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --mem=84G" in r.stdout and "#SBATCH --cpus-per-task=8" in r.stdout
    assert "mpimager sbatch: warning: --mem=84G is less than the 201G that 2 jobs at once of wsclean:obs0 " \
           "(abs-mem 100) may use" in r.stderr


@pytest.mark.slurm
def test_sbatch_takes_cpus_and_memory_per_node_from_the_partition(slurm_cluster, tmp_path, tiny_ms_dir):
    """The local cluster's node: CPUs=8, RealMemory=8000 (MB). Three small jobs, no max_concurrent: three tasks
    (the node's memory holds six), 8 // 3 = 2 CPUs each."""
    c = config(tmp_path)
    r = run_cli("sbatch", c, tiny_ms_dir, "--partition", slurm_cluster.partition, cwd=tmp_path, env=slurm_cluster.env)
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --ntasks-per-node=3" in r.stdout and "#SBATCH --cpus-per-task=2" in r.stdout
    c = config(tmp_path, options="abs-mem = 7")  # 7 GiB + 1 GiB > 7.8 GiB of the node
    r = run_cli("sbatch", c, tiny_ms_dir, cwd=tmp_path, env=slurm_cluster.env)  # the default partition
    assert r.returncode == 2
    assert r.stderr.strip() == ("mpimager: error: one job needs 8G (wsclean:obs0 (abs-mem 7)), more than the 7G of "
                                f"a node of partition {slurm_cluster.partition} (sinfo)")


# ---------------------------------------------------------------------------------------------------------
# jobs at once per host, under mpirun


def concurrency(run_dir) -> int:
    """The most WSClean jobs that ran at the same time, from the journal's start/end times."""
    ends = [r for r in read_records(run_dir) if r["event"] == "end" and r["job"].startswith("wsclean:")]
    edges = sorted([(r["start"], 1) for r in ends] + [(r["end"], -1) for r in ends])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_every_worker_rank_runs_a_job_when_max_concurrent_is_unset(tmp_path, tiny_ms_dir):
    c = config(tmp_path)
    r = run_cli(c, tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms", "--run-dir", tmp_path / "run", mpi=3)
    assert r.returncode == 0, r.stderr
    assert "stay idle" not in r.stdout + r.stderr
    assert {rec["rank"] for rec in read_records(tmp_path / "run") if rec["event"] == "end"} == {1, 2}
    assert concurrency(tmp_path / "run") == 2
    plan = next(rec for rec in read_records(tmp_path / "run") if rec["event"] == "plan")
    argv = plan["jobs"][0]["argv"]
    assert argv[argv.index("-j") + 1] == "1"  # 2 cores shared by the 2 jobs at once


def test_max_concurrent_below_the_worker_ranks_warns_naming_the_idle_ranks(tmp_path, tiny_ms_dir):
    c = config(tmp_path, "[worker]\nmax_concurrent = 1")
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run", mpi=4)
    assert r.returncode == 0, r.stderr
    assert "[worker] max_concurrent = 1: ranks 2, 3 of the 3 worker ranks on " in r.stdout  # the console log
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())
