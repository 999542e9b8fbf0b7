"""Cubes as inputs to the gather step: BEAMS tables, header beams and beam logs, both axis orders, both
modes, a common beam across cubes, cubes mixed with channel images; each result checked against the same
planes given as channel images."""

from __future__ import annotations

import shutil

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from fixtures.reduce import cube_from_channels, make_channels, point_sources, render, varying_beams
from radio_beam import Beams

from mpimager import __version__
from mpimager.errors import InputError
from mpimager.reduce import ReduceOptions, reduce_images
from mpimager.reduce.beams import Beam, encloses, same_beam

SHAPE = (128, 128)
CELL = 2.5


def _reduce(inputs, out, log=None, **options):
    return reduce_images(sorted(inputs), ReduceOptions(**options), out, log=log)


@pytest.fixture(scope="module")
def chans(tmp_path_factory):
    """8 channel images, Stokes I and Q, beams 25" -> 15" with a turning PA, 9 sources."""
    d = tmp_path_factory.mktemp("chans")
    return make_channels(d / "in", prefix="obs", nchan=8, shape=SHAPE, cell=CELL, stokes=("I", "Q"),
                         flux_scale={"Q": 0.3}, sources=point_sources(SHAPE, 9, seed=21, margin=30, fmin=0.05))


def _i(chans):
    return [p for p in chans.paths if "-I-" in p.name]


def _assert_same_planes(a, b):
    """Equal within float32 round-off of each plane's peak."""
    a, b = np.squeeze(a), np.squeeze(b)
    assert a.shape == b.shape
    for k in range(a.shape[0]):
        peak = np.nanmax(np.abs(a[k]))
        assert np.array_equal(np.isnan(a[k]), np.isnan(b[k]))
        assert np.nanmax(np.abs(a[k] - b[k])) <= 4e-7 * peak, k


@pytest.mark.parametrize("order", ["freq-stokes", "stokes-freq", "freq"])
@pytest.mark.parametrize("resolution", ["total", "natural"])
def test_a_cube_with_a_beams_table_gives_what_its_channel_images_give(chans, tmp_path, order, resolution):
    cube = cube_from_channels(_i(chans), tmp_path / "obs.fits", order=order)
    [ref] = _reduce(_i(chans), tmp_path / "ref", resolution=resolution)
    lines = []
    [p] = _reduce([cube], tmp_path / "out", log=lines.append, resolution=resolution)
    assert p.ok and p.prefix == "obs" and p.stokes == "I" and p.path.name == "obs-I-restored.cube.fits"
    assert any("8 planes from 1 cube(s)" in line for line in lines)
    assert [b.major if b else None for b in p.beams] == pytest.approx([b.major for b in ref.beams], rel=1e-5)
    _assert_same_planes(fits.getdata(p.path), fits.getdata(ref.path))
    log = Table.read(p.beamlog)
    assert set(log["beam_from"]) == {"BEAMS table"} and set(log["status"]) <= {"convolved", "copied"}
    assert list(log["status"]).count("convolved") >= 6


def test_a_stokes_axis_of_several_makes_one_cube_per_stokes_in_either_order(chans, tmp_path):
    for order in ("freq-stokes", "stokes-freq"):
        cube = cube_from_channels(chans.paths, tmp_path / f"iq-{order}.fits", order=order)
        products = _reduce([cube], tmp_path / order, scope="prefix")
        assert sorted(p.stokes for p in products) == ["I", "Q"]
        i, q = (fits.getdata(p.path) for p in sorted(products, key=lambda p: p.stokes))
        np.testing.assert_allclose(q, 0.3 * i, rtol=1e-5, atol=1e-7)
        assert products[0].beam == products[1].beam  # one prefix: its Stokes share the beam


def test_a_cube_with_a_header_beam_is_resmoothed_to_a_target_beam(tmp_path):
    src = point_sources(SHAPE, 9, seed=3, margin=30, fmin=0.05)
    cs = make_channels(tmp_path / "in", prefix="hb", nchan=5, shape=SHAPE, cell=CELL, sources=src,
                       beams=[(18.0, 14.0, 30.0)] * 5)
    cube = cube_from_channels(cs.paths, tmp_path / "hb.fits", beams="header")
    [p] = _reduce([cube], tmp_path / "out", beam=(24.0, 24.0, 0.0))
    data = fits.getdata(p.path)
    model = render(src, (24.0, 24.0, 0.0), SHAPE, CELL)
    for k in range(5):
        assert np.abs(data[0, k] - model).max() < 1e-5
    assert set(Table.read(p.beamlog)["beam_from"]) == {"header"}


def test_natural_mode_over_several_cubes_writes_a_beams_table_radio_beam_reads(tmp_path):
    """A field's three beams as cubes: one beam per channel common to all of them (scope observation)."""
    src = point_sources(SHAPE, 4, seed=5, margin=30, fmin=0.05)
    cubes, inputs = [], []
    for n, (big, small, pa0) in enumerate([(25.0, 15.0, -40.0), (22.0, 18.0, 80.0), (27.0, 14.0, 10.0)]):
        cs = make_channels(tmp_path / f"in{n}", prefix=f"field.beam{n:02d}", nchan=6, shape=SHAPE, cell=CELL,
                           sources=src, beams=varying_beams(6, big=big, small=small, pa0=pa0))
        inputs.append(cs)
        cubes.append(cube_from_channels(cs.paths, tmp_path / f"field.beam{n:02d}.fits"))
    products = _reduce(cubes, tmp_path / "out", resolution="natural", scope="observation", ref_chan="mid")
    assert [p.prefix for p in products] == ["field.beam00", "field.beam01", "field.beam02"]
    per_channel = products[0].beams
    assert all(p.beams == per_channel for p in products)
    for c in range(6):
        assert all(encloses(per_channel[c], Beam(*cs.beams[c])) for cs in inputs)
    with fits.open(products[1].path) as hdul:
        h = hdul[0].header
        assert h["CASAMBM"] is True and h["BMAJ"] * 3600 == pytest.approx(per_channel[3].major)  # ref_chan mid
        beams = Beams.from_fits_bintable(hdul["BEAMS"])
        assert beams.major.to_value(u.arcsec) == pytest.approx([b.major for b in per_channel], rel=1e-6)
        assert beams.pa.to_value(u.deg) == pytest.approx([b.pa for b in per_channel], abs=1e-4)
    total = _reduce(cubes, tmp_path / "total", scope="observation")
    assert len({p.beam for p in total}) == 1
    assert all(encloses(total[0].beam, Beam(*b)) for cs in inputs for b in cs.beams)


def test_cubes_and_channel_images_of_one_field_mix_and_merge(chans, tmp_path):
    """beam00 as a cube, beam01 as channel images; and one prefix half cube, half channel images."""
    src = point_sources(SHAPE, 4, seed=6, margin=30, fmin=0.05)
    b1 = make_channels(tmp_path / "b1", prefix="field.beam01", nchan=8, shape=SHAPE, cell=CELL, sources=src,
                       beams=varying_beams(8, big=28.0, small=18.0))
    cube = cube_from_channels(_i(chans), tmp_path / "field.beam00.fits")
    products = _reduce([cube, *b1.paths], tmp_path / "out", scope="observation")
    assert sorted(p.prefix for p in products) == ["field.beam00", "field.beam01"]
    assert products[0].beam == products[1].beam
    # one prefix: channels 0-3 in a cube, 4-7 as channel images -> one 8-plane cube
    half = cube_from_channels(_i(chans)[:4], tmp_path / "obs.fits")
    [p] = _reduce([half, *_i(chans)[4:]], tmp_path / "half")
    [ref] = _reduce(_i(chans), tmp_path / "ref")
    assert len(p.frequencies) == 8 and same_beam(p.beam, ref.beam)  # BEAMS table: float32 beams
    _assert_same_planes(fits.getdata(p.path), fits.getdata(ref.path))


def test_cubes_and_channel_images_on_different_grids_are_refused_naming_the_mismatch(chans, tmp_path):
    other = make_channels(tmp_path / "o", prefix="obs", nchan=8, shape=SHAPE, cell=CELL, crval=(187.6, -45.0),
                          sources=point_sources(SHAPE, 4, seed=6, margin=30))
    half = cube_from_channels(_i(chans)[:4], tmp_path / "obs.fits")
    with pytest.raises(InputError, match=r"obs Stokes I restored: .* different pixel grid .*CRVAL1"):
        _reduce([half, *other.paths[4:]], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_cube_without_beams_takes_them_from_a_racs_tools_beam_log(chans, tmp_path):
    cube = cube_from_channels(_i(chans), tmp_path / "obs.fits", beams="none")
    with pytest.raises(InputError, match="no BEAMS table, no BMAJ in the header, no beam log"):
        _reduce([cube], tmp_path / "none")
    t = Table()
    t["Channel"] = np.arange(8)
    t["BMAJ[arcsec]"] = [b[0] for b in chans.beams]
    t["BMIN[arcsec]"] = [b[1] for b in chans.beams]
    t["BPA[deg]"] = [b[2] for b in chans.beams]
    t.write(tmp_path / "beamlog.obs.txt", format="ascii.commented_header")
    [p] = _reduce([cube], tmp_path / "out")
    [ref] = _reduce(_i(chans), tmp_path / "ref")
    assert p.beam == ref.beam
    _assert_same_planes(fits.getdata(p.path), fits.getdata(ref.path))
    assert set(Table.read(p.beamlog)["beam_from"]) == {"beam log beamlog.obs.txt"}


def test_our_own_cube_and_ecsv_beam_log_read_back_in_order_of_trust(chans, tmp_path):
    [first] = _reduce(_i(chans), tmp_path / "one", resolution="natural")
    assert first.path.name == "obs-I-restored.cube.fits"
    # re-smoothed: name parts read back (same prefix, Stokes, kind), BEAMS table trusted
    [again] = _reduce([first.path], tmp_path / "two", resolution="total")
    assert (again.prefix, again.stokes, again.kind) == ("obs", "I", "restored")
    assert all(encloses(again.beam, b) for b in first.beams)
    # without its BEAMS table the ECSV beam log beside it is read; a header beam comes before the log...
    bare = tmp_path / "bare"
    bare.mkdir()
    with fits.open(first.path) as hdul:
        hdul[0].header["CASAMBM"] = False
        hdul[0].header["BMAJ"], hdul[0].header["BMIN"], hdul[0].header["BPA"] = 40 / 3600, 40 / 3600, 0.0
        fits.PrimaryHDU(hdul[0].data, hdul[0].header).writeto(bare / first.path.name)
    shutil.copy(first.beamlog, bare / first.beamlog.name)
    [hdr] = _reduce([bare / first.path.name], tmp_path / "three")
    assert hdr.beam == Beam(40.0, 40.0, 0.0) and set(Table.read(hdr.beamlog)["beam_from"]) == {"header"}
    # ...unless use_beamlogs says otherwise
    [log] = _reduce([bare / first.path.name], tmp_path / "four", use_beamlogs=True)
    assert same_beam(log.beam, again.beam)
    assert set(Table.read(log.beamlog)["beam_from"]) == {f"beam log {first.beamlog.name}"}


def test_output_header_says_who_made_it(chans, tmp_path):
    cube = cube_from_channels(_i(chans), tmp_path / "obs.fits")
    [p] = _reduce([cube], tmp_path / "out", circularise=True)
    h = fits.getheader(p.path)
    assert h["BUNIT"] == "Jy/beam" and h["ORIGIN"] == f"mpimager {__version__}"
    assert len(h["DATE"]) == 19 and h["DATE"][:2] == "20"
    assert any(f"mpimager {__version__} reduce: 8 planes from 1 file(s)" in str(x) for x in h["HISTORY"])
    assert h["BMAJ"] == h["BMIN"] and h["BPA"] == 0.0  # circularised
    assert "CASAMBM" not in h


def test_a_target_beam_in_natural_mode_and_a_reference_frequency(chans, tmp_path):
    [p] = _reduce(_i(chans), tmp_path / "out", resolution="natural", beam=(30.0, 30.0, 0.0),
                  ref_freq=chans.freqs[-1])
    assert p.resolution == "natural" and set(p.beams) == {Beam(30.0, 30.0, 0.0)}
    with fits.open(p.path) as hdul:
        assert hdul[0].header["CASAMBM"] is True and hdul[0].header["BMAJ"] == pytest.approx(30 / 3600)
        assert list(hdul["BEAMS"].data["BMAJ"]) == [30.0] * 8


def test_racs_tools_reads_our_cubes_beams_and_our_beam_log_columns(chans, tmp_path):
    """beamcon_3D's own reader finds the BEAMS table of a natural cube and the header beam of a total one
    (our ECSV log is not where it looks for its text logs); the log has RACS-tools' column names and units."""
    beamcon_3d = pytest.importorskip("racs_tools.beamcon_3D")

    [nat] = _reduce(_i(chans), tmp_path / "nat", resolution="natural")
    [tot] = _reduce(_i(chans), tmp_path / "tot")
    got = beamcon_3d.get_beams(nat.path, fits.getheader(nat.path)).beam_table
    assert list(got["BMAJ"]) == pytest.approx([b.major for b in nat.beams], rel=1e-6)
    got = beamcon_3d.get_beams(tot.path, fits.getheader(tot.path)).beam_table
    assert list(got["BMAJ"].quantity.to_value(u.arcsec)) == pytest.approx([tot.beam.major] * 8)
    log = Table.read(nat.beamlog)
    for col, unit in (("BMAJ", u.arcsec), ("Target BMIN", u.arcsec), ("Convolving BPA", u.deg)):
        assert log[col].unit == unit
    assert list(log["Channel"]) == list(range(8)) and "Convolving factor" in log.colnames
