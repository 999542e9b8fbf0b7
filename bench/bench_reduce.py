"""Benchmark of the gather step: `mpimager reduce` against RACS-tools (beamcon_2D + fitscube, beamcon_3D).

One command, one table, same run, same data:

    python bench/bench_reduce.py                # 36 channels x 2048^2, medians of 3
    python bench/bench_reduce.py --nchan 8 --size 512 --repeats 1    # a quick look

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
import math
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

ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def make_data(cache: Path, nchan: int, size: int, nsrc: int) -> tuple[Path, list]:
    from _reduce_fixtures import make_channels, point_sources

    d = cache / f"in-{nchan}x{size}-{nsrc}"
    stamp = d / "done"
    sources = point_sources((size, size), nsrc, seed=42, margin=64)
    if not stamp.exists():
        shutil.rmtree(d, ignore_errors=True)
        t0 = time.time()
        print(f"making {nchan} channel images of {size}x{size} in {d} ...", flush=True)
        make_channels(d, prefix="bench", nchan=nchan, shape=(size, size), cell=2.5, f0=800e6, df=8e6,
                      sources=sources)
        stamp.write_text("ok\n")
        print(f"  made in {time.time() - t0:.0f} s", flush=True)
    files = sorted(d.glob("bench-*-image.fits"))
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nchan", type=int, default=36)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--sources", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mpimager-bench-reduce")
    ap.add_argument("--skip-racs", action="store_true", help="only the mpimager rows")
    args = ap.parse_args(argv)

    data, sources = make_data(args.cache, args.nchan, args.size, args.sources)
    files = sorted(data.glob("bench-*-image.fits"))
    work = args.cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    py = sys.executable
    mpimager = [py, "-m", "mpimager", "reduce", "--quiet"]
    cores = len(os.sched_getaffinity(0))

    def racs_2d(ncores: int | None, tag: str):
        out = work / tag
        def run():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            n = ["--ncores", str(ncores)] if ncores else []
            w1, m1, c1 = timed(["beamcon_2D", "--conv_mode", "robust", "-s", "sm", "-o", str(out), *n,
                                *map(str, files)])
            smoothed = sorted(out.glob("*.sm.fits"))
            w2, m2, c2 = timed(["fitscube", "combine", "-o", "--create-blanks", *map(str, smoothed),
                                str(out / "cube.fits")])
            return (w1 + w2, max(m1, m2), c1 + c2, out / "cube.fits",
                    f"(beamcon_2D + fitscube: {w1:.1f} + {w2:.1f} s, {c1:.1f} + {c2:.1f} CPU s)")
        return run

    def ours(extra: list[str], tag: str, mpi: int | None = None):
        out = work / f"{tag}.fits"
        def run():
            out.unlink(missing_ok=True)
            cmd = [*mpimager, *extra, "--out", str(out), *map(str, files)]
            if mpi:
                cmd = ["mpirun", "-n", str(mpi), *cmd]
            w, m, c = timed(cmd)
            return w, m, c, out, ""
        return run

    rows = [("mpimager reduce, 1 process (threads = cores)", ours([], "ours")),
            ("mpimager reduce, 1 process, 1 thread", ours(["--threads", "1"], "ours1"))]
    if not args.skip_racs:
        unconv = work / "unconvolved.fits"
        print("stacking the unconvolved cube for beamcon_3D (untimed) ...", flush=True)
        subprocess.run(["fitscube", "combine", "-o", "--create-blanks", *map(str, files), str(unconv)],
                       check=True, capture_output=True, env=ENV)

        def racs_3d():
            out = work / "r3d"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            w, m, c = timed(["beamcon_3D", "--mode", "total", "--conv_mode", "robust", "-o", str(out),
                             str(unconv)])
            [cube] = [p for p in out.glob("*.fits")]
            return w, m, c, cube, ""
        rows += [("RACS-tools beamcon_2D robust, 1 core + fitscube", racs_2d(1, "r2d1")),
                 (f"RACS-tools beamcon_2D robust, default threads + fitscube", racs_2d(None, "r2dn")),
                 ("RACS-tools beamcon_3D --mode total (cube in, cube out)", racs_3d)]
    rows += [("mpirun -n 1 mpimager reduce --threads 1", ours(["--threads", "1"], "mpi1", mpi=1)),
             ("mpirun -n 2 mpimager reduce --threads 1", ours(["--threads", "1"], "mpi2", mpi=2))]

    warm(files)
    results: dict[str, list] = {name: [] for name, _ in rows}
    for rep in range(args.repeats):
        for name, run in rows:  # round robin: machine load hits every row alike
            wall, rss, cpu, cube, detail = run()
            results[name].append((wall, rss, cpu, cube, detail))
            print(f"  [{rep + 1}/{args.repeats}] {name}: {wall:.2f} s, {rss:.0f} MB, {cpu:.1f} CPU s {detail}",
                  flush=True)

    print()
    load = os.getloadavg()[0]
    print(f"{args.nchan} channels x {args.size}^2 float32 ({args.nchan * args.size ** 2 * 4 / 1e6:.0f} MB), "
          f"{args.sources} sources, {cores} cores, {args.repeats} runs each (load average now {load:.1f})")
    print()
    print("| tool | wall s median (min) | CPU s median | peak RSS MB | worst peak error (all / >= 10 mJy) "
          "| common beam |")
    print("| --- | --- | --- | --- | --- | --- |")
    walls = {}
    for name, _ in rows:
        runs = results[name]
        wall = statistics.median(r[0] for r in runs)
        walls[name] = (wall, min(r[0] for r in runs))
        cpu = statistics.median(r[2] for r in runs)
        rss = max(r[1] for r in runs)
        err_all, err_bright, beam = peak_errors(runs[-1][3], sources)
        print(f"| {name} | {wall:.2f} ({walls[name][1]:.2f}) | {cpu:.1f} | {rss:.0f} | "
              f"{err_all:.1e} / {err_bright:.1e} | {beam} |")
    ours = walls[rows[0][0]]
    for name in walls:
        if name.startswith("RACS-tools beamcon_2D robust, 1 core"):
            theirs = walls[name]
            print(f"\nmpimager reduce vs beamcon_2D (1 core) + fitscube: {theirs[0] / ours[0]:.1f}x faster "
                  f"(medians), {theirs[1] / ours[1]:.1f}x (best runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
