"""Provenance of a run: the versions of everything that made its products, the config as resolved, argv.

`gather` runs once on rank 0 at the start of a run (the result goes into manifest.json and the report).
Versions: mpimager; WSClean as the run's runtime reports it (`wsclean --version` of the binary or inside
the image, with the runtime's description and identity); FixMS, python-casacore, mpi4py, numpy, astropy,
ducc0, reproject from the installed distributions (importlib.metadata: nothing is imported for them); the
casacore C++ library as loaded in this process; the MPI library from the queue module (the only place
that imports mpi4py), else from `mpirun --version`. A version that cannot be found is recorded as
"unknown (why)", never an error: provenance must not stop a run.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mpimager import __version__

DISTRIBUTIONS = ("fixms", "python-casacore", "mpi4py", "numpy", "astropy", "ducc0", "reproject", "spython",
                 "matplotlib")


def _unknown(exc: BaseException | str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"unknown ({text[:160]})"


def _distribution_version(name: str) -> str:
    """The installed version of the Python distribution `name`, or 'not installed'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def wsclean_version(runtime) -> dict[str, str]:
    """{"version", "runtime", "identity"} of the WSClean the run uses (runtime: mpimager.runtime.containers.Runtime)."""
    out: dict[str, str] = {}
    for key, call in (("version", "version"), ("runtime", "describe"), ("identity", "identity")):
        try:
            out[key] = str(getattr(runtime, call)())
        except Exception as exc:  # noqa: BLE001 - recorded, never raised
            out[key] = _unknown(exc)
    return out


def casacore_library() -> str:
    """The casacore C++ library this process loaded (file name: its soname carries the major version)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(" ", 1)[-1].strip()
                if "libcasa_casa" in os.path.basename(path):
                    return f"{os.path.basename(path)} ({os.path.dirname(path)})"
    except OSError as exc:
        return _unknown(exc)
    return "not loaded"


def mpi_library() -> str:
    """The MPI library's own version string (first line)."""
    from mpimager import queue as mpiqueue

    ask = getattr(mpiqueue, "library_version", None)  # MPI_Get_library_version, when the queue module offers it
    try:
        told = str(ask() or "").strip() if ask is not None else ""
        if told:
            return printable(told).strip().splitlines()[0]
        r = subprocess.run(["mpirun", "--version"], capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
        line = next((x.strip() for x in r.stdout.splitlines() if x.strip()), "")
        return f"{line} (mpirun --version)" if line else _unknown(f"mpirun --version exited {r.returncode}")
    except Exception as exc:  # noqa: BLE001
        return _unknown(exc)


def command_line(argv) -> list[str]:
    """argv as typed: `python -m mpimager ...` when Python ran the package (argv[0] is its __main__.py)."""
    argv = [str(a) for a in argv]
    if argv and argv[0].endswith(os.path.join("mpimager", "__main__.py")):
        return [sys.executable, "-m", "mpimager", *argv[1:]]
    return argv


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """`text` without control characters (the MPI library's version string ends in a NUL byte): tabs and
    newlines kept, the others dropped."""
    return _CONTROL.sub("", text)


def jsonable(value: Any) -> Any:
    """The config `value` as JSON values: paths and other objects become strings, without control characters."""
    if isinstance(value, Mapping):
        return {printable(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, str):
        return printable(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return printable(str(value))


def gather(runtime=None, config=None, argv=None) -> dict:
    """Everything the manifest and the report record about how a run was made: versions (WSClean's from
    `runtime`, when given), host, platform, cwd, `argv` (None: sys.argv) and the path and resolved tables of
    `config`, when given."""
    versions: dict[str, object] = {"mpimager": __version__, "python": platform.python_version()}
    if runtime is not None:
        versions["wsclean"] = wsclean_version(runtime)
    versions.update({name: _distribution_version(name) for name in DISTRIBUTIONS})
    versions["casacore (C++)"] = casacore_library()
    versions["MPI"] = mpi_library()
    prov = {
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cwd": os.getcwd(),
        "argv": jsonable(command_line(sys.argv if argv is None else argv)),
        "versions": jsonable(versions),
    }
    if config is not None:
        prov["config"] = str(getattr(config, "path", ""))
        prov["config_resolved"] = jsonable(getattr(config, "resolved", {}))
    return prov


def image_wsclean_versions(paths) -> list[str]:
    """The distinct WSClean versions written in the FITS headers (WSCVERSI, WSCVDATE) of the images at
    `paths`; unreadable files are passed over."""
    from astropy.io import fits

    seen: list[str] = []
    for p in paths:
        try:
            header = fits.getheader(Path(p))
        except Exception:  # noqa: BLE001 - an unreadable image simply says nothing
            continue
        if "WSCVERSI" in header:
            v = f"{header['WSCVERSI']}".strip() + (f" ({header['WSCVDATE']})" if "WSCVDATE" in header else "")
            if v not in seen:
                seen.append(v)
    return seen
