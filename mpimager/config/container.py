"""The `[container]` table: where WSClean runs (natively, or in a Singularity/Apptainer image), validated.

Pure: the values and their checks. Running a container is `mpimager.runtime.containers`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from mpimager.errors import ConfigError

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

    @classmethod
    def from_mapping(cls, d: Mapping, where: str) -> ContainerOptions:
        """Validate a `[container]` table; every problem at once, one line, naming `where` and the key."""
        known = {f.name for f in fields(cls)}
        problems = []

        def bad(key, msg):
            problems.append(f"{where} {key}: {msg}")

        for key in d:
            if key not in known:
                bad(key, f"unknown key (known: {', '.join(sorted(known))})")
        values = {}
        runtime = d.get("runtime", "native")
        if runtime not in RUNTIMES:
            bad("runtime", f"expected one of {', '.join(repr(r) for r in RUNTIMES)}, got {runtime!r}")
        values["runtime"] = runtime
        for key in ("image", "binary", "cache_dir"):
            v = d.get(key)
            if v is None:
                continue
            if not isinstance(v, str) or not v.strip():
                bad(key, f"expected a non-empty string, got {v!r}")
                continue
            v = os.path.expanduser(v)
            if key == "image" and "://" in v:
                if not v.startswith(PULL_SCHEMES):
                    bad(key, f"unsupported URI {v!r} (use {', '.join(PULL_SCHEMES)} or a local path)")
            elif key != "binary" and not os.path.isabs(v):
                bad(key, f"expected an absolute path{' or a docker:// URI' if key == 'image' else ''}, got {v!r}")
            values[key] = v
        for key, default in (("wsclean", "wsclean"), ("wsclean_mp", "wsclean-mp")):
            v = d.get(key, default)
            if not isinstance(v, str) or not v.strip():
                bad(key, f"expected the executable's name or path, got {v!r}")
            values[key] = v
        binds = d.get("binds", ())
        if not isinstance(binds, (list, tuple)) or not all(isinstance(b, str) for b in binds):
            bad("binds", f"expected a list of \"SRC[:DST[:ro]]\" strings, got {binds!r}")
            binds = ()
        for b in binds:
            try:
                parse_bind(b)
            except ValueError as exc:
                bad("binds", str(exc))
        values["binds"] = tuple(binds)
        if runtime in RUNTIMES[1:] and not values.get("image"):
            bad("image", f"required when runtime = {runtime!r} (a SIF file, sandbox directory or docker:// URI)")
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(**values)


def parse_bind(spec: str) -> tuple[str, str, bool]:
    """"SRC[:DST[:ro|rw]]" -> (src, dst, read_only); ValueError with a one-line reason."""
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
