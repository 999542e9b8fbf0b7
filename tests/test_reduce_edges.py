"""The gather step on unusual but real inputs (issue 9 item 6): dirty-only runs (niter = 0, BMAJ = 0),
tiny "NaN PSF" marker beams, all-NaN and fully flagged channels, absurd PSF fits. Every plane is either
convolved or blanked with its reason, in the beam log and the messages; never an infinite value.

What a dirty-only run gathers (decided here): WSClean's niter = 0 images carry BMAJ = 0 (no PSF fit, no
restoring beam), so nothing can be PSF-matched; the run's gather job stacks them as they are into an
`unconvolved` cube (no CASAMBM, no beam, each plane 'copied' with the reason in the beam log) instead of
failing for a PSF fit the user never asked for. A standalone `reduce` asked for restored cubes of such
images fails (exit 2) with a message that says so and how to stack them.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import run_cli, write_config
from fixtures.reduce import TINY, Source, beams_hdu, cube_from_channels, make_channels, point_sources, varying_beams

from mpimager.errors import InputError
from mpimager.reduce import ReduceOptions, reduce_images
from mpimager.reduce.beams import Beam

SHAPE = (128, 128)


def _reduce(inputs, out, log=None, **options):
    return reduce_images(sorted(inputs), ReduceOptions(**options), out, log=log)


def _log(product) -> Table:
    return Table.read(product.beamlog, format="ascii.ecsv")


def _no_infinities(path):
    data = fits.getdata(path)
    assert not np.isinf(data).any()
    return data


def test_a_tiny_header_beam_is_blanked_not_made_infinite(tmp_path):
    beams = varying_beams(5)
    beams[3] = (TINY * 3600, TINY * 3600, 0.0)  # BMAJ = 1.2e-38 deg in the header
    cs = make_channels(tmp_path / "in", nchan=5, shape=SHAPE, beams=beams, sources=point_sources(SHAPE, 4, seed=1))
    lines = []
    [p] = _reduce(cs.paths, tmp_path / "out", log=lines.append)
    data = _no_infinities(p.path)
    assert np.isnan(data[0, 3]).all() and np.isfinite(data[0, [0, 1, 2, 4]]).all()
    row = _log(p)[3]
    assert (row["status"], row["beam_from"]) == ("blanked", "header")
    assert "tiny beam" in row["reason"] and "float32-minimum 'NaN PSF' marker" in row["reason"]
    assert any("plane 3" in line and "tiny beam" in line for line in lines)
    assert dict(p.blanked)[3] == row["reason"]


def test_the_nan_psf_marker_in_a_racs_tools_beams_table_is_blanked(tmp_path):
    cs = make_channels(tmp_path / "in", prefix="racs", nchan=4, shape=SHAPE,
                       sources=point_sources(SHAPE, 4, seed=2))
    cube = cube_from_channels(cs.paths, tmp_path / "racs.fits")
    with fits.open(cube, mode="update") as hdul:  # beamcon_3D's natural mode writes tiny for a NaN PSF
        beams = list(cs.beams)
        beams[1] = None
        hdul["BEAMS"] = beams_hdu(beams)
    [p] = _reduce([cube], tmp_path / "out", resolution="natural")
    data = _no_infinities(p.path)
    assert np.isnan(data[0, 1]).all() and not np.isnan(data[0, [0, 2, 3]]).any()
    log = _log(p)
    assert log["status"][1] == "blanked" and "tiny beam" in log["reason"][1]
    assert log["beam_from"][1] == "BEAMS table"
    assert fits.getdata(p.path, "BEAMS")["BMAJ"][1] == 0.0  # our blank planes: zero beams


def test_all_nan_and_fully_flagged_channels_are_blanked_with_their_reason(tmp_path):
    cs = make_channels(tmp_path / "in", nchan=5, shape=SHAPE, sources=point_sources(SHAPE, 4, seed=3))
    for k, value in ((1, np.nan), (3, 0.0)):
        with fits.open(cs.paths[k], mode="update") as hdul:
            hdul[0].data[:] = value
    for resolution in ("total", "natural"):
        lines = []
        [p] = _reduce(cs.paths, tmp_path / resolution, log=lines.append, resolution=resolution)
        data = _no_infinities(p.path)
        assert np.isnan(data[0, 1]).all() and np.isnan(data[0, 3]).all()
        assert np.isfinite(data[0, [0, 2, 4]]).all()
        log = _log(p)
        assert list(log["status"])[1::2] == ["blanked", "blanked"]
        assert set(log["status"][0::2]) <= {"convolved", "copied"}
        assert log["reason"][1] == "all pixels NaN" and log["reason"][3] == "all pixels zero (a fully flagged channel)"
        assert dict(p.blanked) == {1: "all pixels NaN", 3: "all pixels zero (a fully flagged channel)"}
        assert any("plane 3" in line and "fully flagged" in line for line in lines)
        assert p.weights.read_text().splitlines()[2] == "1 0" and p.weights.read_text().splitlines()[4] == "3 0"
        if resolution == "natural":  # the BEAMS table says so too
            bmaj = fits.getdata(p.path, "BEAMS")["BMAJ"]
            assert bmaj[1] == 0.0 and bmaj[3] == 0.0 and bmaj[0] > 0
            assert p.beams[1] is None


def test_an_outlier_psf_fit_does_not_set_the_common_beam_without_a_cutoff(tmp_path):
    beams = [(20.0, 16.0, 10.0)] * 6
    beams[4] = (95.0, 12.0, 60.0)  # a stretched fit
    cs = make_channels(tmp_path / "in", nchan=6, shape=(256, 256), beams=beams,
                       sources=point_sources((256, 256), 4, seed=4))
    [p] = _reduce(cs.paths, tmp_path / "out")
    assert p.beam == Beam(20.0, 16.0, 10.0)
    row = _log(p)[4]
    assert row["status"] == "blanked" and row["reason"].startswith('outlier PSF fit: BMAJ 95.00" > psf_outlier 3')
    [kept] = _reduce(cs.paths, tmp_path / "kept", psf_outlier=0)  # the user's call
    assert kept.beam.major >= 95.0 and not kept.blanked


def test_a_single_baseline_beam_does_not_set_a_field_s_common_beam(tmp_path):
    src = point_sources(SHAPE, 4, seed=5)
    make_channels(tmp_path / "in", prefix="beam00", nchan=3, shape=SHAPE, sources=src,
                  beams=[(22.0, 18.0, 0.0)] * 3)
    make_channels(tmp_path / "in", prefix="beam01", nchan=3, shape=SHAPE, sources=src,  # fringes, not a beam
                  beams=[(2400.0, 9.0, 35.0), (2100.0, 8.5, 35.0), (1900.0, 8.0, 35.0)])
    products = {p.prefix: p for p in _reduce((tmp_path / "in").glob("*.fits"), tmp_path / "out",
                                             scope="observation")}
    assert products["beam00"].ok and products["beam00"].beam == Beam(22.0, 18.0, 0.0)
    assert not products["beam01"].ok and "absurd PSF fit" in products["beam01"].error
    assert "wider than a quarter of the image (320\")" in products["beam01"].error


def test_dirty_only_wsclean_images_stack_unconvolved_and_restored_says_why_not(tmp_path, tiny_ms_dir):
    prefix = tmp_path / "img" / "dirty"
    prefix.parent.mkdir()
    subprocess.run(["wsclean", "-quiet", "-size", "96", "96", "-scale", "30asec", "-niter", "0",
                    "-channels-out", "4", "-no-update-model-required", "-name", str(prefix),
                    str(tiny_ms_dir / "obs0.ms")], check=True, capture_output=True, timeout=300)
    images = sorted(prefix.parent.glob("dirty-*-image.fits"))
    assert fits.getheader(images[0])["BMAJ"] == 0.0  # what WSClean writes without cleaning
    with pytest.raises(InputError, match=r"no channel left.*zero beam.*dirty-only run \(niter = 0\).*unconvolved"):
        _reduce(images, tmp_path / "restored")
    [p] = _reduce(images, tmp_path / "out", cubes=("unconvolved",))
    assert p.ok and p.resolution == "none" and p.path.name == "dirty-I-unconvolved.cube.fits"
    with fits.open(p.path) as hdul:
        assert len(hdul) == 1 and "CASAMBM" not in hdul[0].header and "BMAJ" not in hdul[0].header
        assert "no restoring beam" in str(hdul[0].header["HISTORY"])
        for k in range(4):
            assert np.array_equal(hdul[0].data[0, k], fits.getdata(images[k])[0, 0])
    log = _log(p)
    assert list(log["status"]) == ["copied"] * 4 and all(r.startswith("zero beam (BMAJ=0") for r in log["reason"])


@pytest.mark.pure
def test_a_dirty_only_run_plans_unconvolved_cubes(tmp_path):
    from test_plan import ms

    from mpimager.config.load import load_config
    from mpimager.planner.jobs import PlanSettings, plan_jobs

    def jobs(niter):
        text = (f"[wsclean]\nname = 'img'\nout-dir = '/img'\nsize = '64 64'\nniter = {niter}\n"
                "channels-out = 4\njoin-channels = true\n[reduce]\ncubes = ['restored', 'residual']\n")
        config = load_config(write_config(tmp_path / f"c{niter}.toml", text))
        plan = plan_jobs(config, [ms("/d/a.ms", telescope="X")],
                         PlanSettings(run_dir=tmp_path, mode="single", threads=1, python="/usr/bin/python3"))
        return next(j for j in plan if j.kind == "reduce")

    def cubes(job):
        return json.loads(job.argv[job.argv.index("--options") + 1])["cubes"]

    dirty = jobs(0)
    assert cubes(dirty) == ["unconvolved"]
    assert [o.rsplit("/", 1)[1] for o in dirty.outputs if o.endswith(".fits")] == ["img-I-unconvolved.cube.fits"]
    assert cubes(jobs(100)) == ["restored", "residual"]


def test_the_cli_reports_blank_planes_and_exits_0(tmp_path):
    beams = varying_beams(4)
    beams[2] = (TINY * 3600, TINY * 3600, 0.0)
    cs = make_channels(tmp_path / "in", nchan=4, shape=(64, 64), beams=beams, sources=[Source(32, 32, 1.0)])
    r = run_cli("reduce", "--out", tmp_path / "cube.fits", *cs.paths)
    assert r.returncode == 0, r.stderr
    assert "plane 2" in r.stdout and "tiny beam" in r.stdout and "(4 planes, 1 blank)" in r.stdout
    _no_infinities(tmp_path / "cube.fits")
