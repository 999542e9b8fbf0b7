"""Image MeasurementSets with WSClean over MPI: `mpimager CONFIG [MS | glob | directory | obs-id ...]`.

Rank 0 loads the config, checks the WSClean options against the binary that will run, finds and reads
the MSs, and plans; with --dry-run it prints the plan and stops. Otherwise every rank takes part in
the run (mpimager.session). Exit codes: 0 all jobs done, 1 some job failed, 2 bad input (nothing run).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from mpimager.config import Config, load_config, wsclean_keys
from mpimager.errors import InputError
from mpimager.plan import Job, PlanSettings, plan_jobs


def add_arguments(parser):
    parser.add_argument("config", help="the TOML config file")
    parser.add_argument("inputs", nargs="*", metavar="MS_OR_OBS_ID",
                        help="MeasurementSets, globs, directories (searched with [inputs] ms_glob_pattern) "
                             "or obs_id patterns 'obsglob[:swglob]' (with [data_handler])")
    parser.add_argument("-c", "--combine", action="store_true",
                        help="one WSClean job per (spectral window, obs_id) group with all its MSs")
    parser.add_argument("-o", "--combine-obs-ids", action="store_true",
                        help="one WSClean job per spectral window across obs_ids (implies --combine)")
    parser.add_argument("-n", "--nodes-mpi", type=int, metavar="N",
                        help="run each WSClean job as wsclean-mp over N hosts ([worker] nodes_mpi)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing, write nothing")
    parser.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON on stdout")
    parser.add_argument("--run-dir", default="mpimager-run", metavar="DIR",
                        help="journal, logs and temporary files of the run (default: ./mpimager-run)")
    parser.add_argument("--force", action="store_true", help="re-run every job, even those recorded done")


@dataclass(frozen=True)
class Prepared:
    """What rank 0 knows once the inputs are checked: everything a run needs."""

    config: Config
    jobs: tuple[Job, ...]
    run_dir: Path
    runtime: object  # mpimager.containers.Runtime


def default_threads(config: Config) -> int:
    if config.worker.threads:
        return config.worker.threads
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return max(1, (os.cpu_count() or 1) // config.worker.max_concurrent)


def mode_of(args) -> str:
    return "combine-obs-ids" if args.combine_obs_ids else "combine" if args.combine else "single"


def prepare(args) -> Prepared:
    """Config, runtime, option check, inputs, plan: every check that can fail before a job runs."""
    from mpimager.containers import make_runtime
    from mpimager.inputs import discover
    from mpimager.wsclean import check_options, known_options

    config = load_config(args.config)
    if args.nodes_mpi is not None and args.nodes_mpi < 1:
        raise InputError(f"--nodes-mpi: expected an integer >= 1, got {args.nodes_mpi}")
    runtime = make_runtime(config.container)
    runtime.prepare()
    check_options(wsclean_keys(config), known_options(runtime))
    inputs = discover(args.inputs, config)
    run_dir = Path(args.run_dir).absolute()
    settings = PlanSettings(run_dir=run_dir, mode=mode_of(args), threads=default_threads(config),
                            wsclean=config.container.wsclean, python=sys.executable,
                            nodes_mpi=args.nodes_mpi or config.worker.nodes_mpi)
    jobs = plan_jobs(config, inputs, settings)
    return Prepared(config=config, jobs=tuple(jobs), run_dir=run_dir, runtime=runtime)


def print_plan(prepared: Prepared, as_json: bool, out=sys.stdout) -> None:
    jobs = prepared.jobs
    if as_json:
        out.write(json.dumps({"jobs": [j.to_json() for j in jobs]}))  # compact: the C encoder, 10x faster
        out.write("\n")
        return
    width = max((len(j.id) for j in jobs), default=2)
    kinds = ", ".join(f"{sum(j.kind == k for j in jobs)} {name}" for k, name in
                      (("fixms", "FixMS"), ("wsclean", "WSClean"), ("reduce", "reduce")))
    out.write(f"{len(jobs)} jobs ({kinds}); run directory {prepared.run_dir}\n")
    out.write(f"{'id':<{width}}  {'kind':<7}  {'host':<10}  {'cost':>9}  {'outputs':>7}  after\n")
    for j in jobs:
        out.write(f"{j.id:<{width}}  {j.kind:<7}  {j.host or '-':<10}  {j.cost:>9.1f}  {len(j.outputs):>7}  "
                  f"{', '.join(j.depends_on) or '-'}\n")
    for j in jobs:
        out.write(f"\n# {j.id}\n{shlex.join(j.argv)}\n")


def run(args) -> int:
    from mpimager import session

    return session.main(args)
