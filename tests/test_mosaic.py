"""The mosaic step on beam cubes made directly: the formula, the grid, the products, the refusals, MPI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from conftest import run_cli, snapshot
from fixtures.mosaic import Sky, angular_distance, gaussian_pb, square_field
from reproject import reproject_interp

from mpimager.config.mosaic import MosaicOptions
from mpimager.errors import InputError
from mpimager.mosaic.run import mosaic_cubes

SKY = [Sky(206.75, -37.0, 1.0), Sky(207.2, -36.6, 0.5), Sky(206.3, -37.4, 0.3)]


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """4 beams x 3 channels (noise 10 mJy, 3 sources) and their mosaic."""
    d = tmp_path_factory.mktemp("mosaic")
    paths = square_field(d / "in", sky=SKY, shape=(150, 150), cell_asec=45.0, freqs=(800e6, 880e6, 960e6),
                         beam=(180.0, 180.0, 0.0))
    made = mosaic_cubes(paths, MosaicOptions(), d / "out", "field-I")
    return paths, made


def direct(paths, header, cutoff=0.2, order="bicubic"):
    """sum(w P I) / sum(w P^2) and sum(w P^2) evaluated plainly on reproject's planes of the whole grid."""
    wcs = WCS(header).celestial
    ny, nx = header["NAXIS2"], header["NAXIS1"]
    ra, dec = wcs.pixel_to_world_values(*np.meshgrid(np.arange(nx), np.arange(ny)))
    nchan = header["NAXIS3"]
    num, den = np.zeros((nchan, ny, nx)), np.zeros((nchan, ny, nx))
    for p in paths:
        with fits.open(p) as h:
            data, hdr = h[0].data[0].astype(np.float64), h[0].header
        weights = [float(line.split()[1]) for line in
                   p.with_name(p.name[:-5] + ".weights.txt").read_text().splitlines()[1:]]
        theta = angular_distance(ra, dec, hdr["CRVAL1"], hdr["CRVAL2"])
        for c in range(nchan):
            freq = hdr["CRVAL3"] + c * hdr["CDELT3"]
            plane = reproject_interp((data[c], WCS(hdr).celestial), wcs, shape_out=(ny, nx), order=order,
                                     return_footprint=False)
            pb = gaussian_pb(theta, freq)
            use = (pb >= cutoff) & np.isfinite(plane)
            num[c] += np.where(use, weights[c] * pb * plane, 0)
            den[c] += np.where(use, weights[c] * pb * pb, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan), den, np.where(den.sum(0) > 0, num.sum(0) / den.sum(0), np.nan)


def test_the_mosaic_is_the_weighted_formula_on_the_reprojected_planes(field):
    paths, made = field
    with fits.open(made.paths.cube) as h:
        cube, header = h[0].data[0], h[0].header
    weight, mfs = fits.getdata(made.paths.weight)[0], fits.getdata(made.paths.mfs)[0, 0]
    want, want_weight, want_mfs = direct(paths, header)
    assert np.array_equal(np.isnan(cube), np.isnan(want))
    assert 0.02 < np.isnan(cube).mean() < 0.4  # the corners no beam reaches down to the cutoff are blank
    good = np.isfinite(want)
    for got, ref in ((cube[good], want[good]), (weight[good], want_weight[good]), (mfs[good[0]], want_mfs[good[0]])):
        assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_the_noise_of_the_mosaic_is_one_over_the_square_root_of_the_weight(field):
    _paths, made = field
    cube = fits.getdata(made.paths.cube)[0]
    weight = fits.getdata(made.paths.weight)[0]
    z = (cube * np.sqrt(weight))[np.isfinite(cube)]
    # beam cubes hold 10 mJy white noise and three sources: the normalised noise is 1 away from them
    assert abs(1.4826 * np.median(np.abs(z - np.median(z))) - 1) < 0.05


def test_the_grid_is_a_sin_projection_at_the_mean_beam_centre_covering_every_beam(field):
    paths, made = field
    h = fits.getheader(made.paths.cube)
    assert (h["CTYPE1"], h["CTYPE2"]) == ("RA---SIN", "DEC--SIN")
    assert h["CRVAL1"] == pytest.approx(206.75) and h["CRVAL2"] == pytest.approx(-37.0)
    assert -h["CDELT1"] * 3600 == pytest.approx(45.0) and h["CDELT2"] * 3600 == pytest.approx(45.0)
    wcs = WCS(h).celestial
    for p in paths:  # every beam's centre and its whole image (here inside the cutoff) fall on the grid
        bh = fits.getheader(p)
        corners = WCS(bh).celestial.pixel_to_world_values([0, 149, 0, 149], [0, 0, 149, 149])
        x, y = wcs.world_to_pixel_values(*corners)
        assert np.all((x > -0.5) & (x < h["NAXIS1"] - 0.5) & (y > -0.5) & (y < h["NAXIS2"] - 0.5))
    assert h["NAXIS3"] == 3 and h["CTYPE3"] == "FREQ" and h["CRVAL3"] == 800e6 and h["CDELT3"] == 80e6
    assert h["BMAJ"] * 3600 == pytest.approx(180.0)


def test_every_mosaic_file_carries_the_beam_centres_and_a_beam_log_sits_beside(field):
    paths, made = field
    for p in made.paths.fits:
        with fits.open(p) as h:
            t = h["BEAMCENTRES"].data
            assert list(t["BEAM"]) == [0, 1, 2, 3]
            for row, cube in zip(t, paths, strict=True):
                bh = fits.getheader(cube)
                assert angular_distance(row["RA"], row["DEC"], bh["CRVAL1"], bh["CRVAL2"]) * 3600 < 1e-6
                assert row["WEIGHT"] == pytest.approx(1e4)
    assert made.paths.mfs.name == "field-I.mosaic.mfs.fits" and made.paths.weight.name == "field-I.mosaic.weight.fits"
    log = made.paths.beamlog.read_text()
    assert "primary beam Gaussian FWHM = 1.09 lambda / 12 m, cutoff 0.2" in log
    assert "\n0 800000000.000000 180.0000 180.0000 0.000 4 " in log
    assert not list(made.paths.cube.parent.glob(".*partial"))


def test_per_channel_beams_go_to_a_beams_table_and_blank_channels_are_left_out(tmp_path):
    beams = [(200.0, 180.0, 10.0), (190.0, 170.0, 10.0), (0.0, 0.0, 0.0)]
    paths = square_field(tmp_path / "in", sky=SKY[:1], shape=(120, 120), cell_asec=45.0,
                         freqs=(800e6, 880e6, 960e6), beams=beams, weight_values=[1e4, 1e4, 0.0])
    made = mosaic_cubes(paths, MosaicOptions(), tmp_path / "out", "m")
    with fits.open(made.paths.cube) as h:
        assert h[0].header["CASAMBM"] and "BMAJ" not in h[0].header
        assert [round(float(v), 3) for v in h["BEAMS"].data["BMAJ"]] == [200.0, 190.0, 0.0]
        assert np.isnan(h[0].data[0, 2]).all() and np.isfinite(h[0].data[0, 0]).any()
    mfs = fits.getheader(made.paths.mfs)
    note = "".join(mfs["COMMENT"]).replace("\n", "")
    assert "CASAMBM" not in mfs and "BMAJ" not in mfs and "no single restoring beam" in note
    assert mfs["CRVAL3"] == pytest.approx(840e6)  # the mean of the channels that took part


def test_a_given_centre_and_cutoff_shape_the_grid(tmp_path, field):
    paths, made = field
    other = mosaic_cubes(paths, MosaicOptions(centre=(206.9, -36.9), cutoff=0.5), tmp_path, "m")
    h, h0 = fits.getheader(other.paths.cube), fits.getheader(made.paths.cube)
    assert (h["CRVAL1"], h["CRVAL2"]) == (206.9, -36.9)
    assert np.isnan(fits.getdata(other.paths.cube)).mean() > np.isnan(fits.getdata(made.paths.cube)).mean() - 0.05
    assert h["NAXIS1"] <= h0["NAXIS1"] + 30


def test_user_primary_beam_images_are_used_and_interpolated_in_frequency(tmp_path, field):
    """Primary-beam cubes holding the same Gaussian at two frequencies give the Gaussian mosaic."""
    paths, made = field
    pbs = []
    for p in paths:
        h = fits.getheader(p)
        pbh = h.copy()
        pbh["NAXIS3"], pbh["CRVAL3"], pbh["CDELT3"] = 3, 760e6, 120e6
        wcs = WCS(pbh).celestial
        ny, nx = h["NAXIS2"], h["NAXIS1"]
        ra, dec = wcs.pixel_to_world_values(*np.meshgrid(np.arange(nx), np.arange(ny)))
        theta = angular_distance(ra, dec, h["CRVAL1"], h["CRVAL2"])
        planes = np.array([gaussian_pb(theta, f) for f in (760e6, 880e6, 1000e6)], dtype=np.float32)
        pbs.append(tmp_path / f"pb{len(pbs)}.fits")
        fits.PrimaryHDU(planes[None], header=pbh).writeto(pbs[-1])
    other = mosaic_cubes(paths, MosaicOptions(), tmp_path / "out", "m", pb_files=pbs)
    a, b = fits.getdata(other.paths.cube)[0, 1], fits.getdata(made.paths.cube)[0, 1]
    both = np.isfinite(a) & np.isfinite(b)
    assert both.mean() > 0.5
    assert np.nanmax(np.abs(a - b)[both]) < 0.02  # 880 MHz is a plane of the PB cube: bilinear reprojection only


# ---------------------------------------------------------------------------------------------- refusals


def _refused(paths, tmp_path, match, **kw):
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=match):
        mosaic_cubes(paths, MosaicOptions(), tmp_path / "out", "m", **kw)
    assert snapshot(tmp_path) == before  # nothing written


def test_cubes_with_different_restoring_beams_in_a_channel_are_refused_naming_cube_and_channel(tmp_path):
    paths = square_field(tmp_path / "in", sky=SKY[:1], shape=(64, 64), cell_asec=90.0, freqs=(800e6, 900e6),
                         beams=[(200.0, 180.0, 0.0), (190.0, 170.0, 0.0)])
    with fits.open(paths[2], mode="update") as h:
        h["BEAMS"].data["BMAJ"][1] = 195.0
    _refused(paths, tmp_path, rf"{paths[2]}: channel 1 \(900.0000 MHz\) has the restoring beam 195.000.*but "
                               rf"{paths[0]} has 190.000.*one beam per channel")


def test_cubes_on_other_pixel_sizes_or_spectral_axes_are_refused(tmp_path):
    a = square_field(tmp_path / "a", sky=SKY[:1], shape=(64, 64), cell_asec=90.0)
    b = square_field(tmp_path / "b", sky=SKY[:1], shape=(64, 64), cell_asec=60.0)
    c = square_field(tmp_path / "c", sky=SKY[:1], shape=(64, 64), cell_asec=90.0, freqs=(800e6, 910e6))
    _refused([a[0], b[1]], tmp_path, rf"{b[1]}: pixel size 60.0000\" x 60.0000\", but {a[0]} has 90.0000")
    _refused([a[0], c[1]], tmp_path, rf"{c[1]}: another spectral axis")


def test_a_cube_without_its_weights_or_with_the_wrong_number_of_them_is_refused(tmp_path):
    paths = square_field(tmp_path / "in", sky=SKY[:1], shape=(64, 64), cell_asec=90.0)
    weights = paths[1].with_name(paths[1].name[:-5] + ".weights.txt")
    text = weights.read_text()
    weights.unlink()
    _refused(paths, tmp_path, rf"{paths[1]}: no weights file {weights} beside it")
    weights.write_text(text.splitlines()[0] + "\n0 1.0\n")
    _refused(paths, tmp_path, rf"{weights}: 1 channel weights for the 2 channels of {paths[1]}")
    weights.write_text("#Channel Weight\n0 0\n1 0\n")
    _refused(paths, tmp_path, rf"{weights}: every channel weight is 0")


def test_two_cubes_of_one_beam_and_an_output_over_an_input_are_refused(tmp_path):
    paths = square_field(tmp_path / "in", sky=SKY[:1], shape=(64, 64), cell_asec=90.0)
    _refused(paths, tmp_path, r"beam 0 is also", beam_ids=[0, 0, 1, 2])
    shutil.copy(paths[0], paths[0].with_name("m.mosaic.fits"))
    with pytest.raises(InputError, match="would overwrite one of its input cubes"):
        mosaic_cubes([paths[0].with_name("m.mosaic.fits"), *paths[1:]], MosaicOptions(), paths[0].parent, "m",
                     beam_ids=[0, 1, 2, 3], weights=[p.with_name(p.name[:-5] + ".weights.txt") for p in paths])


# ---------------------------------------------------------------------------------------------- command line


def test_the_command_under_mpirun_makes_the_same_mosaic_as_one_process(tmp_path, field):
    paths, made = field
    r = run_cli("mosaic", "--out", tmp_path, "--name", "field-I", "--planes", "1", *paths, mpi=2, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for a, b in zip(made.paths.fits, (tmp_path / p.name for p in made.paths.fits), strict=True):
        assert np.array_equal(fits.getdata(a), fits.getdata(b), equal_nan=True), b.name
    assert str(tmp_path / "field-I.mosaic.fits") in r.stdout


def test_the_command_refuses_bad_input_with_one_line_and_exit_2(tmp_path):
    paths = square_field(tmp_path / "in", sky=SKY[:1], shape=(64, 64), cell_asec=90.0)
    r = run_cli("mosaic", "--out", tmp_path / "out", "--cutoff", "1.5", *paths)
    assert r.returncode == 2 and r.stderr.strip() == "mpimager: error: mpimager mosaic: cutoff: expected a number " \
                                                     "between 0 and 1, got 1.5"
    r = run_cli("mosaic", "--out", tmp_path / "out", *paths, tmp_path / "nothing.fits")
    assert r.returncode == 2 and f"{tmp_path / 'nothing.fits'}: no such file" in r.stderr
    assert not (tmp_path / "out").exists()


def test_the_mosaic_quick_look_marks_every_beam_centre(tmp_path, field):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from mpimager.planner.products import is_mosaic_mfs
    from mpimager.report import mosaiclook, quicklook

    _paths, made = field
    png = tmp_path / "m.png"
    look = quicklook.image_quicklook(str(made.paths.mfs), str(png))
    plain = imread(png)
    assert is_mosaic_mfs(made.paths.mfs) and not is_mosaic_mfs(made.paths.cube)
    assert mosaiclook.mark_beam_centres(look, str(made.paths.mfs)) == 4
    marked = imread(png)
    assert marked.shape == plain.shape
    for _, ra, dec in mosaiclook.beam_centres(str(made.paths.mfs)):
        col, row = (round(v) for v in look.world_to_png(ra, dec))
        r, g, b = marked[row, col, :3]
        assert g > 0.8 and b > 0.8 and r < 0.3  # cyan where the beam's centre is
    assert np.abs(marked - plain).sum() < 0.02 * plain.size  # the rest untouched
