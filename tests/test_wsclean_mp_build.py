"""scripts/build-wsclean-mp.sh gives a cached WSClean MPI binary whose images equal serial wsclean's.

Covers: the cache (a second call prints the same path), the lock (a call that finds a build in
progress waits, then uses its result), `mpirun -np 2 wsclean-mp` pixels against serial `wsclean`, and
the launch the Slurm mode relies on: an mpi4py rank started by `srun` runs wsclean-mp as its own
`srun --overlap` job step.
"""

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fixtures.slurm import slurm_cluster  # noqa: F401  (session fixture)

from mpimager.testing.synth import make_ms

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "scripts" / "build-wsclean-mp.sh"
MPI_ENV_PREFIXES = ("OMPI_", "PMIX_", "OPAL_", "PRTE_")
IMAGE_OPTIONS = ["-size", "256", "256", "-scale", "20asec", "-niter", "200", "-mgain", "0.8",
                 "-channels-out", "2", "-join-channels", "-j", "1"]
PRODUCTS = [f"{chan}-{kind}.fits" for chan in ("0000", "0001", "MFS")
            for kind in ("dirty", "psf", "model", "residual", "image")]

pytestmark = pytest.mark.wsclean_mp


def wsclean_version():
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", "wsclean"], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture(scope="session")
def wsclean_mp():
    """Path of the cached wsclean-mp (built on first use: about 5 minutes on 2 cores)."""
    cached = Path("/var/cache/mpimager") / f"wsclean-mp-{wsclean_version()}" / "bin" / "wsclean-mp"
    if os.geteuid() != 0 and not cached.exists() and "MPIMAGER_CACHE" not in os.environ:
        pytest.skip("wsclean-mp is not built and building it needs root (scripts/build-wsclean-mp.sh)")
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False,
                            timeout=850)
    if result.returncode != 0:
        pytest.fail(f"{BUILD_SCRIPT} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return Path(result.stdout.strip())


@pytest.fixture(scope="module")
def ms_and_serial_images(tmp_path_factory):
    """A small synthetic MS, and serial wsclean's images of it (name prefix)."""
    work = tmp_path_factory.mktemp("wsclean-mp")
    ms = make_ms(work / "small.ms")
    prefix = work / "serial"
    subprocess.run(["wsclean", *IMAGE_OPTIONS, "-name", str(prefix), str(ms)], check=True,
                   capture_output=True)
    return ms, prefix


def assert_same_images(prefix, reference_prefix):
    for product in PRODUCTS:
        ours = fits.getdata(f"{prefix}-{product}")
        reference = fits.getdata(f"{reference_prefix}-{product}")
        assert np.array_equal(ours, reference), f"{product} differs from serial wsclean"
    # not a vacuous comparison: the restored image holds the synthetic sources
    assert fits.getdata(f"{reference_prefix}-MFS-image.fits").max() > 0.1


def test_build_script_prints_the_cached_binary_of_the_installed_wsclean_version(wsclean_mp):
    again = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=True)

    assert again.stdout == f"{wsclean_mp}\n"
    assert wsclean_mp.parent.parent.name == f"wsclean-mp-{wsclean_version()}"
    assert not str(wsclean_mp).startswith(str(REPO))
    assert os.access(wsclean_mp, os.X_OK)
    ldd = subprocess.run(["ldd", str(wsclean_mp)], capture_output=True, text=True, check=True).stdout
    assert "libmpi.so" in ldd and "not found" not in ldd


def test_a_second_build_waits_for_the_one_in_progress_and_uses_its_result(wsclean_mp, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    version = wsclean_version()
    env = dict(os.environ, MPIMAGER_CACHE=str(cache))
    with open(cache / f"wsclean-mp-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another build is running"
        waiter = subprocess.Popen(["bash", str(BUILD_SCRIPT)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            first_message = waiter.stderr.readline()
            if "waiting" not in first_message:
                waiter.kill()  # it did not see the lock: do not let it go on to build
            assert "waiting" in first_message
            # the other build finishes: its result appears, then its lock goes
            (cache / f"wsclean-mp-{version}" / "bin").mkdir(parents=True)
            shutil.copy2(wsclean_mp, cache / f"wsclean-mp-{version}" / "bin" / "wsclean-mp")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            out, _ = waiter.communicate(timeout=30)

    assert waiter.returncode == 0
    assert out == f"{cache}/wsclean-mp-{version}/bin/wsclean-mp\n"
    assert sorted(p.name for p in cache.iterdir()) == [f"wsclean-mp-{version}", f"wsclean-mp-{version}.lock"]


def test_mpirun_two_ranks_of_wsclean_mp_give_the_serial_images_bit_for_bit(wsclean_mp, ms_and_serial_images,
                                                                           tmp_path):
    ms, serial = ms_and_serial_images
    prefix = tmp_path / "mp"

    result = subprocess.run(
        ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2",
         str(wsclean_mp), *IMAGE_OPTIONS, "-name", str(prefix), str(ms)],
        capture_output=True, text=True, timeout=300, check=False,
    )

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Node 1, PID" in result.stdout  # a second rank took part
    assert_same_images(prefix, serial)


@pytest.mark.slurm
def test_an_srun_rank_runs_wsclean_mp_as_an_overlapping_job_step(slurm_cluster, wsclean_mp,
                                                                 ms_and_serial_images, tmp_path):
    # The pattern of the Slurm mode: mpi4py ranks started by srun; one of them launches wsclean-mp
    # on 2 tasks as a job step of the same allocation, with the parent's MPI/PMIx variables removed.
    ms, serial = ms_and_serial_images
    prefix = tmp_path / "nested"
    rank_program = tmp_path / "rank.py"
    rank_program.write_text(textwrap.dedent(f"""\
        import os, subprocess, sys
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        if comm.rank == 1:
            env = {{k: v for k, v in os.environ.items() if not k.startswith({MPI_ENV_PREFIXES!r})}}
            argv = ["srun", "--overlap", "--nodes=1", "--ntasks=2", {str(wsclean_mp)!r},
                    *{IMAGE_OPTIONS!r}, "-name", {str(prefix)!r}, {str(ms)!r}]
            code = subprocess.run(argv, env=env).returncode
            print(f"wsclean-mp step exit {{code}}", flush=True)
        comm.Barrier()
        """))
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH -n 2\nsrun --mpi=pmix -n 2 {sys.executable} {rank_program}\n")

    job = slurm_cluster.sbatch(script, cwd=tmp_path)

    assert slurm_cluster.wait(job, timeout=180) == "COMPLETED"
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "wsclean-mp step exit 0" in log
    assert "Node 1, PID" in log
    assert_same_images(prefix, serial)
