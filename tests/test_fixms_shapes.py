"""Every shape a real ASKAP beam arrives in, through a real `python -m mpimager` run (FixMS, WSClean, gather):
imaged right (sources at their pixel within 0.1 px, I/Q/U fluxes within 5%, phase centre within 1" of the beam
direction, the cubes' INSTRUMENT_RECEPTOR_ANGLE that of the beam), or refused before any job (exit 2, one line
naming the MS)."""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path

import casacore.tables as ct
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from conftest import run_cli, write_config
from fixms.fix_ms_corrs import fix_ms_corrs
from fixms.fix_ms_dir import fix_ms_dir
from fixtures.ms_compare import file_digests

from mpimager.inputs.sky import separation_arcsec
from mpimager.testing import synth

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

CONFIG = """
[worker]
max_concurrent = 2
[wsclean]
name = "$ms_stem$"
out-dir = "$run_dir$/images"
size = "256 256"
scale = "3asec"
niter = 1000
mgain = 0.8
channels-out = 2
join-channels = true
j = 1
[passes.I]
pol = "I"
[passes.QU]
pol = "QU"
join-polarizations = true
"""

BORESIGHT = synth.DEFAULT_PHASE_CENTRE_DEG
FOOTPRINT = synth.askap_footprint(synth.ASKAP_FOOTPRINT_BEAMS)
ANGLES = [90.0 - 2.0 * b for b in range(synth.ASKAP_FOOTPRINT_BEAMS)]  # per-beam receptor angles
REAL = {**synth.REAL_ASKAP_KWARGS, **synth.askap_band(8), "n_ant": 12, "n_times": 12,
        "receptor_angle_deg": ANGLES}


def _beam(directory: Path, name: str, beam: int, **kwargs) -> Path:
    return synth.make_ms(directory / f"{name}.beam{beam:02d}.ms", raw_askap=True, beam=beam,
                         phase_centre_deg=BORESIGHT, **{**REAL, **kwargs})


def _upstream_fixed(directory: Path, beam: int) -> Path:
    """Fixed by upstream fixms alone: without antenna-0 autocorrelations fix_ms_dir left FIELD at the boresight."""
    ms = _beam(directory, "upstream", beam)
    fix_ms_dir(str(ms))
    fix_ms_corrs(ms)
    return ms


def _direction(ms: Path) -> tuple[float, float]:
    with ct.table(str(ms / "FIELD"), ack=False) as field:
        ra, dec = np.degrees(field.getcol("PHASE_DIR")[0, 0])
    return float(ra % 360), float(dec)


def _fitted_peak(path, ra_deg, dec_deg, box=3):
    """(value, offset in pixels) of the peak nearest (ra, dec), the position refined by a quadratic fit of
    the 3x3 pixels around the brightest |value| pixel."""
    with fits.open(path) as hdul:
        data = np.asarray(hdul[0].data).squeeze()
        wcs = WCS(hdul[0].header).celestial
    x, y = (float(v) for v in wcs.world_to_pixel_values(ra_deg, dec_deg))
    xi, yi = round(x), round(y)
    cut = data[yi - box: yi + box + 1, xi - box: xi + box + 1]
    j, i = np.unravel_index(np.argmax(np.abs(cut)), cut.shape)
    py, px = yi - box + j, xi - box + i
    z = data[py - 1: py + 2, px - 1: px + 2]
    dx = 0.5 * (z[1, 0] - z[1, 2]) / (z[1, 0] - 2 * z[1, 1] + z[1, 2])
    dy = 0.5 * (z[0, 1] - z[2, 1]) / (z[0, 1] - 2 * z[1, 1] + z[2, 1])
    return float(data[py, px]), float(np.hypot(px + dx - x, py + dy - y))


def _assert_imaged_right(images: Path, ms: Path, beam: int):
    centre = synth.beam_centre(BORESIGHT, FOOTPRINT[beam])
    assert separation_arcsec(_direction(ms), centre) < 1.0, "FIELD is not at the beam"
    stem = ms.name[:-3]
    with fits.open(images / f"{stem}.I-MFS-image.fits") as hdul:
        header = hdul[0].header
        assert separation_arcsec((header["CRVAL1"], header["CRVAL2"]), centre) < 1.0, "image not at the beam"
        freq = float(header["CRVAL3"])
    for src in synth.default_sources(centre):
        for stokes, name in (("I", f"{stem}.I-MFS-image.fits"), ("Q", f"{stem}.QU-MFS-Q-image.fits"),
                             ("U", f"{stem}.QU-MFS-U-image.fits")):
            value, offset = _fitted_peak(images / name, src.ra_deg, src.dec_deg)
            expected = src.flux(freq, stokes)
            if expected == 0:
                assert abs(value) < 0.01 * src.flux(freq, "I"), (ms.name, stokes, src, value)
                continue
            assert offset < 0.1, (ms.name, stokes, src, offset)
            assert abs(value - expected) <= 0.05 * abs(expected), (ms.name, stokes, src, value, expected)
    cubes = sorted(glob.glob(str(images / f"{stem}.*.cube.fits")))
    assert len(cubes) == 3, cubes  # restored I, Q, U (the default [reduce] cubes)
    for cube in cubes:
        assert fits.getheader(cube)["INSTRUMENT_RECEPTOR_ANGLE"] == pytest.approx(45.0 - ANGLES[beam]), cube


def _fixms_log(run_dir: Path, ms: Path) -> str:
    return (run_dir / "logs" / f"fixms_{ms.name}.log").read_text()


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """One `mpirun -n 3` run over a beam of every shape: raw (the real layout: 36-beam FEED, NaN in flagged
    samples, a flagged channel, zero-UVW rows, no autocorrelations, no WEIGHT_SPECTRUM, POINTING, HISTORY,
    1 MHz channels), preprocessed by another pipeline, split after a fix, fixed by upstream fixms alone."""
    tmp = tmp_path_factory.mktemp("shapes")
    data = tmp / "data"
    beams = {
        "raw": _beam(data, "raw", 7),
        "preprocessed": _beam(data, "preprocessed", 14, askap_state="preprocessed"),
        "split": _beam(data, "split", 21, askap_state="split"),
        "upstream": _upstream_fixed(data, 28),
    }
    untouched = {k: file_digests(beams[k]) for k in ("preprocessed", "split")}
    config = write_config(tmp / "c.toml", CONFIG)
    r = run_cli(config, *beams.values(), "--run-dir", tmp / "run", mpi=3, timeout=900)
    return tmp / "run", beams, untouched, r


def test_a_run_over_every_shape_exits_0(shapes_run):
    r = shapes_run[3]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.parametrize("shape", ["raw", "preprocessed", "split", "upstream"])
def test_every_shape_is_imaged_right(shapes_run, shape):
    run_dir, beams, _, r = shapes_run
    assert r.returncode == 0, r.stdout[-3000:]
    ms = beams[shape]
    _assert_imaged_right(run_dir / "images", ms, int(ms.name.split(".beam")[1][:2]))


@pytest.mark.parametrize("shape, found, did", [
    ("raw", "found raw", "FIELD was"),  # no antenna-0 autocorrelations: FIELD set by the step
    ("preprocessed", "found preprocessed", "imaged-as-is"),
    ("split", "found split-after-fix", "imaged-as-is"),
    ("upstream", "found fixed-externally", "FIELD repaired"),
])
def test_the_job_log_says_which_state_it_found_and_what_it_did(shapes_run, shape, found, did):
    run_dir, beams, _, _ = shapes_run
    log = _fixms_log(run_dir, beams[shape])
    assert found in log and did in log, log[-2000:]


def test_preprocessed_and_split_beams_are_never_rotated_twice_or_changed(shapes_run):
    _, beams, untouched, _ = shapes_run
    for shape, digests in untouched.items():
        assert file_digests(beams[shape]) == digests, shape  # imaged as they are: not a byte changed


def _refused(tmp_path, ms, *more):
    config = write_config(tmp_path / "c.toml", CONFIG)
    r = run_cli(config, ms, *more, "--run-dir", tmp_path / "run")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    return r, lines


def test_a_split_that_lost_its_rotation_record_is_refused_before_any_job(tmp_path):
    ms = _beam(tmp_path / "data", "split", 3, askap_state="split", keep_instrument_angle=False)
    before = file_digests(ms)
    r, lines = _refused(tmp_path, ms)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(lines) == 1 and str(ms) in lines[0] and "unknown" in lines[0] and "enabled = false" in lines[0], lines
    assert file_digests(ms) == before
    assert not (tmp_path / "run" / "logs").exists() or not os.listdir(tmp_path / "run" / "logs")


def test_a_foreign_corrected_data_column_is_refused_before_any_job(tmp_path):
    ms = _beam(tmp_path / "data", "cal", 2)
    with ct.table(str(ms), readonly=False, ack=False) as main:
        main.addcols(ct.makecoldesc("CORRECTED_DATA", main.getcoldesc("DATA")))
    r, lines = _refused(tmp_path, ms)
    assert r.returncode == 2 and len(lines) == 1 and str(ms) in lines[0] and "not made by FixMS" in lines[0], lines


def _read_only(path: Path, *, directory: bool):
    for root, _dirs, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
        if directory:
            os.chmod(root, 0o555)


def test_a_read_only_ms_that_needs_fixms_is_refused_before_any_job(tmp_path):
    ms = _beam(tmp_path / "data", "ro", 1)
    before = file_digests(ms)
    _read_only(ms, directory=True)
    try:
        r, lines = _refused(tmp_path, ms)
    finally:
        for root, _dirs, _files in os.walk(ms):
            os.chmod(root, 0o755)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(lines) == 1 and str(ms) in lines[0] and "not writable" in lines[0], lines
    assert file_digests(ms) == before


def test_read_only_table_files_in_a_writable_ms_are_refused_and_nothing_is_left(tmp_path):
    ms = _beam(tmp_path / "data", "rofiles", 1)
    before = file_digests(ms)
    _read_only(ms, directory=False)
    r, lines = _refused(tmp_path, ms)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(lines) == 1 and str(ms / "table.dat") in lines[0] and "read-only" in lines[0], lines
    assert file_digests(ms) == before
    assert sorted(p.name for p in ms.parent.iterdir()) == [ms.name]  # no working copy, no marker
    assert stat.S_IMODE(os.stat(ms / "table.dat").st_mode) == 0o444


def test_with_fixms_off_every_cube_still_carries_the_beams_receptor_angle(tmp_path):
    beams = [_beam(tmp_path / "data", "off", b, n_ant=8, n_times=8) for b in (5, 30)]
    config = write_config(tmp_path / "c.toml", CONFIG + "[fixms]\nenabled = false\n")
    r = run_cli(config, *beams, "--run-dir", tmp_path / "run", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for ms in beams:
        beam = int(ms.name.split(".beam")[1][:2])
        cubes = sorted(glob.glob(str(tmp_path / "run" / "images" / f"{ms.name[:-3]}.*.cube.fits")))
        assert len(cubes) == 3, cubes
        for cube in cubes:  # from the beam's own RECEPTOR_ANGLE (FEED rows of its FEED_ID, not row 0)
            assert fits.getheader(cube)["INSTRUMENT_RECEPTOR_ANGLE"] == pytest.approx(45.0 - ANGLES[beam]), cube
