"""Orchestration of the gather step: plan on rank 0, planes spread over ranks and threads, verify, purge.

`reduce_images` is collective when given a communicator: every rank calls it with the same arguments.
Rank 0 reads the channel headers, plans the cubes, creates every cube file at full size, and sends
the plane list to all ranks (a barrier in effect: nothing is written before the files exist). Plane i
goes to rank i mod size (planes cost the same); each rank works through its planes with a few threads,
each plane read, convolved and written at its offset with constant memory. Rank 0 gathers the planes'
robust sigmas, writes the beam logs and weights, verifies each cube, renames it into place, purges
channel images whose cubes are all verified (if asked), and every rank returns the same `Product`s.

Messages go over a private duplicate of the communicator, and a waiting rank sleeps between probes
instead of spinning (ranks may outnumber cores).

Bad input (unreadable files, no usable cube, an unwritable output) raises `InputError` on every rank
before any cube is written. A product that cannot be made while others can is returned with `error` set.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, TypeVar

from mpimager import queue as mpiqueue
from mpimager.config.reduce import ReduceOptions
from mpimager.errors import InputError, JobError, MpimagerError
from mpimager.reduce.beams import Beam

if TYPE_CHECKING:
    import numpy as np

    from mpimager.planner.products import CubePaths
    from mpimager.reduce.cube import Layout
    from mpimager.reduce.plan import CubePlan, Failure, PlaneSpec

_T = TypeVar("_T")


@dataclass(frozen=True)
class Product:
    """A cube made (or not: `error` says why) by the gather step."""

    path: Path | None
    prefix: str
    stokes: str
    kind: str  # restored | residual | unconvolved
    resolution: str | None = None  # total (one beam, in the header) | natural (BEAMS table)
    beam: Beam | None = None  # the common beam of a 'total' cube
    beams: tuple[Beam | None, ...] = ()  # per plane: target beam (original for unconvolved); None = blank
    frequencies: tuple[float, ...] = ()  # Hz, per plane
    sources: tuple[Path, ...] = ()  # channel images that went in
    blanked: tuple[tuple[int, str], ...] = ()  # (plane, reason) for NaN planes
    beamlog: Path | None = None
    weights: Path | None = None
    error: str | None = None
    error_kind: str | None = None  # 'input' (the channel images cannot make it) | 'run' (writing failed)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _Task:
    cube: int
    spec: PlaneSpec


@dataclass(frozen=True)
class _Done:
    cube: int
    index: int
    sigma: float
    crc: int | None
    error: str | None
    seconds: float
    blank: str | None = None  # why a plane read from its file was written as NaN (all NaN, all zero)


class _Shared(TypedDict):
    """What rank 0 sends every rank after planning: the planes to make and the files they go to."""

    tasks: list[_Task]
    layouts: list[Layout]
    with_crc: bool


class _Setup(_Shared):
    """Rank 0's plan of the whole step: also each cube's plan and paths, and the products that failed."""

    entries: list[tuple[CubePlan, CubePaths]]
    failures: list[Failure]


def default_threads(comm=None) -> int:
    """Cores of this node divided among the ranks of `comm` on it (None: this process alone)."""
    from mpimager.environment import usable_cpus

    cores = usable_cpus()

    return max(1, cores // mpiqueue.ranks_on_node(comm))


def reduce_images(images: Sequence[Path], options: ReduceOptions, out_dir: Path, comm=None,
                  log: Callable[[str], None] | None = print, *, out_file: Path | None = None,
                  groups: Mapping[str, str] | None = None,
                  receptor_angles: Mapping[str, float] | None = None) -> list[Product]:
    """PSF-matched cubes from channel images and cubes; collective over `comm` (None = this process alone).

    images: channel image and cube paths (MFS, psf, model, dirty files are skipped and reported).
    options: the [reduce] options. log: where progress lines go on rank 0 (None: nowhere).
    out_dir: where cubes and side files go (made if missing). out_file: one cube's exact path instead
    (an error if the inputs make more than one cube). groups: prefix -> beam group for scope 'prefix'
    (e.g. map a beam's I and QU prefixes to one group). receptor_angles: prefix -> degrees written as
    INSTRUMENT_RECEPTOR_ANGLE ('*' for every prefix); see `receptor.pol_axis_from_ms`.
    """
    if comm is not None:
        threads = options.threads or default_threads(comm)
        comm = comm.Dup()  # our messages never meet the caller's
        try:
            return _reduce(images, options, out_dir, comm, log, threads, out_file, groups, receptor_angles)
        finally:
            comm.Free()
    return _reduce(images, options, out_dir, None, log, options.threads or default_threads(None), out_file,
                   groups, receptor_angles)


def _reduce(images: Sequence[Path], options: ReduceOptions, out_dir: Path, comm, log: Callable[[str], None] | None,
            threads: int, out_file: Path | None, groups: Mapping[str, str] | None,
            receptor_angles: Mapping[str, float] | None) -> list[Product]:
    rank = comm.Get_rank() if comm is not None else 0
    size = comm.Get_size() if comm is not None else 1
    say: Callable[[str], None] = log if (log is not None and rank == 0) else (lambda msg: None)
    t0 = time.perf_counter()

    setup: _Setup | None = None  # rank 0's
    shared: _Shared | MpimagerError | None = None
    spares = _Spares()
    if rank == 0:
        try:
            setup = _setup([Path(p) for p in images], options, Path(out_dir).absolute(),
                           None if out_file is None else Path(out_file).absolute(), groups, receptor_angles, say,
                           lambda shape: spares.prepare(shape, threads))
            # headers stay on rank 0
            shared = _Shared(tasks=setup["tasks"], layouts=setup["layouts"], with_crc=setup["with_crc"])
        except MpimagerError as exc:
            shared = exc
        except Exception as exc:  # a bug must not leave the other ranks waiting
            shared = JobError(f"reduce: {type(exc).__name__}: {exc}")
    if comm is not None:
        shared = mpiqueue.bcast(shared, comm)
    if isinstance(shared, BaseException):
        raise shared
    assert shared is not None, "reduce: no plan received from rank 0"
    tasks, layouts, with_crc = shared["tasks"], shared["layouts"], shared["with_crc"]

    preload: threading.Thread | None = None
    if rank == 0:  # the beam logs' imports, while the planes are made
        from mpimager.reduce.beamlog import preload as preload_beamlog

        preload = threading.Thread(target=preload_beamlog, name="mpimager-preload", daemon=True)
        preload.start()
    mine = tasks[rank::size]
    done = _run_tasks(mine, layouts, threads, options.min_weight, with_crc, spares)
    spares.clear()
    if comm is not None:
        gathered = mpiqueue.gather(done, comm)
        done = [d for part in gathered for d in part] if gathered is not None else []

    products: list[Product] | MpimagerError | None = None
    if rank == 0:
        assert setup is not None and preload is not None, "reduce: rank 0 without its plan"  # it raised otherwise
        preload.join()
        try:
            products = _finish(setup, done, options, say)
        except Exception as exc:  # pragma: no cover - keep ranks in step
            products = JobError(f"reduce: {type(exc).__name__}: {exc}")
        say(f"reduce: {len(tasks)} planes on {size} rank(s) x {threads} thread(s) "
            f"in {time.perf_counter() - t0:.1f} s")
    if comm is not None:
        products = mpiqueue.bcast(products, comm)
    if isinstance(products, BaseException):
        raise products
    assert products is not None, "reduce: no products received from rank 0"
    return products


def _setup(images: list[Path], options: ReduceOptions, out_dir: Path, out_file: Path | None,
           groups: Mapping[str, str] | None, receptor_angles: Mapping[str, float] | None,
           say: Callable[[str], None], prefault: Callable[[tuple[int, int]], None] = lambda shape: None) -> _Setup:
    from mpimager.planner.products import cube_paths
    from mpimager.reduce import cube as cubeio
    from mpimager.reduce.fitsio import read_inputs
    from mpimager.reduce.plan import plan_cubes

    if not images:
        raise InputError("reduce: no channel images given")
    channels = [plane for p in images for plane in read_inputs(p, use_beamlogs=options.use_beamlogs)]
    shapes = Counter(c.read.shape for c in channels if c.beam is not None)  # planes likely to be convolved
    if shapes:
        prefault(shapes.most_common(1)[0][0])  # while the beams are worked out
    ncubes = len({c.path for c in channels if c.origin is not None})
    if ncubes:
        say(f"reduce: {len(channels)} planes from {ncubes} cube(s) and {len(images) - ncubes} channel image(s)")
    planned = plan_cubes(channels, options, groups, log=say)
    for why, skipped in planned.ignored.items():
        say(f"reduce: ignored {len(skipped)} file(s): {why} (e.g. {skipped[0].name})")
    for note in planned.notes:
        say(f"reduce: {note}")
    total = len(planned.cubes) + len(planned.failures)
    if out_file is not None and total > 1:
        labels = ", ".join(c.label for c in planned.cubes) or ", ".join(
            f"{f.prefix} {f.stokes} {f.kind}" for f in planned.failures)
        raise InputError(f"--out {out_file}: the inputs make {total} cubes ({labels}); give a directory")
    if not planned.cubes:
        if planned.failures:
            more = f" (and {len(planned.failures) - 1} more product(s) failed)" if len(planned.failures) > 1 else ""
            raise InputError(planned.failures[0].error + more)
        why = "; ".join(planned.notes) or "none of the inputs is a channel image of a cube"
        raise InputError(f"reduce: {why}")

    target_dir = out_file.parent if out_file is not None else out_dir
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{target_dir}: cannot create the output directory ({exc.strerror})") from None
    if not os.access(target_dir, os.W_OK | os.X_OK):
        raise InputError(f"{target_dir}: output directory is not writable")

    all_paths = [cube_paths(plan, options, out_dir, out_file) for plan in planned.cubes]
    seen: dict[Path, str] = {}
    inputs = {Path(p).absolute() for p in images}
    for plan, paths in zip(planned.cubes, all_paths, strict=True):
        if paths.cube in seen:
            raise InputError(f"{paths.cube}: both {seen[paths.cube]} and {plan.label} would be written here")
        if paths.cube in inputs:
            raise InputError(f"{paths.cube}: the cube would overwrite one of its channel images")
        seen[paths.cube] = plan.label

    angles = dict(receptor_angles or {})
    tasks: list[_Task] = []
    layouts: list[Layout] = []
    entries: list[tuple[CubePlan, CubePaths]] = []
    for ci, (plan, paths) in enumerate(zip(planned.cubes, all_paths, strict=True)):
        angle = angles.get(plan.prefix, angles.get("*"))
        header = cubeio.cube_header(plan, options, angle)
        tail = cubeio.beams_table_bytes(plan) if plan.beam is None and plan.resolution != "none" else b""
        try:
            layout = cubeio.preallocate(paths.partial, header, tail, len(plan.planes), plan.shape)
        except InputError:
            for made in layouts:
                Path(made.path).unlink(missing_ok=True)
            raise
        layouts.append(layout)
        entries.append((plan, paths))
        tasks.extend(_Task(ci, spec) for spec in plan.planes)
        for r in plan.records:
            if r.status == "blanked":
                say(f"reduce: {plan.label}: plane {r.index} ({r.freq / 1e6:.3f} MHz, "
                    f"{r.source.name if r.source else '-'}) blanked: {r.reason}")
        say(f"reduce: {plan.label}: {len(plan.planes)} planes -> {paths.cube.name}"
            + (f", beam {plan.beam}" if plan.beam else f", {plan.resolution} resolution (BEAMS table)"))
    for f in planned.failures:
        say(f"reduce: FAILED {f.error}")
    return {"tasks": tasks, "layouts": layouts, "with_crc": options.purge, "entries": entries,
            "failures": planned.failures}


class _Spares:
    """Spectrum buffers made and touched by a helper thread while rank 0 plans, for the worker threads'
    first planes: the first touch of fresh memory (0.3 s per 6144^2 spectrum measured here) then overlaps
    the planning instead of delaying every worker's first plane."""

    def __init__(self) -> None:
        self._made: list[tuple[tuple[int, int], np.ndarray]] = []  # (plane shape, its spectrum buffer)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def prepare(self, shape: tuple[int, int], count: int) -> None:
        """Start making `count` spectrum buffers for planes of `shape`."""
        from mpimager.reduce.kernel import spectrum_buffer

        def make() -> None:
            for _ in range(count):
                spec = spectrum_buffer(shape)
                spec.fill(0)
                with self._lock:
                    self._made.append((shape, spec))

        self._thread = threading.Thread(target=make, name="mpimager-prefault", daemon=True)
        self._thread.start()

    def take(self, shape: tuple[int, int]) -> np.ndarray | None:
        """A ready spectrum buffer for a plane of `shape`, or None."""
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for i, (made_for, spec) in enumerate(self._made):
                if made_for == shape:
                    del self._made[i]
                    return spec
        return None

    def clear(self) -> None:
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._made.clear()


class _Buffers(threading.local):
    """A worker thread's full-size buffers, reused plane after plane: a half-plane spectrum, and a float32
    plane made only for a plane that needs it whole (NaN or inf in it, or no convolution)."""

    shape: tuple[int, int] | None = None
    _spec: np.ndarray | None = None
    _plane: np.ndarray | None = None

    def __init__(self, spares: _Spares) -> None:
        self.spares = spares

    def _fit(self, shape: tuple[int, int]) -> None:
        if self.shape != shape:
            self._spec = self._plane = None  # free the old ones before making new ones
            self.shape = shape

    def spec(self, shape: tuple[int, int]) -> np.ndarray:
        self._fit(shape)
        if self._spec is None:
            from mpimager.reduce.kernel import spectrum_buffer

            self._spec = self.spares.take(shape)
            if self._spec is None:
                self._spec = spectrum_buffer(shape)
        return self._spec

    def plane(self, shape: tuple[int, int]) -> np.ndarray:
        self._fit(shape)
        if self._plane is None:
            import numpy as np

            self._plane = np.empty(shape, dtype=np.float32)
        return self._plane


def _process(task: _Task, layout: Layout, min_weight: float, fft_workers: int, with_crc: bool,
             buffers: _Buffers) -> _Done:
    from mpimager.reduce import kernel
    from mpimager.reduce.cube import SigmaSample, robust_sigma, write_pixels, write_plane
    from mpimager.reduce.fitsio import read_plane, read_rows

    t0 = time.perf_counter()
    spec = task.spec

    def done(sigma: float, crc: int | None, blank: str | None = None) -> _Done:
        return _Done(task.cube, spec.index, sigma, crc, None, time.perf_counter() - t0, blank)

    def nan_plane(blank: str | None = None) -> _Done:
        return done(float("nan"), write_plane(layout, spec.index, None, with_crc), blank)

    try:
        if spec.read is None:
            return nan_plane()
        shape = spec.read.shape
        cov, span = spec.kernel, None
        if cov is not None:  # the common case: row transforms as the plane is read, block by block
            spectrum = buffers.spec(shape)
            span = kernel.rfft_rows(read_rows(spec.read), spectrum, fft_workers)
        if cov is not None and span is not None:
            if spec.blank_empty and span == (0.0, 0.0):
                return nan_plane(kernel.EMPTY_ZERO)
            kernel.filter_columns(spectrum, cov, shape, spec.scale, fft_workers)
            sample = SigmaSample(shape[0] * shape[1])
            rows = sample.watch(kernel.irfft_blocks(spectrum, shape[1], fft_workers))
            crc = write_pixels(layout, spec.index, ((r0 * shape[1], block) for r0, block in rows), with_crc)
            return done(sample.sigma(), crc)
        # a copy, or a plane with NaN/inf: the whole plane first, NaN-aware
        plane = read_plane(spec.read, buffers.plane(shape))
        blank = kernel.empty_plane(plane) if spec.blank_empty else None
        if blank is not None:
            return nan_plane(blank)
        kernel.convolve_plane(plane, cov, spec.scale, fft_workers, min_weight,
                              None if cov is None else buffers.spec(shape))
        return done(robust_sigma(plane), write_plane(layout, spec.index, plane, with_crc))
    except Exception as exc:
        src = spec.read.path if spec.read is not None else "NaN plane"
        return _Done(task.cube, spec.index, float("nan"), None, f"plane {spec.index} ({src}): "
                     f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)


def _run_tasks(tasks: list[_Task], layouts: Sequence[Layout], threads: int, min_weight: float,
               with_crc: bool, spares: _Spares) -> list[_Done]:
    if not tasks:
        return []
    concurrency = max(1, min(threads, len(tasks)))
    fft_workers = max(1, threads // concurrency)
    buffers = _Buffers(spares)  # per thread; freed with this call

    def run(t: _Task) -> _Done:
        return _process(t, layouts[t.cube], min_weight, fft_workers, with_crc, buffers)

    if concurrency == 1:
        return [run(t) for t in tasks]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(run, tasks))


def _blank_empty(plan: CubePlan, results: list[_Done], layout: Layout, say: Callable[[str], None]) -> CubePlan:
    """The plan with planes found all-NaN or all-zero while being made marked blanked (BEAMS table too)."""
    import dataclasses

    from mpimager.reduce import cube as cubeio

    why = {d.index: d.blank for d in results if d.blank}
    if not why:
        return plan
    records = []
    for r in plan.records:
        if r.index in why:
            say(f"reduce: {plan.label}: plane {r.index} ({r.freq / 1e6:.3f} MHz, "
                f"{r.source.name if r.source else '-'}) blanked: {why[r.index]}")
            r = dataclasses.replace(r, beam_out=None, status="blanked", reason=why[r.index])
        records.append(r)
    plan = dataclasses.replace(plan, records=tuple(records))
    if plan.beam is None and plan.resolution != "none":
        cubeio.rewrite_tail(layout, cubeio.beams_table_bytes(plan))
    return plan


def _finish(setup: _Setup, done: list[_Done], options: ReduceOptions, say: Callable[[str], None]) -> list[Product]:
    from mpimager import __version__
    from mpimager.reduce import cube as cubeio
    from mpimager.reduce.beamlog import write_beamlog

    by_cube: dict[int, list[_Done]] = {}
    for d in done:
        by_cube.setdefault(d.cube, []).append(d)
    products: list[Product] = []
    verified: list[bool] = []
    for ci, (plan, paths) in enumerate(setup["entries"]):
        layout = setup["layouts"][ci]
        results = sorted(by_cube.get(ci, []), key=lambda d: d.index)
        errors = [d.error for d in results if d.error]
        if len(results) != len(plan.planes) and not errors:
            errors = [f"{len(plan.planes) - len(results)} plane(s) were never written"]
        problem = None
        if errors:
            problem = f"{plan.label}: {errors[0]}"
        else:
            sigmas = [d.sigma for d in results]
            plan = _blank_empty(plan, results, layout, say)
            problem = cubeio.verify(layout, _written_crcs(results) if setup["with_crc"] else None)
            if problem is None:
                write_beamlog(paths.beamlog, plan, sigmas, __version__)
                cubeio.write_weights(paths.weights, sigmas)
                os.replace(layout.path, paths.cube)
        if problem is not None:
            with contextlib.suppress(OSError):
                os.unlink(layout.path)
            say(f"reduce: FAILED {problem}")
        verified.append(problem is None)
        setup["entries"][ci] = (plan, paths)
        products.append(_product(plan, paths if problem is None else None, problem))
    for f in setup["failures"]:
        products.append(Product(path=None, prefix=f.prefix, stokes=f.stokes, kind=f.kind, error=f.error,
                                error_kind="input"))

    if options.purge:
        _purge(setup["entries"], verified, say)
    return products


def _written_crcs(results: list[_Done]) -> dict[int, int]:
    """{plane: CRC} of a cube's planes written with a CRC (all of them: `_process` was asked for CRCs)."""
    crcs = {d.index: d.crc for d in results if d.crc is not None}
    assert len(crcs) == len(results), "reduce: a plane was written without its CRC"
    return crcs


def _product(plan: CubePlan, paths: CubePaths | None, error: str | None) -> Product:
    return Product(
        path=paths.cube if paths else None, prefix=plan.prefix, stokes=plan.stokes, kind=plan.kind,
        resolution=plan.resolution, beam=plan.beam, beams=tuple(r.beam_out for r in plan.records),
        frequencies=tuple(r.freq for r in plan.records), sources=plan.sources,
        blanked=tuple((r.index, r.reason) for r in plan.records if r.status in ("blanked", "gap")),
        beamlog=paths.beamlog if paths else None, weights=paths.weights if paths else None, error=error,
        error_kind="run" if error else None)


def _purge(entries: list[tuple[CubePlan, CubePaths]], verified: list[bool], say: Callable[[str], None]) -> None:
    """Delete channel images whose every cube was written and verified."""
    users: dict[Path, list[bool]] = {}
    for (plan, _), ok in zip(entries, verified, strict=True):
        for src in plan.sources:
            users.setdefault(src, []).append(ok)
    removed = kept = 0
    for src, oks in users.items():
        if all(oks):
            try:
                src.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        else:
            kept += 1
    say(f"reduce: purge removed {removed} channel image(s)" + (f", kept {kept} of failed cubes" if kept else ""))
