"""Run one planned job on the rank it was given to: environment, attempts, retries, output checks, staging.

Every attempt is an argv run by `mpimager.runtime.process.run` (WSClean through the configured runtime; the
FixMS and reduce steps as `python -m ...` children), its complete output in `RUN_DIR/logs/ID.log`
(`ID.attemptN.log` for retries). A job succeeds when the process exits 0 AND every predicted output
exists and opens (FITS); it fails with a `JobError` naming the exit code and the log otherwise.

Staging: an attempt never writes into the out-dir. A WSClean job's `-name` prefix (a reduce job's `--out`)
points into a staging directory, `STAGE = TEMP_DIR/stage` (the job's `-temp-dir`: under `[worker] temp_dir`
when set, which may be node-local scratch such as `$SLURM_TMPDIR`, `$TMPDIR` or `/dev/shm`; a reduce job
stages in a hidden directory of its out-dir). Only when the process succeeded and every predicted output
is there and verified are the files moved into place (`install`): a rename on the same file system; across
file systems every file is first copied next to its destination under a hidden partial name and fsync'd,
then all are renamed, so a half file never stands under a product's name; a final being replaced is kept under
a hidden name until all are in place, so a rename that fails leaves every final as it was. A failed attempt
leaves what was in the out-dir untouched and removes only its own staging.

Retry strategy (`[worker] retries` extra attempts, the failed process and its children dead first):
- WSClean diverged (by the rules of mpimager.wsclean.watcher: from its log as it runs, or from its images
  once it exited 0): again with `-gain` and `-mgain` halved (an unset one is set to half WSClean's default,
  mpimager.wsclean.options.DEFAULT_GAINS: `-gain 0.05`, `-mgain 0.5`);
- an I/O error line, a kill by a signal, or casacore's abort (134): the same command again;
- any other failure (exit 255: WSClean refused its options; a timeout): no retry, it would fail alike.
The timeout (`[worker] timeout`) covers the whole job: sourcing `env_file` and every attempt.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from mpimager.config.container import ContainerOptions
from mpimager.errors import EnvFileTimeout, JobError
from mpimager.planner.jobs import Job
from mpimager.rundir import layout
from mpimager.rundir.layout import log_path
from mpimager.states import Retry
from mpimager.wsclean.options import DEFAULT_GAINS

logger = logging.getLogger(__name__)

RETRY_SAME, RETRY_LOWER_GAINS, NO_RETRY = Retry.SAME, Retry.LOWER_GAINS, Retry.NONE


@dataclass(frozen=True)
class RunContext:
    """What every worker needs besides the job, sent with each job."""

    run_dir: str
    retries: int
    timeout: float | None
    env_file: str | None
    container: ContainerOptions


@dataclass(frozen=True)
class JobResult:
    job_id: str
    attempts: int
    argv: tuple[str, ...]  # of the last attempt (differs from the plan after a divergence retry)
    outputs: tuple[tuple[str, int], ...]
    logs: tuple[str, ...]
    duration: float
    notes: tuple[str, ...] = ()
    exit_code: int | None = 0  # of the last attempt (None: it did not end by itself: timeout, watcher)


ENV_FILE_TIMEOUT_S = 120.0  # how long sourcing env_file may take when the job has no [worker] timeout


def job_env(env_file: str | None, base: dict | None = None, *, log: str | None = None,
            timeout: float | None = None) -> dict:
    """The environment of a job: ours (without MPI launch variables), plus `env_file` sourced by bash.

    `env_file`: the file (None: none); `base`: the environment to start from (None: ours); `log`: where
    bash's output goes (appended; None: a temporary file); `timeout`: seconds sourcing may take (None:
    ENV_FILE_TIMEOUT_S). Bash runs like a job (mpimager.runtime.process.run, its own process group): a
    background process the file starts is stopped with it and never holds the job up.
    The file's path goes to bash as an argument, never inside the script text; a failing source (a missing
    file, or a file whose last command fails, as `source` reports it) is a JobError naming the file and
    bash's last error line. A command failing in the middle of the file is not an error (site environment
    files are rarely written to stop on errors)."""
    import tempfile

    from mpimager.environment import without_casacore_defaults
    from mpimager.runtime import process
    from mpimager.runtime.process import mpi_clean_env

    env = without_casacore_defaults(mpi_clean_env(dict(os.environ if base is None else base)))
    env.setdefault("HOME", os.path.expanduser("~"))
    if not env_file:
        return env
    path = os.path.expandvars(os.path.expanduser(env_file))
    limit = ENV_FILE_TIMEOUT_S if timeout is None else max(timeout, 0.001)
    script = 'set -a; . "$1" >&2 </dev/null || exit $?; env -0 >"$2"'
    with tempfile.TemporaryDirectory(prefix="mpimager-env-") as tmp:
        out = os.path.join(tmp, "env")
        r = process.run(["bash", "-c", script, "mpimager-env-file", path, out], env=env, timeout=limit,
                        log=Path(log or os.path.join(tmp, "log")), append=True)
        if r.timed_out:
            raise EnvFileTimeout(f"env_file {path}: sourcing it took more than {limit:.0f} s", log=log)
        if r.returncode != 0:
            last = next((line for line in reversed(r.tail) if line.strip()), f"exit {r.returncode}")
            raise JobError(f"env_file {path}: sourcing it failed ({last.strip()})", log=log)
        with open(out, "rb") as f:
            text = f.read().decode(errors="replace")
    pairs = (item.split("=", 1) for item in text.split("\0") if "=" in item)
    return mpi_clean_env({k: v for k, v in pairs if k not in ("_", "SHLVL", "PWD", "OLDPWD")})


def lower_gains(argv: list[str]) -> list[str]:
    """The WSClean `argv` with -gain and -mgain halved; one it does not set is added before `-name` as half
    WSClean's default (mpimager.wsclean.options.DEFAULT_GAINS: -gain 0.05, -mgain 0.5)."""
    argv = list(argv)
    for flag, default in DEFAULT_GAINS.items():
        if flag in argv:
            i = argv.index(flag) + 1
            argv[i] = str(round(float(argv[i]) / 2, 4))
        else:
            i = argv.index("-name")
            argv[i:i] = [flag, str(round(default / 2, 4))]
    return argv


def retry_strategy(result) -> Retry:
    """How to retry after the failed attempt `result` (a ProcessResult): with lower gains when WSClean diverged,
    the same command after an I/O error, a kill by a signal or exit 134, else not at all."""
    from mpimager.wsclean.watcher import Divergence, IOFailure

    if isinstance(result.error, Divergence):
        return RETRY_LOWER_GAINS
    if isinstance(result.error, IOFailure) or (not result.timed_out and (result.returncode < 0
                                                                          or result.returncode == 134)):
        return RETRY_SAME
    return NO_RETRY


def check_outputs(paths) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, size) of the good outputs of `paths`, and the problems of the others (missing, empty, unreadable
    FITS)."""
    from astropy.io import fits

    good, bad = [], []
    for p in paths:
        try:
            size = os.path.getsize(p)
            if size == 0:
                raise OSError("empty")
            if p.endswith(".fits"):
                with fits.open(p, memmap=True) as hdul:
                    hdul[0].header  # noqa: B018 - a truncated or foreign file fails here
            good.append((p, size))
        except Exception as exc:
            bad.append(f"{os.path.basename(p)} ({'missing' if isinstance(exc, FileNotFoundError) else exc})")
    return good, bad


STAGE = "stage"  # the staging directory's name inside a WSClean job's temp dir
PARTIAL = ".mpimager-partial-"  # a copy on its way into place (across file systems) is named PARTIAL + name
OLD = ".mpimager-old-"  # a final being replaced is also kept as OLD + name until every output is in place


@dataclass(frozen=True)
class Staging:
    """Where one job's attempts write (`dir`) and how its argv points there (see the module docstring)."""

    dir: str
    out_dir: str  # where the job's outputs go in the end

    def path(self, output: str) -> str:
        """The staged counterpart of a final output path."""
        return os.path.join(self.dir, os.path.relpath(output, self.out_dir))

    def argv(self, job: Job, argv: list[str]) -> list[str]:
        """`argv` with its output location (`-name PREFIX` for a WSClean `job`, else reduce's `--out DIR`)
        pointing into the staging."""
        argv = list(argv)
        if job.kind == "wsclean":
            i = argv.index("-name") + 1
            argv[i] = self.path(argv[i])
        else:
            i = argv.index("--out") + 1
            argv[i] = self.dir
        return argv

    def reset(self) -> None:
        """Make the staging directory empty (removed, then made again) for a new attempt."""
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)

    def remove(self) -> None:
        """Remove the staging directory and what it holds."""
        shutil.rmtree(self.dir, ignore_errors=True)


def staging_for(job: Job) -> Staging | None:
    """The staging of a job that writes products (WSClean, reduce), None for the others (FixMS, ...)."""
    if job.kind == "wsclean" and job.prefix and job.temp_dir:
        return Staging(os.path.join(job.temp_dir, STAGE), os.path.dirname(job.prefix))
    if job.kind == "reduce" and "--out" in job.argv:
        out = job.argv[job.argv.index("--out") + 1]
        return Staging(os.path.join(out, f".mpimager-stage-{_safe_name(job.id)}"), out)
    return None


def install(pairs: list[tuple[str, str]]) -> None:
    """Move each (staged, final) file of `pairs` into place; see the module docstring.

    pairs: (staged path, final path) of every output. Raises JobError naming the path that could not be
    written (a full disk, a directory in a file's place, ...), with every final path as it was before the call:
    each existing final is first kept under a hidden name beside it (a hard link, or a copy where the file
    system has none), and a rename that fails puts the ones already renamed back.
    """
    moves, partials, kept = [], [], {}
    try:
        for src, dst in pairs:
            parent = os.path.dirname(dst)
            os.makedirs(parent, exist_ok=True)
            if os.stat(src).st_dev == os.stat(parent).st_dev:
                moves.append((src, dst))
                continue
            partial = os.path.join(parent, PARTIAL + os.path.basename(dst))
            partials.append(partial)
            _copy_synced(src, partial)
            moves.append((partial, dst))
        for _, dst in moves:
            old = _keep_old(dst)
            if old:
                kept[dst] = old
    except OSError as exc:
        _remove([*partials, *kept.values()])
        raise JobError(f"cannot move the outputs into place: {exc.filename or 'the out-dir'}: "
                       f"{exc.strerror or exc}") from None
    done: list[tuple[str, str]] = []
    try:
        for src, dst in moves:
            os.replace(src, dst)
            done.append((src, dst))
    except OSError as exc:
        _put_back(done, kept)
        _remove([*partials, *kept.values()])
        raise JobError(f"cannot move the outputs into place: {exc.filename2 or exc.filename or 'the out-dir'}: "
                       f"{exc.strerror or exc}") from None
    _remove(kept.values())


def _put_back(done: list[tuple[str, str]], kept: dict[str, str]) -> None:
    """Undo the (staged, final) renames `done`: each new file back where it came from, the old one (its kept
    name in `kept`, popped) back in place."""
    for src, dst in reversed(done):
        old = kept.pop(dst, None)
        try:
            os.replace(dst, src)
            if old:
                os.replace(old, dst)
        except OSError as exc:  # renames back within the same directories: not seen, but never lose the old file
            logger.error("could not put %s back as it was (%s)%s", dst, exc, f"; its old file is {old}" if old else "")


def _copy_synced(src: str, dst: str) -> None:
    """`src` copied to `dst`, on disk (fsync'd) when this returns."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
        fout.flush()
        os.fsync(fout.fileno())


def _keep_old(path: str) -> str | None:
    """The hidden name beside `path` that now also holds its current file (None: no file there, or a
    directory, which the rename into its place will refuse)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return None
    except FileNotFoundError:
        return None
    old = os.path.join(os.path.dirname(path), OLD + os.path.basename(path))
    _remove([old])
    try:
        os.link(path, old, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        _copy_synced(path, old)  # a file system without hard links
    return old


def _remove(paths) -> None:
    for p in paths:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def _safe_name(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", job_id)


def mpi_launcher(placement, env: dict) -> list[str]:
    """The launch of a `wsclean-mp` job over the ranks the queue reserved for it (WSClean's own MPI mode).

    `placement`: the job's `Placement` (its ranks and their hosts, leader first); `env`: the job's environment.
    Inside a Slurm allocation (SLURM_JOB_ID in `env`): a job step on the group's nodes (`srun --overlap`: the step
    of our own ranks holds the CPUs; `--kill-on-bad-exit`: a rank that fails ends the step instead of leaving the
    others waiting for it); elsewhere `mpirun`, one slot per rank, on the group's hosts (Open MPI ends the job when
    a rank exits non-zero).
    """
    n = len(placement.ranks)
    hosts = list(dict.fromkeys(placement.hosts))
    if env.get("SLURM_JOB_ID"):
        return ["srun", "--overlap", "--kill-on-bad-exit=1", "--cpu-bind=none", f"--ntasks={n}",
                f"--nodes={len(hosts)}", f"--nodelist={','.join(hosts)}"]
    argv = ["mpirun", "--bind-to", "none", "-np", str(n)]
    if len(hosts) > 1:
        argv += ["-H", ",".join(f"{h}:{placement.hosts.count(h)}" for h in hosts)]
    return argv


def _group_command(job: Job, placement, env: dict, command: list[str], token: str | None = None) -> list[str]:
    """`command` launched over the job's group; over several hosts each rank first checks that its node sees
    the job's temp dir (the one the leader just made: marked here, unless `token` is given) and paths
    (mpimager.runtime.multinode)."""
    if len(set(placement.hosts)) > 1 and job.temp_dir:
        from mpimager.runtime import multinode

        paths = [*job.ms, os.path.dirname(job.prefix)] if job.prefix else list(job.ms)
        command = multinode.wrap(command, job.temp_dir, token or multinode.mark(job.temp_dir), paths)
    return mpi_launcher(placement, env) + command


def wsclean_command(job: Job, argv, runtime, placement, env: dict, token: str | None = None) -> list[str]:
    """The command line of a WSClean `job`'s attempt: `argv` through the `runtime` (container binds: the job's
    MSs, image folder and temp dir), launched over its `placement`'s group in `env` when it runs over several
    ranks (`token`: the temp-dir marker's, for showing the line without writing the marker)."""
    command = runtime.command(argv, [*job.ms, os.path.dirname(job.prefix or ""), job.temp_dir])
    return _group_command(job, placement, env, command, token) if job.nranks > 1 else command


def run_job(job: Job, ctx: RunContext, placement=None) -> JobResult:
    """Run `job` with its retries; JobResult on success, JobError (one line, naming the log) on failure.

    `ctx`: the run's settings; `placement`: where the queue put it (the ranks of a wsclean-mp job)."""
    from mpimager.runtime import process
    from mpimager.runtime.containers import make_runtime
    from mpimager.wsclean.names import scratch_files
    from mpimager.wsclean.watcher import image_divergence, wsclean_watcher

    t0 = time.monotonic()
    deadline = None if ctx.timeout is None else t0 + ctx.timeout
    os.makedirs(os.path.join(ctx.run_dir, layout.LOGS), exist_ok=True)
    if job.prefix:  # the products' folder: every rank of a multi-node job checks that it sees it
        os.makedirs(os.path.dirname(job.prefix), exist_ok=True)
    first_log = log_path(ctx.run_dir, job.id, 1)
    with open(first_log, "w"):
        pass
    env = job_env(ctx.env_file, log=first_log, timeout=ctx.timeout)
    runtime = make_runtime(ctx.container) if job.kind == "wsclean" else None
    name = _program(job, runtime)
    stage = staging_for(job)
    attempts = 1 + (ctx.retries if job.kind == "wsclean" else 0)
    argv, started = list(job.argv), time.time()
    logs: list[str] = []
    notes: list[str] = []
    try:
        for attempt in range(1, attempts + 1):
            log = log_path(ctx.run_dir, job.id, attempt)
            logs.append(log)
            _remove(scratch_files(job.prefix) if job.prefix else [])
            if job.temp_dir:
                shutil.rmtree(job.temp_dir, ignore_errors=True)
                os.makedirs(job.temp_dir)
            if stage is not None:
                stage.reset()
            staged = stage.argv(job, argv) if stage is not None else argv
            if runtime is not None:
                command = wsclean_command(job, staged, runtime, placement, env)
                child_env, watcher = runtime.env(env), wsclean_watcher(staged)
            else:
                command, child_env, watcher = staged, env, None
            with open(log, "a" if attempt == 1 else "w") as f:
                f.write(f"# mpimager: {job.id}, attempt {attempt} of {attempts}: {shlex.join(command)}\n")
            left = None if deadline is None else deadline - time.monotonic()
            result = process.run(command, log=Path(log), env=child_env, timeout=left, on_line=watcher,
                                 append=True)
            if result.returncode == 0 and not result.timed_out and result.error is None:
                pairs = [(stage.path(o), o) for o in job.outputs] if stage is not None else \
                    [(o, o) for o in job.outputs]
                _good, bad = check_outputs([src for src, _ in pairs])
                made = [src for src, _ in pairs]
                diverged = image_divergence(made) if not bad and job.kind == "wsclean" else None
                if not bad and not diverged:
                    if stage is not None:
                        pairs += _extra_files(stage, {src for src, _ in pairs})
                        install(pairs)
                    sizes = tuple((dst, os.path.getsize(dst)) for _, dst in pairs)
                    return JobResult(job.id, attempt, tuple(argv), sizes, tuple(logs), time.time() - started,
                                     tuple(notes), result.returncode)
                if diverged:
                    reason, strategy = f"{name}: {diverged}", RETRY_LOWER_GAINS
                else:
                    reason, strategy = f"exited 0 but outputs are missing or unreadable: {', '.join(bad[:4])}", NO_RETRY
            else:
                reason, strategy = _describe(result, name, ctx.timeout), retry_strategy(result)
                node_check, failed_rank = _group_failure(log) if job.nranks > 1 else (None, None)
                if node_check:  # a node cannot run its rank: the same command would fail alike
                    reason, strategy = f"{name}: {node_check}", NO_RETRY
                elif failed_rank and not result.timed_out:  # the rank whose failure ended the step
                    reason = f"{name}: {failed_rank}, which ended its job step (exit {result.returncode})"
            if attempt == attempts or strategy == NO_RETRY:
                break
            notes.append(f"attempt {attempt}: {reason}; retrying ({strategy})")
            if strategy == RETRY_LOWER_GAINS:
                argv = lower_gains(argv)
        _remove(scratch_files(job.prefix) if job.prefix else [])
        code = None if result.timed_out or result.error is not None else result.returncode
        failed = JobResult(job.id, attempt, tuple(argv), (), tuple(logs), time.time() - started, tuple(notes), code)
        raise JobError(f"{reason}{f' after {attempt} attempts' if attempt > 1 else ''} (log: {logs[-1]})",
                       log=logs[-1], result=failed)
    finally:
        if stage is not None:
            stage.remove()
        if job.temp_dir:
            shutil.rmtree(job.temp_dir, ignore_errors=True)


def _extra_files(stage: Staging, predicted: set[str]) -> list[tuple[str, str]]:
    """Files an attempt wrote besides the predicted outputs (moved into place with them, so none is lost)."""
    extra = []
    for dirpath, _, files in os.walk(stage.dir):
        for f in sorted(files):
            src = os.path.join(dirpath, f)
            if src not in predicted:
                extra.append((src, os.path.join(stage.out_dir, os.path.relpath(src, stage.dir))))
    return extra


def _program(job: Job, runtime) -> str:
    if job.kind == "wsclean":
        return "wsclean" if runtime.options.runtime == "native" else f"wsclean ({runtime.options.runtime})"
    return {"fixms": "FixMS", "reduce": "reduce"}.get(job.kind, job.kind)


_SRUN_RANK_EXIT = re.compile(r"^srun: error: (\S+): tasks? ([0-9,-]+): (Exited with exit code \d+)")


def _group_failure(log: str) -> tuple[str | None, str | None]:
    """What ended a job over several ranks, from its log: the line of a rank whose node failed
    mpimager.runtime.multinode's check, and the first rank srun saw exit non-zero ("task 1 on n2 exited ...")."""
    from mpimager.runtime.multinode import PREFIX

    node_check = failed_rank = None
    with open(log, errors="replace") as f:
        for line in f:
            if node_check is None and line.startswith(PREFIX):
                node_check = line[len(PREFIX):].strip()
            found = _SRUN_RANK_EXIT.match(line) if failed_rank is None else None
            if found:
                node, tasks, how = found.groups()
                failed_rank = f"task {tasks} on {node} {how[0].lower()}{how[1:]}"
    return node_check, failed_rank


def _describe(result, name: str, timeout) -> str:
    if result.timed_out:
        return f"{name} timed out after {timeout:.0f} s"
    if result.error is not None:
        return f"{name} stopped: {result.error}"
    if result.returncode < 0:
        return f"{name} was killed by signal {-result.returncode}"
    from mpimager.wsclean.watcher import error_line

    last = error_line(result.tail)  # WSClean's `>>> ...` line, not the `+ + +` border around it
    return f"{name} exited {result.returncode}" + (f": {last[:200]}" if last else "")
