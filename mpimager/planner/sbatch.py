"""Slurm batch scripts: rendering a template with values sized from the plan (pure; no Slurm call here).

The templates in `slurm/` are real sbatch scripts that double as render sources. Their placeholders:
- a directive line `#SBATCH --KEY=VALUE` or `#SBATCH --KEY` (key `KEY`), or the same line switched off as
  `##SBATCH ...`: `render` writes `#SBATCH --KEY=NEW` (switched on; `#SBATCH --KEY` for an empty value);
- a shell default `NAME=${NAME:-DEFAULT}` (key `NAME`, upper case): the default becomes the value, shell-quoted;
- the line `[ "$#" -gt 0 ] || set --`: `render(..., args=...)` appends the arguments, each shell-quoted, so the
  script run without arguments runs those (the config and inputs `mpimager sbatch` was given).

`size_from_plan` turns the planned jobs into those values: nodes, tasks per node (`[worker] max_concurrent`),
CPUs per task (WSClean's `-j`), memory per node and a time limit estimated from the jobs' costs
(`SECONDS_PER_COST`). Rendering, writing and submitting are three separate steps (mpimager.cli.sbatch
writes and submits).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence

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

# Memory (a floor, not a prediction: WSClean uses what it is allowed, see its -mem/-abs-mem): per job 1 GiB
# plus 16 bytes per image pixel held at once (residual, model, PSF and a spare, float32, for every output
# channel and polarisation of a joined deconvolution); per node: max_concurrent jobs + 1 GiB for the ranks.
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
    """The template with each placeholder named in `values` filled (see the module docstring).

    Directive keys are sbatch long option names (`nodes`, `time`, ...), shell-default keys are upper case.
    `args`, when given, become the script's default arguments. Raises TemplateError for a key or `args`
    without a place in the template, or a directive value holding whitespace, quotes, `#` or a backslash
    (sbatch reads directive lines itself, without a shell)."""
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
    """One of sbatch's time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
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
    """The --time to ask for: SAFETY x the estimate + START_MARGIN_S, rounded up to ROUND_S, >= MIN_TIME_S."""
    seconds = SAFETY * estimate_seconds(jobs, slots) + START_MARGIN_S
    return format_time(max(MIN_TIME_S, math.ceil(seconds / ROUND_S) * ROUND_S))


def _argv_value(argv: Sequence[str], flag: str, count: int = 1) -> list[str] | None:
    try:
        i = list(argv).index(flag)
    except ValueError:
        return None
    return list(argv[i + 1: i + 1 + count])


def job_memory_bytes(job: Job) -> int:
    """A floor for one job's memory: JOB_BASE_BYTES + BYTES_PER_PIXEL x image pixels held (WSClean jobs)."""
    if job.kind != "wsclean":
        return JOB_BASE_BYTES
    size = _argv_value(job.argv, "-size", 2) or ["0", "0"]
    n_out = (_argv_value(job.argv, "-channels-out") or ["1"])[0]
    try:
        pixels = int(size[0]) * int(size[1]) * max(1, int(n_out)) * max(1, len(job.pols))
    except (ValueError, IndexError):
        pixels = 0
    return JOB_BASE_BYTES + BYTES_PER_PIXEL * pixels


def memory_per_node(jobs: Sequence[Job], per_node: int) -> str:
    """--mem for a node running `per_node` jobs at once: the largest job's floor x per_node + 1 GiB, in G."""
    largest = max((job_memory_bytes(j) for j in jobs), default=JOB_BASE_BYTES)
    return f"{math.ceil((largest * per_node + GIB) / GIB)}G"


def size_from_plan(jobs: Sequence[Job], max_concurrent: int, cpus_per_task: int, *, nodes: int | None = None,
                   nodes_mpi: int | None = None) -> dict[str, str]:
    """Template values for running `jobs`: see slurm/mpimager.sbatch (and slurm/mpimager-nodes-mpi.sbatch
    when `nodes_mpi` is given) for what each one means.

    Nodes: `nodes`, else the number of hosts the plan pins jobs to (`run_on_file_host`; they also become
    --nodelist), else 1 (with `nodes_mpi`: at least `nodes_mpi`). Workers: nodes x max_concurrent (the
    nodes-mpi layout: one per node, each job over `nodes_mpi` of them)."""
    if max_concurrent < 1 or cpus_per_task < 1:
        raise ValueError("max_concurrent and cpus_per_task must be at least 1")
    hosts = sorted({j.host for j in jobs if j.host})
    if nodes is not None and nodes < 1:
        raise ValueError("nodes must be at least 1")
    if nodes_mpi:
        n = max(nodes or nodes_mpi, nodes_mpi)
        wide = [with_nranks(j, nodes_mpi) for j in jobs]
        return {"nodes": str(n), "time": time_limit(wide, n), "NODES_MPI": str(nodes_mpi)}
    n = nodes or len(hosts) or 1
    values = {"nodes": str(n), "ntasks-per-node": str(max_concurrent), "cpus-per-task": str(cpus_per_task),
              "mem": memory_per_node(jobs, max_concurrent), "time": time_limit(jobs, n * max_concurrent)}
    if hosts and nodes is None:
        values["nodelist"] = ",".join(hosts)
    return values


def with_nranks(job: Job, n: int) -> Job:
    """`job` (a WSClean job) run over `n` ranks; other kinds unchanged."""
    from dataclasses import replace

    return replace(job, nranks=n) if job.kind == "wsclean" else job
