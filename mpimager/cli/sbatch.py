"""Write a Slurm batch script sized from the plan, and submit it: `mpimager sbatch CONFIG INPUTS... [--submit]`.

Checks the config and inputs exactly as a run does (bad input: exit 2, one line, nothing written), plans,
and renders `slurm/mpimager.sbatch` (or `slurm/mpimager-nodes-mpi.sbatch` with --nodes-mpi, or --template)
with nodes, tasks per node (`[worker] max_concurrent`), CPUs per task (WSClean's -j), memory and a time limit
estimated from the jobs' costs (mpimager.planner.sbatch), and with CONFIG, INPUTS and the run options as the script's
default arguments. Prints the script, writes it (--output FILE), or with --submit writes it (to --output, else
RUN_DIR/mpimager.sbatch) and runs `sbatch` on it, printing the job id.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mpimager.atomic import write_text_atomic
from mpimager.errors import InputError, JobError
from mpimager.resources import template as packaged_template
from mpimager.rundir import layout

TEMPLATE = packaged_template("mpimager.sbatch")
TEMPLATE_NODES_MPI = packaged_template("mpimager-nodes-mpi.sbatch")


def add_arguments(parser):
    parser.add_argument("config", help="the TOML config file")
    parser.add_argument("inputs", nargs="*", metavar="MS_OR_OBS_ID",
                        help="MeasurementSets, globs, directories or obs_id patterns, as for `mpimager CONFIG`")
    run = parser.add_argument_group("the run (passed on to mpimager in the script)")
    run.add_argument("-c", "--combine", action="store_true", help="one WSClean job per (spectral window, obs_id)")
    run.add_argument("-o", "--combine-obs-ids", action="store_true", help="one WSClean job per spectral window")
    run.add_argument("-n", "--nodes-mpi", type=int, metavar="N",
                     help="WSClean jobs as wsclean-mp over N whole nodes (the nodes-mpi template)")
    run.add_argument("--run-dir", default="mpimager-run", metavar="DIR",
                     help="the run directory (default: ./mpimager-run)")
    run.add_argument("--force", action="store_true", help="re-run every job, even those recorded done")
    slurm = parser.add_argument_group("the batch script")
    slurm.add_argument("--submit", action="store_true", help="submit the script with sbatch; print the job id")
    slurm.add_argument("--output", metavar="FILE", help="write the script to FILE instead of printing it")
    slurm.add_argument("--template", metavar="PATH", help="the template to render (default: slurm/mpimager.sbatch, "
                                                           "or slurm/mpimager-nodes-mpi.sbatch with --nodes-mpi)")
    slurm.add_argument("--nodes", type=int, metavar="N", help="nodes (default: the hosts the plan pins jobs to, "
                                                              "else 1; with --nodes-mpi: N)")
    slurm.add_argument("--cpus-per-task", type=int, metavar="C",
                       help="CPUs per worker = WSClean's -j (default: [worker] threads, else this machine's "
                            "cores / max_concurrent; with --nodes-mpi: all CPUs of a node)")
    slurm.add_argument("--mem", metavar="SIZE", help="memory per node, e.g. 64G (default: estimated from the plan)")
    slurm.add_argument("--time", metavar="T", help="time limit, e.g. 12:00:00 or 1-12:00:00 (default: estimated "
                                                   "from the jobs' costs)")
    slurm.add_argument("--partition", metavar="P", help="the Slurm partition")
    slurm.add_argument("--account", metavar="A", help="the Slurm account to charge")
    slurm.add_argument("--job-name", metavar="NAME", help="the Slurm job name (default: mpimager-CONFIG_STEM)")


def script_arguments(args) -> list[str]:
    """What the script passes to `mpimager`: CONFIG, INPUTS and the run options, paths made absolute."""
    argv = [os.path.abspath(args.config)]
    argv += [os.path.abspath(i) if os.path.exists(i) else i for i in args.inputs]
    argv += ["--combine"] if args.combine else []
    argv += ["--combine-obs-ids"] if args.combine_obs_ids else []
    argv += ["--run-dir", os.path.abspath(args.run_dir)]
    argv += ["--force"] if args.force else []
    return argv  # --nodes-mpi: the nodes-mpi template adds it (NODES_MPI)


def check_options(args) -> None:
    """The batch options' own checks, before anything is read."""
    from mpimager.planner import sbatch as slurm

    for name, value in (("--nodes", args.nodes), ("--cpus-per-task", args.cpus_per_task)):
        if value is not None and value < 1:
            raise InputError(f"{name}: expected an integer >= 1, got {value}")
    if args.nodes_mpi is not None and args.nodes is not None and args.nodes < args.nodes_mpi:
        raise InputError(f"--nodes {args.nodes}: fewer than --nodes-mpi {args.nodes_mpi} (each WSClean job "
                         f"runs over {args.nodes_mpi} nodes)")
    if args.time is not None and not slurm.valid_time(args.time):
        raise InputError(f"--time {args.time!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    if args.mem is not None and not re.match(r"^\d+[KMGT]?$", args.mem):
        raise InputError(f"--mem {args.mem!r}: expected a size such as 64G, 512M or 0 (all of a node)")


def script_values(args, prepared) -> dict[str, str]:
    """The template's values: sized from the plan (mpimager.planner.sbatch.size_from_plan), then the options given."""
    from mpimager.pipeline.prepare import default_threads
    from mpimager.planner import sbatch as slurm

    config = prepared.config
    cpus = args.cpus_per_task or default_threads(config)
    values = slurm.size_from_plan(prepared.jobs, config.worker.max_concurrent, cpus, nodes=args.nodes,
                                  nodes_mpi=args.nodes_mpi)
    if args.time is not None:
        values["time"] = args.time
    if args.mem is not None:
        values["mem"] = args.mem
    for key, value in (("partition", args.partition), ("account", args.account)):
        if value is not None:
            values[key] = value
    if args.nodes_mpi and args.cpus_per_task:
        values["CPUS_PER_WORKER"] = str(args.cpus_per_task)  # else the template gives each rank the node's CPUs
    values["job-name"] = args.job_name or f"mpimager-{Path(args.config).stem}"
    values["chdir"] = os.getcwd()
    values["MPIMAGER_PYTHON"] = sys.executable  # the interpreter that has this mpimager installed
    return values


def render_script(args, values: dict[str, str]) -> str:
    from mpimager.planner import sbatch as slurm

    template = Path(args.template) if args.template else TEMPLATE_NODES_MPI if args.nodes_mpi else TEMPLATE
    try:
        text = template.read_text()
    except OSError as exc:
        raise InputError(f"{template}: cannot read the template ({exc.strerror or exc})") from None
    try:
        return slurm.render(text, values, args=script_arguments(args))
    except slurm.TemplateError as exc:
        raise InputError(f"{template}: {exc}") from None


def write_script(text: str, path: Path) -> Path:
    path = Path(path).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text, mode=0o755)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the batch script ({exc.strerror or exc})") from None
    return path


def submit(script: Path, cwd: Path, extra=()) -> str:
    """`sbatch --parsable [extra] SCRIPT` run in `cwd`: the job id; JobError with exit code, command and output."""
    argv = ["sbatch", "--parsable", *extra, str(script)]
    try:
        r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise JobError(f"{argv[0]} not found: run this on a Slurm login node (or install the Slurm client)") from None
    except subprocess.TimeoutExpired:
        raise JobError(f"{' '.join(argv)}: no answer after 120 s") from None
    out = " ".join((r.stdout + " " + r.stderr).split())
    job_id = r.stdout.strip().split(";")[0]
    if r.returncode != 0 or not job_id.isdigit():
        raise JobError(f"{' '.join(argv)} exited {r.returncode}: {out or 'no output'}")
    return job_id


def run(args) -> int:
    from mpimager.cli.run import request_from
    from mpimager.pipeline.prepare import prepare
    from mpimager.planner import sbatch as slurm

    check_options(args)
    prepared = prepare(request_from(args))
    values = script_values(args, prepared)
    text = render_script(args, values)
    workers = int(values["nodes"]) * int(values.get("ntasks-per-node", 1))
    jobs = prepared.jobs if not args.nodes_mpi else [slurm.with_nranks(j, args.nodes_mpi) for j in prepared.jobs]
    print(f"mpimager sbatch: {len(jobs)} jobs, estimated {slurm.estimate_seconds(jobs, workers) / 60:.0f} min on "
          f"{workers} worker{'s' * (workers > 1)}; --time={values['time']}", file=sys.stderr)
    if not args.submit:
        if args.output:
            print(write_script(text, Path(args.output)))
        else:
            sys.stdout.write(text)
        return 0
    path = write_script(text, Path(args.output) if args.output else prepared.run_dir / layout.SBATCH_SCRIPT)
    job_id = submit(path, Path.cwd())
    print(job_id)
    print(f"mpimager sbatch: submitted batch job {job_id} (script {path})", file=sys.stderr)
    return 0
