"""What mpimager takes from the machine it runs on: usable CPUs, cache directories, and the casacore variables
its jobs must not inherit.

- `usable_cpus()`: the CPUs this process may run on (its affinity mask: taskset, cgroup cpusets, Slurm's
  binding), not the machine's count; `default_threads` (WSClean's -j) is built on it.
- `cache_dir(kind)`: $XDG_CACHE_HOME/mpimager/KIND (default ~/.cache/mpimager/KIND); container images go to
  $APPTAINER_CACHEDIR (or $SINGULARITY_CACHEDIR)/mpimager when one is set, as clusters point it at scratch.
- `without_casacore_defaults(env)`: importing python-casacore points AIPSPATH and CASACORE_DATADIR into its
  own package; a job (the site's WSClean, its own casacore) gets them only when the user set them.
- `measures_warning_once()`: casacore's three SEVERE lines about an out-of-date leap second table become
  one warning line saying what to do, once per process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

CASACORE_VARIABLES = ("AIPSPATH", "CASACORE_DATADIR")


def usable_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this OS
        return max(1, os.cpu_count() or 1)


def default_threads(threads: int | None, per_host: int) -> int:
    """WSClean's -j: `threads` when set ([worker] threads), else SLURM_CPUS_PER_TASK, else the usable CPUs
    shared among the `per_host` WSClean jobs a host runs at once ([worker] max_concurrent)."""
    if threads:
        return threads
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return max(1, usable_cpus() // max(1, per_host))


def cache_dir(kind: str) -> Path:
    """Where mpimager caches `kind` ("images": pulled container images; else small files such as WSClean's
    option lists): see the module docstring. Not created here."""
    if kind == "images":
        for var in ("APPTAINER_CACHEDIR", "SINGULARITY_CACHEDIR"):
            if os.environ.get(var):
                return Path(os.environ[var]) / "mpimager"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mpimager" / kind


def _casacore_package() -> str | None:
    try:
        spec = importlib.util.find_spec("casacore")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return os.path.realpath(locations[0]) if locations else None


def without_casacore_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without AIPSPATH / CASACORE_DATADIR where they point into python-casacore's package (its import
    set them); values the user set elsewhere are kept."""
    package = _casacore_package()
    out = dict(env)
    for var in CASACORE_VARIABLES:
        value = out.get(var)
        if package and value and os.path.realpath(value.split()[0]).startswith(package):
            del out[var]
    return out


_LEAP_SECOND = "Leap second table TAI_UTC seems out-of-date"
MEASURES_ADVICE = ("casacore's measures data is out of date (its leap second table TAI_UTC): times derived from "
                   "UTC may be off by 1 s or more; install current measures data and point CASACORE_DATADIR at it "
                   "(docs/install.md, 'Measures data')")


@contextlib.contextmanager
def measures_warning_once(logger: logging.Logger | None = None) -> Iterator[None]:
    """Within the block, casacore's three-line `SEVERE ... Leap second table TAI_UTC seems out-of-date`
    messages (written by its C++ code to file descriptor 2) become one warning line, `MEASURES_ADVICE`,
    logged once per process to `logger` (default mpimager's); every other line of fd 2 passes through."""
    log = logger or logging.getLogger(__name__)
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        skipping = False
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                text = line.decode(errors="replace")
                if _LEAP_SECOND in text:
                    skipping = True
                    if not _warned:
                        _warned.append(True)
                        log.warning(MEASURES_ADVICE)
                    continue
                if skipping and "\tSEVERE\t" in text and ")+\t" in text:  # the message's continuation lines
                    continue
                skipping = False
                os.write(saved, line)

    thread = threading.Thread(target=pump, name="mpimager-casacore-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump reads to its end and stops
        thread.join(timeout=5)
        os.close(saved)


_warned: list[bool] = []
