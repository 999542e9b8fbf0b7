"""Shared fixtures for running WSClean in a container for real, without Singularity installed.

- `wsclean_rootfs` (session): a Debian bookworm root filesystem with WSClean (a Singularity
  "sandbox image"), built once per machine by scripts/build-wsclean-rootfs.sh and cached outside
  the repository; its path.
- `singularity_standin_path` (session): a directory holding tests/bin/singularity, a bubblewrap
  stand-in (NOT Singularity) that spython drives like the real one; put it first on PATH or use
  `singularity_standin` (its full path) as `[container] binary`.
- `container_options` (function): ContainerOptions for the stand-in and the rootfs.

Tests using them skip, with the reason, only when bubblewrap or mmdebstrap cannot work here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STANDIN_DIR = ROOT / "tests" / "bin"
BUILD_SCRIPT = ROOT / "scripts" / "build-wsclean-rootfs.sh"


def _bwrap_problem() -> str | None:
    """Why bubblewrap cannot run a sandbox here, or None when it can."""
    if not shutil.which("bwrap"):
        return "bubblewrap (bwrap) is not installed (apt-get install bubblewrap)"
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"bubblewrap cannot create a sandbox here: {probe.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="session")
def singularity_standin_path() -> str:
    """The directory holding the `singularity` stand-in: a PATH prefix."""
    problem = _bwrap_problem()
    if problem:
        pytest.skip(f"container tests need bubblewrap: {problem}")
    return str(STANDIN_DIR)


@pytest.fixture(scope="session")
def singularity_standin(singularity_standin_path) -> str:
    """Full path of the `singularity` stand-in."""
    return os.path.join(singularity_standin_path, "singularity")


@pytest.fixture(scope="session")
def wsclean_rootfs(singularity_standin_path) -> Path:
    """Path of the cached WSClean rootfs (built on first use, about 30 s to a few minutes)."""
    if not shutil.which("mmdebstrap"):
        existing = sorted(Path("/var/cache/mpimager").glob("wsclean-rootfs-*/usr/bin/wsclean"))
        if not existing:
            pytest.skip("container tests need mmdebstrap to build the WSClean rootfs (apt-get install mmdebstrap)")
    build = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800)
    if build.returncode != 0:
        pytest.fail(f"{BUILD_SCRIPT.name} failed ({build.returncode}): {build.stderr.strip()[-1500:]}")
    path = Path(build.stdout.strip().splitlines()[-1])
    assert (path / "usr" / "bin" / "wsclean").exists(), f"no wsclean in {path}"
    return path


@pytest.fixture
def container_options(wsclean_rootfs, singularity_standin):
    """[container] options: runtime singularity, the stand-in as binary, the rootfs as image."""
    from mpimager.config.container import ContainerOptions

    return ContainerOptions(runtime="singularity", image=str(wsclean_rootfs), binary=singularity_standin)
