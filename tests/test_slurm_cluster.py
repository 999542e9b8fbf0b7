"""The local Slurm cluster the tests use really schedules jobs: batch scripts, PMIx MPI steps, overlapping steps."""

import sys
import textwrap

import pytest
from fixtures.slurm import slurm_cluster  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slurm


def write_script(path, body):
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def test_sbatch_srun_pmix_starts_three_mpi4py_ranks_in_one_world(slurm_cluster, tmp_path):
    # one write per line: the three ranks share one stream (print writes text and newline apart when unbuffered)
    script = write_script(tmp_path / "ranks.sh", f"""\
        #SBATCH -n 3
        srun --mpi=pmix -n 3 {sys.executable} -c "import os; from mpi4py import MPI; c = MPI.COMM_WORLD; \\
        os.write(1, f'rank {{c.rank}} of {{c.size}}\\n'.encode())"
        """)
    job = slurm_cluster.sbatch(script, cwd=tmp_path)

    assert slurm_cluster.wait(job, timeout=90) == "COMPLETED"
    lines = sorted(line for line in (tmp_path / f"slurm-{job}.out").read_text().splitlines()
                   if line.startswith("rank "))
    assert lines == ["rank 0 of 3", "rank 1 of 3", "rank 2 of 3"]


def test_sbatch_test_only_reports_the_local_node_and_partition(slurm_cluster, tmp_path):
    script = write_script(tmp_path / "noop.sh", "true\n")

    result = slurm_cluster.run(["sbatch", "--test-only", "-n", "3", str(script)], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"on nodes {slurm_cluster.node}" in result.stderr
    assert f"in partition {slurm_cluster.partition}" in result.stderr


def test_srun_overlap_starts_a_step_while_another_step_holds_every_cpu(slurm_cluster, tmp_path):
    # The first step takes all of the job's CPUs; only --overlap lets a second step start beside it.
    script = write_script(tmp_path / "overlap.sh", """\
        #SBATCH -n 2
        srun -n 2 sleep 10 &
        sleep 2
        srun --overlap -n 1 echo overlapping-step-ran
        echo "overlap-exit=$?"
        kill %1
        """)
    job = slurm_cluster.sbatch(script, cwd=tmp_path)

    assert slurm_cluster.wait(job, timeout=60) == "COMPLETED"
    out = (tmp_path / f"slurm-{job}.out").read_text()
    assert "overlapping-step-ran" in out
    assert "overlap-exit=0" in out


def test_a_failing_batch_script_ends_failed_with_its_exit_code(slurm_cluster, tmp_path):
    script = write_script(tmp_path / "fail.sh", "exit 3\n")
    job = slurm_cluster.sbatch(script, cwd=tmp_path)

    assert slurm_cluster.wait(job, timeout=60) == "FAILED"
    assert slurm_cluster.job(job)["ExitCode"] == "3:0"
