"""mpimager: image many MeasurementSets with WSClean over MPI and gather PSF-matched cubes.

The Python API (`mpimager.api`, loaded on first use so that `import mpimager` stays cheap):
    jobs = mpimager.plan("askap.toml", ["/data/SB8593/"])               # the jobs a run would execute
    result = mpimager.run("askap.toml", ["/data/SB8593/"], run_dir="work")  # a RunResult
The package layout follows the run's data flow: config -> inputs -> wsclean -> rundir -> planner ->
queue -> runtime -> reduce -> mosaic -> report -> pipeline -> cli.
"""

import logging as _logging

__version__ = "0.1.0"
__all__ = ["Job", "RunResult", "__version__", "load_config", "plan", "run"]

_logging.getLogger(__name__).addHandler(_logging.NullHandler())  # silent in library use unless configured

_LAZY = {"plan": "mpimager.api", "run": "mpimager.api", "RunResult": "mpimager.api", "Job": "mpimager.planner.jobs",
         "load_config": "mpimager.config.load"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mpimager' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
