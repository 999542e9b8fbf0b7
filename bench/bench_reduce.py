"""Benchmark of the gather step: `mpimager reduce` against RACS-tools (beamcon_2D + fitscube, beamcon_3D).

One command, one run, side by side, same data:

    python bench/bench_reduce.py                         # suites 'field' and 'big' (cubes in), one run each
    python bench/bench_reduce.py --suite channels        # 36 channel images x 2048^2, medians of 3
    python bench/bench_reduce.py --suite field,big --field-size 256 --big-size 1024    # a quick look

Suites:
- channels: 36 channel images x 2048^2 to one cube (the earlier table).
- field: a field of 10 beams x 36 channels (`--field-size`^2, default 1024), as 10 cubes with BEAMS tables
  and as 360 channel images: mpimager (cubes, total and natural, scope observation; channel images, total)
  against beamcon_3D --mode total and natural on the 10 cubes and beamcon_2D + fitscube on the images.
- big: 12 channels of `--big-size`^2 (default 6144) as one cube and as channel images, all tools, then the
  cube rows again at 24 channels (is peak RSS flat when the channel count doubles?).

Data: WSClean-like channel images (2.5" pixels, beams 25" -> 15" with a turning position angle,
256 point sources of 1 mJy - 1 Jy rendered analytically through each channel's beam, no noise), made
once and cached (default /tmp/mpimager-bench-reduce). Every tool PSF-matches all channels to one
common beam and ends with one cube on disk. Each run is a separate process timed with GNU time
(wall, peak RSS of the largest process); the page cache is warm. Accuracy: worst |peak/flux - 1| over
all sources and channels, and over sources >= 10 mJy.

Needs `pip install racs-tools fitscube` (the `bench` extra) and Open MPI's mpirun for the rank rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# the mpimager of this tree, whatever else is installed (the rows run `python -m mpimager`)
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def stack_cube(files: list[Path], out: Path) -> Path:
    """Stream channel images into a RA, DEC, FREQ, STOKES cube with a BEAMS table (one plane in memory)."""
    import io

    import numpy as np
    from astropy.io import fits
    from fixtures.reduce import beams_hdu

    if out.exists():
        return out
    heads = [fits.getheader(f) for f in files]
    h = heads[0].copy()
    h["NAXIS3"] = len(files)
    h["EXTEND"] = True
    if len(files) > 1:
        h["CDELT3"] = heads[1]["CRVAL3"] - heads[0]["CRVAL3"]
    for k in ("BMAJ", "BMIN", "BPA"):
        h.remove(k, ignore_missing=True)
    h["CASAMBM"] = True
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), beams_hdu([(x["BMAJ"] * 3600, x["BMIN"] * 3600, x["BPA"])
                                                 for x in heads])]).writeto(buf)
    table = buf.getvalue()[len(fits.PrimaryHDU().header.tostring()):]
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(h.tostring().encode())
        for f in files:
            with fits.open(f, memmap=True) as hdul:
                fh.write(np.ascontiguousarray(hdul[0].data, dtype=">f4").tobytes())
        fh.write(b"\0" * (-fh.tell() % 2880))
        fh.write(table)
    tmp.replace(out)
    return out


def make_data(cache: Path, nchan: int, size: int, nsrc: int, prefix: str = "bench",
              beams: list | None = None) -> tuple[Path, list]:
    """WSClean-like channel images PREFIX-000N-image.fits in a cached directory; (directory, sources)."""
    from fixtures.reduce import make_channels, point_sources

    d = cache / f"in-{prefix}-{nchan}x{size}-{nsrc}"
    stamp = d / "done"
    sources = point_sources((size, size), nsrc, seed=42, margin=64)
    if not stamp.exists():
        shutil.rmtree(d, ignore_errors=True)
        t0 = time.time()
        print(f"making {nchan} channel images of {size}x{size} in {d} ...", flush=True)
        make_channels(d, prefix=prefix, nchan=nchan, shape=(size, size), cell=2.5, f0=800e6, df=8e6,
                      sources=sources, beams=beams)
        stamp.write_text("ok\n")
        print(f"  made in {time.time() - t0:.0f} s", flush=True)
    files = sorted(d.glob(f"{prefix}-*-image.fits"))
    total = sum(f.stat().st_size for f in files)
    print(f"data: {len(files)} files, {total / 1e6:.0f} MB in {d}", flush=True)
    return d, sources


def timed(argv: list[str], cwd: Path | None = None) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s = user + system of all its processes) of a command under GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        cmd = ["/usr/bin/time", "-o", tf.name, "-f", "%e %M %U %S", *argv]
        r = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
        wall, rss, user, system = tf.read().split()[-4:]
    return float(wall), float(rss) / 1024.0, float(user) + float(system)


def warm(files) -> None:
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def peak_errors(cube: Path, sources) -> tuple[float, float, str]:
    """Worst relative peak error (all sources, >= 10 mJy) over all planes, and the cube's beam."""
    import numpy as np
    from astropy.io import fits

    worst_all = worst_bright = 0.0
    with fits.open(cube, memmap=True) as hdul:
        data, h = hdul[0].data, hdul[0].header
        planes = data.reshape(-1, data.shape[-2], data.shape[-1])
        ys = np.array([s.y for s in sources])
        xs = np.array([s.x for s in sources])
        flux = np.array([s.flux for s in sources])
        for k in range(planes.shape[0]):
            err = np.abs(planes[k][ys, xs] / flux - 1.0)
            if np.isnan(err).all():
                continue
            worst_all = max(worst_all, float(np.nanmax(err)))
            worst_bright = max(worst_bright, float(np.nanmax(err[flux >= 0.01])))
        beam = f'{h["BMAJ"] * 3600:.2f}"x{h["BMIN"] * 3600:.2f}" {h["BPA"]:.1f}' if "BMAJ" in h else "-"
    return worst_all, worst_bright, beam


def _row_table(title: str, rows, results) -> dict:
    print()
    print(title)
    print()
    print("| tool | wall s | CPU s | peak RSS MB | worst peak error (all / >= 10 mJy) | beam |")
    print("| --- | --- | --- | --- | --- | --- |")
    walls = {}
    for name, _ in rows:
        runs = results[name]
        wall = statistics.median(r[0] for r in runs)
        walls[name] = (wall, min(r[0] for r in runs), max(r[1] for r in runs))
        cpu = statistics.median(r[2] for r in runs)
        err_all, err_bright, beam = runs[-1][3]
        more = f" {runs[-1][4]}" if runs[-1][4] else ""
        print(f"| {name}{more} | {wall:.2f} | {cpu:.1f} | {walls[name][2]:.0f} | "
              f"{err_all:.1e} / {err_bright:.1e} | {beam} |")
    return walls


def _ratios(walls: dict, pairs: list[tuple[str, str, float | None]]) -> None:
    """For each (our row, the RACS-tools row doing the same job, the issue's target speed-up or None): how many
    times faster ours is, and its share of their peak RSS."""
    for ours, theirs, target in pairs:
        if ours not in walls or theirs not in walls:
            continue
        speedup = walls[theirs][0] / walls[ours][0]
        verdict = "" if target is None else f" (target {target:g}x: {'met' if speedup >= target else 'NOT met'})"
        print(f"  {ours} vs {theirs}: {speedup:.1f}x faster{verdict}, "
              f"{walls[ours][2] / walls[theirs][2]:.2f} of its peak RSS")


def _run_rows(rows, repeats: int, sources):
    """Each row `repeats` times, round robin; per run (wall, RSS, CPU, peak errors, detail). A row's first cube
    is measured against `sources`, its cubes are deleted straight after its run, and dirty pages are written
    back before the next (untimed): no row pays for the memory or the writeback of the rows before it."""
    results: dict[str, list] = {name: [] for name, _ in rows}
    for rep in range(repeats):
        for name, run in rows:  # round robin: machine load hits every row alike
            os.sync()
            wall, rss, cpu, cubes, detail = run()
            results[name].append((wall, rss, cpu, peak_errors(cubes[0], sources), detail))
            for cube in cubes:
                cube.unlink()
            print(f"  [{rep + 1}/{repeats}] {name}: {wall:.2f} s, {rss:.0f} MB, {cpu:.1f} CPU s {detail} "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return results


def _ours(files, out: Path, extra: list[str], mpi: int | None = None):
    def run():
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "mpimager", "reduce", "--quiet", *extra, "--out", str(out), *map(str, files)]
        if mpi:
            cmd = ["mpirun", "-n", str(mpi), *cmd]
        w, m, c = timed(cmd)
        return w, m, c, sorted(out.glob("*.fits")) if out.is_dir() else [out], ""
    return run


def _racs_3d(cubes, out: Path, mode: str):
    def run():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        w, m, c = timed(["beamcon_3D", "--mode", mode, "--conv_mode", "robust", "-o", str(out), *map(str, cubes)])
        return w, m, c, sorted(out.glob("*.fits")), ""
    return run


def _racs_2d(groups: list[list[Path]], out: Path, ncores: int | None = None):
    """beamcon_2D on every channel image at once (one common beam), then fitscube per group into a cube."""
    def run():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        n = ["--ncores", str(ncores)] if ncores else []
        files = [f for g in groups for f in g]
        w1, m1, c1 = timed(["beamcon_2D", "--conv_mode", "robust", "-s", "sm", "-o", str(out), *n, *map(str, files)])
        w2 = c2 = m2 = 0.0
        cubes = []
        for g in groups:
            smoothed = [out / (f.name[:-5] + ".sm.fits") for f in g]
            cube = out / f"cube{len(cubes):02d}.fits"
            w, m, c = timed(["fitscube", "combine", "-o", "--create-blanks", *map(str, smoothed), str(cube)])
            w2, m2, c2 = w2 + w, max(m2, m), c2 + c
            cubes.append(cube)
            for f in smoothed:
                f.unlink()
        return (w1 + w2, max(m1, m2), c1 + c2, cubes, f"(beamcon_2D + fitscube: {w1:.1f} + {w2:.1f} s)")
    return run


def _cleanup(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)


def suite_field(args, work: Path) -> None:
    """(a) A field of 10 beams x 36 channels: cubes in (BEAMS tables), one common beam across the field."""
    from fixtures.reduce import varying_beams

    size, nbeam, nchan = args.field_size, 10, 36
    groups, cubes, sources = [], [], None
    for b in range(nbeam):
        beams = varying_beams(nchan, big=24.0 + 0.3 * b, small=14.0 + 0.2 * b, pa0=-40.0 + 9 * b, pa1=70.0 - 5 * b)
        d, sources = make_data(args.cache, nchan, size, args.sources // 4, prefix=f"field.beam{b:02d}", beams=beams)
        files = sorted(d.glob("field.beam*-image.fits"))
        groups.append(files)
        (args.cache / f"cubes-{nchan}x{size}").mkdir(exist_ok=True)
        cubes.append(stack_cube(files, args.cache / f"cubes-{nchan}x{size}" / f"field.beam{b:02d}.fits"))
    files = [f for g in groups for f in g]
    rows = [("mpimager reduce, 10 cubes, total (scope observation)",
             _ours(cubes, work / "ours-total", ["--scope", "observation"])),
            ("mpimager reduce, 10 cubes, natural (scope observation)",
             _ours(cubes, work / "ours-natural", ["--scope", "observation", "--resolution", "natural"])),
            ("mpimager reduce, 360 channel images, total (scope observation)",
             _ours(files, work / "ours-chans", ["--scope", "observation"]))]
    if not args.skip_racs:
        rows += [("RACS-tools beamcon_3D --mode total, 10 cubes", _racs_3d(cubes, work / "r3d-total", "total")),
                 ("RACS-tools beamcon_3D --mode natural, 10 cubes", _racs_3d(cubes, work / "r3d-natural", "natural")),
                 ("RACS-tools beamcon_2D robust + fitscube x10, 360 channel images", _racs_2d(groups, work / "r2d"))]
    warm(cubes)
    results = _run_rows(rows, args.repeats, sources)
    walls = _row_table(f"(a) field: {nbeam} cubes x {nchan} channels x {size}^2 float32 "
                       f"({nbeam * nchan * size * size * 4 / 1e9:.2f} GB), load average now {os.getloadavg()[0]:.1f}",
                       rows, results)
    _ratios(walls, [(rows[0][0], "RACS-tools beamcon_3D --mode total, 10 cubes", None),
                    (rows[1][0], "RACS-tools beamcon_3D --mode natural, 10 cubes", None),
                    (rows[2][0], "RACS-tools beamcon_2D robust + fitscube x10, 360 channel images", None)])
    _cleanup(work)


def suite_big(args, work: Path) -> None:
    """(b) 12 channels of 6144^2 as a cube and as channel images; the cube rows again at 24 channels."""
    size = args.big_size
    rows_all = []
    d, sources = make_data(args.cache, 24, size, args.sources)
    every = sorted(d.glob("bench-*-image.fits"))
    for nchan in (12, 24):
        files = every[:nchan]  # the 12-channel set is the first half of the 24
        (args.cache / f"cubes-{nchan}x{size}").mkdir(exist_ok=True)
        cube = stack_cube(files, args.cache / f"cubes-{nchan}x{size}" / "bench.fits")
        tag = f"{nchan} ch"
        rows = [(f"mpimager reduce, cube in, total, {tag}", _ours([cube], work / f"ours-cube-{nchan}", [])),
                (f"mpimager reduce, channel images in, total, {tag}", _ours(files, work / f"ours-chans-{nchan}", []))]
        if nchan == 12:
            rows.insert(1, (f"mpimager reduce, cube in, natural, {tag}",
                            _ours([cube], work / "ours-cube-nat", ["--resolution", "natural"])))
        if not args.skip_racs:
            rows.append((f"RACS-tools beamcon_3D --mode total, {tag}",
                         _racs_3d([cube], work / f"r3d-{nchan}", "total")))
            if nchan == 12:
                rows += [(f"RACS-tools beamcon_3D --mode natural, {tag}",
                          _racs_3d([cube], work / "r3d-nat", "natural")),
                         (f"RACS-tools beamcon_2D robust + fitscube, {tag}", _racs_2d([files], work / "r2d"))]
        warm([cube, *files])
        results = _run_rows(rows, args.repeats, sources)
        walls = _row_table(f"(b) {nchan} channels x {size}^2 float32 ({nchan * size * size * 4 / 1e9:.2f} GB), "
                           f"load average now {os.getloadavg()[0]:.1f}", rows, results)
        rows_all.append((nchan, walls))
        _ratios(walls, [(f"mpimager reduce, cube in, total, {tag}", f"RACS-tools beamcon_3D --mode total, {tag}", 3.0),
                        (f"mpimager reduce, cube in, natural, {tag}", f"RACS-tools beamcon_3D --mode natural, {tag}",
                         3.0),
                        (f"mpimager reduce, channel images in, total, {tag}",
                         f"RACS-tools beamcon_2D robust + fitscube, {tag}", 4.0)])
        _cleanup(work)
    if len(rows_all) == 2:
        print("\npeak RSS MB at 12 -> 24 channels:")
        (_, w12), (_, w24) = rows_all
        for name in w24:
            name12 = name.replace("24 ch", "12 ch")
            if name12 in w12:
                print(f"  {name.replace(', 24 ch', '')}: {w12[name12][2]:.0f} -> {w24[name][2]:.0f}")


def suite_channels(args, work: Path) -> None:
    """36 channel images x 2048^2 to one cube, medians of `--repeats` (the earlier table)."""
    data, sources = make_data(args.cache, args.nchan, args.size, args.sources)
    files = sorted(data.glob("bench-*-image.fits"))
    rows = [("mpimager reduce, 1 process (threads = cores)", _ours(files, work / "ours.fits", [])),
            ("mpimager reduce, 1 process, 1 thread", _ours(files, work / "ours1.fits", ["--threads", "1"]))]
    if not args.skip_racs:
        unconv = work.parent / f"unconvolved-{args.nchan}x{args.size}.fits"
        stack_cube(files, unconv)
        rows += [("RACS-tools beamcon_2D robust, 1 core + fitscube", _racs_2d([files], work / "r2d1", 1)),
                 ("RACS-tools beamcon_2D robust, default threads + fitscube", _racs_2d([files], work / "r2dn")),
                 ("RACS-tools beamcon_3D --mode total (cube in, cube out)", _racs_3d([unconv], work / "r3d", "total"))]
    rows += [("mpirun -n 1 mpimager reduce --threads 1", _ours(files, work / "mpi1.fits", ["--threads", "1"], mpi=1)),
             ("mpirun -n 2 mpimager reduce --threads 1", _ours(files, work / "mpi2.fits", ["--threads", "1"], mpi=2))]
    warm(files)
    results = _run_rows(rows, args.repeats, sources)
    _row_table(f"{args.nchan} channels x {args.size}^2 float32, {args.sources} sources, {args.repeats} runs each "
               f"(load average now {os.getloadavg()[0]:.1f})", rows, results)
    _cleanup(work)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="field,big", help="comma-separated: channels, field, big (default field,big)")
    ap.add_argument("--nchan", type=int, default=36, help="channels suite: channels")
    ap.add_argument("--size", type=int, default=2048, help="channels suite: image side")
    ap.add_argument("--field-size", type=int, default=1024, help="field suite: image side")
    ap.add_argument("--big-size", type=int, default=6144, help="big suite: image side")
    ap.add_argument("--sources", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=None, help="runs per row (default 1; channels suite 3)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mpimager-bench-reduce")
    ap.add_argument("--skip-racs", action="store_true", help="only the mpimager rows")
    args = ap.parse_args(argv)
    suites = {"channels": suite_channels, "field": suite_field, "big": suite_big}
    chosen = [x.strip() for x in args.suite.split(",") if x.strip()]
    for name in chosen:
        if name not in suites:
            ap.error(f"--suite: unknown suite {name!r} (channels, field, big)")
    print(f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()}", flush=True)
    for name in chosen:
        if args.repeats is None:
            args.repeats = 3 if name == "channels" else 1
        work = args.cache / "work"
        _cleanup(work)
        suites[name](args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
