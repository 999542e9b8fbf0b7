"""The gather step on real FITS files: synthesised channel images with known sources and beams varying
with frequency (size and position angle) go in, cubes come out, and pixels and headers are checked."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from fixtures.reduce import Source, make_channels, point_sources, render, varying_beams
from radio_beam import Beams

from mpimager.errors import InputError
from mpimager.reduce import ReduceOptions, reduce_images
from mpimager.reduce.beams import Beam, encloses

SHAPE = (192, 192)
CELL = 2.5


def _reduce(inputs, out, log=None, **options):
    return reduce_images(sorted(inputs), ReduceOptions(**options), out, log=log)


def _bright(sources):
    return [s for s in sources if s.flux >= 0.01]


def _header_beam(h) -> tuple[float, float, float]:
    return h["BMAJ"] * 3600, h["BMIN"] * 3600, h["BPA"]


@pytest.fixture(scope="module")
def varying(tmp_path_factory):
    """12 channels, beams 25" -> 15" with PA turning from -40 to 70 deg, 25 sources (1 mJy - 1 Jy)."""
    d = tmp_path_factory.mktemp("varying")
    return make_channels(d / "in", prefix="obs", nchan=12, shape=SHAPE, cell=CELL,
                         sources=point_sources(SHAPE, 25, seed=7))


def test_matched_sources_peak_at_their_flux_under_the_common_beam(varying, tmp_path):
    [p] = _reduce(varying.paths, tmp_path)
    assert p.ok and p.resolution == "total" and p.path == tmp_path / "obs-I-restored.cube.fits"
    with fits.open(p.path) as hdul:
        hdul.verify("exception")
        assert len(hdul) == 1  # one beam: in the header, no BEAMS table
        h, cube = hdul[0].header, hdul[0].data
        assert cube.shape == (1, 12) + SHAPE and cube.dtype == np.dtype(">f4")
        assert "CASAMBM" not in h
        assert _header_beam(h) == pytest.approx((p.beam.major, p.beam.minor, p.beam.pa))
        assert all(encloses(p.beam, Beam(*b)) for b in varying.beams)
        model = render(varying.sources, _header_beam(h), SHAPE, CELL)
        for k in range(12):
            plane = cube[0, k]
            peaks = np.array([plane[s.y, s.x] / s.flux - 1 for s in _bright(varying.sources)])
            assert np.abs(peaks).max() < 1e-4, (k, peaks)
            assert np.abs(plane - model).max() < 1e-6  # the whole plane is the sources under the common beam


def test_spectral_axis_is_frequency_sorted_from_the_channel_headers(varying, tmp_path):
    shuffled = list(reversed(varying.paths))
    [p] = reduce_images(shuffled, ReduceOptions(), tmp_path, log=None)
    h = fits.getheader(p.path)
    assert (h["CTYPE3"], h["CRPIX3"], h["CRVAL3"], h["CDELT3"], h["CUNIT3"]) == ("FREQ", 1.0, 800e6, 8e6, "Hz")
    assert (h["CTYPE4"], h["CRVAL4"], h["NAXIS4"]) == ("STOKES", 1.0, 1)
    assert (h["CTYPE1"], h["CTYPE2"], h["NAXIS1"], h["NAXIS2"]) == ("RA---SIN", "DEC--SIN", 192, 192)
    assert p.frequencies == tuple(800e6 + 8e6 * k for k in range(12))
    assert [s.name for s in p.sources] == [f"obs-{k:04d}-image.fits" for k in range(12)]


def test_cutoff_zero_and_absent_beams_become_nan_planes_with_reasons(tmp_path):
    beams = varying_beams(8)
    beams[2] = None  # WSClean's failed PSF fit: BMAJ = 0
    beams[5] = "absent"
    beams[6] = (40.0, 30.0, 10.0)  # above the cutoff
    cs = make_channels(tmp_path / "in", nchan=8, shape=(128, 128), beams=beams,
                       sources=point_sources((128, 128), 9, seed=2))
    lines = []
    [p] = _reduce(cs.paths, tmp_path / "out", log=lines.append, psf_cutoff=30.0)
    cube = fits.getdata(p.path)
    for k in range(8):
        assert np.isnan(cube[0, k]).all() == (k in (2, 5, 6))
    reasons = dict(p.blanked)
    assert set(reasons) == {2, 5, 6}
    assert "BMAJ=0" in reasons[2] and "absent" in reasons[5] and "psf_cutoff" in reasons[6]
    assert p.beam.major < 30.0  # the 40" channel was left out of the common beam
    assert p.beams[2] is None and p.beams[0] == p.beam
    assert sum("blanked" in line for line in lines) == 3
    log = Table.read(p.beamlog)
    assert len(log) == 8 and p.beamlog.name == "obs-I-restored.cube.beamlog.ecsv"
    assert log["status"][6] == "blanked" and "psf_cutoff" in log["reason"][6]
    assert log["status"][2] == "blanked" and "BMAJ=0" in log["reason"][2] and np.isnan(log["Target BMAJ"][2])
    assert log["Target BMAJ"].unit == u.arcsec and log["Target BMAJ"][0] == pytest.approx(p.beam.major)
    assert log["BMAJ"][0] == pytest.approx(beams[0][0], rel=1e-6) and log["beam_from"][0] == "header"
    weights = p.weights.read_text().splitlines()
    assert weights[0] == "#Channel Weight" and weights[3] == "2 0"


def test_a_gap_in_the_channels_is_a_nan_plane_on_a_regular_axis(tmp_path):
    cs = make_channels(tmp_path / "in", nchan=6, shape=(96, 96), skip=(3,),
                       sources=point_sources((96, 96), 4, seed=3, margin=30))
    [p] = _reduce(cs.paths, tmp_path / "out")
    h, cube = fits.getheader(p.path), fits.getdata(p.path)
    assert h["NAXIS3"] == 6 and h["CDELT3"] == 8e6
    assert np.isnan(cube[0, 3]).all() and not np.isnan(cube[0, [0, 1, 2, 4, 5]]).any()
    assert dict(p.blanked) == {3: "no channel image at this frequency"}


@pytest.mark.pure
def test_pixels_beside_a_nan_hole_are_not_biased(tmp_path):
    background = 0.02
    cs = make_channels(tmp_path / "in", nchan=3, shape=(128, 128), background=background,
                       beams=[(15.0, 12.0, 20.0), (18.0, 14.0, -30.0), (25.0, 20.0, 60.0)],
                       sources=[Source(100, 100, 0.5)], holes={0: (50, 62, 40, 60)})
    [p] = _reduce(cs.paths, tmp_path / "out")
    plane = fits.getdata(p.path)[0, 0]
    assert np.isnan(plane[50:62, 40:60]).all()
    assert not np.isnan(plane[49]).any() and not np.isnan(plane[62]).any()
    expected = background * p.beam.major * p.beam.minor / (15.0 * 12.0)  # Jy/beam scales with beam area
    ring = np.concatenate([plane[46:50, 36:64].ravel(), plane[62:66, 36:64].ravel(),
                           plane[50:62, 36:40].ravel(), plane[50:62, 60:64].ravel()])
    assert np.abs(ring / expected - 1).max() < 1e-3


@pytest.mark.pure
def test_mismatched_pixel_grids_are_refused_not_interleaved(tmp_path):
    a = make_channels(tmp_path / "in", nchan=2, shape=(64, 64), sources=[Source(32, 32, 1.0)])
    b = make_channels(tmp_path / "in2", nchan=4, shape=(64, 64), sources=[Source(32, 32, 1.0)],
                      crval=(187.6, -45.0))
    with pytest.raises(InputError, match=r"different pixel grid.*CRVAL1"):
        _reduce([a.paths[0], a.paths[1], b.paths[2], b.paths[3]], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_natural_resolution_over_beams_gives_a_beams_table_and_casambm(tmp_path):
    """Two beams of one observation, I and Q: one common beam per channel across beams and Stokes."""
    src = point_sources((96, 96), 4, seed=5, margin=30, fmin=0.05)
    b1 = varying_beams(4)
    b2 = varying_beams(4, big=22.0, small=18.0, pa0=80.0, pa1=-10.0)
    make_channels(tmp_path / "in", prefix="beam00", nchan=4, shape=(96, 96), beams=b1, sources=src,
                  stokes=("I", "Q"), flux_scale={"Q": 0.3})
    make_channels(tmp_path / "in", prefix="beam01", nchan=4, shape=(96, 96), beams=b2, sources=src,
                  stokes=("I", "Q"), flux_scale={"Q": 0.3}, crval=(188.0, -45.0))
    products = _reduce((tmp_path / "in").glob("*.fits"), tmp_path / "out", resolution="natural",
                       scope="observation")
    assert sorted((p.prefix, p.stokes) for p in products) == \
        [("beam00", "I"), ("beam00", "Q"), ("beam01", "I"), ("beam01", "Q")]
    per_channel = products[0].beams
    for p in products:
        assert p.ok and p.resolution == "natural" and p.beam is None
        assert p.beams == per_channel  # the same beam per channel across beams and Stokes
        with fits.open(p.path) as hdul:
            h = hdul[0].header
            assert h["CASAMBM"] is True and "BMAJ" not in h
            hdul.verify("exception")
            table = hdul["BEAMS"]
            assert table.header["NCHAN"] == 4 and table.header["NPOL"] == 1
            read_back = Beams.from_fits_bintable(table)  # radio-beam / spectral-cube's reader
            assert read_back.major.to_value(u.arcsec) == pytest.approx([b.major for b in per_channel], rel=1e-6)
            assert list(table.data["CHAN"]) == [0, 1, 2, 3] and list(table.data["POL"]) == [0] * 4
            assert table.columns["BMAJ"].unit == "arcsec" and table.columns["BPA"].unit == "deg"
            for k, b in enumerate(per_channel):
                assert table.data["BMAJ"][k] == pytest.approx(b.major, rel=1e-6)
                assert table.data["BMIN"][k] == pytest.approx(b.minor, rel=1e-6)
                assert encloses(b, Beam(*b1[k])) and encloses(b, Beam(*b2[k]))
                flux = 0.3 if p.stokes == "Q" else 1.0
                plane = hdul[0].data[0, k]
                for s in src:
                    assert plane[s.y, s.x] == pytest.approx(s.flux * flux, rel=1e-4)
    assert len({p.beams[0] for p in products}) == 1 and per_channel[0] != per_channel[3]


def test_scope_prefix_gives_each_prefix_its_own_beam(tmp_path):
    src = [Source(48, 48, 1.0)]
    make_channels(tmp_path / "in", prefix="a", nchan=3, shape=(96, 96), sources=src,
                  beams=[(20.0, 20.0, 0.0)] * 3)
    make_channels(tmp_path / "in", prefix="b", nchan=3, shape=(96, 96), sources=src,
                  beams=[(30.0, 30.0, 0.0)] * 3)
    by_prefix = {p.prefix: p for p in _reduce((tmp_path / "in").glob("*.fits"), tmp_path / "out")}
    assert by_prefix["a"].beam == Beam(20.0, 20.0, 0.0) and by_prefix["b"].beam == Beam(30.0, 30.0, 0.0)
    both = _reduce((tmp_path / "in").glob("*.fits"), tmp_path / "out2", scope="observation")
    assert {p.beam for p in both} == {Beam(30.0, 30.0, 0.0)}


def test_arrakis_names_and_linmos_axis_order(tmp_path):
    prefix = "image.RACS_1234-56.contcube.beam03"
    src = point_sources((96, 96), 4, seed=9, margin=30, fmin=0.05)
    make_channels(tmp_path / "in", prefix=prefix, nchan=3, shape=(96, 96), sources=src,
                  stokes=("I", "Q", "U"), flux_scale={"Q": 0.3, "U": -0.2})
    products = _reduce((tmp_path / "in").glob("*.fits"), tmp_path / "out", names="arrakis",
                       axis_order="stokes-freq")
    names = sorted(p.path.name for p in products)
    assert names == [f"image.restored.{s}.RACS_1234-56.contcube.beam03.conv.fits" for s in "iqu"]
    q = next(p for p in products if p.stokes == "Q")
    assert q.weights.name == "weights.restored.q.RACS_1234-56.contcube.beam03.conv.txt"
    assert q.beamlog.name == "beamlog.image.restored.q.RACS_1234-56.contcube.beam03.conv.ecsv"
    h, cube = fits.getheader(q.path), fits.getdata(q.path)
    assert (h["CTYPE3"], h["NAXIS3"], h["CRVAL3"], h["CTYPE4"], h["NAXIS4"]) == ("STOKES", 1, 2.0, "FREQ", 3)
    assert cube.shape == (3, 1, 96, 96)
    i_cube = fits.getdata(next(p for p in products if p.stokes == "I").path)
    np.testing.assert_allclose(cube, 0.3 * i_cube, rtol=1e-5, atol=1e-7)


def test_residual_and_unconvolved_cubes(tmp_path):
    cs = make_channels(tmp_path / "in", nchan=4, shape=(96, 96), kinds=("image", "residual"),
                       sources=point_sources((96, 96), 4, seed=4, margin=30))
    (tmp_path / "in" / "obs-MFS-image.fits").write_bytes(cs.paths[0].read_bytes())  # not a channel
    lines = []
    products = _reduce((tmp_path / "in").glob("*.fits"), tmp_path / "out", log=lines.append,
                       cubes=("restored", "residual", "unconvolved"))
    kinds = {p.kind: p for p in products}
    assert set(kinds) == {"restored", "residual", "unconvolved"}
    assert any("ignored 1 file(s): MFS image" in line for line in lines)
    restored, residual = fits.getdata(kinds["restored"].path), fits.getdata(kinds["residual"].path)
    # equal within float32 round-off of the plane peak (the residual's peak is ~0.01 Jy: eps x peak ~ 1e-9)
    np.testing.assert_allclose(residual, 0.01 * restored, rtol=1e-4, atol=4e-7 * np.abs(residual).max())
    assert kinds["residual"].path.name == "obs-I-residual.cube.fits"
    with fits.open(kinds["unconvolved"].path) as hdul:
        assert hdul[0].header["CASAMBM"] is True and "BMAJ" not in hdul[0].header
        for k, path in enumerate(cs.paths):
            assert np.array_equal(hdul[0].data[0, k], fits.getdata(path)[0, 0])
            assert hdul["BEAMS"].data["BMAJ"][k] == pytest.approx(cs.beams[k][0], rel=1e-6)
            assert hdul["BEAMS"].data["BPA"][k] == pytest.approx(cs.beams[k][2], rel=1e-6)


@pytest.mark.pure
def test_purge_removes_channel_images_of_verified_cubes_only(tmp_path):
    good = make_channels(tmp_path / "in", prefix="good", nchan=3, shape=(64, 64), sources=[Source(32, 32, 1.0)])
    bad = make_channels(tmp_path / "in", prefix="bad", nchan=3, shape=(64, 64), sources=[Source(32, 32, 1.0)],
                        beams=[None, None, None])
    psf = tmp_path / "in" / "good-0000-psf.fits"
    psf.write_bytes(good.paths[0].read_bytes())
    products = _reduce((tmp_path / "in").glob("*.fits"), tmp_path / "out", purge=True)
    by_prefix = {p.prefix: p for p in products}
    assert by_prefix["good"].ok and fits.getdata(by_prefix["good"].path).shape == (1, 3, 64, 64)
    assert "bad Stokes I restored: no channel left" in by_prefix["bad"].error
    assert not any(p.exists() for p in good.paths)
    assert all(p.exists() for p in bad.paths) and psf.exists()


@pytest.mark.pure
def test_receptor_angle_is_carried_into_the_cube_header(tmp_path):
    cs = make_channels(tmp_path / "in", nchan=2, shape=(64, 64), sources=[Source(32, 32, 1.0)])
    [p] = reduce_images(cs.paths, ReduceOptions(), tmp_path / "out", log=None, receptor_angles={"*": -12.5})
    assert fits.getheader(p.path)["INSTRUMENT_RECEPTOR_ANGLE"] == -12.5


def test_pol_axis_comes_from_a_fixms_d_measurement_set(tmp_path):
    from fixms.fix_ms_corrs import fix_ms_corrs

    from mpimager.reduce.receptor import pol_axis_from_ms
    from mpimager.testing.synth import make_ms

    ms = make_ms(tmp_path / "raw.ms", raw_askap=True, receptor_angle_deg=-45.0 + 10.0)
    # not FixMS'd: the beam's own RECEPTOR_ANGLE gives it (as Arrakis writes it with FixMS off; issue 9)
    assert pol_axis_from_ms(ms) == pytest.approx(45.0 - (-45.0 + 10.0))
    fix_ms_corrs(Path(ms))
    assert pol_axis_from_ms(ms) == pytest.approx(45.0 - (-45.0 + 10.0))


@pytest.mark.pure
def test_weights_are_inverse_variance_of_a_robust_sigma(tmp_path):
    from astropy.stats import mad_std

    cs = make_channels(tmp_path / "in", nchan=3, shape=(128, 128), sources=[Source(64, 64, 1.0)])
    rng = np.random.default_rng(0)
    for k, path in enumerate(cs.paths):  # add noise of a different level per channel
        with fits.open(path, mode="update") as hdul:
            hdul[0].data += rng.normal(0, 0.001 * (k + 1), hdul[0].data.shape).astype(np.float32)
    [p] = _reduce(cs.paths, tmp_path / "out")
    cube = fits.getdata(p.path)
    lines = p.weights.read_text().splitlines()
    assert lines[0] == "#Channel Weight" and len(lines) == 4
    for k in range(3):
        chan, weight = lines[k + 1].split()
        assert int(chan) == k
        assert float(weight) == pytest.approx(1 / mad_std(cube[0, k], ignore_nan=True) ** 2, rel=0.03)


def test_real_wsclean_channel_images_make_one_cube_per_stokes(tmp_path, tiny_ms_dir):
    import subprocess

    prefix = tmp_path / "img" / "obs0"
    prefix.parent.mkdir()
    subprocess.run(["wsclean", "-quiet", "-size", "96", "96", "-scale", "30asec", "-niter", "50",
                    "-channels-out", "4", "-join-channels", "-pol", "IQU", "-join-polarizations",
                    "-no-update-model-required", "-name", str(prefix), str(tiny_ms_dir / "obs0.ms")],
                   check=True, capture_output=True, timeout=300)
    inputs = sorted(prefix.parent.glob("*.fits"))
    products = _reduce(inputs, tmp_path / "out", cubes=("restored", "residual"))
    assert sorted((p.stokes, p.kind) for p in products) == \
        [(s, k) for s in "IQU" for k in ("residual", "restored")]
    for p in products:
        h = fits.getheader(p.path)
        assert p.ok and h["NAXIS3"] == 4 and h["CTYPE3"] == "FREQ" and h["BUNIT"].upper() == "JY/BEAM"
        assert h["BMAJ"] == pytest.approx(p.beam.major / 3600)
        chans = [fits.getheader(s) for s in p.sources]
        assert [c["CRVAL3"] for c in chans] == sorted(c["CRVAL3"] for c in chans)
        assert h["CRVAL3"] == chans[0]["CRVAL3"]
        assert h["CDELT3"] == pytest.approx(chans[1]["CRVAL3"] - chans[0]["CRVAL3"])


def test_a_fixed_target_beam_blanks_channels_it_cannot_be_reached_from(tmp_path):
    cs = make_channels(tmp_path / "in", nchan=3, shape=(96, 96), sources=[Source(48, 48, 1.0)],
                       beams=[(15.0, 12.0, 0.0), (22.0, 12.0, 0.0), (18.0, 16.0, 45.0)])
    lines = []
    [p] = _reduce(cs.paths, tmp_path / "out", log=lines.append, beam=(20.0, 20.0, 0.0))
    assert p.beam == Beam(20.0, 20.0, 0.0)
    cube = fits.getdata(p.path)
    assert np.isnan(cube[0, 1]).all() and cube[0, 0, 48, 48] == pytest.approx(1.0, rel=1e-5)
    assert "cannot be convolved" in dict(p.blanked)[1] and "smaller along some axis" in dict(p.blanked)[1]
    assert any("plane 1" in line and "cannot be convolved" in line for line in lines)


@pytest.mark.pure
def test_asking_for_residual_cubes_without_residual_images_says_so(tmp_path):
    cs = make_channels(tmp_path / "in", nchan=2, shape=(64, 64), sources=[Source(32, 32, 1.0)])
    with pytest.raises(InputError, match="no residual channel images among the inputs for residual cubes"):
        _reduce(cs.paths, tmp_path / "out", cubes=("residual",))


def test_groups_let_two_prefixes_of_one_beam_share_a_common_beam(tmp_path):
    """A run images a beam's I and QU under two prefixes: mapped to one group, they share a beam."""
    src = [Source(48, 48, 1.0)]
    make_channels(tmp_path / "in", prefix="b00.I", nchan=2, shape=(96, 96), sources=src,
                  beams=[(20.0, 20.0, 0.0)] * 2, pol_in_name=True)
    make_channels(tmp_path / "in", prefix="b00.QU", nchan=2, shape=(96, 96), sources=src, stokes=("Q", "U"),
                  beams=[(24.0, 24.0, 0.0)] * 2)
    images = sorted((tmp_path / "in").glob("*.fits"))
    apart = reduce_images(images, ReduceOptions(), tmp_path / "a", log=None)
    assert {p.prefix: p.beam.major for p in apart} == {"b00.I": 20.0, "b00.QU": 24.0}
    together = reduce_images(images, ReduceOptions(scope="beam"), tmp_path / "b", log=None,
                             groups={"b00.I": "b00", "b00.QU": "b00"})
    assert {p.beam for p in together} == {Beam(24.0, 24.0, 0.0)} and len(together) == 3


@pytest.mark.pure
@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (700, 650)])
def test_planes_written_by_threads_side_by_side_read_back_exactly_whatever_their_alignment(tmp_path, shape):
    """Planes of any size (sharing pages with the header and with each other), written in any order by two
    threads at once, on disk and on a tmpfs, read back as written, with the CRCs of their bytes."""
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    from mpimager.reduce.cube import preallocate, verify, write_plane

    rng = np.random.default_rng(4)
    planes = rng.normal(size=(5, *shape)).astype(np.float32)
    header = fits.Header({"SIMPLE": True, "BITPIX": -32, "NAXIS": 3, "NAXIS1": shape[1], "NAXIS2": shape[0],
                          "NAXIS3": 5})
    for where in (tmp_path, Path("/dev/shm")):
        if not where.is_dir():
            continue
        path = where / f"mpimager-test-{shape[0]}x{shape[1]}.partial"
        try:
            layout = preallocate(path, header, b"", 5, shape)
            order = [4, 1, 3, 0]
            with ThreadPoolExecutor(2) as pool:  # two threads writing planes beside each other
                crcs = dict(zip(order, pool.map(write_plane, [layout] * 4, order, planes[order], [True] * 4),
                                strict=True))
            crcs[2] = write_plane(layout, 2, None, True)
            assert verify(layout, crcs) is None
            back = fits.getdata(path)
            assert np.array_equal(back[[0, 1, 3, 4]], planes[[0, 1, 3, 4]])
            assert np.isnan(back[2]).all()
            assert crcs[0] == zlib.crc32(planes[0].astype(">f4").tobytes())
        finally:
            path.unlink(missing_ok=True)
