"""--nodes-mpi N: each WSClean job runs as wsclean-mp over N ranks the queue reserved for it."""

import json
import os
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from conftest import ROOT, run_cli, write_config

pytestmark = pytest.mark.wsclean_mp


CONFIG = """
[worker]
max_concurrent = 2          # both ranks of the group are on this one host
[wsclean]
size = "128 128"
scale = "10asec"
niter = 200
mgain = 0.8
channels-out = 2
join-channels = true
j = 1
[reduce]
enabled = false
"""


def test_each_job_runs_over_two_mpi_ranks_and_matches_serial_wsclean(tmp_path, tiny_ms_dir, wsclean_mp):
    config = write_config(tmp_path / "c.toml", CONFIG + f'[container]\nwsclean_mp = "{wsclean_mp}"\n')
    ms = tiny_ms_dir / "obs0.ms"
    r = run_cli(config, ms, "--nodes-mpi", "2", "--run-dir", tmp_path / "run", mpi=3, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = (tmp_path / "run" / "logs" / "wsclean_obs0.log").read_text()
    assert "Node 0, PID" in log and "Node 1, PID" in log  # two MPI ranks ...
    assert "Sending gridding task to node : 1" in log and "Worker node is done gridding." in log  # ... both gridding

    (job,) = json.loads((tmp_path / "run" / "manifest.json").read_text())["jobs"]
    assert job["argv"][0] == wsclean_mp
    _serial_twin_equal(job, ms, tmp_path)


def _serial_twin_equal(job: dict, ms, tmp_path) -> None:
    """The job's images equal those of serial native `wsclean` with the same options."""
    argv = job["argv"]
    serial = str(tmp_path / "serial")
    os.makedirs(tmp_path / "t", exist_ok=True)
    twin = ["wsclean"] + argv[1:argv.index("-temp-dir")] + ["-temp-dir", str(tmp_path / "t"), "-name", serial, str(ms)]
    assert subprocess.run(twin, capture_output=True).returncode == 0
    prefix = argv[argv.index("-name") + 1]
    assert len(job["outputs"]) == 15
    for o in job["outputs"]:
        assert np.array_equal(fits.getdata(o["path"]), fits.getdata(serial + o["path"][len(prefix):])), o["path"]


@pytest.mark.container
def test_in_a_container_mpirun_starts_one_container_per_rank(tmp_path, tiny_ms_dir, wsclean_mp, wsclean_rootfs,
                                                             singularity_standin):
    """mpirun ... singularity exec IMAGE wsclean-mp: the image has no wsclean-mp, so the built one is bound in."""
    bin_dir = os.path.dirname(wsclean_mp)
    config = write_config(tmp_path / "c.toml", CONFIG + f"""
[container]
runtime = "singularity"
image = "{wsclean_rootfs}"
binary = "{singularity_standin}"
binds = ["{bin_dir}:/opt/wsclean-mp:ro"]
wsclean_mp = "/opt/wsclean-mp/wsclean-mp"
""")
    ms = tiny_ms_dir / "obs1.ms"
    r = run_cli(config, ms, "--nodes-mpi", "2", "--run-dir", tmp_path / "run", mpi=3, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = (tmp_path / "run" / "logs" / "wsclean_obs1.log").read_text()
    command = log.splitlines()[0].split(": ", 2)[2]  # "# mpimager: JOB, attempt 1 of 2: COMMAND"
    assert command.startswith("mpirun --bind-to none -np 2 ") and " -m mpimager.runtime.containers exec " in command
    assert "Node 0, PID" in log and "Node 1, PID" in log and "Worker node is done gridding." in log
    (job,) = json.loads((tmp_path / "run" / "manifest.json").read_text())["jobs"]
    _serial_twin_equal(job, ms, tmp_path)


def test_fewer_output_channels_than_ranks_is_refused_before_any_job(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", "[wsclean]\nchannels-out = 2\n")
    r = run_cli(config, tiny_ms_dir / "obs0.ms", "--nodes-mpi", "4", "--dry-run")
    assert r.returncode == 2
    assert "--nodes-mpi 4 needs channels-out >= 4" in r.stderr and "this job has 2" in r.stderr
