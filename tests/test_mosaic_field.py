"""End to end: a synthesised field of 4 raw ASKAP beams, each seeing the sky through its own Gaussian primary
beam -> FixMS -> WSClean -> gather with one common beam -> mosaic, in one run under `mpirun -n 3`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from conftest import run_cli, write_config
from scipy.optimize import least_squares

from mpimager.rundir.journal import read_records
from mpimager.testing import field, synth

BORESIGHT = (206.75, -37.0)  # RACS_1347-37A
PITCH = 0.9
# (dl, dm) degrees from the boresight, Jy: near each beam centre, in the overlaps, at the field centre; every
# source inside every beam's image (a source outside an image is not cleaned there: its sidelobes would
# correlate the noise of the beams that miss it), >= 0.12 deg from every image edge
SKY = [(-0.3, 0.35, 1.0), (0.35, 0.3, 0.8), (-0.4, -0.3, 0.9), (0.3, -0.4, 1.2), (0.02, 0.03, 0.7),
       (0.0, 0.5, 0.6), (-0.5, 0.05, 0.5), (0.5, 0.45, 0.8), (-0.45, -0.5, 0.7), (0.5, -0.05, 0.6)]
SOURCES = [synth.Source(*synth.offset_position(BORESIGHT, dl * 60, dm * 60), f) for dl, dm, f in SKY]

CONFIG = """
[worker]
max_concurrent = 2
[wsclean]
name = "beam$beam$"
out-dir = "$run_dir$/images"
size = "256 256"           # 2.1 deg: each beam down to a response of ~0.3
scale = "30asec"           # the 100-120" restoring beam over ~4 pixels
niter = 3000
mgain = 0.8
auto-mask = 4
auto-threshold = 0.5
channels-out = 4
join-channels = true
use-wgridder = true        # WSClean 3.1's automatic w-layers shift sources ~7" north at 1.1 deg from the centre
j = 1
[reduce]
scope = "observation"      # one common beam across the field's beams
cubes = ["restored", "residual"]
[mosaic]
enabled = true
"""


@pytest.fixture(scope="module")
def field_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("field")
    paths = field.make_askap_field(tmp / "data", SOURCES, 4, pitch_deg=PITCH, boresight_deg=BORESIGHT, n_ant=24,
                                   n_times=16, n_chan=4, noise_jy=0.18, max_radius_m=300.0)
    config = write_config(tmp / "c.toml", CONFIG)
    r = run_cli(config, tmp / "data", "--run-dir", tmp / "run", mpi=3, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, paths, config, r


def _mosaic(tmp, kind):
    path = tmp / "run" / "mosaics" / f"RACS_1347-37A-I-{kind}.mosaic.fits"
    with fits.open(path) as h:
        header, data, table = h[0].header, h[0].data[0].astype(np.float64), h["BEAMCENTRES"].data.copy()
    mfs = fits.getdata(str(path).replace(".mosaic.fits", ".mosaic.mfs.fits"))[0, 0].astype(np.float64)
    weight = fits.getdata(str(path).replace(".mosaic.fits", ".mosaic.weight.fits"))[0].astype(np.float64)
    return header, data, mfs, weight, table


def fit_point_source(plane, header, x0, y0, half=6):
    """(flux, x, y) of a point source: the header's restoring beam fitted for amplitude and position."""
    cell = header["CDELT2"] * 3600
    sa, sb = (header[k] * 3600 / cell / (2 * math.sqrt(2 * math.log(2))) for k in ("BMAJ", "BMIN"))
    pa = math.radians(header["BPA"])  # east of north; east is -x
    xi, yi = round(x0), round(y0)
    stamp = plane[yi - half:yi + half + 1, xi - half:xi + half + 1]
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]

    def model(p):
        x, y = xx - p[1], yy - p[2]
        along, across = -x * math.sin(pa) + y * math.cos(pa), x * math.cos(pa) + y * math.sin(pa)
        return p[0] * np.exp(-0.5 * (along / sa) ** 2 - 0.5 * (across / sb) ** 2)

    a, dx, dy = least_squares(lambda p: (model(p) - stamp).ravel(), [stamp[half, half], x0 - xi, y0 - yi]).x
    return a, xi + dx, yi + dy


def test_the_run_plans_one_mosaic_per_product_after_the_gather_and_resumes(field_run):
    tmp, _paths, config, r = field_run
    assert "11 done, 0 already done, 0 failed" in r.stdout  # 4 FixMS, 4 WSClean, 1 gather, 2 mosaics
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    jobs = {j["id"]: j for j in manifest["jobs"]}
    records = read_records(tmp / "run")
    gathered = next(rec["time"] for rec in records if rec["event"] == "end" and rec["job"] == "reduce:beam0")
    for kind in ("restored", "residual"):
        job = jobs[f"mosaic:RACS_1347-37A-I-{kind}"]
        assert job["status"] == "ok" and job["kind"] == "mosaic"
        assert [a for a in job["argv"] if a.endswith(".cube.fits")] == \
            [str(tmp / "run" / "images" / f"beam{b:02d}-I-{kind}.cube.fits") for b in range(4)]
        start = next(rec["time"] for rec in records if rec["event"] == "start" and rec["job"] == job["id"])
        assert start >= gathered
    again = run_cli(config, tmp / "data", "--run-dir", tmp / "run", mpi=3, timeout=300)
    assert again.returncode == 0 and "0 done, 11 already done, 0 failed" in again.stdout, again.stdout[-2000:]


def test_every_source_has_its_true_flux_at_its_position_where_its_nearest_beam_sees_it(field_run):
    tmp, _paths, _config, _r = field_run
    header, cube, mfs, _weight, _ = _mosaic(tmp, "restored")
    wcs = WCS(header).celestial
    freqs = header["CRVAL3"] + header["CDELT3"] * np.arange(header["NAXIS3"])
    centres = field.beam_centres(4, PITCH, BORESIGHT)
    checked = 0
    for src in SOURCES:
        x, y = (float(v) for v in wcs.world_to_pixel_values(src.ra_deg, src.dec_deg))
        nearest = min(field.distance_deg(c, (src.ra_deg, src.dec_deg)) for c in centres)
        planes = [(cube[c], f) for c, f in enumerate(freqs) if field.gaussian_response(nearest, f) > 0.5]
        planes += [(mfs, None)] if field.gaussian_response(nearest, freqs[-1]) > 0.5 else []
        for plane, freq in planes:
            flux, fx, fy = fit_point_source(plane, header, x, y)
            assert abs(flux / src.i_jy - 1) < 0.03, (src, freq, flux)
            assert math.hypot(fx - x, fy - y) < 0.1, (src, freq, fx - x, fy - y)
            checked += 1
    assert checked == len(SOURCES) * 5


def test_the_noise_in_overlaps_is_lower_than_in_one_beam_by_the_expected_factor(field_run):
    """On the residual mosaic (the same beams and weights, sources subtracted), away from the sources: the rms
    in pixels where two or more beams share the weight against pixels where one beam holds >90% of it, over
    all channels, compared with sqrt(mean 1/W) of the same pixels (the mosaic noise is 1/sqrt(sum w P^2))."""
    tmp, _paths, _config, _r = field_run
    header, cube, _, weight, table = _mosaic(tmp, "residual")
    wcs = WCS(header).celestial
    ny, nx = cube.shape[1:]
    ra, dec = wcs.pixel_to_world_values(*np.meshgrid(np.arange(nx), np.arange(ny)))
    images = tmp / "run" / "images"
    weights = [[float(line.split()[1]) for line in
                (images / f"beam{b:02d}-I-residual.cube.weights.txt").read_text().splitlines()[1:]]
               for b in table["BEAM"]]
    theta = [np.vectorize(lambda a, d, c=c: field.distance_deg(c, (a, d)))(ra, dec)
             for c in zip(table["RA"], table["DEC"], strict=True)]
    freqs = header["CRVAL3"] + header["CDELT3"] * np.arange(header["NAXIS3"])
    yy, xx = np.mgrid[0:ny, 0:nx]
    far = np.ones((ny, nx), dtype=bool)  # 5' (10 pixels) clear of every source: what CLEAN left there is no noise
    for src in SOURCES:
        x, y = (float(v) for v in wcs.world_to_pixel_values(src.ra_deg, src.dec_deg))
        far &= (xx - x) ** 2 + (yy - y) ** 2 > 10 ** 2
    regions: dict[str, list] = {"overlap": [], "single": []}
    for c, f in enumerate(freqs):
        pb = [field.gaussian_response(t, f) for t in theta]
        terms = np.array([w[c] * np.where(p >= 0.2, p, 0) ** 2 for w, p in zip(weights, pb, strict=True)])
        with np.errstate(invalid="ignore"):
            share = terms.max(axis=0) / terms.sum(axis=0)
        good = np.isfinite(cube[c]) & far
        for name, sel in (("overlap", good & (share < 0.5)), ("single", good & (share > 0.9))):
            regions[name].append((cube[c][sel], 1.0 / weight[c][sel]))
    rms = {k: float(np.std(np.concatenate([v for v, _ in parts]))) for k, parts in regions.items()}
    expected = {k: float(np.sqrt(np.mean(np.concatenate([e for _, e in parts])))) for k, parts in regions.items()}
    assert min(len(np.concatenate([v for v, _ in p])) for p in regions.values()) > 20000
    measured_ratio, expected_ratio = rms["overlap"] / rms["single"], expected["overlap"] / expected["single"]
    assert expected_ratio < 0.5  # the overlaps are much deeper
    assert abs(measured_ratio / expected_ratio - 1) < 0.10, (measured_ratio, expected_ratio, rms, expected)


def test_the_beam_centre_table_holds_the_beams_own_directions(field_run):
    tmp, _paths, _config, _r = field_run
    for kind in ("restored", "residual"):
        _, _, _, _, table = _mosaic(tmp, kind)
        assert list(table["BEAM"]) == [0, 1, 2, 3]
        for row, centre in zip(table, field.beam_centres(4, PITCH, BORESIGHT), strict=True):
            assert field.distance_deg((row["RA"], row["DEC"]), centre) * 3600 < 1.0
            assert field.distance_deg((row["RA"], row["DEC"]), BORESIGHT) > 0.6  # not the boresight
