"""Slurm batch scripts: rendering a template with values sized from the plan (pure; no Slurm call here).

The templates in `slurm/` are real sbatch scripts that double as render sources. Their placeholders:
- a directive line `#SBATCH --KEY=VALUE` or `#SBATCH --KEY` (key `KEY`), or the same line switched off as
  `##SBATCH ...`: `render` writes `#SBATCH --KEY=NEW` (switched on; `#SBATCH --KEY` for an empty value);
- a shell default `NAME=${NAME:-DEFAULT}` (key `NAME`, upper case): the default becomes the value, shell-quoted;
- the line `[ "$#" -gt 0 ] || set --`: `render(..., args=...)` appends the arguments, each shell-quoted, so the
  script run without arguments runs those (the config and inputs `mpimager sbatch` was given).

`size_from_plan` turns the planned jobs into those values for nodes of a given size (`NodeResources`: CPUs and
memory of the target partition's nodes): nodes, tasks per node (`[worker] max_concurrent`, else as many jobs as
a node's memory holds), CPUs per task (WSClean's `-j`: the node's CPUs shared by its tasks), memory per node
(each job's floor or what its -abs-mem/-mem lets WSClean take, x tasks; refused when more than a node has)
and a time limit estimated from the jobs' costs (`SECONDS_PER_COST`). Rendering, writing and submitting are
three separate steps (mpimager.cli.sbatch reads the partition with sinfo, writes and submits).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mpimager.planner.jobs import Job

# Wall seconds per cost unit of a job on one thread (mpimager.planner.jobs: cost ~ MB of data x polarisations x 2 when
# cleaning + image megapixels x output channels x polarisations), measured on the project's 2-core machine from
# the journal of `configs/demo.toml` runs under `mpirun -n 3` (2 workers, `-j 1`), taking the largest ratio seen
# on jobs big enough that process start-up does not dominate (92 MB beams, 36 antennas, 150 times, 16 channels):
# WSClean 0.088-0.119 s/unit (cost 191-382), FixMS 0.038, reduce 0.048-0.069. WSClean with more threads is
# faster, so the estimate errs long. Small jobs are dominated by start-up: `JOB_OVERHEAD_S` per job (measured
# 1.4-3.5 s for the demo's 12 MB beams).
SECONDS_PER_COST = {"wsclean": 0.12, "fixms": 0.04, "reduce": 0.07}
JOB_OVERHEAD_S = 5.0
SAFETY = 1.5  # the limit is this times the estimate, plus START_MARGIN_S, rounded up to ROUND_S, at least MIN_TIME_S
START_MARGIN_S = 300
ROUND_S = 900
MIN_TIME_S = 1800

# Memory per job: 1 GiB plus 16 bytes per image pixel held at once (residual, model, PSF and a spare, float32,
# for every output channel and polarisation of a joined deconvolution), or what WSClean is allowed to take
# when the job says (-abs-mem GB, -mem % of the node: WSClean fills what it is allowed with visibilities);
# per node: tasks x the largest job + 1 GiB for the ranks.
GIB = 1024 ** 3
JOB_BASE_BYTES = GIB
BYTES_PER_PIXEL = 16

_DIRECTIVE = re.compile(r"^#{1,2}SBATCH[ \t]+--([A-Za-z][A-Za-z0-9-]*)(?:=\S*)?[ \t]*$")
_DEFAULT = re.compile(r"^([A-Z_][A-Z0-9_]*)=\$\{([A-Z_][A-Z0-9_]*):-[^}]*\}(?=[ \t]*(?:#.*)?$)")
_ARGS = re.compile(r'^\[ "\$#" -gt 0 \] \|\| set --.*$')
_SAFE_DIRECTIVE_VALUE = re.compile(r"^[^\s#'\"\\]*$")


class TemplateError(ValueError):
    """A template lacks a placeholder that was given a value, or a value cannot go into its place."""


def render(template_text: str, values: Mapping[str, str], args: Sequence[str] | None = None) -> str:
    """`template_text` with each placeholder named in `values` filled (see the module docstring).

    Directive keys are sbatch long option names (`nodes`, `time`, ...), shell-default keys are upper case.
    `args`, when given, become the script's default arguments. Raises TemplateError for a key or `args`
    without a place in the template, a value that is not a string or holds a newline or NUL, or a directive
    value holding whitespace, quotes, `#` or a backslash (sbatch reads directive lines itself, without a shell).
    """
    todo = dict(values)
    for key, value in todo.items():
        if not isinstance(value, str):
            raise TemplateError(f"value of {key!r} must be a string, got {type(value).__name__}")
        if not key.isupper() and not _SAFE_DIRECTIVE_VALUE.match(value):
            raise TemplateError(f"#SBATCH --{key}: the value {value!r} cannot go in a directive "
                                f"(whitespace, quotes, '#' or '\\')")
        if "\n" in value or "\0" in value:
            raise TemplateError(f"{key}: a value cannot hold a newline or NUL")
    out, seen, args_done = [], set(), args is None
    for line in template_text.splitlines(keepends=True):
        body, nl = (line[:-1], "\n") if line.endswith("\n") else (line, "")
        m = _DIRECTIVE.match(body)
        if m and m.group(1) in todo and m.group(1) not in seen:
            key = m.group(1)
            seen.add(key)
            out.append(f"#SBATCH --{key}" + (f"={todo[key]}" if todo[key] else "") + nl)
            continue
        m = _DEFAULT.match(body)
        if m and m.group(1) == m.group(2) and m.group(1) in todo and m.group(1) not in seen:
            key = m.group(1)
            seen.add(key)
            rest = body[m.end():]
            out.append(f"{key}=${{{key}:-{shlex.quote(todo[key])}}}{rest}{nl}")
            continue
        if not args_done and _ARGS.match(body):
            args_done = True
            out.append('[ "$#" -gt 0 ] || set --' + "".join(" " + shlex.quote(a) for a in args or ()) + nl)
            continue
        out.append(line)
    missing = [k for k in todo if k not in seen]
    if missing:
        raise TemplateError("the template has no place for " + ", ".join(
            f"'#SBATCH --{k}'" if not k.isupper() else f"'{k}=${{{k}:-...}}'" for k in missing))
    if not args_done:
        raise TemplateError("the template has no line '[ \"$#\" -gt 0 ] || set --' for the default arguments")
    return "".join(out)


# ------------------------------------------------------------------------------------------------------------
# sizing


def format_time(seconds: float) -> str:
    """Slurm's time format: HH:MM:SS, or D-HH:MM:SS from one day on (seconds rounded up)."""
    s = max(0, math.ceil(seconds))
    days, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}-{text}" if days else text


_TIME = re.compile(r"^(?:\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2})$")


def valid_time(text: str) -> bool:
    """Whether `text` is one of sbatch's time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    return bool(_TIME.match(text))


def job_seconds(job: Job) -> float:
    """The estimated wall seconds of one job on one thread (see SECONDS_PER_COST)."""
    return JOB_OVERHEAD_S + job.cost * SECONDS_PER_COST.get(job.kind, max(SECONDS_PER_COST.values()))


def estimate_seconds(jobs: Sequence[Job], slots: int) -> float:
    """Wall seconds to run `jobs` on `slots` workers: total work / slots + the longest dependency chain
    (Graham's bound for list scheduling, which the queue is). A job over several ranks (wsclean-mp) is
    counted as taking its one-rank time (no speed-up assumed) while holding `nranks` of the slots."""
    by_id = {j.id: j for j in jobs}
    chain: dict[str, float] = {}

    def longest(job_id: str) -> float:
        if job_id not in chain:
            job = by_id[job_id]
            chain[job_id] = 0.0  # guards against a cycle (the plan has none)
            chain[job_id] = job_seconds(job) + max((longest(d) for d in job.depends_on if d in by_id), default=0.0)
        return chain[job_id]

    total = sum(job_seconds(j) * max(1, min(j.nranks, slots)) for j in jobs)
    critical = max((longest(j.id) for j in jobs), default=0.0)
    return total / max(1, slots) + critical


def time_limit(jobs: Sequence[Job], slots: int) -> str:
    """The --time to ask for to run `jobs` on `slots` workers: SAFETY x `estimate_seconds` + START_MARGIN_S,
    rounded up to ROUND_S, at least MIN_TIME_S."""
    seconds = SAFETY * estimate_seconds(jobs, slots) + START_MARGIN_S
    return format_time(max(MIN_TIME_S, math.ceil(seconds / ROUND_S) * ROUND_S))


def _argv_value(argv: Sequence[str], flag: str, count: int = 1) -> list[str] | None:
    try:
        i = list(argv).index(flag)
    except ValueError:
        return None
    return list(argv[i + 1: i + 1 + count])


@dataclass(frozen=True)
class NodeResources:
    """CPUs and memory of one node of the target partition, and where they were read ('partition work (sinfo)')."""

    cpus: int
    mem_bytes: int
    source: str


class SizingError(ValueError):
    """The jobs cannot be laid out on the nodes as asked (a message a user can act on)."""


def wsclean_limit_bytes(job: Job, node: NodeResources | None = None) -> int | None:
    """What a WSClean job allows itself: -abs-mem GB, and -mem % of the node's memory (when known); the smaller
    of the two (WSClean takes the smaller); None when neither is set."""
    if job.kind != "wsclean":
        return None
    limits = []
    abs_mem = _argv_value(job.argv, "-abs-mem")
    mem = _argv_value(job.argv, "-mem")
    try:
        if abs_mem:
            limits.append(int(float(abs_mem[0]) * GIB))
        if mem and node is not None:
            limits.append(int(float(mem[0]) / 100 * node.mem_bytes))
    except ValueError:
        pass
    return min(limits) if limits else None


def job_memory_bytes(job: Job, node: NodeResources | None = None) -> int:
    """The memory of `job`: JOB_BASE_BYTES + BYTES_PER_PIXEL x image pixels held (WSClean jobs), or what
    WSClean is allowed to take (-abs-mem, -mem of `node`'s memory: `wsclean_limit_bytes`) when that is more."""
    if job.kind != "wsclean":
        return JOB_BASE_BYTES
    size = _argv_value(job.argv, "-size", 2) or ["0", "0"]
    n_out = (_argv_value(job.argv, "-channels-out") or ["1"])[0]
    try:
        pixels = int(size[0]) * int(size[1]) * max(1, int(n_out)) * max(1, len(job.pols))
    except (ValueError, IndexError):
        pixels = 0
    return max(JOB_BASE_BYTES + BYTES_PER_PIXEL * pixels, wsclean_limit_bytes(job, node) or 0)


def _largest(jobs: Sequence[Job], node: NodeResources | None) -> Job | None:
    return max(jobs, key=lambda j: job_memory_bytes(j, node), default=None)


def node_bytes(jobs: Sequence[Job], per_node: int, node: NodeResources | None = None) -> int:
    """Memory a node running `per_node` of `jobs` at once needs: the largest job x per_node + 1 GiB."""
    largest = _largest(jobs, node)
    return (job_memory_bytes(largest, node) if largest else JOB_BASE_BYTES) * per_node + GIB


def memory_per_node(jobs: Sequence[Job], per_node: int, node: NodeResources | None = None) -> str:
    """--mem for a node running `per_node` jobs at once (`node_bytes`), in G (GiB), rounded up."""
    return f"{math.ceil(node_bytes(jobs, per_node, node) / GIB)}G"


def parse_mem(text: str) -> int | None:
    """Bytes of the sbatch --mem value `text` ('64G', '512M', '2T', '100' = MiB); None for 0 (all of a node);
    SizingError for anything else."""
    m = re.fullmatch(r"(\d+)([KMGT]?)", text.strip())
    if not m:
        raise SizingError(f"--mem {text!r}: expected a size such as 64G, 512M or 0 (all of a node)")
    value = int(m.group(1)) * 1024 ** {"K": 1, "": 2, "M": 2, "G": 3, "T": 4}[m.group(2)]
    return value or None


def _why(job: Job | None, node: NodeResources | None) -> str:
    """What sets a job's memory, for messages: 'abs-mem 100' / 'mem 90 %' / 'its images'."""
    if job is None:
        return "the jobs"
    limit = wsclean_limit_bytes(job, node)
    if limit and limit >= job_memory_bytes(job):
        flags = [f"{f[1:]} {v[0]}" for f in ("-abs-mem", "-mem") if (v := _argv_value(job.argv, f))]
        return f"{job.id} ({', '.join(flags)})"
    return f"{job.id} (its images)"


def tasks_per_node(jobs: Sequence[Job], max_concurrent: int | None, node: NodeResources | None,
                   nodes: int = 1) -> int:
    """Worker ranks per node: `max_concurrent` when the config sets it, else as many of the largest of `jobs`
    as the memory of `node` holds, at most its CPUs and at most the WSClean jobs per node over `nodes` nodes.
    SizingError when neither is known, or when not even one job fits the node."""
    if max_concurrent is not None:
        return max_concurrent
    if node is None:
        raise SizingError("[worker] max_concurrent is not set and the node size is unknown: give --cpus-per-node "
                          "and --mem-per-node (or --partition, read with sinfo)")
    largest = _largest(jobs, node)
    per_job = job_memory_bytes(largest, node) if largest else JOB_BASE_BYTES
    fit = (node.mem_bytes - GIB) // per_job
    if fit < 1:
        raise SizingError(f"one job needs {math.ceil((per_job + GIB) / GIB)}G ({_why(largest, node)}), more than "
                          f"the {node.mem_bytes // GIB}G of a node of {node.source}")
    imaging = max(1, math.ceil(sum(j.kind == "wsclean" for j in jobs) / max(1, nodes)))
    return int(max(1, min(fit, node.cpus, imaging)))


def check_memory(jobs: Sequence[Job], per_node: int, mem: str, node: NodeResources | None) -> list[str]:
    """Warnings for a --mem that is less than `per_node` jobs may use (`node_bytes`); SizingError when that is
    more than a node of the partition has."""
    need = node_bytes(jobs, per_node, node)
    largest = _largest(jobs, node)
    what = f"{per_node} job{'s' * (per_node > 1)} at once of {_why(largest, node)}"
    if node is not None and need > node.mem_bytes:
        raise SizingError(f"{what} need {math.ceil(need / GIB)}G per node, more than the {node.mem_bytes // GIB}G "
                          f"of a node of {node.source}: lower [worker] max_concurrent, abs-mem or mem")
    given = parse_mem(mem)
    if given is not None and given < need:
        return [f"--mem={mem} is less than the {math.ceil(need / GIB)}G that {what} may use: WSClean may run out "
                f"of memory (or be killed by Slurm)"]
    return []


def size_from_plan(jobs: Sequence[Job], max_concurrent: int | None, cpus_per_task: int | None, *,
                   nodes: int | None = None, nodes_mpi: int | None = None,
                   node: NodeResources | None = None) -> dict[str, str]:
    """Template values for running `jobs`: see slurm/mpimager.sbatch (and slurm/mpimager-nodes-mpi.sbatch
    when `nodes_mpi` is given) for what each one means.

    Nodes: `nodes`, else the number of hosts the plan pins jobs to (`run_on_file_host`; they also become
    --nodelist), else 1 (with `nodes_mpi`: at least `nodes_mpi`). Tasks per node: `tasks_per_node` (from
    `max_concurrent`, or the memory of `node`). CPUs per task: `cpus_per_task`, else the node's CPUs / tasks per
    node. Memory: `memory_per_node` (checked against the node's with `check_memory`). Workers: nodes x tasks per
    node (the nodes-mpi layout: one per node, each job over `nodes_mpi` of them). Raises ValueError for a count
    below 1, SizingError when the layout cannot be sized or does not fit.
    """
    if (max_concurrent is not None and max_concurrent < 1) or (cpus_per_task is not None and cpus_per_task < 1):
        raise ValueError("max_concurrent and cpus_per_task must be at least 1")
    hosts = sorted({j.host for j in jobs if j.host})
    if nodes is not None and nodes < 1:
        raise ValueError("nodes must be at least 1")
    if nodes_mpi:
        n = max(nodes or nodes_mpi, nodes_mpi)
        wide = [with_nranks(j, nodes_mpi) for j in jobs]
        return {"nodes": str(n), "time": time_limit(wide, n), "NODES_MPI": str(nodes_mpi)}
    n = nodes or len(hosts) or 1
    tasks = tasks_per_node(jobs, max_concurrent, node, n)
    if cpus_per_task is None:
        if node is None:
            raise SizingError("the CPUs per node are unknown: give --cpus-per-task, or --cpus-per-node (or "
                              "--partition, read with sinfo)")
        cpus_per_task = max(1, node.cpus // tasks)
    mem = memory_per_node(jobs, tasks, node)
    check_memory(jobs, tasks, mem, node)
    values = {"nodes": str(n), "ntasks-per-node": str(tasks), "cpus-per-task": str(cpus_per_task),
              "mem": mem, "time": time_limit(jobs, n * tasks)}
    if hosts and nodes is None:
        values["nodelist"] = ",".join(hosts)
    return values


FITS_HEADER_BYTES = 2 * 2880  # a WSClean image's header: two FITS blocks


def _image_shape(job: Job) -> tuple[int, int, int]:
    """(width, height, output channels) of a WSClean job from its argv (0s when not stated)."""
    size = _argv_value(job.argv, "-size", 2) or ["0", "0"]
    n_out = (_argv_value(job.argv, "-channels-out") or ["1"])[0]
    try:
        return int(size[0]), int(size[1]), max(1, int(n_out))
    except (ValueError, IndexError):
        return 0, 0, 1


def job_output_bytes(job: Job, by_id: Mapping[str, Job]) -> int:
    """Bytes `job` writes (an estimate): a WSClean job's FITS images (float32 + header each); a gather job's
    cubes (the channels x pixels of its first imaging job, found in `by_id`, float32); FixMS at most a new
    CORRECTED_DATA column, the size of the MS's data (its cost is the MS's MB); 0 for other kinds."""
    if job.kind == "wsclean":
        w, h, _ = _image_shape(job)
        return sum(w * h * 4 + FITS_HEADER_BYTES for o in job.outputs if o.endswith(".fits"))
    if job.kind == "reduce":
        sources = [by_id[d] for d in job.depends_on if d in by_id and by_id[d].kind == "wsclean"]
        if not sources:
            return 0
        w, h, n = _image_shape(sources[0])
        return sum(n * w * h * 4 + FITS_HEADER_BYTES for o in job.outputs if o.endswith(".fits"))
    if job.kind == "fixms":
        return int(job.cost * 1e6)
    return 0


def with_nranks(job: Job, n: int) -> Job:
    """`job` (a WSClean job) run over `n` ranks; other kinds unchanged."""
    from dataclasses import replace

    return replace(job, nranks=n) if job.kind == "wsclean" else job
