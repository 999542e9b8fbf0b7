"""Orchestration of one mosaic: plan on every rank, files made by rank 0, channels spread over ranks.

`mosaic_cubes` is collective when given a communicator: every rank calls it with the same arguments.
Every rank reads the input headers and computes the same plan (inputs, primary beams, field grid); a bad
input raises the same `InputError` on every rank before anything is written. Rank 0 then creates the
output files at full size under `.partial` names and the others wait for it (sleeping). Channels go out in
blocks of `options.planes` (block b to rank b mod size); for each block a rank keeps one numerator and one
weight plane per channel, adds every beam's reprojected planes in, and writes the mosaic and weight planes
at their offsets. So memory is a few field planes (plus one beam's planes being reprojected), whatever the
number of channels or beams. The MFS image is the same formula summed over channels: each rank keeps its
part, rank 0 adds them up, writes it, verifies the files, writes the beam log and renames everything into
place (a failed mosaic leaves no partial file and never replaces a finished one).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpimager.config.mosaic import MosaicOptions
from mpimager.errors import InputError, JobError
from mpimager.mosaic.grid import Box, FieldGrid, field_grid
from mpimager.mosaic.inputs import BeamCube, check_compatible, read_cubes
from mpimager.mosaic.primarybeam import GaussianBeam, ImageBeam
from mpimager.planner.products import MosaicPaths, mosaic_paths

log_ = logging.getLogger(__name__)
#: the largest field grid made (pixels a side): a misplaced beam must not ask for a terabyte
MAX_SIDE = 65536


@dataclass(frozen=True)
class MosaicPlan:
    """Everything a rank needs to make its planes."""

    cubes: tuple[BeamCube, ...]
    models: tuple[GaussianBeam | ImageBeam, ...]  # one per cube
    grid: FieldGrid
    boxes: tuple[Box, ...]
    paths: MosaicPaths
    options: MosaicOptions
    name: str


@dataclass(frozen=True)
class Mosaic:
    """A mosaic made: its files and what went in."""

    paths: MosaicPaths
    grid: FieldGrid
    beam_ids: tuple[int, ...]
    centres: tuple[tuple[float, float], ...]
    nchan: int
    seconds: float


def plan_mosaic(cube_paths: Sequence[Path], options: MosaicOptions, out_dir: Path, name: str, *,
                beam_ids: Sequence[int] | None = None, weights: Sequence[Path] | None = None,
                pb_files: Sequence[Path] | None = None) -> MosaicPlan:
    """Read and check the inputs, choose primary beams and the field grid; InputError when they cannot be
    mosaicked (also when the grid would be more than MAX_SIDE pixels a side). Nothing is written.

    `cube_paths`: one cube per beam; `options`: the `[mosaic]` options; `out_dir`/`name`: where (see products);
    `beam_ids`, `weights`, `pb_files`: per cube, in the same order (defaults: from the names, the weights files
    beside the cubes, Gaussians).
    """
    from mpimager.mosaic.primarybeam import primary_beams

    cubes = read_cubes([Path(p) for p in cube_paths], beam_ids, weights)
    check_compatible(cubes)
    models = primary_beams(cubes, options, pb_files)
    radii = [m.radius(options.cutoff, cubes[0].freqs) for m in models]
    grid, boxes = field_grid(cubes, radii, options.centre)
    if max(grid.shape) > MAX_SIDE:
        centres = ", ".join(f"{c.centre[0]:.3f},{c.centre[1]:.3f}" for c in cubes)
        raise InputError(f"mosaic: the field grid would be {grid.shape[1]} x {grid.shape[0]} pixels; are the beams "
                         f"of one field? (beam centres {centres})")
    paths = mosaic_paths(Path(out_dir).absolute(), name)
    inputs = {c.path for c in cubes}
    for p in paths.all():
        if p in inputs:
            raise InputError(f"{p}: the mosaic would overwrite one of its input cubes")
    return MosaicPlan(tuple(cubes), tuple(models), grid, tuple(boxes), paths, options, name)


def _headers(plan: MosaicPlan):
    """(path, header, tail bytes, planes) of the cube, MFS image and weight cube."""
    from mpimager.mosaic import products

    cubes = plan.cubes
    beams = products.channel_beams(cubes)
    beam = products.one_beam(beams)
    tables = products.beam_centre_table(cubes)
    per_plane = products.beams_table(beams) if beam is None else b""
    freqs = cubes[0].freqs
    used = [f for ch, f in enumerate(freqs) if beams[ch] is not None]
    width = cubes[0].width or 1.0
    history = (f"mpimager mosaic: {len(cubes)} beams ({', '.join(str(c.beam_id) for c in cubes)}), "
               f"sum(w P I)/sum(w P^2), cutoff {plan.options.cutoff:g}")
    out = []
    for what, path, fs, tail in (("cube", plan.paths.cube, freqs, per_plane + tables),
                                 ("mfs", plan.paths.mfs, [float(np.mean(used))], tables),
                                 ("weight", plan.paths.weight, freqs, tables)):
        w = width * len(freqs) if what == "mfs" else width
        h = products.header(cubes, plan.grid, fs, w, beam, what, history)
        out.append((path, h, tail, len(fs)))
    return out


def _create(plan: MosaicPlan) -> list:
    from mpimager.mosaic.products import partial
    from mpimager.reduce.cube import preallocate

    out_dir = plan.paths.cube.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot create the output directory ({exc.strerror})") from None
    layouts = []
    try:
        for path, h, tail, n in _headers(plan):
            layouts.append(preallocate(partial(path), h, tail, n, plan.grid.shape))
    except InputError:
        for made in layouts:
            Path(made.path).unlink(missing_ok=True)
        raise
    return layouts


@dataclass(frozen=True)
class _ChannelDone:
    channel: int
    beams_used: int
    peak_weight: float


def _blocks(nchan: int, k: int) -> list[list[int]]:
    return [list(range(i, min(i + k, nchan))) for i in range(0, nchan, k)]


def _make_block(plan: MosaicPlan, block: list[int], layouts, mfs: np.ndarray) -> list[_ChannelDone]:
    """Mosaic the channels of `block`: write their planes, add them to `mfs` (2, ny, nx)."""
    from mpimager.mosaic.combine import accumulate, finish, reproject_planes
    from mpimager.reduce.cube import write_plane

    ny, nx = plan.grid.shape
    num = np.zeros((len(block), ny, nx), dtype=np.float32)
    den = np.zeros((len(block), ny, nx), dtype=np.float32)
    used = [0] * len(block)
    for cube, model, box in zip(plan.cubes, plan.models, plan.boxes, strict=True):
        mine = [(j, ch) for j, ch in enumerate(block) if cube.usable(ch)]
        if not mine:
            continue
        planes = np.stack([cube.plane(ch) for _, ch in mine])
        shape = (box[1] - box[0], box[3] - box[2])
        data = reproject_planes(planes, cube.wcs(), plan.grid.wcs(box), shape, plan.options.interpolation)
        del planes
        pb = model.response(plan.grid, box, [cube.freqs[ch] for _, ch in mine])
        for k, (j, ch) in enumerate(mine):
            sub = (slice(box[0], box[1]), slice(box[2], box[3]))
            accumulate(num[j][sub], den[j][sub], data[k], pb[k], cube.weights[ch], plan.options.cutoff)
            used[j] += 1
    done = []
    for j, ch in enumerate(block):
        mfs[0] += num[j]
        mfs[1] += den[j]
        write_plane(layouts[0], ch, finish(num[j], den[j]))
        peak = float(den[j].max())
        write_plane(layouts[2], ch, den[j])
        done.append(_ChannelDone(ch, used[j], peak))
    return done


def mosaic_cubes(cube_paths: Sequence[Path], options: MosaicOptions, out_dir: Path, name: str, comm=None,
                 log: Callable[[str], None] | None = None, *, beam_ids: Sequence[int] | None = None,
                 weights: Sequence[Path] | None = None, pb_files: Sequence[Path] | None = None) -> Mosaic:
    """Make the mosaic `name` in `out_dir` from one PSF-matched cube per beam; collective over `comm`
    (None: this process alone). `cube_paths`, `options`, `beam_ids`, `weights`, `pb_files` as for
    `plan_mosaic`; `log` gets progress lines (rank 0). Raises InputError (bad inputs: nothing written) or
    JobError (a plane failed: nothing kept)."""
    from mpimager import queue as mpiqueue

    rank = comm.Get_rank() if comm is not None else 0
    size = comm.Get_size() if comm is not None else 1
    say = log if (log is not None and rank == 0) else (lambda msg: None)
    t0 = time.perf_counter()
    plan = plan_mosaic(cube_paths, options, out_dir, name, beam_ids=beam_ids, weights=weights, pb_files=pb_files)
    g = plan.grid
    say(f"mosaic {name}: {len(plan.cubes)} beams x {plan.cubes[0].nchan} channels onto {g.shape[1]} x {g.shape[0]} "
        f"pixels of {g.cell * 3600:.3f}\" at ({g.centre[0]:.5f}, {g.centre[1]:.5f})")
    layouts = mpiqueue.root_first(lambda: _create(plan), comm) if comm is not None else _create(plan)
    if comm is not None:
        layouts = mpiqueue.bcast(layouts, comm)

    mfs = np.zeros((2, *g.shape), dtype=np.float64)
    done: list[_ChannelDone] = []
    error = None
    for block in _blocks(plan.cubes[0].nchan, options.planes)[rank::size]:
        try:
            done += _make_block(plan, block, layouts, mfs)
        except Exception as exc:
            error = f"channels {block[0]}-{block[-1]}: {type(exc).__name__}: {exc}"
            log_.debug("mosaic block failed", exc_info=True)
            break
    if comm is not None:
        mpiqueue.barrier(comm)
        total = comm.reduce(mfs, root=0)
        parts = mpiqueue.gather((done, error), comm)
    else:
        total, parts = mfs, [(done, error)]
    del mfs
    result: Mosaic | BaseException | None = None
    if rank == 0:
        try:
            result = _finish(plan, layouts, total, parts, time.perf_counter() - t0)
            say(f"mosaic {name}: {plan.paths.cube} ({time.perf_counter() - t0:.1f} s on {size} rank(s))")
        except Exception as exc:
            result = exc if isinstance(exc, JobError) else JobError(f"mosaic {name}: {type(exc).__name__}: {exc}")
    if comm is not None:
        result = mpiqueue.bcast(result, comm)
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, Mosaic)
    return result


def _finish(plan: MosaicPlan, layouts, total: np.ndarray, parts, seconds: float) -> Mosaic:
    from mpimager.mosaic import products
    from mpimager.mosaic.combine import finish
    from mpimager.reduce.cube import verify, write_plane

    try:
        errors = [e for _, e in parts if e]
        done = sorted((d for part, _ in parts for d in part), key=lambda d: d.channel)
        if errors:
            raise JobError(f"mosaic {plan.name}: {errors[0]}")
        if len(done) != plan.cubes[0].nchan:
            raise JobError(f"mosaic {plan.name}: {plan.cubes[0].nchan - len(done)} channel(s) were never made")
        write_plane(layouts[1], 0, finish(total[0], total[1]))
        for layout in layouts:
            problem = verify(layout)
            if problem:
                raise JobError(f"mosaic {plan.name}: {problem}")
        model = type(plan.models[0]).__name__
        if model == "GaussianBeam":
            dish, factor = plan.options.dish_and_factor
            model = f"Gaussian FWHM = {factor:g} lambda / {dish:g} m"
        products.write_beamlog(plan.paths.beamlog, plan.name, plan.cubes, products.channel_beams(plan.cubes),
                               [d.beams_used for d in done], [d.peak_weight for d in done], plan.grid,
                               plan.options.cutoff, model)
        for layout, path in zip(layouts, plan.paths.fits, strict=True):
            os.replace(layout.path, path)
    except BaseException:
        for layout in layouts:
            Path(layout.path).unlink(missing_ok=True)
        raise
    return Mosaic(plan.paths, plan.grid, tuple(c.beam_id for c in plan.cubes), tuple(c.centre for c in plan.cubes),
                  plan.cubes[0].nchan, seconds)
