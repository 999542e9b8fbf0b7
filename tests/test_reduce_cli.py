"""`mpimager reduce` as users run it: the real CLI in a subprocess, and under a real `mpirun -n 2`."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits
from conftest import run_cli, snapshot
from fixtures.reduce import Source, make_channels, point_sources


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return make_channels(d / "in", prefix="obs", nchan=6, shape=(128, 128),
                         sources=point_sources((128, 128), 9, seed=11), stokes=("I", "Q"),
                         flux_scale={"Q": 0.25})


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mpimager: error: ")
    return lines[0]


def test_reduce_writes_one_cube_to_the_named_file(channels, tmp_path):
    i_images = [p for p in channels.paths if "-I-" in p.name]
    out = tmp_path / "cube.fits"
    r = run_cli("reduce", "--out", out, "--psf-cutoff", "30", *i_images)
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    assert fits.getdata(out).shape == (1, 6, 128, 128)
    assert (tmp_path / "cube.beamlog.ecsv").exists() and (tmp_path / "cube.weights.txt").exists()


def test_reduce_to_a_directory_names_cubes_by_prefix_stokes_and_kind(channels, tmp_path):
    r = run_cli("reduce", "--out", tmp_path / "cubes", "--resolution", "natural", "--quiet", *channels.paths)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert sorted(p.name for p in (tmp_path / "cubes").glob("*.fits")) == \
        ["obs-I-restored.cube.fits", "obs-Q-restored.cube.fits"]


def test_bad_input_mismatched_pixel_grids(channels, tmp_path):
    other = make_channels(tmp_path / "other", prefix="obs", nchan=6, shape=(96, 96), sources=[Source(40, 40, 1.0)])
    images = [channels.paths[0], channels.paths[1], other.paths[2]]
    before = snapshot(tmp_path)
    line = _one_error_line(run_cli("reduce", "--out", tmp_path / "cube.fits", *images))
    assert "different pixel grid" in line and "NAXIS1" in line and str(other.paths[2]) in line
    assert snapshot(tmp_path) == before


def test_bad_input_a_file_with_no_beam(tmp_path):
    cs = make_channels(tmp_path / "in", nchan=1, shape=(64, 64), beams=["absent"], sources=[Source(32, 32, 1.0)])
    before = snapshot(tmp_path)
    line = _one_error_line(run_cli("reduce", "--out", tmp_path / "cube.fits", *cs.paths))
    assert "no channel left" in line and "BMAJ absent" in line
    assert snapshot(tmp_path) == before


def test_bad_input_a_file_that_is_not_fits(channels, tmp_path):
    junk = tmp_path / "obs-0009-I-image.fits"
    junk.write_text("this is not a FITS file\n" * 200)
    before = snapshot(tmp_path)
    line = _one_error_line(run_cli("reduce", "--out", tmp_path / "cube.fits", channels.paths[0], junk))
    assert line == f"mpimager: error: {junk}: not a FITS file"
    assert snapshot(tmp_path) == before


def test_bad_input_a_missing_file(tmp_path):
    line = _one_error_line(run_cli("reduce", "--out", tmp_path / "cube.fits", tmp_path / "nope-0000-image.fits"))
    assert "no such file" in line
    assert not (tmp_path / "cube.fits").exists()


def test_bad_input_an_unwritable_output(channels, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    i_images = [p for p in channels.paths if "-I-" in p.name]
    before = snapshot(tmp_path)
    line = _one_error_line(run_cli("reduce", "--out", blocker / "cube.fits", *i_images))
    assert str(blocker) in line and "output directory" in line
    assert snapshot(tmp_path) == before


def test_bad_input_one_file_named_for_several_cubes(channels, tmp_path):
    line = _one_error_line(run_cli("reduce", "--out", tmp_path / "cube.fits", *channels.paths))
    assert "make 2 cubes" in line and "give a directory" in line
    assert not any(tmp_path.iterdir())


def test_bad_input_an_irregular_frequency_grid(tmp_path):
    cs = make_channels(tmp_path / "in", nchan=4, shape=(64, 64), sources=[Source(32, 32, 1.0)])
    with fits.open(cs.paths[3], mode="update") as hdul:
        hdul[0].header["CRVAL3"] += 3e6
    line = _one_error_line(run_cli("reduce", "--out", tmp_path / "out" / "cube.fits", *cs.paths))
    assert "not on a regular grid" in line
    assert not (tmp_path / "out" / "cube.fits").exists()


def test_bad_option_values_are_one_line_errors(channels, tmp_path):
    line = _one_error_line(run_cli("reduce", "--out", tmp_path, "--cubes", "restored,dirty", channels.paths[0]))
    assert "cubes" in line and "'dirty'" in line
    line = _one_error_line(run_cli("reduce", "--out", tmp_path, "--resolution", "fine", channels.paths[0]))
    assert "--resolution" in line


def test_two_ranks_write_the_same_cubes_as_one(channels, tmp_path):
    args = ["reduce", "--resolution", "natural", "--cubes", "restored,unconvolved", "--quiet", *channels.paths]
    one = run_cli(*args[:1], "--out", tmp_path / "one", *args[1:])
    assert one.returncode == 0, one.stderr
    two = run_cli(*args[:1], "--out", tmp_path / "two", *args[1:], mpi=2)
    assert two.returncode == 0, two.stderr + two.stdout
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    assert len([n for n in names if n.endswith(".fits")]) == 4
    for name in names:  # byte for byte, but for the DATE written
        a, b = ((tmp_path / d / name).read_bytes() for d in ("one", "two"))
        if name.endswith(".fits"):
            a, b = (re.sub(rb"DATE    = '[^']*'", b"DATE", x) for x in (a, b))
        assert a == b, name


def test_two_ranks_report_bad_input_once(tmp_path):
    junk = tmp_path / "junk.fits"
    junk.write_text("x" * 3000)
    r = run_cli("reduce", "--out", tmp_path / "cube.fits", junk, mpi=2)
    assert r.returncode == 2
    assert [line for line in r.stderr.splitlines() if line.startswith("mpimager: error:")] == \
        [f"mpimager: error: {junk}: not a FITS file"]


def test_a_cube_in_under_two_ranks_gives_what_one_rank_gives(channels, tmp_path):
    from fixtures.reduce import cube_from_channels

    cube = cube_from_channels(channels.paths, tmp_path / "obs.fits", order="stokes-freq")  # I and Q
    args = ["--resolution", "natural", "--scope", "observation", "--quiet", cube]
    one = run_cli("reduce", "--out", tmp_path / "one", *args)
    assert one.returncode == 0, one.stderr
    two = run_cli("reduce", "--out", tmp_path / "two", *args, mpi=2)
    assert two.returncode == 0, two.stderr + two.stdout
    names = sorted(p.name for p in (tmp_path / "one").glob("*.fits"))
    assert names == ["obs-I-restored.cube.fits", "obs-Q-restored.cube.fits"]
    for name in names:
        assert np.array_equal(fits.getdata(tmp_path / "one" / name), fits.getdata(tmp_path / "two" / name),
                              equal_nan=True)
