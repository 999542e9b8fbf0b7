"""Where WSClean runs: natively, or inside a Singularity/Apptainer image driven through spython.

`ContainerOptions` mirrors the `[container]` TOML table; `make_runtime` turns it into a `Runtime`
whose `command(argv, binds)` is the argv that `mpimager.runtime.process.run` executes. Natively that is the
WSClean argv itself. In a container it is `python -m mpimager.runtime.containers exec ... IMAGE argv...`: a
small child that calls spython's `Client.execute(..., stream=True, stream_type="both")`, prints every
line it yields and exits with the container command's exit code. That child runs in the process
group `process.run` owns, so timeouts and watcher aborts kill the runtime and WSClean with it, and
nothing of spython's (its `sys.exit` on a missing bind, its env handling) can touch the caller.
This is the only module that imports spython, and only in that child.

spython always runs the program named `singularity` found on PATH. For `binary = "apptainer"` or a
binary given by path, the child puts a directory holding a `singularity` symlink to it first on its
PATH (the link Apptainer itself installs for compatibility).

Images: a local SIF file or sandbox directory, or a `docker://` (library://, oras://, ...) URI that
`prepare` pulls once into `cache_dir` under an exclusive `fcntl.flock`, so concurrent ranks or runs
pull it once and the others wait and reuse the file. On a file system that cannot lock (flock ENOLCK,
EOPNOTSUPP: some Lustre mounts) the pull goes on unlocked, with a warning: each pull writes its own
partial file renamed into place, so concurrent pulls may repeat the work but never leave a half image.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from mpimager.config.container import PULL_SCHEMES, SYSTEM_DIRS, SYSTEM_TREES, ContainerOptions, parse_bind
from mpimager.environment import cache_dir
from mpimager.errors import ConfigError, InputError, JobError

HELP_TIMEOUT_S = 300.0


# --- binds (pure) ---------------------------------------------------------------------------------



def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def collapse_binds(job_paths: Iterable, defaults: Iterable, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The --bind list: `extra` user specs, then every path of `job_paths` and of `defaults` (HOME, /tmp,
    cwd) bound at its own path read-write; duplicates dropped and paths under another same-path bind collapsed
    into it (unless that one is read-only and this one is not). Parents come before children.

    Empty/None entries are skipped, so are defaults that are system directories (a cwd of /usr/...),
    and job paths equal to a system directory. Raises InputError for a path Singularity can't bind.
    """
    entries: list[tuple[str, str, bool]] = [parse_bind(s) for s in extra]
    candidates = [(p, False) for p in job_paths] + [(p, True) for p in defaults]
    for p, is_default in candidates:
        if p is None or str(p) == "":
            continue
        p = os.path.normpath(os.path.abspath(os.fspath(p)))
        if p in SYSTEM_DIRS or (is_default and p.startswith(SYSTEM_TREES)):
            continue
        if ":" in p or "," in p:
            raise InputError(f"path {p} contains ':' or ',' which a container --bind cannot express")
        entries.append((p, p, False))
    kept: list[tuple[str, str, bool]] = []
    for src, dst, ro in sorted(set(entries), key=lambda e: (e[1].count("/"), e[1], e[2])):
        if src == dst and any(ksrc == kdst and _under(dst, kdst) and (kro <= ro)
                              for ksrc, kdst, kro in kept):
            continue
        kept.append((src, dst, ro))
    return tuple(src if (src == dst and not ro) else f"{src}:{dst}" + (":ro" if ro else "") for src, dst, ro in kept)


def default_binds(env: Mapping[str, str], cwd: str | None = None) -> list[str]:
    """$HOME (from `env`, else this user's), /tmp and the working directory (`cwd`, else this process's),
    those that are directories: what Singularity binds by default, made explicit."""
    home = env.get("HOME") or os.path.expanduser("~")
    return [p for p in (home, "/tmp", cwd or os.getcwd()) if p and os.path.isdir(p)]


# --- image pulls ------------------------------------------------------------------------------------


def pulled_image_path(uri: str, cache_dir: os.PathLike | str) -> Path:
    """Where `uri` is (or will be) pulled in `cache_dir`: a readable name plus a digest of the whole URI."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split("://", 1)[-1]).strip("_")[:80]
    digest = hashlib.sha256(uri.encode()).hexdigest()[:10]
    return Path(cache_dir) / f"{stem}-{digest}.sif"


def ensure_pulled(uri: str, cache_dir: os.PathLike | str, puller: Callable[[str, Path], None]) -> Path:
    """The local image of `uri` in `cache_dir`, pulled by `puller(uri, dest)` if not there yet.

    The pull runs under an exclusive flock on `<image>.lock` into a temporary name renamed into
    place, so of several concurrent callers exactly one pulls and the others wait and reuse it;
    a failed or killed pull leaves no image behind. JobError when `puller` returns without an image.
    """
    final = pulled_image_path(uri, cache_dir)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_suffix(".lock"), "a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        except OSError as exc:  # a file system without locks: pull unlocked (a pid-unique partial, renamed)
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            logging.getLogger(__name__).warning("%s: cannot lock it (%s): pulling without the lock; concurrent "
                                                "pulls may each pull the image", lock.name, exc.strerror)
        if final.exists():
            return final
        partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
        try:
            puller(uri, partial)
            if not partial.exists():
                raise JobError(f"pulling {uri} produced no image at {partial}")
            os.replace(partial, final)
        finally:
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            elif partial.exists():
                partial.unlink()
    return final


# --- runtimes -------------------------------------------------------------------------------------


def _file_identity(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_mtime_ns}:{st.st_size}"


class Runtime:
    """Runs WSClean; see the module docstring. Subclasses: NativeRuntime, ContainerRuntime."""

    def __init__(self, options: ContainerOptions):
        self.options = options

    def prepare(self, env: Mapping[str, str] | None = None) -> None:
        """Check (and fetch) everything before any job, looking programs up on the PATH of `env` (None: this
        process's): InputError naming what is missing."""
        raise NotImplementedError

    def command(self, argv: Sequence[str], binds: Sequence) -> list[str]:
        """The argv that runs `argv` in this runtime, with `binds` (paths the job reads or writes) visible to it."""
        raise NotImplementedError

    def env(self, base: Mapping[str, str]) -> dict:
        """The child's environment: `base` with HOME always set (WSClean needs it)."""
        env = dict(base)
        if not env.get("HOME"):
            env["HOME"] = os.path.expanduser("~")
        return env

    def identity(self) -> str:
        """A string that changes when the WSClean that runs changes (binary or image path, mtime, size): the key of
        the cached option list."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where WSClean runs, for messages."""
        raise NotImplementedError

    def help_text(self) -> str:
        """`wsclean --help` of the WSClean that will run (InputError if it can't be run)."""
        return self._query("--help")

    def version(self) -> str:
        """The first non-empty line of `wsclean --version`, e.g. "WSClean version 3.1.0 (2022-04-01)"."""
        return next((line.strip() for line in self._query("--version").splitlines() if line.strip()), "")

    def _query(self, flag: str) -> str:
        from mpimager.runtime import process

        self.prepare()
        with tempfile.TemporaryDirectory(prefix="mpimager-wsclean-") as tmp:
            log = Path(tmp) / "out.log"
            try:
                result = process.run(self.command([self.options.wsclean, flag], []), log=log,
                                     env=self.env(os.environ), timeout=HELP_TIMEOUT_S)
            except JobError as exc:
                raise InputError(f"{self.describe()}: {exc}") from None
            text = log.read_text(errors="replace")
        if not result.ok:
            last = next((t.strip() for t in reversed(result.tail) if t.strip()), "")
            raise InputError(f"`{self.options.wsclean} {flag}` failed in {self.describe()} "
                             f"(exit {result.returncode}{': ' + last if last else ''})")
        return text


class NativeRuntime(Runtime):
    """WSClean from PATH (or the path given as `wsclean`)."""

    def _resolve(self, env: Mapping[str, str] | None = None) -> str:
        path = (env or os.environ).get("PATH", os.defpath)
        found = shutil.which(self.options.wsclean, path=path)
        if not found:
            raise InputError(f"[container] wsclean: WSClean executable {self.options.wsclean!r} not found "
                             f"({'not on PATH' if os.sep not in self.options.wsclean else 'no such file'}; "
                             "install it or set [container] wsclean / runtime)")
        return found

    def prepare(self, env=None) -> None:
        """Check that the WSClean executable is on the PATH of `env` (None: this process's): else InputError."""
        self._resolve(env)

    def command(self, argv, binds=()) -> list[str]:
        """`argv` itself, as strings (`binds` are not needed natively)."""
        return [str(a) for a in argv]

    def identity(self) -> str:
        """'native:' and the real path, mtime and size of the WSClean executable."""
        return "native:" + _file_identity(self._resolve())

    def describe(self) -> str:
        """'native WSClean' and the executable as configured."""
        return f"native WSClean {self.options.wsclean}"


class ContainerRuntime(Runtime):
    """WSClean inside an image, run by Singularity/Apptainer through spython (in a child process)."""

    def __init__(self, options: ContainerOptions):
        super().__init__(options)
        if not options.image:
            raise ConfigError(f"[container] image: required when runtime = {options.runtime!r}")
        self.binary = options.binary or options.runtime
        self.uri = options.image if options.image.startswith(PULL_SCHEMES) else None
        cache = options.cache_dir or str(cache_dir("images"))
        self.image = str(pulled_image_path(self.uri, cache)) if self.uri else options.image
        self.cache_dir = cache

    def _resolve_binary(self, env: Mapping[str, str] | None = None) -> str:
        found = shutil.which(self.binary, path=(env or os.environ).get("PATH", os.defpath))
        if not found:
            raise InputError(f"[container] binary: container runtime {self.binary!r} not found "
                             f"({'not on PATH' if os.sep not in self.binary else 'no such executable'}; "
                             f"install {self.options.runtime} or set [container] binary)")
        return found

    def prepare(self, env=None) -> None:
        """Check that the container binary is on the PATH of `env` (None: this process's) and that the image
        exists, pulling a URI image once into the cache: else InputError."""
        self._resolve_binary(env)
        if self.uri:
            ensure_pulled(self.uri, self.cache_dir, lambda uri, dest: self._pull(uri, dest, env))
        elif not os.path.exists(self.image):
            raise InputError(f"[container] image: {self.image} does not exist (a SIF file or sandbox directory)")

    def _pull(self, uri: str, dest: Path, env) -> None:
        from mpimager.runtime import process

        argv = [sys.executable, "-m", "mpimager.runtime.containers", "pull", "--runtime-binary", self.binary,
                uri, str(dest)]
        log = Path(self.cache_dir) / (pulled_image_path(uri, self.cache_dir).stem + ".pull.log")
        result = process.run(argv, log=log, env=self.env(env or os.environ))
        if not result.ok:
            last = next((t.strip() for t in reversed(result.tail) if t.strip()), "")
            raise InputError(f"[container] image: could not pull {uri} with {self.binary} "
                             f"(exit {result.returncode}{': ' + last if last else ''}; log: {log})")

    def command(self, argv, binds=()) -> list[str]:
        """The container child's argv (module docstring) running `argv` in the image, with `binds` collapsed
        with the default binds and `[container] binds`."""
        bind_list = collapse_binds(binds, default_binds(os.environ), self.options.binds)
        cmd = [sys.executable, "-m", "mpimager.runtime.containers", "exec", "--runtime-binary", self.binary]
        for b in bind_list:
            cmd += ["--bind", b]
        return cmd + ["--", self.image, *map(str, argv)]

    def identity(self) -> str:
        """The runtime and the image file's path, mtime and size (for a sandbox, also those of the WSClean in it);
        prepares first, so a URI image is pulled."""
        self.prepare()  # a URI image must be pulled, a local one must exist
        image = self.image
        if os.path.isdir(image):
            inner = os.path.join(image, self.options.wsclean.lstrip("/")) if os.path.isabs(self.options.wsclean) \
                else next((os.path.join(image, d, self.options.wsclean) for d in
                           ("usr/local/bin", "usr/bin", "bin", "opt/bin")
                           if os.path.exists(os.path.join(image, d, self.options.wsclean))), image)
            return f"{self.options.runtime}:sandbox:{_file_identity(image)}:{_file_identity(inner)}"
        return f"{self.options.runtime}:{_file_identity(image)}"

    def describe(self) -> str:
        """The WSClean, the runtime and the image as configured."""
        return f"{self.options.wsclean} in {self.options.runtime} image {self.options.image}"


def make_runtime(options: ContainerOptions) -> Runtime:
    """The `Runtime` of the `[container]` `options`: native, or a container (ConfigError without an image)."""
    return NativeRuntime(options) if options.runtime == "native" else ContainerRuntime(options)


# --- the child: `python -m mpimager.runtime.containers exec|pull ...` -----------------------------------------


def _singularity_on_path(binary: str, shim_dir: str) -> None:
    """Make the program spython calls (`singularity` on PATH) be `binary`."""
    path = os.environ.get("PATH", os.defpath)
    found = shutil.which(binary, path=path)
    if not found:
        raise FileNotFoundError(binary)
    found = os.path.abspath(found)
    if os.path.basename(found) == "singularity":
        target_dir = os.path.dirname(found)
    else:
        os.symlink(found, os.path.join(shim_dir, "singularity"))
        target_dir = shim_dir
    if shutil.which("singularity", path=path) != os.path.join(target_dir, "singularity"):
        os.environ["PATH"] = target_dir + os.pathsep + path


def _child_main(args: list[str]) -> int:
    usage = ("usage: python -m mpimager.runtime.containers exec --runtime-binary B [--bind SPEC]... -- IMAGE CMD...\n"
             "       python -m mpimager.runtime.containers pull --runtime-binary B URI DEST")
    if not args or args[0] not in ("exec", "pull"):
        print(usage, file=sys.stderr)
        return 2
    action, rest = args[0], args[1:]
    binary, binds = "singularity", []
    while rest and rest[0] != "--" and rest[0].startswith("--"):
        if rest[0] == "--runtime-binary" and len(rest) > 1:
            binary, rest = rest[1], rest[2:]
        elif rest[0] == "--bind" and len(rest) > 1:
            binds.append(rest[1])
            rest = rest[2:]
        else:
            print(f"mpimager.runtime.containers: unknown option {rest[0]}\n{usage}", file=sys.stderr)
            return 2
    if rest and rest[0] == "--":
        rest = rest[1:]
    if len(rest) < 2:
        print(usage, file=sys.stderr)
        return 2
    for b in binds:  # spython would sys.exit(1) on these with a less useful message
        src = b.split(":")[0]
        if not os.path.exists(src):
            print(f"mpimager: bind source {src} does not exist", flush=True)
            return 255
    with tempfile.TemporaryDirectory(prefix="mpimager-runtime-") as shim:
        try:
            _singularity_on_path(binary, shim)
        except FileNotFoundError:
            print(f"mpimager: container runtime {binary!r} not found on PATH", flush=True)
            return 127
        from spython.main import get_client

        client = get_client(quiet=True)
        try:
            if action == "exec":
                image, command = rest[0], rest[1:]
                stream = client.execute(image, command, bind=binds or None, stream=True, stream_type="both")
            else:
                uri, dest = rest[0], rest[1]
                _, stream = client.pull(uri, name=os.path.basename(dest), pull_folder=os.path.dirname(dest),
                                        stream=True)
            for line in stream:
                sys.stdout.write(line)
                sys.stdout.flush()
        except subprocess.CalledProcessError as exc:
            sys.stdout.flush()
            return exc.returncode if exc.returncode > 0 else 128 - exc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
