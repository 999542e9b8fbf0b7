"""Beam algebra and the uv-plane kernel: reference values, radio-beam agreement, order invariance."""

from __future__ import annotations

import math
import random

import astropy.units as u
import numpy as np
import pytest
import radio_beam  # imported here, not in the pure tests: it starts a process (numpy.testing's lscpu)
import scipy.fft
from fixtures.reduce import beam_cov_pixels, varying_beams
from radio_beam import Beams
from radio_beam.utils import BeamError

from mpimager.reduce.beams import (
    Beam,
    beam_from_header,
    common_beam,
    convolving_beam,
    encloses,
    round_up_beam,
    same_beam,
)
from mpimager.reduce.cube import SigmaSample, robust_sigma
from mpimager.reduce.kernel import convolve_plane, fft_convolve, kept_columns, pixel_covariance, uv_taper


@pytest.mark.pure
def test_covariance_round_trip_keeps_axes_and_position_angle():
    for b in (Beam(25.0, 20.0, -40.0), Beam(15.0, 15.0, 0.0), Beam(30.0, 10.0, 89.0), Beam(12.0, 5.0, -89.5)):
        back = Beam.from_cov(b.cov())
        assert back.major == pytest.approx(b.major, rel=1e-12)
        assert back.minor == pytest.approx(b.minor, rel=1e-12)
        if b.major != b.minor:
            assert back.pa == pytest.approx(b.pa, abs=1e-9)


@pytest.mark.pure
def test_convolving_beam_adds_back_to_the_target():
    target, beam = Beam(25.0, 21.0, 30.0), Beam(18.0, 12.0, -20.0)
    k = convolving_beam(target, beam)
    summed = Beam.from_cov(tuple(a + b for a, b in zip(beam.cov(), k.cov())))
    assert same_beam(summed, target, rtol=1e-9)


@pytest.mark.pure
def test_convolving_beam_matches_radio_beam_deconvolve():

    target, beam = Beam(25.0, 21.0, 30.0), Beam(18.0, 12.0, -20.0)
    ref = radio_beam.Beam(25 * u.arcsec, 21 * u.arcsec, 30 * u.deg).deconvolve(
        radio_beam.Beam(18 * u.arcsec, 12 * u.arcsec, -20 * u.deg))
    k = convolving_beam(target, beam)
    assert k.major == pytest.approx(ref.major.to_value(u.arcsec), rel=1e-9)
    assert k.minor == pytest.approx(ref.minor.to_value(u.arcsec), rel=1e-9)
    assert math.isclose((k.pa - ref.pa.to_value(u.deg)) % 180, 0, abs_tol=1e-6) or \
        math.isclose((k.pa - ref.pa.to_value(u.deg)) % 180, 180, abs_tol=1e-6)


@pytest.mark.pure
def test_a_target_smaller_along_one_axis_cannot_be_reached():
    assert convolving_beam(Beam(30.0, 10.0, 0.0), Beam(20.0, 15.0, 0.0)) is None
    assert not encloses(Beam(30.0, 10.0, 0.0), Beam(20.0, 15.0, 0.0))


@pytest.mark.pure
def test_float32_rounded_beams_count_as_equal_and_convolve_to_nothing():
    b = Beam(25.123456789, 20.987654321, 33.3)
    b32 = Beam(float(np.float32(b.major / 3600) * 3600), float(np.float32(b.minor / 3600) * 3600),
               float(np.float32(b.pa)))
    assert same_beam(b, b32)
    k = convolving_beam(b, b32)
    assert k is not None and k.major < 0.01  # nothing left to convolve by, not "impossible"


@pytest.mark.pure
@pytest.mark.parametrize("header, problem", [
    ({}, "absent"),
    ({"BMAJ": 0.0, "BMIN": 0.0, "BPA": 0.0}, "BMAJ=0"),
    ({"BMAJ": float("nan"), "BMIN": 0.001, "BPA": 0.0}, "not finite"),
    ({"BMAJ": 0.005}, "BMIN"),
])
def test_unusable_beams_are_reported_not_raised(header, problem):
    beam, why = beam_from_header(header)
    assert beam is None and problem in why


@pytest.mark.pure
def test_header_beam_in_degrees_becomes_arcsec():
    beam, why = beam_from_header({"BMAJ": 25 / 3600, "BMIN": 20 / 3600, "BPA": 179.0})
    assert why is None
    assert beam.major == pytest.approx(25.0) and beam.minor == pytest.approx(20.0) and beam.pa == pytest.approx(-1.0)


@pytest.mark.pure
def test_common_beam_is_the_largest_when_it_encloses_the_rest():
    beams = [Beam(20.0, 18.0, 10.0), Beam(30.0, 30.0, 0.0), Beam(25.0, 10.0, 80.0)]
    assert common_beam(beams) == Beam(30.0, 30.0, 0.0)


def test_common_beam_encloses_all_agrees_with_radio_beam_and_ignores_order():

    beams = [Beam(*b) for b in varying_beams(12)]
    cb = common_beam(beams, round_up=0.0)
    assert all(encloses(cb, b) for b in beams)
    ref = Beams(major=[b.major for b in beams] * u.arcsec, minor=[b.minor for b in beams] * u.arcsec,
                pa=[b.pa for b in beams] * u.deg).common_beam()
    assert cb.major == pytest.approx(ref.major.to_value(u.arcsec), rel=1e-3)
    assert cb.minor == pytest.approx(ref.minor.to_value(u.arcsec), rel=1e-3)
    shuffled = beams[:]
    random.Random(3).shuffle(shuffled)
    cb2 = common_beam(shuffled, round_up=0.0)
    assert same_beam(cb, cb2, rtol=1e-3)


@pytest.mark.pure
def test_common_beam_of_three_copies_turned_by_60_degrees_is_the_circle_of_their_major_axis():
    # symmetric under a turn of 60 degrees, so a circle; the smallest circle enclosing them has their major axis
    cb = common_beam([Beam(20.0, 10.0, pa) for pa in (0.0, 60.0, 120.0)])
    assert cb.major == pytest.approx(20.0, rel=1e-8)
    assert cb.minor == pytest.approx(20.0, rel=1e-8)


@pytest.mark.pure
def test_common_beam_of_two_beams_is_their_larger_axes_in_the_frame_that_makes_both_diagonal():
    rng = np.random.default_rng(7)
    for _ in range(20):
        major = rng.uniform(10, 30, 2)
        one, two = (Beam(float(m), float(m * f), float(pa))
                    for m, f, pa in zip(major, rng.uniform(0.2, 1.0, 2), rng.uniform(-90, 90, 2), strict=True))
        c1, c2 = (np.array([[c[0], c[1]], [c[1], c[2]]]) for c in (one.cov(), two.cov()))
        lower = np.linalg.cholesky(c1)
        whitened = np.linalg.solve(lower, np.linalg.solve(lower, c2).T)  # L^-1 C2 L^-T
        eig, vec = np.linalg.eigh(whitened)
        expected = lower @ vec @ np.diag(np.maximum(eig, 1.0)) @ vec.T @ lower.T
        if np.allclose(expected, c1) or np.allclose(expected, c2):
            continue  # one encloses the other: the cheap case
        got = common_beam([one, two])
        assert np.array(got.cov()) == pytest.approx([expected[0, 0], expected[0, 1], expected[1, 1]], rel=1e-8,
                                                    abs=1e-8 * expected[0, 0])


def test_common_beam_is_never_larger_than_radio_beam_s_even_where_radio_beam_gives_up():

    rng = random.Random(11)
    compared = 0
    for _ in range(40):
        beams = []
        for _ in range(rng.randint(3, 30)):
            major = rng.uniform(10.0, 30.0)
            beams.append(Beam(major, major * rng.uniform(0.3, 1.0), rng.uniform(-90.0, 90.0)))
        cb = common_beam(beams)
        assert all(encloses(cb, b, rtol=1e-9) for b in beams)
        try:
            ref = Beams(major=[b.major for b in beams] * u.arcsec, minor=[b.minor for b in beams] * u.arcsec,
                        pa=[b.pa for b in beams] * u.deg).common_beam()
        except BeamError:  # "Could not increase epsilon to find common beam."
            continue
        ref_area = ref.major.to_value(u.arcsec) * ref.minor.to_value(u.arcsec)
        assert 0.99 * ref_area < cb.area <= ref_area * (1 + 1e-9)
        compared += 1
    assert compared > 25


def test_common_beam_rounds_up_to_the_step_and_still_encloses():
    beams = [Beam(*b) for b in varying_beams(6)]
    cb = common_beam(beams, round_up=0.1)
    assert round(cb.major * 10) == pytest.approx(cb.major * 10, abs=1e-6)
    assert round(cb.minor * 10) == pytest.approx(cb.minor * 10, abs=1e-6)
    assert all(encloses(cb, b) for b in beams)
    assert round_up_beam(Beam(25.0, 20.0, 3.0), 0.1) == Beam(25.0, 20.0, 3.0)


@pytest.mark.pure
def test_common_beam_of_nothing_is_an_error_for_the_caller():
    with pytest.raises(ValueError):
        common_beam([])


@pytest.mark.pure
def test_pixel_covariance_matches_an_independent_drawing_of_the_beam():
    cell = 2.5
    matrix = ((-cell / 3600, 0.0), (0.0, cell / 3600))
    for bmaj, bmin, bpa in [(25.0, 15.0, 0.0), (25.0, 15.0, 45.0), (22.0, 9.0, -70.0)]:
        got = pixel_covariance(Beam(bmaj, bmin, bpa), matrix)
        ref = beam_cov_pixels(bmaj, bmin, bpa, cell)
        assert got == pytest.approx((ref[0, 0], ref[0, 1], ref[1, 1]), rel=1e-12, abs=1e-12)


@pytest.mark.pure
def test_pixel_covariance_orientation_agrees_with_radio_beam_kernel():
    """radio-beam draws PA east of north with east to the left; so must we."""

    k = radio_beam.Beam(24 * u.arcsec, 8 * u.arcsec, 30 * u.deg).as_kernel(2.0 * u.arcsec, x_size=61, y_size=61)
    arr = k.array
    y, x = np.mgrid[:61, :61] - 30.0
    w = arr / arr.sum()
    ref = (float((w * x * x).sum()), float((w * x * y).sum()), float((w * y * y).sum()))
    got = pixel_covariance(Beam(24.0, 8.0, 30.0), ((-2.0 / 3600, 0.0), (0.0, 2.0 / 3600)))
    assert got == pytest.approx(ref, rel=2e-2, abs=0.05)


@pytest.mark.pure
def test_taper_is_one_at_zero_frequency_and_even():
    t = uv_taper((64, 64), (4.0, 1.5, 3.0))
    assert t.dtype == np.float32 and t.shape == (64, 33)
    assert t[0, 0] == 1.0
    assert t[5, 0] == pytest.approx(t[-5, 0])  # a Gaussian's transform is even
    assert np.all(t <= 1.0) and np.all(t >= 0.0)


@pytest.mark.pure
def test_normalised_convolution_keeps_a_flat_field_flat_next_to_a_hole():
    plane = np.ones((128, 128), dtype=np.float32)
    plane[50:60, 50:60] = np.nan
    out = convolve_plane(plane.copy(), (9.0, 2.0, 6.0), 1.0)
    assert np.isnan(out[50:60, 50:60]).all()
    ring = np.zeros(plane.shape, bool)
    ring[48:62, 48:62] = True
    ring[50:60, 50:60] = False
    assert np.nanmax(np.abs(out[ring] - 1.0)) < 1e-5
    assert np.isfinite(out[~np.isnan(plane)]).all()


@pytest.mark.pure
def test_two_pass_fft_convolution_equals_rfft2_with_the_full_taper():

    rng = np.random.default_rng(1)
    plane = rng.normal(size=(96, 80)).astype(np.float32)
    cov = (7.0, -2.5, 4.0)
    ref = scipy.fft.irfft2(scipy.fft.rfft2(plane) * uv_taper(plane.shape, cov), s=plane.shape)
    got = fft_convolve(plane.copy(), cov)
    assert np.abs(got - ref).max() < 1e-5


@pytest.mark.pure
def test_a_wide_kernel_skips_the_negligible_columns_and_the_result_is_unchanged():

    rng = np.random.default_rng(2)
    plane = np.zeros((256, 240), dtype=np.float32)
    plane[rng.integers(0, 256, 40), rng.integers(0, 240, 40)] = rng.uniform(0.001, 1.0, 40)
    cov, scale = (40.0, 10.0, 30.0), 1.7
    keep = kept_columns(cov, plane.shape, scale)
    assert keep < (240 // 2 + 1) // 2  # most columns are skipped
    ref = scipy.fft.irfft2(scipy.fft.rfft2(plane.astype(np.float64)) * uv_taper(plane.shape, cov, scale=scale),
                           s=plane.shape)
    got = fft_convolve(plane.copy(), cov, scale=scale)
    assert np.abs(got - ref).max() < 1e-6 * np.abs(ref).max()
    assert kept_columns((0.3, 0.0, 0.3), plane.shape) == 240 // 2 + 1  # a narrow kernel keeps every column


@pytest.mark.pure
def test_the_sigma_of_a_plane_seen_block_by_block_equals_robust_sigma_of_the_whole_plane():
    rng = np.random.default_rng(3)
    plane = rng.normal(0.0, 2.0, size=(700, 650)).astype(np.float32)
    plane[100:180, 40:90] = np.nan
    sample = SigmaSample(plane.size, samples=5000)
    for r0 in range(0, 700, 37):
        sample.add(r0, plane[r0:r0 + 37])
    assert sample.sigma() == robust_sigma(plane, samples=5000)
    assert sample.sigma() == pytest.approx(2.0, rel=0.05)


@pytest.mark.pure
def test_identity_kernel_only_scales_and_an_all_nan_plane_stays_nan():
    plane = np.full((8, 8), 2.0, dtype=np.float32)
    assert np.all(convolve_plane(plane, None, 1.5) == 3.0)
    nan = np.full((8, 8), np.nan, dtype=np.float32)
    assert np.isnan(convolve_plane(nan, (1.0, 0.0, 1.0), 2.0)).all()
