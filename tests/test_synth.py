"""Synthetic MeasurementSets image as designed with the real WSClean, and raw ASKAP beams need FixMS."""

from pathlib import Path

import casacore.tables as ct
import numpy as np
import pytest
from fixms.fix_ms_corrs import fix_ms_corrs
from fixms.fix_ms_dir import fix_ms_dir

from mpimager.testing import synth
from mpimager.errors import InputError

from fixtures.synth import (  # noqa: F401  (pytest fixtures)
    brightest_pixel_world,
    copy_ms,
    flux_tolerance,
    plain_ms,
    raw_observation,
    source_peak,
    wsclean_image,
)

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

BAND_CENTRE_HZ = synth.DEFAULT_FREQ_START_HZ + 1.5 * synth.DEFAULT_CHAN_WIDTH_HZ


def _assert_sources_right(prefix, sources, stokes="IQU"):
    for src in sources:
        for st in stokes:
            name = f"{prefix}-{st}-image.fits" if len(stokes) > 1 else f"{prefix}-image.fits"
            peak = source_peak(name, src.ra_deg, src.dec_deg)
            expected = src.flux(BAND_CENTRE_HZ, st)
            if expected != 0:  # a zero-flux Stokes has no position, only a small value
                assert peak.offset_pix <= 0.5, f"{st} of {src} found {peak.offset_pix} px away"
            assert abs(peak.value - expected) <= flux_tolerance(expected, src.i_jy), (st, src, peak)


def test_plain_ms_images_each_source_at_its_position_with_its_iqu_flux(plain_ms, tmp_path):
    prefix = wsclean_image(plain_ms, tmp_path / "plain", "-pol", "IQU", "-join-polarizations")
    _assert_sources_right(prefix, synth.default_sources(synth.DEFAULT_PHASE_CENTRE_DEG))


def test_raw_askap_beam_imaged_directly_is_off_by_the_beam_offset_with_half_the_flux(raw_observation, tmp_path):
    beam = 1
    ms = raw_observation[beam]
    boresight = synth.field_centre_from_name(synth.DEFAULT_FIELD)
    centre = synth.beam_centre(boresight, synth.askap_footprint(len(raw_observation))[beam])
    brightest = synth.default_sources(centre)[0]
    prefix = wsclean_image(ms, tmp_path / "raw", "-pol", "I")
    ra, dec, value = brightest_pixel_world(f"{prefix}-image.fits")
    # FIELD says boresight, the data are phased at the beam centre: everything lands offset.
    true_sep = _separation_deg((ra, dec), (brightest.ra_deg, brightest.dec_deg))
    offset = _separation_deg(boresight, centre)
    assert abs(true_sep - offset) < 0.01
    assert value == pytest.approx(brightest.i_jy / 2, rel=0.05)  # ASKAP's I = XX+YY read as (XX+YY)/2


def test_raw_askap_beam_after_fixms_is_right_in_i_q_and_u(raw_observation, tmp_path):
    beam = 3  # not beam 0: FixMS must find this beam's FEED rows and offset
    ms = copy_ms(raw_observation[beam], tmp_path / "beam.ms")
    fix_ms_dir(str(ms))
    fix_ms_corrs(Path(ms))
    boresight = synth.field_centre_from_name(synth.DEFAULT_FIELD)
    centre = synth.beam_centre(boresight, synth.askap_footprint(len(raw_observation))[beam])
    prefix = wsclean_image(ms, tmp_path / "fixed", "-pol", "IQU", "-join-polarizations")
    _assert_sources_right(prefix, synth.default_sources(centre))


@pytest.mark.parametrize("receptor_angle_deg", [90.0, 45.0])
def test_fixms_undoes_the_instrument_frame_for_other_receptor_angles(receptor_angle_deg, tmp_path):
    # pol axis = 45 - RECEPTOR_ANGLE: 90 deg gives -45 deg, FixMS' usual ASKAP case (XX and YY swap),
    # 45 deg gives 0 deg. The default (60 deg, pol axis -15 deg) is covered above.
    ms = synth.make_ms(tmp_path / "r.ms", raw_askap=True, beam=2, beam_offset_deg=(-0.3, 0.7),
                       receptor_angle_deg=receptor_angle_deg)
    fix_ms_dir(str(ms))
    fix_ms_corrs(Path(ms))
    centre = synth.beam_centre(synth.DEFAULT_PHASE_CENTRE_DEG, (-0.3, 0.7))
    prefix = wsclean_image(ms, tmp_path / "fixed", "-pol", "IQU", "-join-polarizations")
    _assert_sources_right(prefix, synth.default_sources(centre))


def test_fixms_moves_each_beam_to_the_centre_the_data_are_phased_at(raw_observation, tmp_path):
    boresight = synth.field_centre_from_name(synth.DEFAULT_FIELD)
    footprint = synth.askap_footprint(len(raw_observation))
    for beam, original in enumerate(raw_observation):
        ms = copy_ms(original, tmp_path / f"b{beam}.ms")
        fix_ms_dir(str(ms))
        with ct.table(str(ms / "FIELD"), ack=False) as field:
            ra, dec = np.degrees(field.getcol("PHASE_DIR")[0, 0])
        assert _separation_deg((ra, dec), synth.beam_centre(boresight, footprint[beam])) < 1e-7


def test_raw_beam_metadata_is_what_fixms_needs(raw_observation):
    n_beams = len(raw_observation)
    for beam, ms in enumerate(raw_observation):
        assert ms.name == f"scienceData_SB8593_RACS_1347-37A.beam{beam:02d}_averaged_cal.leakage.ms"
        with ct.table(str(ms), ack=False) as main:
            assert set(main.getcol("FEED1")) == {beam} and set(main.getcol("FEED2")) == {beam}
            autos0 = ct.taql("select TIME from $main where ANTENNA1==0 and ANTENNA2==0")
            assert autos0.nrows() == len(np.unique(main.getcol("TIME")))
            times = main.getcol("TIME")
        with ct.table(str(ms / "FEED"), ack=False) as feed:
            assert feed.getcol("BEAM_OFFSET").shape[1:] == (2, 2)
            assert set(feed.getcol("FEED_ID")) == set(range(n_beams))
            start = feed.getcol("TIME") - feed.getcol("INTERVAL") / 2
            end = feed.getcol("TIME") + feed.getcol("INTERVAL") / 2
            assert (start < times.min()).all() and (end > times.max()).all()
            assert np.degrees(feed.getcol("RECEPTOR_ANGLE")) == pytest.approx(synth.DEFAULT_RECEPTOR_ANGLE_DEG)
        with ct.table(str(ms / "ANTENNA"), ack=False) as ant:
            assert set(ant.getcol("MOUNT")) == {"equatorial"}
            pos = ant.getcol("POSITION")
            longest = max(np.linalg.norm(a - b) for a in pos for b in pos)
            assert 1000 < longest < 6000
        with ct.table(str(ms / "OBSERVATION"), ack=False) as obs:
            assert obs.getcol("TELESCOPE_NAME") == ["ASKAP"]
        with ct.table(str(ms / "FIELD"), ack=False) as field:
            assert field.getcol("NAME") == ["RACS_1347-37A"]
            assert np.degrees(field.getcol("PHASE_DIR")[0, 0]) == pytest.approx([206.75, -37.0])


def test_spectral_index_is_recovered_from_channel_images(plain_ms, tmp_path):
    prefix = wsclean_image(plain_ms, tmp_path / "chan", "-channels-out", 4)
    for src in synth.default_sources(synth.DEFAULT_PHASE_CENTRE_DEG):
        peaks = [source_peak(f"{prefix}-{c:04d}-image.fits", src.ra_deg, src.dec_deg) for c in range(4)]
        for peak in peaks:
            assert peak.value == pytest.approx(src.flux(peak.freq_hz), rel=0.05)
        alpha = np.polyfit(np.log([p.freq_hz for p in peaks]), np.log([p.value for p in peaks]), 1)[0]
        assert alpha == pytest.approx(src.spectral_index, abs=0.1)


def test_two_spectral_windows_image_each_with_its_own_frequencies(tmp_path):
    ms = synth.make_ms(tmp_path / "spw.ms", n_spw=2, n_chan=2)
    with ct.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
        assert spw.nrows() == 2
        assert spw.getcol("CHAN_FREQ")[1, 0] > spw.getcol("CHAN_FREQ")[0, -1]
    with ct.table(str(ms / "DATA_DESCRIPTION"), ack=False) as dd:
        assert list(dd.getcol("SPECTRAL_WINDOW_ID")) == [0, 1]
    with ct.table(str(ms), ack=False) as main:
        assert sorted(set(main.getcol("DATA_DESC_ID"))) == [0, 1]
    prefix = wsclean_image(ms, tmp_path / "spw", "-channels-out", 4)
    src = synth.default_sources(synth.DEFAULT_PHASE_CENTRE_DEG)[0]  # spectral index -0.7
    for c in range(4):
        peak = source_peak(f"{prefix}-{c:04d}-image.fits", src.ra_deg, src.dec_deg)
        assert peak.value == pytest.approx(src.flux(peak.freq_hz), rel=0.05)


def test_noise_has_the_requested_rms_and_weights(tmp_path):
    ms = synth.make_ms(tmp_path / "noise.ms", sources=(), noise_jy=0.5, n_ant=12)
    with ct.table(str(ms), ack=False) as main:
        data = main.getcol("DATA")
        weight = main.getcol("WEIGHT")
    assert data.real.std() == pytest.approx(0.5, rel=0.05)
    assert data.imag.std() == pytest.approx(0.5, rel=0.05)
    assert weight == pytest.approx(4.0)


def test_tiny_ms_has_one_row_per_time_window_and_baseline(tmp_path):
    ms = synth.make_ms(tmp_path / "tiny.ms", n_ant=5, n_times=3, n_chan=2, n_spw=2)
    with ct.table(str(ms), ack=False) as main:
        assert main.nrows() == 3 * 2 * 10
        assert main.getcol("DATA").shape == (60, 2, 4)
        assert (main.getcol("ANTENNA1") != main.getcol("ANTENNA2")).all()  # plain: no autocorrelations


def test_make_ms_refuses_an_existing_path_and_leaves_nothing_behind(tmp_path):
    ms = synth.make_ms(tmp_path / "a.ms")
    with pytest.raises(InputError, match="a.ms"):
        synth.make_ms(ms)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ms"]  # no partial build left


def _separation_deg(a, b):
    ra1, dec1, ra2, dec2 = np.radians([a[0], a[1], b[0], b[1]])
    cos = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
