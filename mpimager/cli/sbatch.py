"""Write a Slurm batch script sized from the plan, and submit it: `mpimager sbatch CONFIG INPUTS... [--submit]`.

Checks the config and inputs exactly as a run does (bad input: exit 2, one line, nothing written), plans,
and renders `slurm/mpimager.sbatch` (or `slurm/mpimager-nodes-mpi.sbatch` with --nodes-mpi, or --template)
with nodes, tasks per node (`[worker] max_concurrent`, else as many jobs as a node's memory holds), CPUs per task
(WSClean's -j: a node's CPUs / tasks), memory and a time limit estimated from the jobs' costs (mpimager.planner.sbatch),
and with CONFIG, INPUTS and the run options as the script's default arguments. The node size is the target
partition's (sinfo), or --cpus-per-node and --mem-per-node; a layout that needs more memory than a node has is
refused (exit 2), a --mem below what the jobs' -abs-mem/-mem x tasks may use is a warning. Prints the script,
writes it (--output FILE), or with --submit writes it (to --output, else
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
    """Add the `mpimager sbatch` arguments to `parser` (main.build_parser adds the output options)."""
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
                       help="CPUs per worker = WSClean's -j (default: [worker] threads, else a node's CPUs / tasks "
                            "per node; with --nodes-mpi: all CPUs of a node)")
    slurm.add_argument("--cpus-per-node", type=int, metavar="C",
                       help="CPUs of a node of the partition (default: read with sinfo)")
    slurm.add_argument("--mem-per-node", metavar="SIZE",
                       help="memory of a node of the partition, e.g. 256G (default: read with sinfo)")
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

    for name, value in (("--nodes", args.nodes), ("--cpus-per-task", args.cpus_per_task),
                        ("--cpus-per-node", args.cpus_per_node)):
        if value is not None and value < 1:
            raise InputError(f"{name}: expected an integer >= 1, got {value}")
    if args.nodes_mpi is not None and args.nodes is not None and args.nodes < args.nodes_mpi:
        raise InputError(f"--nodes {args.nodes}: fewer than --nodes-mpi {args.nodes_mpi} (each WSClean job "
                         f"runs over {args.nodes_mpi} nodes)")
    if args.time is not None and not slurm.valid_time(args.time):
        raise InputError(f"--time {args.time!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    for name, value in (("--mem", args.mem), ("--mem-per-node", args.mem_per_node)):
        if value is not None and not re.match(r"^\d+[KMGT]?$", value):
            raise InputError(f"{name} {value!r}: expected a size such as 64G, 512M or 0 (all of a node)")


def partition_resources(partition: str | None):
    """CPUs and memory of the smallest node of `partition` (default: Slurm's default partition), from
    `sinfo -h -N -o %P|%c|%m`; InputError when sinfo cannot tell."""
    from mpimager.planner.sbatch import GIB, NodeResources

    argv = ["sinfo", "-h", "-N", "-o", "%P|%c|%m"] + (["-p", partition] if partition else [])
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        why = "sinfo not found"
    except subprocess.TimeoutExpired:
        why = "sinfo gave no answer in 60 s"
    else:
        rows = [line.split("|") for line in r.stdout.split() if line.count("|") == 2]
        if not partition:
            rows = [row for row in rows if row[0].endswith("*")]
        sizes = [(int(c.rstrip("+")), int(m.rstrip("+"))) for _, c, m in rows
                 if c.rstrip("+").isdigit() and m.rstrip("+").isdigit()]
        if r.returncode == 0 and sizes:
            name = partition or rows[0][0].rstrip("*")
            return NodeResources(cpus=min(c for c, _ in sizes), mem_bytes=min(m for _, m in sizes) * GIB // 1024,
                                 source=f"partition {name} (sinfo)")
        lines = (r.stderr or r.stdout).strip().splitlines()
        where = f"partition {partition}" if partition else "the default partition"
        why = lines[-1] if r.returncode and lines else f"no node in {where}"
    raise InputError(f"cannot read the CPUs and memory of a node ({' '.join(argv)}: {why}): give --cpus-per-node "
                     f"and --mem-per-node, or --partition of a cluster sinfo can reach")


def node_resources(args, needed: bool):
    """The node size: --cpus-per-node and --mem-per-node, else sinfo's for the partition (with either flag
    overriding its part). When sinfo cannot tell: InputError if the sizing `needed` it or one flag was given,
    else None."""
    from mpimager.planner.sbatch import NodeResources, parse_mem

    if args.cpus_per_node and args.mem_per_node:
        return NodeResources(args.cpus_per_node, parse_mem(args.mem_per_node) or 0, "--cpus-per-node/--mem-per-node")
    try:
        node = partition_resources(args.partition)
    except InputError:
        if needed or args.cpus_per_node or args.mem_per_node:
            raise
        return None
    return NodeResources(args.cpus_per_node or node.cpus,
                         (parse_mem(args.mem_per_node) if args.mem_per_node else None) or node.mem_bytes,
                         node.source)


def script_values(args, prepared) -> dict[str, str]:
    """The template's values for the run `prepared`: sized from the plan
    (mpimager.planner.sbatch.size_from_plan), then the options given; InputError when the layout does not fit."""
    from mpimager.planner import sbatch as slurm

    config = prepared.config
    cpus = args.cpus_per_task or config.worker.threads
    needed = not args.nodes_mpi and (cpus is None or config.worker.max_concurrent is None)
    node = None if args.nodes_mpi else node_resources(args, needed)
    try:
        values = slurm.size_from_plan(prepared.jobs, config.worker.max_concurrent, cpus, nodes=args.nodes,
                                      nodes_mpi=args.nodes_mpi, node=node)
        if args.mem is not None and not args.nodes_mpi:
            for warning in slurm.check_memory(prepared.jobs, int(values["ntasks-per-node"]), args.mem, node):
                print(f"mpimager sbatch: warning: {warning}", file=sys.stderr)
    except slurm.SizingError as exc:
        raise InputError(str(exc)) from None
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
    """The batch script: the template (`args.template`, else the packaged one for the layout) rendered with
    `values` and the run's arguments; InputError naming the template when it cannot be read or rendered."""
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
    """Write `text` to `path` (atomically, executable, parents made); its absolute path. InputError when it
    cannot be written."""
    path = Path(path).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text, mode=0o755)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the batch script ({exc.strerror or exc})") from None
    return path


def submit(script: Path, cwd: Path, extra=()) -> str:
    """`sbatch --parsable [extra] SCRIPT` run in `cwd` for the batch `script`: the job id; JobError with exit
    code, command and output."""
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
    """Check, prepare (without this host's pre-flight), size and render the script; print it, write it
    (--output) or write and submit it (--submit, printing the job id). Exit code 0; JobError when sbatch fails."""
    from mpimager.cli.run import request_from
    from mpimager.pipeline.prepare import prepare
    from mpimager.planner import sbatch as slurm

    check_options(args)
    from dataclasses import replace

    prepared = prepare(replace(request_from(args), check_here=False))  # the login node's software may differ
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
