"""Synthetic MeasurementSets image as designed with the real WSClean, and raw ASKAP beams need FixMS."""

from pathlib import Path

import casacore.tables as ct
import numpy as np
import pytest
from fixms.fix_ms_corrs import fix_ms_corrs
from fixms.fix_ms_dir import fix_ms_dir
from fixtures.synth import (  # noqa: F401  (pytest fixtures)
    brightest_pixel_world,
    copy_ms,
    flux_tolerance,
    plain_ms,
    raw_observation,
    source_peak,
    wsclean_image,
)

from mpimager.errors import InputError
from mpimager.testing import synth

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


# ---------------------------------------------------------------------------------------------- real ASKAP shapes


def test_the_real_askap_shapes(tmp_path):
    angles = [90.0 - b for b in range(36)]
    ms = synth.make_ms(tmp_path / "real.ms", raw_askap=True, beam=4, n_ant=6, n_times=5, receptor_angle_deg=angles,
                       **synth.REAL_ASKAP_KWARGS, **synth.askap_band(8))
    with ct.table(str(ms / "FEED"), ack=False) as feed:  # every footprint beam for every antenna, antenna-major
        assert feed.nrows() == 36 * 6
        assert list(feed.getcol("ANTENNA_ID")) == [a for a in range(6) for _ in range(36)]
        assert list(feed.getcol("FEED_ID")) == list(range(36)) * 6
        assert set(feed.getcol("BEAM_ID")) == {0} and set(feed.getcol("TIME")) == {0.0}
        assert set(feed.getcol("INTERVAL")) == {1e30}
        receptor = np.degrees(feed.getcol("RECEPTOR_ANGLE"))
        assert receptor[4, 0] == pytest.approx(angles[4])  # per-beam angles (antenna 0, beam 4)
        assert receptor[36 + 9, 0] == pytest.approx(angles[9])
    with ct.table(str(ms), ack=False) as main:
        assert "WEIGHT_SPECTRUM" not in main.colnames()
        assert ct.taql("select from $main where ANTENNA1==ANTENNA2").nrows() == 0  # no autocorrelations
        data, flag, uvw = main.getcol("DATA"), main.getcol("FLAG"), main.getcol("UVW")
        flag_row = main.getcol("FLAG_ROW")
    nan = np.isnan(data)
    assert nan.any() and flag[nan].all()  # NaN only in flagged samples
    assert flag[:, 1, :].all() and not nan[:, 1, :].all()  # a fully flagged channel (zeros, not NaN)
    zero = ~uvw.any(axis=1)
    assert zero.sum() == 5 and flag_row[zero].all() and nan[zero].all()
    with ct.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
        freqs = spw.getcell("CHAN_FREQ", 0)
        assert freqs[0] == 744e6 and np.allclose(np.diff(freqs), 1e6)
        assert spw.getcell("REF_FREQUENCY", 0) == freqs[0]
    assert synth.askap_band()["n_chan"] == 288
    assert synth.askap_band(survey="emu")["freq_start_hz"] == 800e6
    with ct.table(str(ms / "POINTING"), ack=False) as pointing:
        assert pointing.nrows() == 6 * 5
        assert np.degrees(pointing.getcell("TARGET", 0)[0]) == pytest.approx(synth.DEFAULT_PHASE_CENTRE_DEG)
    with ct.table(str(ms / "HISTORY"), ack=False) as history:
        assert history.nrows() == 20


def test_a_preprocessed_beam_holds_sky_frame_data_and_the_instrument_data_beside_it(tmp_path):
    import astropy.units as u
    from fixms.fix_ms_corrs import convert_correlations

    ms = synth.make_ms(tmp_path / "pre.ms", raw_askap=True, beam=3, askap_state="preprocessed")
    with ct.table(str(ms), ack=False) as main:
        assert "CORRECTED_DATA" not in main.colnames()
        pol_axis = (45.0 - synth.DEFAULT_RECEPTOR_ANGLE_DEG) * u.deg
        rotated = convert_correlations(main.getcol("INSTRUMENT_DATA"), pol_axis)
        assert np.allclose(main.getcol("DATA"), rotated, atol=1e-5)  # DATA = INSTRUMENT_DATA fixed
    with ct.table(str(ms / "FEED"), ack=False) as feed:
        assert np.degrees(feed.getcol("RECEPTOR_ANGLE")) == pytest.approx(45.0)
        assert np.degrees(feed.getcol("INSTRUMENT_RECEPTOR_ANGLE")) == pytest.approx(synth.DEFAULT_RECEPTOR_ANGLE_DEG)
        assert not feed.getcol("BEAM_OFFSET").any()
    centre = synth.beam_centre(synth.DEFAULT_PHASE_CENTRE_DEG, (0.5, -0.3))
    with ct.table(str(ms / "FIELD"), ack=False) as field, ct.table(str(ms / "FIELD_OLD"), ack=False) as old:
        assert np.degrees(field.getcol("PHASE_DIR")[0, 0]) == pytest.approx(centre)
        assert np.degrees(old.getcol("PHASE_DIR")[0, 0]) == pytest.approx(synth.DEFAULT_PHASE_CENTRE_DEG)
    prefix = wsclean_image(ms, tmp_path / "pre", "-pol", "IQU", "-join-polarizations")  # right as it is
    _assert_sources_right(prefix, synth.default_sources(centre))


def test_a_beam_split_after_a_fix_has_field_at_the_beam_and_no_field_old(tmp_path):
    ms = synth.make_ms(tmp_path / "split.ms", raw_askap=True, beam=3, askap_state="split", pointing=True)
    assert not (ms / "FIELD_OLD").exists()
    with ct.table(str(ms / "FEED"), ack=False) as feed:
        assert not feed.getcol("BEAM_OFFSET").any()
    centre = synth.beam_centre(synth.DEFAULT_PHASE_CENTRE_DEG, (0.5, -0.3))
    with ct.table(str(ms / "FIELD"), ack=False) as field:
        assert np.degrees(field.getcol("PHASE_DIR")[0, 0]) == pytest.approx(centre)
    prefix = wsclean_image(ms, tmp_path / "split", "-pol", "IQU", "-join-polarizations")
    _assert_sources_right(prefix, synth.default_sources(centre))


def test_mpimager_synth_real_writes_real_shaped_beams(tmp_path):
    from mpimager.cli.synth import synthesise

    paths = synthesise(tmp_path / "obs", beams=2, antennas=5, times=3, channels=4, real=True, state="split")
    assert len(paths) == 2
    with ct.table(str(paths[1] / "FEED"), ack=False) as feed:
        assert feed.nrows() == 36 * 5
    assert not (paths[1] / "FIELD_OLD").exists()
