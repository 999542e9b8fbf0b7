"""Everything that can fail before a job runs: config, runtime, option check, inputs, plan.

`prepare(request)` gives the `Prepared` run that `mpimager.pipeline.session` executes (or a dry run prints:
`print_plan`). Pure apart from reading the config, the MSs' metadata and WSClean's `--help`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

from mpimager.config.load import Config, as_config, wsclean_keys
from mpimager.errors import InputError
from mpimager.planner.jobs import Job, PlanSettings, plan_jobs

Mode = Literal["single", "combine", "combine-obs-ids"]


@dataclass(frozen=True)
class RunRequest:
    """What a run is asked to do: the contract between the CLI (or the Python API) and the pipeline."""

    config: str | os.PathLike | Mapping[str, Any] | Config  # a file, its tables, or a loaded config
    inputs: tuple[str, ...] = ()
    mode: Mode = "single"
    nodes_mpi: int | None = None
    run_dir: str | os.PathLike = "mpimager-run"
    dry_run: bool = False
    json: bool = False
    force: bool = False
    # pre-flight of this host's software: source [worker] env_file, find wsclean-mp and the MPI launcher
    # (off for `mpimager sbatch`: its script runs on other nodes, in the environment the job gets there)
    check_here: bool = True


@dataclass(frozen=True)
class Prepared:
    """What rank 0 knows once the inputs are checked: everything a run needs."""

    config: Config
    jobs: tuple[Job, ...]
    run_dir: Path
    runtime: object  # mpimager.runtime.containers.Runtime


def local_worker_ranks(env=os.environ) -> int:
    """Worker ranks on this host (rank 0, the coordinator, is here too and not counted), from the launcher's
    variables in `env` (Open MPI, MPICH/Hydra, PMIx); 1 when not launched by one."""
    for name in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMIX_LOCAL_SIZE", "PMI_LOCAL_SIZE"):
        if env.get(name, "").isdigit():
            local = int(env[name])
            world = next((int(env[w]) for w in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS")
                          if env.get(w, "").isdigit()), local)
            return max(1, local - 1 if world > 1 else local)
    return 1


def default_threads(config: Config) -> int:
    """WSClean's -j (mpimager.environment.default_threads) for the jobs this host runs at once: its
    worker ranks, at most [worker] max_concurrent of `config` (whose [worker] threads, when set, wins)."""
    from mpimager.environment import default_threads as threads

    at_once = min(local_worker_ranks(), config.worker.max_concurrent or local_worker_ranks())
    return threads(config.worker.threads, at_once)


def prepare(request: RunRequest) -> Prepared:
    """Config, runtime, option check, inputs, plan: every check of `request` that can fail before a job runs.

    Returns the `Prepared` run; raises the MpimagerError (InputError, ConfigError, WSCleanOptionError, ...) of
    the first check that fails. Changes nothing on disk but mpimager's caches (a pulled container image;
    WSClean's option list, not on a dry run).
    """
    from mpimager.inputs.discover import discover
    from mpimager.runtime.containers import make_runtime
    from mpimager.runtime.multinode import refuse_node_local_temp_dirs
    from mpimager.wsclean.options import check_options, check_value_counts, known_options, option_arity

    config = as_config(request.config)
    if request.json and not (request.dry_run or config.worker.dry_run):
        raise InputError("--json: only with --dry-run (it prints the plan as JSON instead of running it)")
    if request.nodes_mpi is not None and request.nodes_mpi < 1:
        raise InputError(f"--nodes-mpi: expected an integer >= 1, got {request.nodes_mpi}")
    runtime = make_runtime(config.container)
    runtime.prepare()
    check_options(wsclean_keys(config), known_options(runtime, cache=not request.dry_run))
    check_value_counts(passed_options(config), option_arity(runtime, cache=not request.dry_run))
    check_env_file(config, source=request.check_here)
    inputs = discover(request.inputs, config)
    run_dir = Path(request.run_dir).absolute()
    settings = PlanSettings(run_dir=run_dir, mode=request.mode, threads=default_threads(config),
                            wsclean=config.container.wsclean, python=sys.executable,
                            nodes_mpi=request.nodes_mpi or config.worker.nodes_mpi)
    jobs = plan_jobs(config, inputs, settings)
    if request.check_here:
        check_wsclean_mp(config, jobs, runtime)
    refuse_node_local_temp_dirs(jobs, int(os.environ.get("SLURM_JOB_NUM_NODES", "1") or 1))
    return Prepared(config=config, jobs=tuple(jobs), run_dir=run_dir, runtime=runtime)


# ------------------------------------------------------------------------------------------------ pre-flight


def passed_options(config: Config) -> list[tuple[str, object, str]]:
    """(key, value, where it was set) of every option some pass of `config` gives WSClean."""
    out = []
    for p in config.passes:
        for key, value in p.options:
            table = f"passes.{p.suffix}" if f"passes.{p.suffix} {key}" in config.origins else "wsclean"
            out.append((key, value, f"{config.origins.get(f'{table} {key}', config.path)}: [{table}] {key}"))
    return out


def check_env_file(config: Config, source: bool = True) -> None:
    """[worker] env_file of `config` exists and (with `source`) bash sources it without an error, as every
    job will: else InputError. A source that times out is left to each job."""
    from mpimager.errors import EnvFileTimeout, JobError
    from mpimager.runtime.runner import job_env

    path = config.worker.env_file
    if path is None:
        return
    where = f"{config.origins.get('worker env_file', config.path)}: [worker] env_file"
    if not path.is_file():
        raise InputError(f"{where}: {path} {'is not a file' if path.exists() else 'does not exist'}")
    if not source:
        return
    try:  # bounded by the job timeout: a slow env_file is each job's to time out, not a bad input
        job_env(str(path), timeout=config.worker.timeout)
    except EnvFileTimeout:
        pass
    except JobError as exc:
        raise InputError(f"{where}: {exc}") from None


def check_wsclean_mp(config: Config, jobs, runtime) -> None:
    """When some of `jobs` run over several ranks, `config`'s [container] wsclean_mp must be there (native:
    on PATH; a sandbox image of `runtime`: inside it, or bound into it) and a launcher (srun inside Slurm, else
    mpirun) on PATH: else InputError."""
    import shutil

    if not any(j.nranks > 1 for j in jobs):
        return
    launcher = "srun" if os.environ.get("SLURM_JOB_ID") else "mpirun"
    if not shutil.which(launcher):
        raise InputError(f"--nodes-mpi: WSClean's MPI jobs are started with {launcher}, which is not on PATH")
    binary = config.container.wsclean_mp
    if config.container.runtime == "native":
        if not shutil.which(binary):
            why = "not on PATH" if os.sep not in binary else "no such file"
            raise InputError(f"[container] wsclean_mp: {binary!r} not found ({why}; "
                             "needed by --nodes-mpi / [worker] nodes_mpi: build it with scripts/build-wsclean-mp.sh "
                             "or set [container] wsclean_mp)")
        return
    image = getattr(runtime, "image", None)
    if image and os.path.isdir(image):
        inside = [os.path.join(image, d, binary.lstrip("/")) for d in (("",) if os.path.isabs(binary) else
                                                                     ("usr/local/bin", "usr/bin", "bin", "opt/bin"))]
        # a binary bound into the image ([container] binds "SRC:DST") is looked for at its source on the host
        from mpimager.config.container import parse_bind

        for spec in config.container.binds:
            src, dst, _ = parse_bind(spec)
            if os.path.isabs(binary) and (binary == dst or binary.startswith(dst.rstrip("/") + "/")):
                inside.append(src + binary[len(dst.rstrip("/")):])
        if not any(os.path.exists(p) for p in inside):
            raise InputError(f"[container] wsclean_mp: {binary!r} not found in the image {image} (needed by "
                             f"--nodes-mpi / [worker] nodes_mpi)")


# ------------------------------------------------------------------------------------------------ dry run


class _JobRow(TypedDict):
    status: str
    reason: str
    seconds: float
    memory_bytes: int
    disk_bytes: int


class _KindRow(TypedDict):
    name: str
    run: int
    skip: int
    core_hours: float
    peak_memory_bytes: int
    disk_bytes: int


KIND_NAMES = (("fixms", "FixMS"), ("wsclean", "WSClean"), ("reduce", "reduce"), ("mosaic", "mosaic"))


def _kinds_shown(jobs) -> list[tuple[str, str]]:
    """The kinds a dry run lists: always FixMS, WSClean and reduce; mosaic when the plan has mosaic jobs."""
    return [(k, n) for k, n in KIND_NAMES if k != "mosaic" or any(j.kind == k for j in jobs)]


def plan_summary(prepared: Prepared, force: bool = False) -> dict:
    """What a run of `prepared` would do: per job whether it runs or the journal of its run directory skips it
    (nothing is skipped with `force`), and per kind and in total: jobs to run and skipped, core-hours (the
    measured one-thread rates of mpimager.planner.sbatch.SECONDS_PER_COST), the largest job's memory and the
    bytes written. Reads the journal, writes nothing."""
    from mpimager.planner import sbatch as sizing
    from mpimager.rundir.journal import jobs_to_skip, read_records

    jobs = prepared.jobs
    skip = {} if force else jobs_to_skip(jobs, read_records(prepared.run_dir))
    by_id = {j.id: j for j in jobs}
    rows: dict[str, _JobRow] = {}
    for j in jobs:
        rows[j.id] = {"status": "skip" if j.id in skip else "run", "reason": skip.get(j.id, ""),
                      "seconds": round(sizing.job_seconds(j), 1), "memory_bytes": sizing.job_memory_bytes(j),
                      "disk_bytes": sizing.job_output_bytes(j, by_id)}
    kinds: dict[str, _KindRow] = {}
    for kind, name in KIND_NAMES:
        mine = [j for j in jobs if j.kind == kind]
        todo = [j for j in mine if j.id not in skip]
        kinds[kind] = {"name": name, "run": len(todo), "skip": len(mine) - len(todo),
                       "core_hours": round(sum(rows[j.id]["seconds"] * max(1, j.nranks) for j in todo) / 3600, 4),
                       "peak_memory_bytes": max((rows[j.id]["memory_bytes"] for j in todo), default=0),
                       "disk_bytes": sum(rows[j.id]["disk_bytes"] for j in todo)}
    total = {"run": sum(k["run"] for k in kinds.values()), "skip": sum(k["skip"] for k in kinds.values()),
             "core_hours": round(sum(k["core_hours"] for k in kinds.values()), 4),
             "peak_memory_bytes": max((k["peak_memory_bytes"] for k in kinds.values()), default=0),
             "disk_bytes": sum(k["disk_bytes"] for k in kinds.values())}
    launch = {j.id: launcher_line(prepared, j) for j in jobs if j.nranks > 1 and j.id not in skip}
    return {"run_dir": str(prepared.run_dir), "jobs": rows, "kinds": kinds, "total": total, "launch": launch,
            "units": {"core_hours": "CPU core-hours, one-thread rates measured on the project's machine "
                                    "(mpimager.planner.sbatch.SECONDS_PER_COST)",
                      "seconds": "estimated wall seconds of a job on one thread",
                      "memory_bytes": "bytes: a job's floor, or what its -abs-mem lets WSClean take",
                      "disk_bytes": "bytes written (FITS images and cubes; FixMS: at most a new data column)"}}


def launcher_line(prepared: Prepared, job: Job) -> list[str]:
    """The exact command of the multi-rank `job` of `prepared` as its worker will start it; the hosts are the
    ones the queue reserves at run time (HOST1, HOST2, ... here), TOKEN the temp-dir marker the leader writes
    then."""
    from types import SimpleNamespace

    from mpimager.runtime.runner import wsclean_command

    hosts = [f"HOST{i + 1}" for i in range(job.nranks)]
    placement = SimpleNamespace(ranks=list(range(1, job.nranks + 1)), hosts=hosts)
    env = dict(os.environ)
    return wsclean_command(job, list(job.argv), prepared.runtime, placement, env, token="TOKEN")


def _size(n: float) -> str:
    """Bytes in binary units: '512 B', '3.2 MiB', '201 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def print_plan(prepared: Prepared, as_json: bool, out=sys.stdout, force: bool = False) -> None:
    """The dry run's output to `out`: the summary (`plan_summary` of `prepared`, with `force`), each job, each
    command; one line of JSON instead with `as_json` (--json)."""
    jobs = prepared.jobs
    summary = plan_summary(prepared, force)
    if as_json:
        out.write(json.dumps({"jobs": [{**j.to_json(), **summary["jobs"][j.id]} for j in jobs],
                              "summary": {k: v for k, v in summary.items() if k != "jobs"}}))
        out.write("\n")  # compact: the C encoder, 10x faster
        return
    kinds, total = summary["kinds"], summary["total"]
    counts = ", ".join(f"{sum(j.kind == k for j in jobs)} {n}" for k, n in _kinds_shown(jobs))
    out.write(f"{len(jobs)} jobs ({counts}); "
              f"{total['run']} to run, {total['skip']} skipped (done in the journal); run directory "
              f"{prepared.run_dir}\n")
    out.write(f"{'kind':<8} {'run':>5} {'skip':>5} {'core-hours':>11} {'peak memory/job':>16} {'disk written':>13}\n")
    for k, name in _kinds_shown(jobs):
        row = kinds[k]
        out.write(f"{name:<8} {row['run']:>5} {row['skip']:>5} {row['core_hours']:>11.3f} "
                  f"{_size(row['peak_memory_bytes']):>16} {_size(row['disk_bytes']):>13}\n")
    out.write(f"{'total':<8} {total['run']:>5} {total['skip']:>5} {total['core_hours']:>11.3f} "
              f"{_size(total['peak_memory_bytes']):>16} {_size(total['disk_bytes']):>13}\n")
    out.write("(core-hours: one-thread rates measured on the project's machine; memory: a job's floor or its "
              "-abs-mem; disk: FITS images and cubes, FixMS at most a new data column)\n\n")
    width = max((len(j.id) for j in jobs), default=2)
    out.write(f"{'id':<{width}}  {'kind':<7}  {'status':<6}  {'host':<10}  {'est. s':>8}  {'memory':>9}  "
              f"{'disk':>9}  after\n")
    for j in jobs:
        row = summary["jobs"][j.id]
        status = "run" if row["status"] == "run" else "skip"
        out.write(f"{j.id:<{width}}  {j.kind:<7}  {status:<6}  {j.host or '-':<10}  {row['seconds']:>8.1f}  "
                  f"{_size(row['memory_bytes']):>9}  {_size(row['disk_bytes']):>9}  "
                  f"{', '.join(j.depends_on) or '-'}\n")
    for j in jobs:
        row = summary["jobs"][j.id]
        if row["status"] == "skip":
            out.write(f"\n# {j.id}: skipped ({row['reason']})\n")
            continue
        out.write(f"\n# {j.id}\n{shlex.join(j.argv)}\n")
        if j.id in summary["launch"]:
            out.write(f"# as started over {j.nranks} ranks (hosts chosen by the queue at run time):\n"
                      f"{shlex.join(summary['launch'][j.id])}\n")
