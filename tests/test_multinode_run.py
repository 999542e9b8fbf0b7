"""mpimager on a real two-node Slurm cluster (tests/fixtures.slurm.py `slurm_multinode`: nodes n1 and n2 with
their own host names and private /tmp and /dev/shm, the rest shared) through the slurm/ templates with
--nodes=2: jobs on the host that holds their data, node-local temp directories, `--nodes-mpi 2` as one
wsclean-mp job step over both nodes, and what ends a multi-node job whose ranks cannot start, fail or hang."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ONE_PASS_NO_GATHER, ROOT, TINY_IMAGING, write_config
from test_nodes_mpi import _serial_twin_equal

from mpimager.rundir.journal import read_records
from mpimager.testing import synth

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

TEMPLATE = ROOT / "slurm" / "mpimager.sbatch"
TEMPLATE_MP = ROOT / "slurm" / "mpimager-nodes-mpi.sbatch"
PYTHON = f"MPIMAGER_PYTHON={sys.executable}"


def starts(run: Path) -> dict[str, str]:
    """job id -> the host its (last) start was on, from the run's journal."""
    return {r["job"]: r["host"] for r in read_records(run) if r["event"] == "start"}


def jobs(run: Path) -> dict[str, dict]:
    return {j["id"]: j for j in json.loads((run / "manifest.json").read_text())["jobs"]}


def end_of(run: Path, job_id: str) -> dict:
    """The journal's end record of a job: status, error ("JobError: ..."), attempts, exit code."""
    (record,) = [r for r in read_records(run) if r["event"] == "end" and r["job"] == job_id]
    return record


def node_sees(cluster, node: str, pattern: str) -> list[str]:
    """What a shell glob matches on `node` (inside its namespaces: its own /tmp, /dev/shm, local disk)."""
    r = cluster.on_node(node, ["bash", "-c", f'shopt -s nullglob; for p in {pattern}; do echo "$p"; done'])
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


IMAGING = "\n" + TINY_IMAGING + """channels-out = 2
join-channels = true
j = 1
""" + ONE_PASS_NO_GATHER + """[fixms]
enabled = false
"""


def test_sbatch_nodes_2_runs_each_job_on_the_node_that_holds_its_data_with_node_local_temp_dirs(
        slurm_multinode, multinode_tmp):
    for node in ("n1", "n2"):
        for i in range(2):
            synth.make_ms(multinode_tmp / "data" / node / f"{node}_{i}.ms", telescope="TEST", seed=i)
    config = write_config(multinode_tmp / "c.toml", IMAGING + """
[worker]
run_on_file_host = true
run_on_file_host_pattern = '/data/(n[12])/'
temp_dir = "/dev/shm"       # node-local: each job's own node
""")
    run = multinode_tmp / "run"

    inputs = sorted(map(str, (multinode_tmp / "data").glob("*/*.ms")))
    job = slurm_multinode.sbatch(TEMPLATE, str(config), *inputs, "--run-dir", str(run),
                                 cwd=multinode_tmp, options=["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1",
                                                             "--mem=1G", f"--export=ALL,{PYTHON}"])

    state = slurm_multinode.wait(job, timeout=300)
    out = (multinode_tmp / f"mpimager-{job}.out").read_text()
    assert state == "COMPLETED", out[-3000:]
    assert "mpimager.sbatch: 3 ranks (1 coordinator + 2 workers) on n[1-2]" in out
    hosts = starts(run)
    assert sorted(hosts) == ["wsclean:n1_0.I", "wsclean:n1_1.I", "wsclean:n2_0.I", "wsclean:n2_1.I"]
    for job_id, host in hosts.items():
        assert job_id.split(":")[1].startswith(host), (job_id, host)  # each job ran where its data is
    for j in jobs(run).values():
        assert j["status"] == "ok"
        assert j["argv"][j["argv"].index("-temp-dir") + 1].startswith("/dev/shm/")
    assert len(list((run / "images").glob("*-MFS-image.fits"))) == 4
    for node in ("n1", "n2"):  # each job's temp dir was made on its node and is gone from it
        assert node_sees(slurm_multinode, node, "/dev/shm/*.I-*") == []


def sbatch_nodes_mpi(cluster, where: Path, config: Path, ms: Path, timeout: float = 300):
    """`sbatch --nodes=2 slurm/mpimager-nodes-mpi.sbatch CONFIG MS` with NODES_MPI=2 and one CPU per worker;
    returns (final Slurm state, the Slurm output, the run directory, seconds from submission to the end)."""
    run = where / "run"
    began = time.monotonic()
    job = cluster.sbatch(TEMPLATE_MP, str(config), str(ms), "--run-dir", str(run), cwd=where,
                         options=["--nodes=2", f"--export=ALL,NODES_MPI=2,CPUS_PER_WORKER=1,{PYTHON}"])
    state = cluster.wait(job, timeout=timeout)
    return state, (where / f"mpimager-{job}.out").read_text(), run, time.monotonic() - began


def nodes_mpi_config(where: Path, wsclean_mp: str, worker: str = "") -> Path:
    return write_config(where / "c.toml", IMAGING + f'[container]\nwsclean_mp = "{wsclean_mp}"\n'
                        + f'[worker]\ntimeout = "120s"\n{worker}\n')


def test_nodes_mpi_2_runs_one_wsclean_mp_step_over_both_nodes_and_matches_serial_wsclean(
        slurm_multinode, multinode_tmp, wsclean_mp):
    ms = multinode_tmp / "obs0.ms"
    synth.make_ms(ms, telescope="TEST")
    config = nodes_mpi_config(multinode_tmp, wsclean_mp)

    state, out, run, _ = sbatch_nodes_mpi(slurm_multinode, multinode_tmp, config, ms)

    assert state == "COMPLETED", out[-3000:]
    assert "3 ranks (1 coordinator + 2 workers) on n[1-2], 1 CPUs per worker, WSClean jobs over 2 nodes" in out
    log = (run / "logs" / "wsclean_obs0.I.log").read_text()
    launch = log.splitlines()[0].split(": ", 2)[2]  # "# mpimager: JOB, attempt 1 of 2: COMMAND"
    assert launch.startswith("srun --overlap --kill-on-bad-exit=1 --cpu-bind=none --ntasks=2 --nodes=2 "
                             f"--nodelist=n1,n2 {sys.executable} -m mpimager.runtime.multinode --temp-dir ")
    assert f" -- {wsclean_mp} -j 1 " in launch
    assert "Node 0, PID" in log and "Node 1, PID" in log
    assert [line.split(" on ")[-1] for line in log.splitlines() if line.startswith("Node 1, PID")] == ["n2"]
    assert "Worker node is done gridding." in log
    (job,) = jobs(run).values()
    _serial_twin_equal(job, ms, multinode_tmp)


def test_nodes_mpi_2_with_a_temp_dir_in_dev_shm_is_refused_before_any_job(slurm_multinode, multinode_tmp,
                                                                           wsclean_mp):
    # the hang seen on a cluster: /dev/shm exists on each node, but wsclean-mp's ranks must share the temp dir
    ms = multinode_tmp / "obs0.ms"
    synth.make_ms(ms, telescope="TEST")
    config = nodes_mpi_config(multinode_tmp, wsclean_mp, 'temp_dir = "/dev/shm"')

    state, out, run, seconds = sbatch_nodes_mpi(slurm_multinode, multinode_tmp, config, ms)

    assert state == "FAILED" and seconds < 60
    assert ("mpimager: error: temp dir /dev/shm (of job wsclean:obs0.I) is on tmpfs, local to each node, but the 2 "
            "ranks of a --nodes-mpi job on 2 nodes share it: set [worker] temp_dir to a file system every node "
            "sees (the default is RUN_DIR/tmp)") in out
    assert not run.exists()


def test_nodes_mpi_2_with_a_node_local_disk_temp_dir_fails_the_job_at_once_with_the_reason(
        slurm_multinode, multinode_tmp, wsclean_mp):
    # a node-local disk (ext4 here, not a memory file system) is not known to be local before the launch:
    # the rank on n2 finds that its temp dir is not the one its leader made on n1, and its failure ends the step
    ms = multinode_tmp / "obs0.ms"
    synth.make_ms(ms, telescope="TEST")
    local = slurm_multinode.local_disk
    config = nodes_mpi_config(multinode_tmp, wsclean_mp, f'temp_dir = "{local}"')

    state, out, run, seconds = sbatch_nodes_mpi(slurm_multinode, multinode_tmp, config, ms)

    assert state == "FAILED" and seconds < 60, out[-3000:]  # not the 120 s job timeout, not a hang
    job = end_of(run, "wsclean:obs0.I")
    assert job["status"] == "failed" and job["attempts"] == 1  # no retry: it would fail alike
    assert job["error"].startswith(f"JobError: wsclean: on n2, the job's temp dir {local}/obs0.I-")
    assert "is not the one its first rank made on n1: it does not exist here. A job over several nodes needs a " \
           "temp dir every node sees: set [worker] temp_dir to a shared file system" in job["error"]
    assert "0 done, 0 already done, 1 failed" in out
    for node in ("n1", "n2"):  # nothing left behind on either node
        assert node_sees(slurm_multinode, node, f"{local}/obs0.I-*") == []


FAKE_WSCLEAN_MP = """#!/bin/bash
# Stands in for wsclean-mp in a job step: rank 1 {rank1}; rank 0 waits for it, as wsclean-mp's first rank does.
echo "fake wsclean-mp rank $SLURM_PROCID on $(hostname)"
if [ "$SLURM_PROCID" = 1 ]; then {rank1_code}; fi
exec sleep 600
"""


@pytest.mark.parametrize("case, rank1, code, timeout", [
    ("failing", "fails at once", 'echo "rank 1: cannot read its part" >&2; exit 3', "120s"),
    ("hanging", "hangs too", "exec sleep 600", "20s"),
])
def test_a_failing_or_hanging_rank_ends_its_step_and_its_job_and_the_run_goes_on(
        slurm_multinode, multinode_tmp, case, rank1, code, timeout):
    fake = multinode_tmp / "wsclean-mp"
    fake.write_text(FAKE_WSCLEAN_MP.format(rank1=rank1, rank1_code=code))
    fake.chmod(0o755)
    ms = multinode_tmp / "obs0.ms"
    synth.make_ms(ms, telescope="TEST")
    config = write_config(multinode_tmp / "c.toml", IMAGING + f'[container]\nwsclean_mp = "{fake}"\n'
                          + f'[worker]\ntimeout = "{timeout}"\nretries = 0\n')

    state, out, run, seconds = sbatch_nodes_mpi(slurm_multinode, multinode_tmp, config, ms, timeout=180)

    assert state == "FAILED", out[-3000:]
    job = end_of(run, "wsclean:obs0.I")
    log = (run / "logs" / "wsclean_obs0.I.log").read_text()
    assert job["status"] == "failed"
    if case == "failing":  # --kill-on-bad-exit: the step ends when rank 1 fails, rank 0 does not wait for it
        assert seconds < 60, log
        assert "srun: error: n2: task 1: Exited with exit code 3" in log
        assert job["error"].startswith("JobError: wsclean: task 1 on n2 exited with exit code 3, which ended its "
                                       "job step (exit "), job["error"]
    else:  # [worker] timeout stops srun, which ends the step on both nodes
        assert "fake wsclean-mp rank 0 on n1" in log and "fake wsclean-mp rank 1 on n2" in log
        assert 20 <= seconds < 90, log
        assert job["error"].startswith("JobError: wsclean timed out after 20 s"), job["error"]
    assert "0 done, 0 already done, 1 failed" in out
    for node in ("n1", "n2"):  # no rank of the step is left on either node
        pattern = f"{fake.parent}/[w]sclean-mp"  # [w]: the pattern does not match the grep itself
        r = slurm_multinode.on_node(node, ["bash", "-c", f"grep -l '{pattern}' /proc/[0-9]*/cmdline || true"])
        assert r.stdout.strip() == "", (node, r.stdout)


def test_the_launch_line_ends_the_wsclean_mp_step_whose_rank_on_the_other_node_fails(
        slurm_multinode, multinode_tmp, wsclean_mp):
    # The hang seen on a cluster, without mpimager's node check: the temp dir exists only on the leader's node
    # (n1), so wsclean-mp's rank on n2 fails reading the parts; the launch line's --kill-on-bad-exit ends the step.
    ms = multinode_tmp / "obs0.ms"
    synth.make_ms(ms, telescope="TEST")
    launch = multinode_tmp / "launch.py"
    launch.write_text(f"""\
import os, subprocess, sys, time
from mpimager.queue import Placement
from mpimager.runtime.runner import mpi_launcher
os.makedirs("/dev/shm/t", exist_ok=True)  # on n1 only: the batch script runs there
argv = mpi_launcher(Placement(1, "n1", (1, 2), ("n1", "n2")), dict(os.environ)) + [
    {wsclean_mp!r}, "-j", "1", "-size", "64", "64", "-scale", "20asec", "-niter", "50", "-channels-out", "2",
    "-temp-dir", "/dev/shm/t", "-name", {str(multinode_tmp / "img")!r}, {str(ms)!r}]
began = time.monotonic()
code = subprocess.run(argv, timeout=300).returncode
print(f"step ended: exit {{code}} after {{time.monotonic() - began:.0f}} s", flush=True)
""")
    script = multinode_tmp / "job.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --nodes=2 --ntasks-per-node=1\n{sys.executable} {launch}\n")

    job = slurm_multinode.sbatch(script, cwd=multinode_tmp)

    assert slurm_multinode.wait(job, timeout=200) == "COMPLETED"
    out = (multinode_tmp / f"slurm-{job}.out").read_text()
    assert "Error opening temporary data file '/dev/shm/t" in out  # the rank on n2 failed ...
    assert "srun: error: n2: task 1: Exited with exit code 255" in out
    (ended,) = [line for line in out.splitlines() if line.startswith("step ended: ")]
    code, seconds = int(ended.split()[3]), int(ended.split()[5])
    assert code != 0 and seconds < 60, ended  # ... and the step ended at once, instead of waiting for it
