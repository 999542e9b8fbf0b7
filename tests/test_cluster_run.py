"""Whole runs on the real local Slurm: `sbatch slurm/mpimager.sbatch` with the demo config,
`srun -n 3 --mpi=pmix python -m mpimager` giving the same products, pixel for pixel, as `mpirun -n 3`, and
`sbatch slurm/mpimager-nodes-mpi.sbatch` running each WSClean job as a wsclean-mp job step."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import ONE_PASS_NO_GATHER, ROOT, TINY_IMAGING, run_cli, write_config
from fixtures.slurm import slurm_cluster  # noqa: F401  (session fixture)

from mpimager.testing import synth

pytestmark = pytest.mark.slurm

TEMPLATE = ROOT / "slurm" / "mpimager.sbatch"
TEMPLATE_MP = ROOT / "slurm" / "mpimager-nodes-mpi.sbatch"

# The demo config (FixMS, WSClean I and QU passes, cubes) on one thread per WSClean job, so that two runs
# give bit-identical images (WSClean on several threads is not bit-reproducible).
CONFIG = f"""
default_settings = "{ROOT / 'configs' / 'demo.toml'}"
[wsclean]
j = 1
"""

BEAMS = 3


@pytest.fixture(scope="module")
def raw_beams(tmp_path_factory) -> Path:
    """3 raw ASKAP-like beams (small), made once; each run images its own copy (FixMS changes them)."""
    d = tmp_path_factory.mktemp("raw") / "data"
    synth.make_askap_observation(d, BEAMS, n_ant=16, n_times=16, n_chan=8)
    return d


def copy_of(raw: Path, where: Path) -> Path:
    shutil.copytree(raw, where)
    return where


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def products(run_dir: Path) -> dict[str, Path]:
    """Every product of a run by its path relative to the run directory."""
    return {str(Path(p).relative_to(run_dir)): Path(p) for p in manifest(run_dir)["products"]}


def test_sbatch_of_the_template_runs_the_demo_and_logs_progress_and_summary(slurm_cluster, raw_beams, tmp_path):
    data = copy_of(raw_beams, tmp_path / "data")
    config = write_config(tmp_path / "demo.toml", CONFIG)
    run = tmp_path / "run"

    job = slurm_cluster.sbatch(TEMPLATE, str(config), str(data), "--run-dir", str(run), cwd=tmp_path,
                               options=["--mem=4G", "--cpus-per-task=1",
                                        f"--export=ALL,MPIMAGER_PYTHON={sys.executable}"])

    state = slurm_cluster.wait(job, timeout=600)
    out = (tmp_path / f"mpimager-{job}.out").read_text()
    assert state == "COMPLETED", out[-3000:]
    assert "mpimager.sbatch: 3 ranks (1 coordinator + 2 workers)" in out
    jobs = manifest(run)["jobs"]
    assert len(jobs) == BEAMS * 5 and {j["status"] for j in jobs} == {"ok"}  # FixMS, I, QU, 2 cubes per beam
    found = products(run)
    assert all(p.is_file() and p.stat().st_size > 0 for p in found.values())
    for beam in range(BEAMS):
        assert f"images/image.RACS_1347-37A.contcube.beam{beam:02d}.I-MFS-image.fits" in found
        assert f"images/image.RACS_1347-37A.contcube.beam{beam:02d}.QU-Q-restored.cube.fits" in found
    for j in jobs:  # progress: every job started and finished, in the Slurm log
        assert f"start {j['id']} on rank " in out and f"done {j['id']} in " in out
    assert f"{len(jobs)} done, 0 already done, 0 failed, 0 not run" in out  # the summary
    assert f"manifest: {run / 'manifest.json'}" in out


def test_srun_pmix_gives_the_same_products_and_pixels_as_mpirun(slurm_cluster, raw_beams, tmp_path):
    config = write_config(tmp_path / "demo.toml", CONFIG)
    srun_data, mpirun_data = copy_of(raw_beams, tmp_path / "a" / "data"), copy_of(raw_beams, tmp_path / "b" / "data")

    srun = slurm_cluster.run(["srun", "--mpi=pmix", "-n", "3", "--mem=4G", sys.executable, "-m", "mpimager",
                              str(config), str(srun_data), "--run-dir", str(tmp_path / "a" / "run")],
                             cwd=tmp_path, timeout=600)
    mpirun = run_cli(config, mpirun_data, "--run-dir", tmp_path / "b" / "run", mpi=3, timeout=600, cwd=tmp_path)

    assert srun.returncode == 0, srun.stdout[-3000:] + srun.stderr[-2000:]
    assert mpirun.returncode == 0, mpirun.stdout[-3000:] + mpirun.stderr[-2000:]
    assert "; 2 worker ranks; " in srun.stdout  # one world of 3 ranks (not 3 worlds of 1)
    a, b = products(tmp_path / "a" / "run"), products(tmp_path / "b" / "run")
    assert sorted(a) == sorted(b)
    fits_names = [n for n in a if n.endswith(".fits")]
    assert len(fits_names) >= BEAMS * 10
    for name in fits_names:
        with fits.open(a[name]) as x, fits.open(b[name]) as y:
            np.testing.assert_array_equal(x[0].data, y[0].data, err_msg=name)


NODES_MPI_CONFIG = """
[fixms]
enabled = false
[worker]
max_concurrent = 2          # one node here: both ranks of a wsclean-mp job are on it
[container]
wsclean_mp = "{wsclean_mp}"
""" + TINY_IMAGING + """channels-out = 4
join-channels = true
""" + ONE_PASS_NO_GATHER


@pytest.mark.wsclean_mp
def test_the_nodes_mpi_template_runs_each_job_as_a_wsclean_mp_step_on_all_cpus(slurm_cluster, tiny_ms_dir,
                                                                               wsclean_mp, tmp_path):
    config = write_config(tmp_path / "c.toml", NODES_MPI_CONFIG.format(wsclean_mp=wsclean_mp))
    run = tmp_path / "run"

    # one node here, so two workers on it (the template's default is one per node, over several nodes)
    job = slurm_cluster.sbatch(TEMPLATE_MP, str(config), str(tiny_ms_dir / "obs0.ms"), "--run-dir", str(run),
                               cwd=tmp_path, options=["--nodes=1", "--ntasks-per-node=2",
                                                      f"--export=ALL,NODES_MPI=2,MPIMAGER_PYTHON={sys.executable}"])

    state = slurm_cluster.wait(job, timeout=300)
    out = (tmp_path / f"mpimager-{job}.out").read_text()
    assert state == "COMPLETED", out[-3000:]
    assert (f"3 ranks (1 coordinator + 2 workers) on {slurm_cluster.node}, {slurm_cluster.cpus} CPUs per worker, "
            "WSClean jobs over 2 nodes") in out
    log = (run / "logs" / "wsclean_obs0.I.log").read_text()
    launch = log.splitlines()[0]
    assert f"srun --overlap --kill-on-bad-exit=1 --cpu-bind=none --ntasks=2 --nodes=1 " \
           f"--nodelist={slurm_cluster.node} {wsclean_mp} " \
           f"-j {slurm_cluster.cpus} " in launch  # a job step of 2 ranks, each with every CPU of the node
    assert "Node 1, PID" in log and "Sending gridding task to node : 1" in log
    assert (run / "images" / "obs0.I-MFS-image.fits").is_file()
