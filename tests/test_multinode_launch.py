"""The launch of a job over several ranks, pure parts: the launcher's argv for a placement (inside Slurm and
outside), and the check each rank of a multi-node job runs on its node first (mpimager.runtime.multinode).
The same runs for real on the two-node Slurm cluster in tests/test_multinode_run.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mpimager.errors import InputError
from mpimager.planner.jobs import Job
from mpimager.queue import Placement
from mpimager.runtime import multinode
from mpimager.runtime.runner import mpi_launcher

TWO_NODES = Placement(rank=1, host="n1", ranks=(1, 3), hosts=("n1", "n2"))


def test_inside_slurm_a_group_is_one_step_on_its_nodes_that_ends_when_a_rank_fails():
    assert mpi_launcher(TWO_NODES, {"SLURM_JOB_ID": "7"}) == [
        "srun", "--overlap", "--kill-on-bad-exit=1", "--cpu-bind=none", "--ntasks=2", "--nodes=2", "--nodelist=n1,n2"]
    one_node = Placement(rank=1, host="n1", ranks=(1, 2), hosts=("n1", "n1"))
    assert mpi_launcher(one_node, {"SLURM_JOB_ID": "7"})[-2:] == ["--nodes=1", "--nodelist=n1"]


def test_outside_slurm_mpirun_places_one_slot_per_rank_on_the_group_hosts():
    three = Placement(rank=1, host="a", ranks=(1, 2, 3), hosts=("a", "b", "a"))
    assert mpi_launcher(three, {}) == ["mpirun", "--bind-to", "none", "-np", "3", "-H", "a:2,b:1"]
    assert mpi_launcher(Placement(1, "a", (1, 2), ("a", "a")), {}) == ["mpirun", "--bind-to", "none", "-np", "2"]


def test_a_rank_runs_its_command_when_its_node_sees_the_leaders_temp_dir_and_the_paths(tmp_path):
    token = multinode.mark(str(tmp_path))
    argv = multinode.wrap([sys.executable, "-c", "print('rank ran')"], str(tmp_path), token, [str(tmp_path)])
    r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "SLURMD_NODENAME": "n2"})
    assert (r.returncode, r.stdout, r.stderr) == (0, "rank ran\n", "")


def test_a_rank_whose_node_does_not_see_the_temp_dir_exits_with_one_line_naming_node_and_path(tmp_path):
    token = multinode.mark(str(tmp_path))
    elsewhere = tmp_path / "not-here"
    argv = multinode.wrap(["true"], str(elsewhere), token.replace(token.split(":")[0], "n1"), [])
    r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "SLURMD_NODENAME": "n2"})
    assert r.returncode == multinode.EXIT_NODE_CHECK and r.stdout == ""
    kind = multinode.file_system(str(tmp_path))
    assert r.stderr == (f"{multinode.PREFIX}on n2, the job's temp dir {elsewhere} ({kind})"
                        " is not the one its first rank made on n1: it does not exist here. A job over several nodes "
                        "needs a temp dir every node sees: set [worker] temp_dir to a shared file system (the default "
                        "is RUN_DIR/tmp)\n")


def test_a_rank_whose_node_lacks_a_path_of_the_job_is_stopped(tmp_path):
    token = multinode.mark(str(tmp_path))
    problem = multinode.problem(str(tmp_path), token, [str(tmp_path / "data.ms")])
    assert problem is not None and problem.endswith(f"{tmp_path / 'data.ms'} does not exist: every node of a job "
                                                    "must see its paths")


def test_the_file_system_of_a_path_is_read_from_the_mount_table():
    assert multinode.file_system("/dev/shm/anything/below") == "tmpfs"
    assert multinode.file_system("/proc/self") == "proc"


def job(temp_dir, nranks=2):
    return Job(id="wsclean:b0.I", kind="wsclean", argv=("wsclean-mp",), ms=(), outputs=(), temp_dir=temp_dir,
               nranks=nranks)


def test_a_temp_dir_on_tmpfs_is_refused_up_front_only_for_groups_over_several_nodes():
    with pytest.raises(InputError, match=r"^temp dir /dev/shm \(of job wsclean:b0.I\) is on tmpfs, local to each "
                                         r"node, but the 2 ranks of a --nodes-mpi job on 2 nodes share it"):
        multinode.refuse_node_local_temp_dirs([job("/dev/shm/b0.I-1234")], nodes=2)
    multinode.refuse_node_local_temp_dirs([job("/dev/shm/b0.I-1234")], nodes=1)  # one node: /dev/shm is fine
    multinode.refuse_node_local_temp_dirs([job("/dev/shm/b0.I-1234", nranks=1)], nodes=2)  # one rank per job
