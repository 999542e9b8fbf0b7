"""Benchmark of the mosaic step: `mpimager mosaic` against reproject.mosaicking.reproject_and_coadd.

One command, one table, same run, same data:

    python bench/bench_mosaic.py                                   # 9 beams x 36 channels of 2048^2
    python bench/bench_mosaic.py --beams 4 --nchan 4 --size 512    # a quick look

Data: 9 PSF-matched beam cubes as the gather step writes them (RA---SIN at each beam's centre on a 3 x 3
ASKAP-like footprint of `--pitch` degrees, 2.5" pixels, one restoring beam of 15", 36 channels from 800 MHz
by 8 MHz, Gaussian noise of 1 mJy plus 64 point sources per beam, each beam's linmos weights beside it),
made once and cached (default /tmp/mpimager-bench-mosaic). Both rows make the same weighted mosaic,
sum(w P I) / sum(w P^2) with the ASKAP Gaussian primary beam (12 m, 1.09 lambda/D), cutoff 0.2, bicubic
interpolation, on the same field grid (the one mpimager chooses), and end with the mosaic cube and its
weight cube on disk:
- `mpimager mosaic` (one process; `--planes N` adds rows with N channels reprojected together);
- reproject_and_coadd, channel by channel, as a user would write it: each beam's plane divided by its
  primary beam (evaluated on the beam's own grid) with input weights w P^2, combine_function='mean', its
  result and footprint (the summed weights) written as planes of the two cubes.
Each row is a separate process timed with GNU time (wall, CPU, peak RSS); the page cache is warm. `max |diff|`:
the largest difference between the row's mosaic and mpimager's, relative to the mosaic's peak.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
CELL = 2.5 / 3600
F0, DF = 800e6, 8e6
BEAM = 15.0


def make_data(cache: Path, beams: int, nchan: int, size: int, pitch: float) -> list[Path]:
    """The beam cubes (and weights files), made once per shape."""
    from astropy.io import fits

    from mpimager.testing.field import beam_centres

    d = cache / f"in-{beams}x{nchan}x{size}-{pitch:g}"
    stamp = d / "done"
    centres = beam_centres(beams, pitch, (206.75, -37.0))
    paths = [d / f"beam{b:02d}-I-restored.cube.fits" for b in range(beams)]
    if stamp.exists():
        return paths
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    t0 = time.time()
    print(f"making {beams} cubes of {nchan} x {size}^2 in {d} ...", flush=True)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[-12:13, -12:13]
    sig = BEAM / 2.5 / (2 * math.sqrt(2 * math.log(2)))
    stamp_img = np.exp(-(xx ** 2 + yy ** 2) / (2 * sig * sig)).astype(np.float32)
    for path, centre in zip(paths, centres, strict=True):
        h = fits.Header()
        h["SIMPLE"], h["BITPIX"], h["NAXIS"] = True, -32, 4
        h["NAXIS1"], h["NAXIS2"], h["NAXIS3"], h["NAXIS4"] = size, size, nchan, 1
        for i, (ctype, crpix, crval, cdelt, cunit) in enumerate([
                ("RA---SIN", size // 2 + 1, centre[0], -CELL, "deg"),
                ("DEC--SIN", size // 2 + 1, centre[1], CELL, "deg"),
                ("FREQ", 1.0, F0, DF, "Hz"), ("STOKES", 1.0, 1.0, 1.0, "")], start=1):
            h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CUNIT{i}"] = ctype, float(crpix), \
                crval, cdelt, cunit
        h["BMAJ"], h["BMIN"], h["BPA"], h["BUNIT"] = BEAM / 3600, BEAM / 3600, 0.0, "JY/BEAM"
        base = (1e-3 * rng.standard_normal((size, size))).astype(np.float32)
        xs, ys = rng.integers(20, size - 20, 64), rng.integers(20, size - 20, 64)
        for x, y, f in zip(xs, ys, rng.uniform(0.01, 1.0, 64), strict=True):
            base[y - 12:y + 13, x - 12:x + 13] += f * stamp_img
        with open(path, "wb") as out:
            out.write(h.tostring().encode())
            for c in range(nchan):
                out.write(np.roll(base, c, axis=1).astype(">f4").tobytes())
            pad = -out.tell() % 2880
            out.write(b"\0" * pad)
        path.with_name(path.name[:-5] + ".weights.txt").write_text(
            "#Channel Weight\n" + "".join(f"{c} {1e6:.6g}\n" for c in range(nchan)))
    stamp.write_text("ok\n")
    print(f"  made in {time.time() - t0:.0f} s", flush=True)
    return paths


def timed(argv: list[str]) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s) of a command under GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        r = subprocess.run(["/usr/bin/time", "-o", tf.name, "-f", "%e %M %U %S", *argv], env=ENV,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
        wall, rss, user, system = tf.read().split()[-4:]
    return float(wall), float(rss) / 1024.0, float(user) + float(system)


def coadd(grid_file: Path, out: Path, cubes: list[Path], cutoff: float = 0.2) -> None:
    """The reproject_and_coadd row: the same weighted mosaic, channel by channel."""
    from astropy.io import fits
    from astropy.wcs import WCS
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    from mpimager.inputs.sky import separation_deg

    ref = fits.getheader(grid_file)
    out_wcs = WCS(ref).celestial
    shape = (ref["NAXIS2"], ref["NAXIS1"])
    nchan = ref["NAXIS3"]
    headers, planes, thetas, weights = [], [], [], []
    for p in cubes:
        h = fits.getheader(p)
        headers.append(h)
        planes.append(np.memmap(p, dtype=">f4", mode="r", offset=len(h.tostring()),
                                shape=(h["NAXIS3"], h["NAXIS2"], h["NAXIS1"])))
        ny, nx = h["NAXIS2"], h["NAXIS1"]
        ra, dec = WCS(h).celestial.pixel_to_world_values(*np.meshgrid(np.arange(nx), np.arange(ny)))
        thetas.append(separation_deg(ra, dec, h["CRVAL1"], h["CRVAL2"]).astype(np.float32))
        weights.append([float(line.split()[1]) for line in
                        p.with_name(p.name[:-5] + ".weights.txt").read_text().splitlines()[1:]])
    head = ref.copy()
    with open(out, "wb") as fcube, open(out.with_name(out.name[:-5] + ".weight.fits"), "wb") as fweight:
        fcube.write(head.tostring().encode())
        fweight.write(head.tostring().encode())
        for c in range(nchan):
            freq = F0 + c * DF
            fwhm = math.degrees(1.09 * 299792458.0 / freq / 12.0)
            data, wts = [], []
            for h, cube, theta, w in zip(headers, planes, thetas, weights, strict=True):
                pb = np.exp(-4 * math.log(2) * (theta / fwhm) ** 2)
                use = pb >= cutoff
                data.append((np.where(use, np.asarray(cube[c], dtype=np.float32) / pb, 0.0), WCS(h).celestial))
                wts.append(np.where(use, w[c] * pb * pb, 0.0))
            mosaic, footprint = reproject_and_coadd(data, out_wcs, shape_out=shape, input_weights=wts,
                                                    reproject_function=reproject_interp, combine_function="mean",
                                                    order="bicubic", blank_pixel_value=np.nan)
            fcube.write(mosaic.astype(">f4").tobytes())
            fweight.write(footprint.astype(">f4").tobytes())
        for f in (fcube, fweight):
            f.write(b"\0" * (-f.tell() % 2880))


def max_diff(a: Path, b: Path) -> float:
    from astropy.io import fits

    with fits.open(a, memmap=True) as ha, fits.open(b, memmap=True) as hb:
        da, db = ha[0].data, hb[0].data
        worst, peak = 0.0, 0.0
        for c in range(da.shape[1]):
            x, y = np.asarray(da[0, c], dtype=np.float64), np.asarray(db[0, c], dtype=np.float64)
            both = np.isfinite(x) & np.isfinite(y)
            peak = max(peak, float(np.nanmax(np.abs(x))))
            worst = max(worst, float(np.max(np.abs(x[both] - y[both]))) if both.any() else 0.0)
    return worst / peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beams", type=int, default=9)
    ap.add_argument("--nchan", type=int, default=36)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--pitch", type=float, default=0.9)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mpimager-bench-mosaic")
    ap.add_argument("--planes", type=int, nargs="*", default=[], help="extra mpimager rows with --planes N")
    ap.add_argument("--coadd-worker", nargs="+", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.coadd_worker:
        grid, out, *cubes = args.coadd_worker
        coadd(grid, out, cubes)
        return 0

    cubes = make_data(args.cache, args.beams, args.nchan, args.size, args.pitch)
    for p in cubes:  # warm the page cache
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass
    work = args.cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    py = sys.executable
    rows = []
    variants = [("mpimager mosaic", [])]
    variants += [(f"mpimager mosaic --planes {n}", ["--planes", str(n)]) for n in args.planes]
    for label, extra in variants:
        out = work / label.replace(" ", "_")
        wall, rss, cpu = timed([py, "-m", "mpimager", "mosaic", "--quiet", "--out", str(out), "--name", "m", *extra,
                                *map(str, cubes)])
        rows.append((label, wall, cpu, rss, out / "m.mosaic.fits"))
        print(f"  {label}: {wall:.1f} s, {cpu:.1f} CPU s, {rss:.0f} MB", flush=True)
    ours = rows[0][-1]
    theirs = work / "coadd.fits"
    wall, rss, cpu = timed([py, __file__, "--coadd-worker", str(ours), str(theirs), *map(str, cubes)])
    rows.append((f"reproject_and_coadd ({metadata.version('reproject')})", wall, cpu, rss, theirs))
    print(f"  reproject_and_coadd: {wall:.1f} s, {cpu:.1f} CPU s, {rss:.0f} MB", flush=True)

    from astropy.io import fits

    h = fits.getheader(ours)
    plane_mb = h["NAXIS1"] * h["NAXIS2"] * 4 / 1e6
    print(f"\n{args.beams} beams x {args.nchan} channels of {args.size}^2 -> {h['NAXIS1']} x {h['NAXIS2']} "
          f"(one output plane {plane_mb:.0f} MB), {len(os.sched_getaffinity(0))} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'row':<30} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12} {'RSS/plane':>10} {'max |diff|':>11}")
    for label, wall, cpu, rss, path in rows:
        print(f"{label:<30} {wall:>8.1f} {cpu:>8.1f} {rss:>12.0f} {rss / plane_mb:>10.1f} "
              f"{max_diff(path, ours):>11.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
