"""The `[container]` table: where WSClean runs (natively, or in a Singularity/Apptainer image), its keys declared
once in the config's validator vocabulary.

Pure: the values and their checks. Running a container is `mpimager.runtime.containers`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpimager.config import validate as v

RUNTIMES = ("native", "singularity", "apptainer")
PULL_SCHEMES = ("docker://", "library://", "oras://", "shub://", "https://")

# Binding any of these would hide the image's own system directories.
SYSTEM_DIRS = frozenset({"/", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/var", "/proc",
                          "/sys", "/dev", "/boot", "/run", "/opt", "/srv"})
SYSTEM_TREES = ("/usr/", "/etc/", "/proc/", "/sys/", "/dev/", "/boot/")

@dataclass(frozen=True)
class ContainerOptions:
    """How WSClean is run: the `[container]` table of the config."""

    runtime: str = "native"
    """"native" (WSClean on PATH), "singularity" or "apptainer"."""
    image: str | None = None
    """Local SIF file or sandbox directory (absolute path), or a docker:// (library://, oras://) URI."""
    binds: tuple[str, ...] = ()
    """Extra bind mounts "SRC[:DST[:ro|rw]]" besides the ones every job gets (MSs, outputs, temp, $HOME, /tmp, cwd)."""
    binary: str | None = None
    """The runtime executable, a name on PATH or a path; default: the runtime's name."""
    wsclean: str = "wsclean"
    """The WSClean executable: on PATH natively, or inside the image."""
    wsclean_mp: str = "wsclean-mp"
    """WSClean's MPI build, for --nodes-mpi runs: on PATH natively, or inside the image."""
    cache_dir: str | None = None
    """Where URI images are pulled to; default $APPTAINER_CACHEDIR/mpimager, else $XDG_CACHE_HOME/mpimager/images."""

    def __post_init__(self) -> None:
        SECTION.normalise(self, "ContainerOptions")  # values built in code get the checks of a config table

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str) -> ContainerOptions:
        """Validate a `[container]` table `d`: every problem at once, in one ConfigError line naming `where`
        (e.g. 'FILE: [container]') and the key."""
        return cls(**SECTION.parse(d, where))


def parse_bind(spec: str) -> tuple[str, str, bool]:
    """A bind `spec` "SRC[:DST[:ro|rw]]" -> (src, dst, read_only); ValueError with a one-line reason."""
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0] or "," in spec:
        raise ValueError(f"bind {spec!r}: expected SRC[:DST[:ro|rw]] (no ',' inside one bind)")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 and parts[1] else src
    mode = parts[2] if len(parts) > 2 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"bind {spec!r}: mount option must be ro or rw, got {mode!r}")
    for p in (src, dst):
        if not os.path.isabs(p):
            raise ValueError(f"bind {spec!r}: {p!r} is not an absolute path")
    if os.path.normpath(dst) in SYSTEM_DIRS:
        raise ValueError(f"bind {spec!r}: would hide the image's {os.path.normpath(dst)}")
    return os.path.normpath(src), os.path.normpath(dst), mode == "ro"


_absolute, _a_path = v.path(absolute=True), v.path()


def _image(value: Any, base: Path | None = None) -> str:
    text = v.string()(value)
    if "://" in text:
        if not text.startswith(PULL_SCHEMES):
            raise v.Invalid(reason=f"unsupported URI {text!r} (use {', '.join(PULL_SCHEMES)} or a local path)")
        return text
    try:
        return str(_absolute(text, base))
    except v.Invalid as exc:
        if exc.reason:
            raise
        raise v.Invalid("an absolute path or a docker:// URI") from None


def _bind(value: Any, base: Path | None = None) -> str:
    spec = v.string()(value)
    src, sep, rest = spec.partition(":")
    if base is not None and src.strip():  # SRC read from a file resolves against it
        spec = str(_a_path(src, base)) + sep + rest
    try:
        parse_bind(spec)
    except ValueError as exc:
        raise v.Invalid(reason=str(exc)) from None
    return spec


def _image_needed(table: Mapping[str, Any]) -> list[tuple[str, str]]:
    runtime = table.get("runtime", ContainerOptions.runtime)
    if runtime != "native" and not table.get("image"):
        return [("image", f"required when runtime = {runtime!r} (a SIF file, sandbox directory or docker:// URI)")]
    return []


_executable = v.string(what="the executable's name or path")
#: every key of [container] and what it may be (the defaults are ContainerOptions' own)
SECTION = v.Section({
    "runtime": v.choice(RUNTIMES),
    "image": v.optional(_image),
    "binds": v.list_of(_bind, what='a list of "SRC[:DST[:ro]]" strings'),
    "binary": v.optional(v.string(user=True)),
    "wsclean": _executable,
    "wsclean_mp": _executable,
    "cache_dir": v.optional(v.path(absolute=True, what="a non-empty string")),
}, unknown=v.AT_KEY, together=(_image_needed,))
