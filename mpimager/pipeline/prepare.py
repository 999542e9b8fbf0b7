"""Everything that can fail before a job runs: config, runtime, option check, inputs, plan.

`prepare(request)` gives the `Prepared` run that `mpimager.pipeline.session` executes (or a dry run prints:
`print_plan`). Pure apart from reading the config, the MSs' metadata and WSClean's `--help`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Any, Literal, Mapping
from pathlib import Path

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


@dataclass(frozen=True)
class Prepared:
    """What rank 0 knows once the inputs are checked: everything a run needs."""

    config: Config
    jobs: tuple[Job, ...]
    run_dir: Path
    runtime: object  # mpimager.runtime.containers.Runtime


def default_threads(config: Config) -> int:
    """WSClean's -j for this config on this machine (mpimager.environment.default_threads)."""
    from mpimager.environment import default_threads as threads

    return threads(config.worker.threads, config.worker.max_concurrent)


def prepare(request: RunRequest) -> Prepared:
    """Config, runtime, option check, inputs, plan: every check that can fail before a job runs."""
    from mpimager.runtime.containers import make_runtime
    from mpimager.runtime.multinode import refuse_node_local_temp_dirs
    from mpimager.inputs.discover import discover
    from mpimager.wsclean.options import check_options, known_options

    config = as_config(request.config)
    if request.nodes_mpi is not None and request.nodes_mpi < 1:
        raise InputError(f"--nodes-mpi: expected an integer >= 1, got {request.nodes_mpi}")
    runtime = make_runtime(config.container)
    runtime.prepare()
    check_options(wsclean_keys(config), known_options(runtime, cache=not request.dry_run))
    inputs = discover(request.inputs, config)
    run_dir = Path(request.run_dir).absolute()
    settings = PlanSettings(run_dir=run_dir, mode=request.mode, threads=default_threads(config),
                            wsclean=config.container.wsclean, python=sys.executable,
                            nodes_mpi=request.nodes_mpi or config.worker.nodes_mpi)
    jobs = plan_jobs(config, inputs, settings)
    refuse_node_local_temp_dirs(jobs, int(os.environ.get("SLURM_JOB_NUM_NODES", "1") or 1))
    return Prepared(config=config, jobs=tuple(jobs), run_dir=run_dir, runtime=runtime)


def print_plan(prepared: Prepared, as_json: bool, out=sys.stdout) -> None:
    jobs = prepared.jobs
    if as_json:
        out.write(json.dumps({"jobs": [j.to_json() for j in jobs]}))  # compact: the C encoder, 10x faster
        out.write("\n")
        return
    width = max((len(j.id) for j in jobs), default=2)
    kinds = ", ".join(f"{sum(j.kind == k for j in jobs)} {name}" for k, name in
                      (("fixms", "FixMS"), ("wsclean", "WSClean"), ("reduce", "reduce"), ("mosaic", "mosaic"))
                      if k != "mosaic" or any(j.kind == k for j in jobs))
    out.write(f"{len(jobs)} jobs ({kinds}); run directory {prepared.run_dir}\n")
    out.write(f"{'id':<{width}}  {'kind':<7}  {'host':<10}  {'cost':>9}  {'outputs':>7}  after\n")
    for j in jobs:
        out.write(f"{j.id:<{width}}  {j.kind:<7}  {j.host or '-':<10}  {j.cost:>9.1f}  {len(j.outputs):>7}  "
                  f"{', '.join(j.depends_on) or '-'}\n")
    for j in jobs:
        out.write(f"\n# {j.id}\n{shlex.join(j.argv)}\n")
