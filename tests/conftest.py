"""Shared test helpers: running the real CLI, snapshots of directory trees, small synthetic MSs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# MPI launches as root on a small machine (same as scripts/env.sh)
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
os.environ.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")

pytest_plugins = ["fixtures.synth", "fixtures.containers", "fixtures.slurm", "fixtures.reduce"]


class RealToolInPureTest(AssertionError):
    """A test marked `pure` started a process or imported MPI: it tests the real tools, so it is not pure."""


@pytest.fixture(autouse=True)
def _pure_tests_start_no_tool(request, monkeypatch):
    """The suite in two sets: tests marked `pure` (pure logic, `pytest -m pure`: seconds) and the tests of the
    real tools (`-m "not pure"`: WSClean, MPI launches, Slurm, containers, FixMS on MSs). A pure test may
    start no process and import no MPI: this checks it."""
    if request.node.get_closest_marker("pure") is None:
        return

    def refuse(*args, **kwargs):
        raise RealToolInPureTest(f"{request.node.nodeid} is marked pure but starts a process")

    for owner, name in ((subprocess.Popen, "__init__"), (os, "fork"), (os, "posix_spawn"), (os, "system")):
        monkeypatch.setattr(owner, name, refuse)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` raises ImportError


def run_cli(*args, cwd=None, timeout=300, env=None, mpi: int | None = None) -> subprocess.CompletedProcess:
    """`python -m mpimager ARGS` (under `mpirun -n MPI` when given), text output captured."""
    cmd = [sys.executable, "-m", "mpimager", *map(str, args)]
    if mpi:
        cmd = ["mpirun", "-n", str(mpi), *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def snapshot(*roots) -> dict:
    """Every path below `roots` with its size and mtime: equal snapshots mean nothing was written."""
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                state[p] = (st.st_size, st.st_mtime_ns)
    return state


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# TOML fragments the run tests share: tiny images named after their MS in RUN_DIR/images (continue the
# [wsclean] table after it), and one Stokes-I pass with no gather step
TINY_IMAGING = """[wsclean]
name = "$ms_stem$"
out-dir = "$run_dir$/images"
size = "64 64"
scale = "20asec"
niter = 50
"""
ONE_PASS_NO_GATHER = """[passes.I]
pol = "I"
[reduce]
enabled = false
"""

SMALL_CONFIG = """
{top}
[fixms]
enabled = false
[wsclean]
size = "64 64"
scale = "20asec"
niter = 50
channels-out = 2
join-channels = true
{wsclean}
"""


def small_config(path: Path, top: str = "", wsclean: str = "") -> Path:
    """A config for quick runs on the tiny MSs: 64 x 64 pixels, 50 iterations, 2 joined channels, no FixMS;
    `top` goes before the tables (e.g. a [worker] table), `wsclean` into [wsclean]."""
    return write_config(path, SMALL_CONFIG.format(top=top, wsclean=wsclean))


@pytest.fixture(scope="session")
def tiny_ms_dir(tmp_path_factory):
    """Three tiny plain MSs (8 antennas, 8 times, 4 channels), made once per session."""
    from mpimager.testing.synth import make_ms

    d = tmp_path_factory.mktemp("tiny")
    for i in range(3):
        make_ms(d / f"obs{i}.ms", telescope="TEST", seed=i)
    return d
