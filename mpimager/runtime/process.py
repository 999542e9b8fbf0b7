"""The one way mpimager runs an external program (WSClean native or in a container, mpirun, ...).

`run` starts the child in its own session (so in its own process group), streams its merged
stdout/stderr into a log file (complete, flushed as it arrives) and, line by line, to an optional
watcher. A watcher stops the child by raising `mpimager.errors.WatchAbort` (or a subclass, such as
`mpimager.wsclean.watcher.Divergence`). On abort, timeout, or when the child exits leaving members of its group behind,
the whole group is terminated (SIGTERM, then SIGKILL after a grace period) and waited for:
when `run` returns, nothing it started is still running, so a retry never overlaps a failed run
(a process that leaves the session itself, with setsid or as a daemon, is beyond its reach).
A stop request (mpimager.runtime.interrupt: SIGTERM/SIGINT to this process, or a stop message from rank 0)
ends the group the same way, after a shorter grace (INTERRUPT_GRACE_S: Open MPI's mpirun SIGKILLs its
ranks 1 s after forwarding SIGTERM), and raises `Interrupted`. Should this process die without that
chance (SIGKILL), the kernel kills the child with it (PR_SET_PDEATHSIG), so a WSClean never outlives its rank.

A non-zero exit is a result (`ProcessResult`), not an exception; `run` raises `JobError` only
when the program cannot be started. `mpi_clean_env` strips an MPI launch's variables from a child's environment.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mpimager.errors import Interrupted, JobError, WatchAbort
from mpimager.runtime import interrupt

TAIL_LINES = 20
KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL
INTERRUPT_GRACE_S = 0.5  # the same, when the run is told to stop
LINGER_S = 1.0  # how long output may keep flowing from the group after the main child exited
_POLL_S = 0.2


@dataclass(frozen=True)
class ProcessResult:
    """What happened to one external process. `returncode` < 0 means killed by that signal."""

    argv: tuple[str, ...]
    returncode: int
    duration: float  # seconds, start to reaped
    log: Path
    tail: tuple[str, ...]  # the last lines of output (at most TAIL_LINES)
    timed_out: bool = False
    error: WatchAbort | None = None  # what the watcher raised, if it stopped the process

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.error is None

    def summary(self) -> str:
        """One line: what failed, how, and where the log is (or "... succeeded")."""
        name = os.path.basename(self.argv[0]) if self.argv else "?"
        if self.error is not None:
            how = str(self.error)
        elif self.timed_out:
            how = f"timed out after {self.duration:.0f} s"
        elif self.returncode < 0:
            how = f"killed by signal {-self.returncode}"
        elif self.returncode:
            last = next((t.strip() for t in reversed(self.tail) if t.strip()), "")
            how = f"exit code {self.returncode}" + (f": {last}" if last else "")
        else:
            return f"{name} succeeded in {self.duration:.1f} s (log: {self.log})"
        return f"{name} failed ({how}); log: {self.log}"

    def raise_for_failure(self) -> ProcessResult:
        """Return self when ok, else raise JobError(summary, log=...)."""
        if not self.ok:
            raise JobError(self.summary(), log=self.log)
        return self


def run(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: os.PathLike | str | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    kill_grace: float = KILL_GRACE_S,
    append: bool = False,
) -> ProcessResult:
    """Run `argv` to completion (or abort/timeout); see the module docstring.

    `env` is the child's complete environment (None: this process's); `cwd` its working directory. `log` is
    created (parents too), truncated unless `append`. `on_line` receives each output line (a watcher: raising
    WatchAbort stops the child); `timeout` seconds end it; `kill_grace` seconds pass between SIGTERM and
    SIGKILL. Raises JobError only if the program can't start, Interrupted when the run is told to stop.
    """
    argv = tuple(str(a) for a in argv)
    if not argv:
        raise JobError("run: empty command")
    log = Path(log)
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        logf = open(log, "ab" if append else "wb")  # noqa: SIM115 - the pump owns it; closed by _supervise
    except OSError as exc:
        raise JobError(f"cannot run {argv[0]}: cannot write its log {log} ({exc.strerror or exc})") from None
    start = time.monotonic()
    with logf:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=None if env is None else dict(env), cwd=cwd, start_new_session=True,
                preexec_fn=_die_with_parent())
        except OSError as exc:
            message = _start_failure(argv[0], cwd, exc)
            logf.write(f"[mpimager] {message}\n".encode())
            raise JobError(message, log=log) from None
        return _supervise(proc, argv, logf, log, start, timeout, on_line, kill_grace)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGKILL the child when this process dies (Linux), else None.

    It calls one prebuilt libc function (no Python-level lock), so it is safe with other threads running."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(128 + int(signal.SIGKILL))

    return preexec


def _start_failure(program: str, cwd, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        if cwd is not None and exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
            return f"cannot run {program}: working directory {cwd} does not exist"
        return f"cannot run {program}: no such program (not found on PATH or not a file)"
    if isinstance(exc, PermissionError):
        return f"cannot run {program}: permission denied (not executable?)"
    return f"cannot run {program}: {exc.strerror or exc}"


class _Pump:
    """Moves the child's output into the log (as it comes) and, line by line, to the watcher."""

    def __init__(self, stream, logf, on_line):
        self.fd = stream.fileno()
        os.set_blocking(self.fd, False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)
        self.logf = logf
        self.on_line = on_line  # set to None once the watcher aborted or we are stopping
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.pending = bytearray()
        self.eof = False
        self.error: WatchAbort | None = None

    def __call__(self, wait: float) -> None:
        """Read what arrives within `wait` s. A WatchAbort from the watcher is recorded, not raised."""
        if self.eof:  # only the child's exit is awaited now: poll it often
            time.sleep(min(wait, 0.01))
            return
        if not self.sel.select(wait):
            return
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.eof = True
            if self.pending:
                self._emit(bytes(self.pending))
                self.pending.clear()
            return
        self.logf.write(chunk)
        self.logf.flush()
        self.pending.extend(chunk)
        while (nl := self.pending.find(b"\n")) >= 0:
            line = bytes(self.pending[:nl])
            del self.pending[: nl + 1]
            self._emit(line)

    def _emit(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.tail.append(text)
        if self.on_line is not None:
            try:
                self.on_line(text)
            except WatchAbort as exc:
                self.error = exc
                self.on_line = None

    def drain(self, seconds: float = 1.0) -> None:
        """Read what is already buffered (bounded: a writer outside our group may never stop)."""
        end = time.monotonic() + seconds
        while not self.eof and time.monotonic() < end and self.sel.select(0):
            self(0.0)

    def close(self) -> None:
        self.sel.close()


def _supervise(proc, argv, logf, log, start, timeout, on_line, kill_grace) -> ProcessResult:
    """Pump output until the child is done or must be stopped; always leave the group dead and reaped."""
    pump = _Pump(proc.stdout, logf, on_line)
    deadline = None if timeout is None else start + timeout
    timed_out = False
    exited_at: float | None = None
    stopping = False
    interrupted = None
    try:
        while pump.error is None:
            interrupted = interrupt.requested()
            if interrupted:
                kill_grace = min(kill_grace, INTERRUPT_GRACE_S)
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                timed_out = True
                break
            if exited_at is None and _exited(proc):
                exited_at = now
            if exited_at is not None and (pump.eof or now - exited_at >= LINGER_S):
                break  # done; group members still holding the pipe are stopped below
            pump(_POLL_S if deadline is None else max(0.0, min(_POLL_S, deadline - now)))
        # Stop whatever is left of the group (nothing, after a clean exit), still logging output.
        pump.on_line = None
        stopping = True
        _stop_group(proc, kill_grace, pump)
        pump.drain()
    except BaseException:
        # A watcher bug, KeyboardInterrupt, ...: never leave the group running.
        if not stopping:
            _stop_group(proc, kill_grace, None)
            proc.wait()
        raise
    finally:
        pump.close()
        proc.stdout.close()
    returncode = proc.wait()
    if interrupted:
        logf.write(f"\n[mpimager] interrupted ({interrupted}): process group ended\n".encode())
        logf.flush()
        raise Interrupted(f"{os.path.basename(argv[0])} stopped: the run was interrupted ({interrupted})")
    if timed_out:
        logf.write(f"\n[mpimager] timed out after {timeout} s: process group killed\n".encode())
    elif pump.error is not None:
        logf.write(f"\n[mpimager] stopped: {pump.error}\n".encode())
    logf.flush()
    return ProcessResult(argv=argv, returncode=returncode, duration=time.monotonic() - start, log=log,
                         tail=tuple(pump.tail), timed_out=timed_out, error=pump.error)


def _exited(proc) -> bool:
    """Has the main child exited? It stays a zombie (WNOWAIT), so its pid keeps naming its group."""
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ... ; comm may contain spaces/parentheses
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def _group_alive(pgid: int) -> bool:
    if os.path.isdir("/proc/self"):
        return bool(_group_members(pgid))
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(proc, grace: float, pump) -> None:
    """SIGTERM the child's group, SIGKILL it after `grace` s; return when no member is alive.

    The main child is not reaped before this returns (the caller waits for it), so the group id
    cannot be reused by an unrelated process meanwhile.
    """
    pgid = proc.pid
    if not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    _signal_group(pgid, signal.SIGCONT)  # stopped processes must run to act on SIGTERM
    if _wait_group_gone(pgid, grace, pump):
        return
    _signal_group(pgid, signal.SIGKILL)
    if not _wait_group_gone(pgid, 30.0, pump):
        raise JobError(f"process group {pgid} of {proc.args[0]} survived SIGKILL for 30 s "
                       f"(uninterruptible I/O?): pids {_group_members(pgid)}")


def _wait_group_gone(pgid: int, seconds: float, pump) -> bool:
    end = time.monotonic() + seconds
    while True:
        if not _group_alive(pgid):
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        if pump is not None:
            pump(min(0.05, left))
        else:
            time.sleep(min(0.05, left))


# --- environments ---------------------------------------------------------------------------

_MPI_PREFIXES = ("OMPI_", "PMIX_", "OPAL_", "PRTE_", "PMI_", "HYDRA_", "MPIR_", "I_MPI_HYDRA_")
_MPI_NAMES = {"PMI_FD", "PMI_RANK", "PMI_SIZE", "PMI_PORT", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"}
# User settings that mpirun passes on to its ranks and that a nested launch needs as well.
_USER_SETTINGS = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")
# OMPI_MCA_* that Open MPI's mpirun sets for its ranks to describe the running job (4.x names,
# measured with `mpirun -n 1 env`); any other OMPI_MCA_* is a user's MCA parameter and is kept.
_LAUNCH_MCA = ("OMPI_MCA_ess", "OMPI_MCA_orte_", "OMPI_MCA_pmix", "OMPI_MCA_prte", "OMPI_MCA_initial_wdir",
               "OMPI_MCA_mpi_oversubscribe", "OMPI_MCA_shmem_RUNTIME_QUERY_hint")


def mpi_clean_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the variables of the current MPI launch (Open MPI/PMIx/PRRTE, MPICH/Hydra/PMI),
    for a child that starts its own MPI job (e.g. `mpirun wsclean-mp`) from inside an MPI rank.

    Kept: `OMPI_ALLOW_RUN_AS_ROOT*` and the user's own `OMPI_MCA_*` parameters (e.g. btl choices);
    dropped: every other variable with an MPI launcher prefix, including mpirun's OMPI_MCA_ job state."""
    out = {}
    for key, value in env.items():
        mpi = key.startswith(_MPI_PREFIXES) or key in _MPI_NAMES
        user = key in _USER_SETTINGS or (key.startswith("OMPI_MCA_") and not key.startswith(_LAUNCH_MCA))
        if not mpi or user:
            out[key] = value
    return out
