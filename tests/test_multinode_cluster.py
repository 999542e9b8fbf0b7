"""The two-node Slurm cluster the tests start on this one machine behaves as a cluster: distinct host names,
node-local /tmp and /dev/shm, a shared work file system, one MPI world over both nodes."""

import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]


def write_script(path, body):
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def test_each_node_has_its_own_host_name_and_private_tmp_and_dev_shm(slurm_multinode, multinode_tmp):
    # each task writes a marker into its node's /tmp and /dev/shm, then lists what it sees there
    script = write_script(multinode_tmp / "nodes.sh", f"""\
        #SBATCH --nodes=2 --ntasks-per-node=1
        srun bash -c 'h=$(hostname); touch /tmp/mark.$h /dev/shm/mark.$h {multinode_tmp}/mark.$h; sleep 1
        echo "$SLURMD_NODENAME $h" /tmp/mark.* /dev/shm/mark.*'
        """)
    job = slurm_multinode.sbatch(script, cwd=multinode_tmp)

    assert slurm_multinode.wait(job, timeout=60) == "COMPLETED"
    lines = sorted(line for line in (multinode_tmp / f"slurm-{job}.out").read_text().splitlines() if line)
    assert lines == ["n1 n1 /tmp/mark.n1 /dev/shm/mark.n1", "n2 n2 /tmp/mark.n2 /dev/shm/mark.n2"]
    assert sorted(p.name for p in multinode_tmp.glob("mark.*")) == ["mark.n1", "mark.n2"]  # the shared one


def test_srun_pmix_makes_one_mpi_world_over_both_nodes(slurm_multinode, multinode_tmp):
    code = ("import os; from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "os.write(1, f'{c.rank} {c.size} {MPI.Get_processor_name()}\\n'.encode())")
    result = slurm_multinode.run(["srun", "--mpi=pmix", "-N2", "-n4", sys.executable, "-c", code],
                                 cwd=multinode_tmp, timeout=90)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")[:-1]) == ["0 4 n1", "1 4 n1", "2 4 n2", "3 4 n2"]


def test_stopping_a_cluster_stops_every_daemon_by_its_pid_file_and_removes_its_directory():
    from fixtures.slurm import _daemon_pid_files, _LocalCluster, _pid_from_file, skip_unless_multinode_possible

    skip_unless_multinode_possible()
    local = _LocalCluster(("n1", "n2"))
    try:
        cluster = local.start()
        pid_files = _daemon_pid_files(cluster.scratch)
        assert [p.name for p in pid_files] == ["slurmd.n1.pid", "slurmd.n2.pid", "slurmctld.pid", "munged.pid"]
        pids = [_pid_from_file(p) for p in pid_files]
        assert None not in pids
    finally:
        local.stop()
    assert [pid for pid in pids if running(pid)] == []
    assert not cluster.scratch.exists()


def running(pid: int) -> bool:
    """Is `pid` a live process (not gone, not a zombie waiting for a parent that does not reap)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
