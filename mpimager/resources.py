"""The files mpimager ships inside its package, found with `importlib.resources`.

`mpimager/data/slurm/` holds the sbatch templates and `mpimager/data/configs/` the example configs (the
demo's among them). In a source checkout both are symbolic links to the top-level `slurm/` and `configs/`
directories, which users read and edit: git holds one copy, and a built wheel or sdist holds the files
themselves. Code asks here for a shipped file, never for a path relative to the source tree.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: the sbatch templates (mpimager sbatch renders one of them)
TEMPLATES = ("mpimager.sbatch", "mpimager-nodes-mpi.sbatch")
#: the example configs (`mpimager init` starts from one of them; the demo runs demo.toml)
EXAMPLE_CONFIGS = ("askap.toml", "nenufar.toml", "demo.toml", "data_handler.toml")


def _data(kind: str, name: str) -> Path:
    resource = files("mpimager") / "data" / kind / name
    path = Path(str(resource))  # installed packages are directories on disk (no zip imports of mpimager)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the mpimager package (a broken install: reinstall it)")
    return path


def template(name: str) -> Path:
    """The path of the packaged sbatch template `name` (one of `TEMPLATES`)."""
    return _data("slurm", name)


def example_config(name: str) -> Path:
    """The path of the packaged example config `name` (one of `EXAMPLE_CONFIGS`)."""
    return _data("configs", name)
