"""The plan: a pure function from config + MS metadata to the list of jobs of a run (a small DAG).

Jobs: `fixms` (once per MS that needs it) before every `wsclean` job that reads that MS. Grouping:
one WSClean job per MS per pass (default), per (obs_id, spectral window) with `--combine`, per spectral
window across obs_ids with `--combine-obs-ids`. Every WSClean job gets its own `-temp-dir` and, unless
the config removes it, `-no-update-model-required`, so jobs sharing an MS never collide or modify it.
Nothing here touches the disk: directories are made by whoever runs the job.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mpimager.config.load import Config, ImagingPass, is_askap
from mpimager.config.reduce import ReduceOptions
from mpimager.errors import ConfigError, InputError
from mpimager.inputs.discover import InputMS
from mpimager.rundir import layout
from mpimager.states import JobKind
from mpimager.wsclean import names
from mpimager.wsclean import options as wsclean
from mpimager.wsclean.names import parse_image_name

if TYPE_CHECKING:
    from mpimager.planner.products import CubePaths

MODES = ("single", "combine", "combine-obs-ids")


@dataclass(frozen=True)
class Job:
    id: str
    kind: JobKind
    ms: tuple[str, ...]
    argv: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    host: str | None = None
    cost: float = 1.0
    prefix: str | None = None
    temp_dir: str | None = None
    pass_name: str = ""
    nranks: int = 1
    pols: tuple[str, ...] = ()  # the polarisations a WSClean job images
    tags: tuple[tuple[str, str], ...] = field(default=())  # obs_id, sw, field, beam: for reduction and reports

    @property
    def image_prefix(self) -> str:
        """The prefix of a WSClean job's images (only WSClean jobs have one)."""
        assert self.prefix is not None, f"{self.id}: not a WSClean job"
        return self.prefix

    def to_json(self) -> dict:
        """The job as plain JSON values (tuples as lists, `tags` as a dict), as the journal's `plan` record holds it."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("ms", "argv", "outputs", "depends_on", "pols"):
            d[key] = list(d[key])
        d["tags"] = dict(self.tags)
        return d


@dataclass(frozen=True)
class PlanSettings:
    """What the plan needs beyond the config: from the command line and the launch environment."""

    run_dir: Path
    mode: str = "single"
    threads: int = 1
    wsclean: str = "wsclean"  # as the runtime will call it
    python: str = "python3"  # runs the FixMS step
    nodes_mpi: int = 1  # >1: every WSClean job is wsclean-mp over that many ranks (WSClean's own MPI mode)


def plan_jobs(config: Config, inputs: Sequence[InputMS], settings: PlanSettings) -> list[Job]:
    """All jobs of the run of `config` over the MSs `inputs`, in a deterministic order: FixMS jobs, WSClean
    jobs (grouped by `settings.mode`, one per pass), then gather and mosaic jobs.

    InputError for an unknown mode; ConfigError when two WSClean jobs would write the same images.
    """
    if settings.mode not in MODES:
        raise InputError(f"unknown mode {settings.mode!r}: expected one of {', '.join(MODES)}")
    fix_ids = _fixms_ids(config, inputs)
    fixms_jobs = [_fixms_job(config, m, fix_ids[m.info.path], settings.python)
                  for m in inputs if m.info.path in fix_ids]
    imaging = [
        _wsclean_job(config, settings, group, p, fix_ids)
        for group in _groups(inputs, settings.mode)
        for p in config.passes
    ]
    _check_unique_prefixes(imaging)
    imaging = _name_jobs(imaging)
    askap = {m.info.path for m in inputs if _fixms_applies(config, m) or m.info.telescope.upper().startswith("ASKAP")}
    reduce_jobs = _reduce_jobs(config, settings, imaging, askap)
    return fixms_jobs + imaging + reduce_jobs + _mosaic_jobs(config, settings, imaging, reduce_jobs)


# ------------------------------------------------------------------------------------------------


def _groups(inputs: Sequence[InputMS], mode: str) -> list[tuple[InputMS, ...]]:
    if mode == "single":
        return [(m,) for m in inputs]
    groups: dict[tuple, list[InputMS]] = defaultdict(list)
    for m in inputs:
        key = (m.sw,) if mode == "combine-obs-ids" else (m.obs_id, m.sw)
        groups[key].append(m)
    return [tuple(g) for g in groups.values()]


def _fixms_applies(config: Config, m: InputMS) -> bool:
    return config.fixms.applies_to(m.info.telescope)


def _fixms_ids(config: Config, inputs: Sequence[InputMS]) -> dict[str, str]:
    """MS path -> id of its FixMS job, for every MS where FixMS applies.

    Planned even when a completion record exists: the step itself checks that the record matches these
    options (milliseconds), and the journal skips it on a re-run."""
    paths = [m.info.path for m in inputs if _fixms_applies(config, m)]
    return {p: f"fixms:{name}" for p, name in zip(paths, _short_names(paths))}


def _fixms_verdict(config: Config, m: InputMS):
    """The FixMS state of an MS FixMS applies to (msstate.Verdict); InputError naming the MS and the evidence
    where it cannot be told, where it is refused, or where FixMS must change an MS it cannot write."""
    from mpimager.inputs import msstate

    f, info = config.fixms, m.info
    override = "set [fixms] enabled = false (and [inputs] data_column) to image the MS as it is"
    if info.fixms_evidence is None:
        if info.fixms_evidence_error:
            raise InputError(f"{info.fixms_evidence_error}; FixMS cannot tell its state: {override}")
        # metadata made without reading the MS (an API caller's MSInfo): the step decides at run time
        return msstate.Verdict(msstate.MSState.RAW, f.corrected_data_column, "not read by the planner")
    v = msstate.classify(info.fixms_evidence, f.data_column, f.corrected_data_column, f.fix_stokes_factor)
    if v.state in msstate.REFUSED:
        raise InputError(f"{info.path}: FixMS state {v.state}: {v.evidence}; {override}, or set "
                         f"[fixms] corrected_data_column to another name")
    if msstate.needs_write(v, info.fixms_evidence) and info.fixms_write_problem:
        raise InputError(f"{info.path}: FixMS must change this MS ({v.state}) but {info.fixms_write_problem}; "
                         f"make it writable, or {override}")
    return v


def _fixms_job(config: Config, m: InputMS, job_id: str, python: str) -> Job:
    _fixms_verdict(config, m)
    f = config.fixms
    argv = [python, "-m", "mpimager.runtime.fixms", "--data-column", f.data_column,
            "--corrected-data-column", f.corrected_data_column]
    argv += [] if f.fix_stokes_factor else ["--no-stokes-factor"]
    return Job(id=job_id, kind=JobKind.FIXMS, ms=(m.info.path,), argv=tuple(argv + [m.info.path]),
               host=_host(config, (m,)), cost=m.info.size_bytes / 1e6, tags=_tags((m,)))


def _common(values) -> str | None:
    """The value all MSs of a group share; None if none has one; wsclean.MIXED if they differ."""
    values = set(values)
    if len(values) > 1:
        return wsclean.MIXED
    return None if not values or None in values else str(values.pop())


def _group_values(group: Sequence[InputMS]) -> dict[str, str | None]:
    """obs_id, sw, field and beam of a group: shared, None (unknown) or wsclean.MIXED.

    FEED1 numbers beams only in ASKAP MSs; elsewhere (NenuFAR, LOFAR: 0) it is a feed, so no $beam$."""
    return {
        "obs_id": _common(m.obs_id for m in group),
        "sw": _common(m.sw for m in group),
        "field": _common(m.info.field for m in group),
        "beam": _common(f"{m.info.beam:02d}" if m.info.beam is not None and is_askap(m.info.telescope) else None
                        for m in group),
    }


def _tags(group: Sequence[InputMS]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in _group_values(group).items() if v is not None and v != wsclean.MIXED)


def _tokens(group: Sequence[InputMS], p: ImagingPass, run_dir: Path) -> dict[str, str | None]:
    infos = [m.info for m in group]
    return {
        **_group_values(group),
        "ms_in": _common(i.path for i in infos),
        "ms_dir": _common(os.path.dirname(i.path) for i in infos),
        "ms_basename": _common(i.basename for i in infos),
        "ms_stem": _common(i.stem for i in infos),
        "pass": p.suffix or None,
        "run_dir": str(run_dir.absolute()),
    }


def _wsclean_job(config: Config, settings: PlanSettings, group: tuple[InputMS, ...], p: ImagingPass,
                 fix_ids: dict[str, str]) -> Job:
    where = f"{config.path}: [passes.{p.suffix}]" if p.suffix else f"{config.path}: [wsclean]"
    name, prefix = _prefix(group, p, settings.run_dir, where)
    options = dict(p.options)
    n_out = _channels_out(options, group, where)
    if "channels-out" in options:
        options["channels-out"] = n_out
    if settings.nodes_mpi > 1 and n_out < settings.nodes_mpi:
        raise InputError(f"{where}: --nodes-mpi {settings.nodes_mpi} needs channels-out >= {settings.nodes_mpi} "
                         f"(WSClean's MPI mode grids one output channel per rank), this job has {n_out}")
    data_column = _data_column(config, group, options)
    if data_column:
        options["data-column"] = data_column
    temp_base = options.pop("temp-dir", None) or str(config.worker.temp_dir or settings.run_dir.absolute() / layout.TMP)
    temp_dir = os.path.join(temp_base, _safe(name) + "-" + _digest(prefix))
    options = {"j": settings.threads, **options, "temp-dir": [temp_dir]}  # a list: a path is never split
    binary = config.container.wsclean_mp if settings.nodes_mpi > 1 else settings.wsclean
    argv = wsclean.command(binary, list(options.items()), prefix, [m.info.path for m in group])
    return Job(id="", kind=JobKind.WSCLEAN, ms=tuple(m.info.path for m in group), argv=tuple(argv),
               outputs=tuple(names.predict_outputs(prefix, options, n_out)),
               depends_on=tuple(fix_ids[m.info.path] for m in group if m.info.path in fix_ids),
               host=_host(config, group), cost=_cost(group, options, n_out), prefix=prefix, temp_dir=temp_dir,
               pass_name=p.suffix, nranks=settings.nodes_mpi,
               pols=tuple(names.parse_pols(str(options.get("pol", "I")))), tags=_tags(group))


def _prefix(group: Sequence[InputMS], p: ImagingPass, run_dir: Path, where: str) -> tuple[str, str]:
    """The image name (with the pass appended) and the absolute -name prefix of a group's job."""
    tokens = _tokens(group, p, run_dir)
    name = wsclean.substitute(p.name, tokens, f"{where} name")
    if "/" in name:
        raise ConfigError(f"{where} name: {name!r} holds a '/': put folders in out-dir")
    if p.suffix and "$pass$" not in p.name + p.out_dir:  # else the pass already tells the prefixes apart
        name = f"{name}.{p.suffix}"
    out_dir = wsclean.substitute(p.out_dir, {**tokens, "name": name}, f"{where} out-dir")
    if not os.path.isabs(out_dir):
        raise ConfigError(f"{where} out-dir: {p.out_dir!r} gives the relative path {out_dir!r}")
    return name, os.path.normpath(os.path.join(out_dir, name))


def _channels_out(options: dict, group: Sequence[InputMS], where: str) -> int:
    """WSClean's output channels for a group ('all' and 'everyN' resolved from the MSs' channels)."""
    if "channels-out" not in options:
        return 1
    channels = {m.info.n_channels for m in group}
    if len(channels) > 1 and not isinstance(options["channels-out"], int):
        raise InputError(f"{where} channels-out = {options['channels-out']!r}: the MSs of one job have "
                         f"different channel counts ({', '.join(map(str, sorted(channels)))})")
    return wsclean.resolve_channels_out(options["channels-out"], max(channels), f"{where} channels-out")


def _data_column(config: Config, group: Sequence[InputMS], options: dict) -> str | None:
    """The column to image: [wsclean] data-column, [inputs] data_column, else FixMS' output when FixMS
    applies, else None (WSClean's choice). It must exist in every MS, or be the column FixMS will write."""
    fixed = {m.info.path: _fixms_verdict(config, m).image_column for m in group if _fixms_applies(config, m)}
    if len(set(fixed.values())) > 1:
        raise InputError(f"the MSs of one job hold their sky-frame data in different columns after FixMS "
                         f"({', '.join(f'{p}: {c}' for p, c in fixed.items())}): image them apart")
    column: str | None = options.get("data-column") or config.inputs.data_column or \
        (next(iter(fixed.values())) if fixed else None)
    if column:
        for m in group:
            if not m.info.has_column(column) and not (m.info.path in fixed and column == fixed[m.info.path]):
                raise InputError(f"{m.info.path}: has no column {column} to image "
                                 f"(columns: {', '.join(sorted(c for c in m.info.columns if 'DATA' in c))})")
    return column


# ------------------------------------------------------------------------------------------------ gather


@dataclass(frozen=True)
class _CubeName:
    prefix: str
    stokes: str
    kind: str




def _reduce_units(config: Config, imaging: Sequence[Job]) -> list[list[Job]]:
    """Which imaging jobs share one gather job (and one common beam) under [reduce] scope."""
    scope = config.reduce.scope
    if scope == "observation":
        return [list(imaging)] if imaging else []
    if scope == "beam":  # all passes of one MS group, as Arrakis: I and QU of a beam share a beam
        units: dict[tuple, list[Job]] = defaultdict(list)
        for j in imaging:
            units[j.ms].append(j)
        return list(units.values())
    return [[j] for j in imaging]


def _reduce_jobs(config: Config, settings: PlanSettings, imaging: Sequence[Job], askap: set[str]) -> list[Job]:
    """One `mpimager reduce` job per unit of [reduce] scope, after the unit's imaging jobs."""
    r = config.reduce
    if not r.enabled:
        return []
    wanted = {{"restored": "image", "residual": "residual", "unconvolved": "image"}[k] for k in r.cubes}
    jobs = []
    for unit in _reduce_units(config, imaging):
        found = [(n.kind, o) for j in unit for o in j.outputs
                 if (n := parse_image_name(os.path.basename(o))) and n.is_channel]
        images = [o for kind, o in found if kind in wanted]
        if not images:
            continue  # one output channel: nothing to stack
        # a dirty-only pass (niter = 0: no residuals, BMAJ = 0 in every image) has no restoring beam to
        # match: its gather stacks the images as they are (unconvolved cubes) instead of failing
        dirty_only = all(kind != "residual" for kind, _ in found)
        cubes = ("unconvolved",) if dirty_only else r.cubes
        out_dir = _unit_out_dir(unit)
        # the [reduce] options travel whole (one JSON value): the unit already is the scope's group
        options = replace(r, scope="prefix" if r.scope == "prefix" else "observation",
                          threads=r.threads or settings.threads, cubes=cubes)
        argv = [settings.python, "-m", "mpimager", "reduce", "--out", out_dir, "--quiet",
                "--options", json.dumps(options.to_mapping(), sort_keys=True, separators=(",", ":"))]
        unit_ms = list(dict.fromkeys(m for j in unit for m in j.ms))
        argv += ["--ms", unit_ms[0]] if unit_ms[0] in askap else []  # its beam's receptor angle goes in the header
        outputs = [str(p) for j in unit for _, _, paths in _job_cubes(r, j, out_dir, cubes)
                   for p in (paths.cube, paths.beamlog, paths.weights)]
        name = unit[0].id.split(":", 1)[1] if len(unit) == 1 else (
            os.path.commonprefix([os.path.basename(j.image_prefix) for j in unit]).rstrip(".-_")  # noqa: RUF071 - names
            or "all")
        jobs.append(Job(id=f"reduce:{name}", kind=JobKind.REDUCE, ms=tuple(unit_ms), argv=tuple(argv + images),
                        outputs=tuple(outputs), depends_on=tuple(j.id for j in unit), host=unit[0].host,
                        cost=sum(j.cost for j in unit) / 10, tags=unit[0].tags if len(unit) == 1 else ()))
    return jobs


def _unit_out_dir(unit: Sequence[Job]) -> str:
    """Where the gather job of `unit` writes its cubes."""
    return os.path.commonpath([os.path.dirname(j.image_prefix) for j in unit])


def _job_cubes(r: ReduceOptions, job: Job, out_dir: str, kinds: Sequence[str]) -> list[tuple[str, str, CubePaths]]:
    """(Stokes, kind, CubePaths) of every cube of `kinds` the gather step makes from imaging job `job`'s channels."""
    from mpimager.planner.products import cube_paths

    return [(stokes, kind, cube_paths(_CubeName(os.path.basename(job.image_prefix), stokes, kind), r, Path(out_dir)))
            for kind in kinds for stokes in job.pols]


def _mosaic_jobs(config: Config, settings: PlanSettings, imaging: Sequence[Job],
                 reduce_jobs: Sequence[Job]) -> list[Job]:
    """One `mpimager mosaic` job per field, pass, Stokes and product, after the gather jobs of its cubes."""
    from mpimager.planner.products import mosaic_paths

    m = config.mosaic
    if m is None or not m.enabled or not reduce_jobs:
        return []
    r = config.reduce
    if r.scope != "observation" and r.beam is None:
        raise ConfigError(f"{config.path}: [mosaic] enabled needs one restoring beam per channel across a field's "
                          f"beams: set [reduce] scope = \"observation\" (or a fixed [reduce] beam); "
                          f"scope is {r.scope!r}")
    gathered = {dep: rj for rj in reduce_jobs for dep in rj.depends_on}
    by_id = {j.id: j for j in imaging}
    cube_dirs = {rj.id: _unit_out_dir([by_id[d] for d in rj.depends_on]) for rj in reduce_jobs}
    units: dict[tuple[str, str, str, str], list[tuple[Job, Job, str]]] = defaultdict(list)
    for j in imaging:
        rj = gathered.get(j.id)
        if rj is None:
            continue
        field = dict(j.tags).get("field") or "field"
        for stokes, kind, paths in _job_cubes(r, j, cube_dirs[rj.id], r.cubes):
            if str(paths.cube) not in rj.outputs:
                continue  # not gathered (a dirty-only pass is stacked unconvolved: no common beam to mosaic)
            units[(field, j.pass_name, stokes, kind)].append((j, rj, str(paths.cube)))
    out_dir = wsclean.substitute(m.out_dir, {"run_dir": str(settings.run_dir.absolute())}, "[mosaic] out_dir") \
        if m.out_dir else str(settings.run_dir.absolute() / "mosaics")
    jobs = []
    for (field, pass_name, stokes, kind), members in units.items():
        name = _safe(f"{field}.{pass_name}" if pass_name else field) + f"-{stokes}-{kind}"
        beams = [b for j, _, _ in members if (b := dict(j.tags).get("beam")) is not None]
        ids = [int(b) for b in beams] if len(beams) == len(members) else list(range(len(members)))
        argv = [settings.python, "-m", "mpimager", "mosaic", "--out", out_dir, "--name", name,
                "--telescope", m.telescope, "--cutoff", str(m.cutoff), "--interpolation", m.interpolation,
                "--planes", str(m.planes), "--quiet", "--beam-ids", ",".join(map(str, ids))]
        argv += ["--dish-diameter", str(m.dish_diameter)] if m.dish_diameter else []
        argv += ["--fwhm-factor", str(m.fwhm_factor)] if m.fwhm_factor else []
        argv += ["--centre", *map(str, m.centre)] if m.centre else []
        for i in ids if m.primary_beams else ():
            assert m.primary_beams is not None
            pb = m.primary_beams.replace("$beam$", f"{i:02d}")
            if not os.path.isfile(pb):
                raise InputError(f"{config.path}: [mosaic] primary_beams: {pb} (beam {i:02d} of {field}) is not a file")
            argv += ["--pb", pb]
        argv += [cube for _, _, cube in members]
        ms = tuple(dict.fromkeys(x for j, _, _ in members for x in j.ms))
        jobs.append(Job(id=f"mosaic:{name}", kind=JobKind.MOSAIC, ms=ms,
                        argv=tuple(argv), outputs=tuple(str(p) for p in mosaic_paths(Path(out_dir), name).all()),
                        depends_on=tuple(dict.fromkeys(rj.id for _, rj, _ in members)), host=members[0][0].host,
                        cost=sum(j.cost for j, _, _ in members) / 20, tags=(("field", field),)))
    return jobs


def _host(config: Config, group: Sequence[InputMS]) -> str | None:
    if not config.worker.run_on_file_host:
        return None
    m = re.search(config.worker.run_on_file_host_pattern, group[0].info.path)
    return m.group(1) if m else None


def _cost(group: Sequence[InputMS], options: dict, n_out: int) -> float:
    """A relative cost for largest-first ordering: data volume x polarisations x image area x cleaning."""
    size = options.get("size", "1024 1024")
    try:
        w, h = (int(x) for x in str(size).split()[:2]) if not isinstance(size, list) else map(int, size[:2])
    except ValueError:
        w = h = 1024
    npol = len(names.parse_pols(str(options.get("pol", "I"))))
    mb = sum(m.info.size_bytes for m in group) / 1e6
    clean = 2.0 if int(options.get("niter", 0) or 0) > 0 else 1.0
    return round(mb * npol * clean + w * h * n_out * npol / 1e6, 3)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _short_names(paths: Sequence[str]) -> list[str]:
    """Basenames where unique, else the path below the paths' common folder."""
    bases = [os.path.basename(p) for p in paths]
    if len(set(bases)) == len(bases):
        return bases
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return [os.path.relpath(p, root) for p in paths]


def _name_jobs(jobs: list[Job]) -> list[Job]:
    from dataclasses import replace

    names = _short_names([j.image_prefix for j in jobs]) if jobs else []
    return [replace(j, id=f"wsclean:{n}") for j, n in zip(jobs, names)]


def _check_unique_prefixes(jobs: Sequence[Job]) -> None:
    seen: dict[str, Job] = {}
    for j in jobs:
        prefix = j.image_prefix
        if prefix in seen:
            raise ConfigError(f"two jobs would write the same images {prefix}-*.fits (MSs "
                              f"{', '.join(seen[prefix].ms)} and {', '.join(j.ms)}): "
                              f"put a token such as $ms_stem$ or $beam$ in [wsclean] name or out-dir")
        seen[prefix] = j
