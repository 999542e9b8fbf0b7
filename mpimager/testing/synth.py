"""Synthetic MeasurementSets: small, valid MSs of point sources, for tests, the demo and benchmarks.

Owns the making of MSs from a sky of point sources with python-casacore and numpy only, in two flavours:

* plain: data phased at FIELD's phase centre, linear correlations in WSClean's convention
  (I = (XX+YY)/2): XX = I+Q, XY = U+iV, YX = U-iV, YY = I-Q. Its FEED table looks like an ASKAP
  beam after FixMS (RECEPTOR_ANGLE 45 deg, zero BEAM_OFFSET).
* raw ASKAP beam (``raw_askap=True``): what ASKAP writes and FixMS repairs. FIELD holds the array
  boresight while the data are phased at the beam centre (boresight shifted by FEED.BEAM_OFFSET,
  the same spherical offset FixMS applies), the correlations are in the instrument frame (rotated by
  the polarisation axis P = 45 deg - RECEPTOR_ANGLE) with ASKAP's factor-2 Stokes convention
  (I = XX+YY), autocorrelation rows, FEED1 = FEED2 = beam number, equatorial mounts.

Real ASKAP beams are untidier; options make each of their shapes (see REAL_ASKAP_KWARGS and askap_band):
the real FEED layout (`feed_layout="askap"`: all 36 footprint beams for every antenna, antenna-major,
BEAM_ID 0, TIME 0, INTERVAL 1e30), per-beam receptor angles, NaN in flagged samples, fully flagged
channels, zero-UVW rows, no autocorrelations, no WEIGHT_SPECTRUM, POINTING and HISTORY filled, REF_FREQUENCY
the first channel, and the states a beam arrives in after other tools (`askap_state`): "preprocessed" by
another pipeline (DATA in the sky frame, INSTRUMENT_DATA, FIELD_OLD, FEED.INSTRUMENT_RECEPTOR_ANGLE, no
CORRECTED_DATA) and "split" after a fix (FIELD at the beam, BEAM_OFFSET zero, no FIELD_OLD).

Visibilities are exact (no smearing, no primary beam): V = S exp(+2 pi i (u l + v m + w (n-1)) / lambda),
WSClean's sign, with UVW = xyz(ant2) - xyz(ant1) in J2000 computed by casacore (TaQL mscal.uvwj2000).
An MS is built under a temporary name next to its final path and renamed into place when complete.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpimager.errors import InputError
from mpimager.inputs.msstate import INSTRUMENT_DATA, IRA, beam_centre

SPEED_OF_LIGHT = 299792458.0

# ASKAP at the Murchison Radio-astronomy Observatory (WGS84 geodetic, approximate array centre).
ASKAP_LON_DEG = 116.6370
ASKAP_LAT_DEG = -26.6970
ASKAP_HEIGHT_M = 361.0

# RACS-low: 288 MHz from 743.5 MHz, reference 887.5 MHz. Four 72 MHz channels by default.
DEFAULT_FREQ_START_HZ = 743.5e6 + 36e6  # centre of the first channel
DEFAULT_CHAN_WIDTH_HZ = 72e6
DEFAULT_FIELD = "RACS_1347-37A"
DEFAULT_PHASE_CENTRE_DEG = (206.75, -37.0)  # 13h47m, -37d: the centre the RACS name implies
DEFAULT_EPOCH_MJD = 58602.0  # 2019-04-29, the RACS-low epoch of SB8593
DEFAULT_RECEPTOR_ANGLE_DEG = 60.0  # pol axis 45 - 60 = -15 deg: FixMS mixes Q and U (non-trivial)

CORR_TYPES_LINEAR = (9, 10, 11, 12)  # XX, XY, YX, YY

# A "realistic" demo beam: 36 antennas (ASKAP's count), 30 integrations over 2 h, 8 channels of
# 36 MHz (RACS-low's band): 19,980 rows, ~12 MB, ~0.5 s to make. Use as make_ms(path, **DEMO_MS_KWARGS).
DEMO_MS_KWARGS = {"n_ant": 36, "n_times": 30, "n_chan": 8, "freq_start_hz": 743.5e6 + 18e6, "chan_width_hz": 36e6}

# The real ASKAP shapes (/work/shared/notes/real-askap-ms.md), as make_ms keywords: make_ms(path, raw_askap=True,
# **REAL_ASKAP_KWARGS, **askap_band(8)).
REAL_ASKAP_KWARGS = {
    "feed_layout": "askap", "nan_fraction": 0.02, "flagged_channels": (1,), "zero_uvw_rows": 5,
    "autocorrelations": False, "weight_spectrum": False, "pointing": True, "history_rows": 20,
}
ASKAP_FOOTPRINT_BEAMS = 36
ASKAP_CHANNEL_WIDTH_HZ = 1e6
ASKAP_BAND_START_HZ = {"racs-low": 744e6, "emu": 800e6}  # first channel (also REF_FREQUENCY)
ASKAP_STATES = ("raw", "preprocessed", "split")

_RACS_NAME = re.compile(r"^RACS_(\d{2})(\d{2})([+-])(\d{2})[A-Z]?$")


@dataclass(frozen=True)
class Source:
    """A point source. Each Stokes flux scales as flux * (f / ref_freq_hz) ** spectral_index."""

    ra_deg: float
    dec_deg: float
    i_jy: float
    q_jy: float = 0.0
    u_jy: float = 0.0
    v_jy: float = 0.0
    spectral_index: float = 0.0
    ref_freq_hz: float = 888e6

    def stokes(self, freq_hz: np.ndarray) -> np.ndarray:
        """Stokes (I, Q, U, V) at each frequency: shape (len(freq_hz), 4)."""
        scale = (np.asarray(freq_hz, dtype=float) / self.ref_freq_hz) ** self.spectral_index
        return np.outer(scale, [self.i_jy, self.q_jy, self.u_jy, self.v_jy])

    def flux(self, freq_hz: float, stokes: str = "I") -> float:
        """The flux (Jy) in the Stokes parameter `stokes` (I, Q, U or V) at the frequency `freq_hz`."""
        return float(self.stokes(np.array([freq_hz]))[0, "IQUV".index(stokes.upper())])


# ----------------------------------------------------------------------------------------------
# Sky geometry (pure)
# ----------------------------------------------------------------------------------------------


def lmn(centre_deg: Sequence[float], ra_deg, dec_deg):
    """Direction cosines (l, m, n) of (`ra_deg`, `dec_deg`) relative to the phase centre `centre_deg` (SIN
    projection; degrees, arrays broadcast together)."""
    ra0, dec0 = np.radians(centre_deg[0]), np.radians(centre_deg[1])
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    dra = ra - ra0
    l_ = np.cos(dec) * np.sin(dra)
    m_ = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(dra)
    n_ = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(dra)
    return l_, m_, n_


def offset_position(centre_deg: Sequence[float], dl_arcmin: float, dm_arcmin: float) -> tuple[float, float]:
    """The (ra, dec) in degrees at direction cosines (l, m) = (`dl_arcmin`, `dm_arcmin`) arcminutes from the
    centre `centre_deg` (inverse SIN)."""
    ra0, dec0 = math.radians(centre_deg[0]), math.radians(centre_deg[1])
    l_, m_ = math.radians(dl_arcmin / 60.0), math.radians(dm_arcmin / 60.0)
    n_ = math.sqrt(1.0 - l_ * l_ - m_ * m_)
    dec = math.asin(m_ * math.cos(dec0) + n_ * math.sin(dec0))
    ra = ra0 + math.atan2(l_, n_ * math.cos(dec0) - m_ * math.sin(dec0))
    return math.degrees(ra) % 360.0, math.degrees(dec)


def field_centre_from_name(field: str) -> tuple[float, float] | None:
    """(ra, dec) degrees implied by a RACS-style field name like RACS_1347-37A, else None."""
    match = _RACS_NAME.match(field)
    if not match:
        return None
    hh, mm, sign, dd = match.groups()
    ra = 15.0 * (int(hh) + int(mm) / 60.0)
    dec = float(dd) * (-1.0 if sign == "-" else 1.0)
    return ra, dec


def askap_footprint(n_beams: int, pitch_deg: float = 0.9) -> list[tuple[float, float]]:
    """Offsets (dra, ddec) in degrees of `n_beams` beams on a square grid `pitch_deg` apart centred on the
    boresight, row by row; InputError for fewer than one beam."""
    if n_beams < 1:
        raise InputError(f"n_beams must be at least 1, got {n_beams}")
    n_x = math.ceil(math.sqrt(n_beams))
    n_y = math.ceil(n_beams / n_x)
    offsets = []
    for index in range(n_beams):
        col, row = index % n_x, index // n_x
        offsets.append(((col - (n_x - 1) / 2.0) * pitch_deg, ((n_y - 1) / 2.0 - row) * pitch_deg))
    return offsets


def default_sources(centre_deg: Sequence[float], *, scale_arcmin: float = 1.0,
                    flux_scale: float = 1.0, ref_freq_hz: float = 888e6) -> tuple[Source, ...]:
    """Three polarised point sources of known I/Q/U and spectral index, a few arcmin around `centre_deg`.

    Offsets are direction cosines of (1.5, 1.0), (-2.0, -1.5) and (0.5, -2.5) times scale_arcmin
    arcminutes, so they sit inside a 256-pixel image at 2-3 arcsec per pixel. Fluxes are scaled by
    `flux_scale`, at the reference frequency `ref_freq_hz`.
    """
    spec = (
        # dl, dm, I, Q, U, V, alpha
        (1.5, 1.0, 1.0, 0.30, 0.20, 0.0, -0.7),
        (-2.0, -1.5, 0.6, -0.15, 0.20, 0.0, 0.5),
        (0.5, -2.5, 0.4, 0.0, -0.12, 0.0, -1.5),
    )
    sources = []
    for dl, dm, i, q, u, v, alpha in spec:
        ra, dec = offset_position(centre_deg, dl * scale_arcmin, dm * scale_arcmin)
        sources.append(Source(ra, dec, i * flux_scale, q * flux_scale, u * flux_scale, v * flux_scale,
                              alpha, ref_freq_hz))
    return tuple(sources)


def askap_correlations(stokes: np.ndarray, pol_axis_deg: float) -> np.ndarray:
    """Correlations (XX, XY, YX, YY) an ASKAP beam with polarisation axis `pol_axis_deg` records for
    `stokes` (..., 4), instrument frame.

    ASKAP's convention: I = XX+YY (factor 2), and with P the polarisation-axis angle
    Q = s(XX-YY) + c(XY+YX), U = -c(XX-YY) + s(XY+YX), V = i(YX-XY), where s = sin 2P, c = cos 2P.
    This is that relation inverted.
    """
    i, q, u, v = (stokes[..., k] for k in range(4))
    p = math.radians(pol_axis_deg)
    s, c = math.sin(2 * p), math.cos(2 * p)
    diff = s * q - c * u  # XX - YY
    cross = c * q + s * u  # XY + YX
    return 0.5 * np.stack([i + diff, cross + 1j * v, cross - 1j * v, i - diff], axis=-1)


def wsclean_correlations(stokes: np.ndarray) -> np.ndarray:
    """Correlations (XX, XY, YX, YY) for `stokes` (..., 4) with I = (XX+YY)/2."""
    i, q, u, v = (stokes[..., k] for k in range(4))
    return np.stack([i + q, u + 1j * v, u - 1j * v, i - q], axis=-1)


# ----------------------------------------------------------------------------------------------
# Array and observation layout (pure)
# ----------------------------------------------------------------------------------------------


def geodetic_to_itrf(lon_deg: float, lat_deg: float, height_m: float) -> np.ndarray:
    """The WGS84 geodetic position `lon_deg`, `lat_deg`, `height_m` as ITRF (x, y, z) metres."""
    a, f = 6378137.0, 1.0 / 298.257223563
    e2 = f * (2 - f)
    lon, lat = math.radians(lon_deg), math.radians(lat_deg)
    n = a / math.sqrt(1 - e2 * math.sin(lat) ** 2)
    return np.array([
        (n + height_m) * math.cos(lat) * math.cos(lon),
        (n + height_m) * math.cos(lat) * math.sin(lon),
        (n * (1 - e2) + height_m) * math.sin(lat),
    ])


def antenna_positions(n_ant: int, *, max_radius_m: float = 2500.0, seed: int = 12345,
                      min_separation_m: float = 30.0) -> np.ndarray:
    """ITRF positions (n_ant, 3) of a compact random layout around the ASKAP site: the first antenna at the
    site, the others within `max_radius_m` of it and at least `min_separation_m` apart, drawn with `seed`;
    InputError for fewer than 2."""
    if n_ant < 2:
        raise InputError(f"n_ant must be at least 2, got {n_ant}")
    rng = np.random.default_rng(seed)
    east_north: list[np.ndarray] = [np.zeros(2)]
    while len(east_north) < n_ant:
        radius = max_radius_m * math.sqrt(rng.uniform())
        angle = rng.uniform(0, 2 * math.pi)
        candidate = np.array([radius * math.cos(angle), radius * math.sin(angle)])
        if min(np.hypot(*(candidate - p)) for p in east_north) >= min_separation_m:
            east_north.append(candidate)
    enu = np.column_stack([np.array(east_north), rng.uniform(-3.0, 3.0, n_ant)])
    lon, lat = math.radians(ASKAP_LON_DEG), math.radians(ASKAP_LAT_DEG)
    to_itrf = np.array([
        [-math.sin(lon), -math.sin(lat) * math.cos(lon), math.cos(lat) * math.cos(lon)],
        [math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat) * math.sin(lon)],
        [0.0, math.cos(lat), math.sin(lat)],
    ])
    return geodetic_to_itrf(ASKAP_LON_DEG, ASKAP_LAT_DEG, ASKAP_HEIGHT_M) + enu @ to_itrf.T


def transit_time_mjd(ra_deg: float, epoch_mjd: float) -> float:
    """The first time (MJD, UTC ~ UT1) on or after epoch_mjd at which ra_deg transits at ASKAP."""
    jd = epoch_mjd + 2400000.5
    gmst = (280.46061837 + 360.98564736629 * (jd - 2451545.0)) % 360.0
    lst = gmst + ASKAP_LON_DEG
    return epoch_mjd + ((ra_deg - lst) % 360.0) / 360.98564736629


def observation_times(ra_deg: float, n_times: int, *, track_hours: float, epoch_mjd: float,
                      integration_s: float) -> tuple[np.ndarray, float]:
    """`n_times` integration mid-times (MJD seconds) spread evenly over a track of `track_hours` centred on
    the first transit of `ra_deg` at ASKAP from `epoch_mjd`, and the integration time (`integration_s`,
    shortened if the integrations would overlap)."""
    mid = transit_time_mjd(ra_deg, epoch_mjd) * 86400.0
    step = track_hours * 3600.0 / max(n_times, 1)
    interval = min(integration_s, step)
    times = mid + (np.arange(n_times) - (n_times - 1) / 2.0) * step
    return times, interval


def channel_frequencies(n_spw: int, n_chan: int, freq_start_hz: float, chan_width_hz: float) -> np.ndarray:
    """Channel centre frequencies (n_spw, n_chan), from `freq_start_hz` in steps of `chan_width_hz`:
    spectral windows side by side, ascending."""
    chans = np.arange(n_spw * n_chan, dtype=float) * chan_width_hz + freq_start_hz
    return chans.reshape(n_spw, n_chan)


def askap_band(n_chan: int = 288, survey: str = "racs-low") -> dict:
    """make_ms keywords for ASKAP's spectral layout of `survey` (a key of ASKAP_BAND_START_HZ): 1 MHz channels
    from the band's first channel, which is also REF_FREQUENCY. The full band has 288; fewer keep the layout
    (the first n_chan channels). InputError for an unknown survey."""
    if survey not in ASKAP_BAND_START_HZ:
        raise InputError(f"unknown ASKAP survey {survey!r}: expected one of {', '.join(ASKAP_BAND_START_HZ)}")
    return {"n_chan": n_chan, "freq_start_hz": ASKAP_BAND_START_HZ[survey], "chan_width_hz": ASKAP_CHANNEL_WIDTH_HZ,
            "ref_frequency": "first"}


def beam_ms_name(sbid: int, field: str, beam: int) -> str:
    """ASKAP's name for one calibrated, averaged `beam` of the scheduling block `sbid` on `field`."""
    return f"scienceData_SB{sbid}_{field}.beam{beam:02d}_averaged_cal.leakage.ms"


# ----------------------------------------------------------------------------------------------
# Writing (side effects)
# ----------------------------------------------------------------------------------------------


def make_ms(
    path,
    *,
    sources: Iterable[Source] | None = None,
    n_ant: int = 8,
    n_times: int = 8,
    n_chan: int = 4,
    n_spw: int = 1,
    freq_start_hz: float = DEFAULT_FREQ_START_HZ,
    chan_width_hz: float = DEFAULT_CHAN_WIDTH_HZ,
    phase_centre_deg: Sequence[float] = DEFAULT_PHASE_CENTRE_DEG,
    raw_askap: bool = False,
    beam: int = 0,
    beam_offset_deg: Sequence[float] | None = None,
    footprint_deg: Sequence[Sequence[float]] | None = None,
    receptor_angle_deg: float | Sequence[float] = DEFAULT_RECEPTOR_ANGLE_DEG,
    feed_layout: str = "beams",
    askap_state: str = "raw",
    keep_instrument_angle: bool = True,
    nan_fraction: float = 0.0,
    flagged_channels: Sequence[int] = (),
    zero_uvw_rows: int = 0,
    weight_spectrum: bool = True,
    pointing: bool = False,
    history_rows: int = 0,
    ref_frequency: str = "mean",
    field_name: str | None = None,
    telescope: str = "ASKAP",
    mount: str = "equatorial",
    autocorrelations: bool | None = None,
    noise_jy: float = 0.0,
    seed: int = 0,
    layout_seed: int = 12345,
    max_radius_m: float = 2500.0,
    track_hours: float = 2.0,
    integration_s: float = 10.0,
    epoch_mjd: float = DEFAULT_EPOCH_MJD,
    overwrite: bool = False,
) -> Path:
    """Write a MeasurementSet of point sources at `path` and return its absolute path.

    `phase_centre_deg` is FIELD's direction: the data phase centre of a plain MS, the array
    boresight of a raw ASKAP beam (whose data are phased at beam_centre(boresight, beam offset)).
    `sources` defaults to default_sources() around the data phase centre. `beam_offset_deg` is
    (dra, ddec) in degrees, default footprint_deg[beam] or (0.5, -0.3). `footprint_deg` gives the
    offsets of all beams written to FEED (default: beams 0..beam, this beam's offset for all).
    `noise_jy` is the rms of each real and imaginary part per correlation, drawn with `seed`.

    The layout: `n_ant` antennas within `max_radius_m` (drawn with `layout_seed`); `n_times` integrations
    of `integration_s` over `track_hours` around the first transit on or after `epoch_mjd`; `n_spw` spectral windows
    of `n_chan` channels from `freq_start_hz`, `chan_width_hz` apart. `field_name` (default: an ASKAP field
    name for a raw beam, else SYNTH), `telescope` and `mount` as written to FIELD, OBSERVATION and ANTENNA;
    `autocorrelations` (default: for a raw beam only). An existing `path` is replaced only with `overwrite`
    (else InputError).

    The shapes of real ASKAP beams (raw_askap=True):
    `receptor_angle_deg`: one angle, or one per FEED_ID (per-beam angles). `feed_layout`: "beams" (beams
    0..beam, TIME/INTERVAL covering the data, BEAM_ID -1) or "askap" (36 beams x n_ant rows, antenna-major,
    BEAM_ID 0, TIME 0, INTERVAL 1e30). `askap_state`: "raw", "preprocessed" (DATA in the sky frame,
    instrument-frame INSTRUMENT_DATA, FIELD at the beam, FIELD_OLD, FEED.INSTRUMENT_RECEPTOR_ANGLE,
    RECEPTOR_ANGLE 45 deg, zero BEAM_OFFSET) or "split" (the same without INSTRUMENT_DATA and FIELD_OLD;
    `keep_instrument_angle=False` also drops FEED.INSTRUMENT_RECEPTOR_ANGLE).
    `nan_fraction`: that fraction of (row, channel) samples is NaN and flagged (all 4 correlations).
    `flagged_channels`: channels flagged in every row (data 0). `zero_uvw_rows`: that many cross-correlation
    rows have UVW 0, NaN data and FLAG_ROW set. `weight_spectrum`: write WEIGHT_SPECTRUM. `pointing`: fill
    POINTING (boresight, per antenna and time). `history_rows`: rows written to HISTORY. `ref_frequency`:
    "mean" or "first" (ASKAP's: the first channel).
    """
    from casacore import tables as ct

    path = Path(path).absolute()
    if path.exists():
        if not overwrite:
            raise InputError(f"{path} exists; remove it or pass overwrite=True")
        shutil.rmtree(path)
    if n_times < 1 or n_chan < 1 or n_spw < 1:
        raise InputError("n_times, n_chan and n_spw must be at least 1")

    if askap_state not in ASKAP_STATES or (askap_state != "raw" and not raw_askap):
        raise InputError(f"askap_state must be one of {', '.join(ASKAP_STATES)} (and needs raw_askap=True)")
    if feed_layout not in ("beams", "askap") or ref_frequency not in ("mean", "first"):
        raise InputError("feed_layout must be 'beams' or 'askap', ref_frequency 'mean' or 'first'")
    boresight = (float(phase_centre_deg[0]), float(phase_centre_deg[1]))
    if raw_askap and feed_layout == "askap":  # every beam of the footprint in FEED
        full = askap_footprint(ASKAP_FOOTPRINT_BEAMS)
        footprint_deg = list(footprint_deg or []) + full[len(footprint_deg or []):]
    if raw_askap:
        if beam_offset_deg is None:
            beam_offset_deg = footprint_deg[beam] if footprint_deg is not None else (0.5, -0.3)
        data_centre = beam_centre(boresight, beam_offset_deg)
        feed_id = beam
    else:
        beam_offset_deg = (0.0, 0.0)
        data_centre = boresight
        feed_id = 0
    if field_name is None:
        field_name = DEFAULT_FIELD if raw_askap else "SYNTH"
    if autocorrelations is None:
        autocorrelations = raw_askap
    angles = [float(a) for a in receptor_angle_deg] if isinstance(receptor_angle_deg, Sequence) \
        else [float(receptor_angle_deg)]
    beam_angle = angles[feed_id] if len(angles) > 1 else angles[0]
    if not raw_askap:
        angles, beam_angle = [45.0], 45.0
    sources = tuple(default_sources(data_centre) if sources is None else sources)

    itrf = antenna_positions(n_ant, max_radius_m=max_radius_m, seed=layout_seed)
    times, interval = observation_times(data_centre[0], n_times, track_hours=track_hours,
                                        epoch_mjd=epoch_mjd, integration_s=integration_s)
    freqs = channel_frequencies(n_spw, n_chan, freq_start_hz, chan_width_hz)
    ant1, ant2 = np.triu_indices(n_ant, 0 if autocorrelations else 1)

    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_ms(
            ct, tmp, sources=sources, itrf=itrf, times=times, interval=interval, freqs=freqs,
            ant1=ant1, ant2=ant2, boresight=boresight, data_centre=data_centre, raw_askap=raw_askap,
            feed_id=feed_id, beam_offset_deg=beam_offset_deg, footprint_deg=footprint_deg,
            angles=angles, beam_angle=beam_angle, field_name=field_name, telescope=telescope,
            mount=mount, noise_jy=noise_jy, seed=seed, shape=_Shape(
                feed_layout, askap_state, keep_instrument_angle, nan_fraction, tuple(flagged_channels),
                zero_uvw_rows, weight_spectrum, pointing, history_rows, ref_frequency),
        )
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


@dataclass(frozen=True)
class _Shape:
    """make_ms' options for the untidy shapes of real ASKAP beams."""

    feed_layout: str
    askap_state: str
    keep_instrument_angle: bool
    nan_fraction: float
    flagged_channels: tuple[int, ...]
    zero_uvw_rows: int
    weight_spectrum: bool
    pointing: bool
    history_rows: int
    ref_frequency: str


def _main_table_desc(ct, n_chan: int, shape: _Shape) -> dict:
    def tiled(name, value, vtype):
        return ct.makearrcoldesc(name, value, shape=[n_chan, 4], valuetype=vtype,
                                 datamanagertype="TiledColumnStMan", datamanagergroup=f"Tiled{name}")

    columns = [tiled("DATA", 0j, "complex"), tiled("FLAG", False, "boolean")]
    columns += [tiled("WEIGHT_SPECTRUM", 0.0, "float")] if shape.weight_spectrum else []
    columns += [tiled(INSTRUMENT_DATA, 0j, "complex")] if shape.askap_state == "preprocessed" else []
    return ct.maketabdesc(columns)


def _write_ms(ct, path: Path, *, sources, itrf, times, interval, freqs, ant1, ant2, boresight,
              data_centre, raw_askap, feed_id, beam_offset_deg, footprint_deg, angles, beam_angle,
              field_name, telescope, mount, noise_jy, seed, shape: _Shape) -> None:
    n_spw, n_chan = freqs.shape
    n_ant = len(itrf)
    n_bl = len(ant1)
    n_times = len(times)
    n_rows = n_times * n_spw * n_bl
    fixed_layout = shape.askap_state != "raw"  # DATA already in the sky frame, FIELD at the beam

    ms = ct.default_ms(str(path), _main_table_desc(ct, n_chan, shape))
    try:
        ms.addrows(n_rows)
        # Row order: time, then spectral window, then baseline.
        time_col = np.repeat(times, n_spw * n_bl)
        ms.putcol("TIME", time_col)
        ms.putcol("TIME_CENTROID", time_col)
        ms.putcol("INTERVAL", np.full(n_rows, interval))
        ms.putcol("EXPOSURE", np.full(n_rows, interval))
        ms.putcol("ANTENNA1", np.tile(ant1, n_times * n_spw).astype(np.int32))
        ms.putcol("ANTENNA2", np.tile(ant2, n_times * n_spw).astype(np.int32))
        ms.putcol("FEED1", np.full(n_rows, feed_id, dtype=np.int32))
        ms.putcol("FEED2", np.full(n_rows, feed_id, dtype=np.int32))
        ms.putcol("DATA_DESC_ID", np.tile(np.repeat(np.arange(n_spw), n_bl), n_times).astype(np.int32))
        for name in ("FIELD_ID", "ARRAY_ID", "OBSERVATION_ID", "PROCESSOR_ID", "STATE_ID"):
            ms.putcol(name, np.zeros(n_rows, dtype=np.int32))
        ms.putcol("SCAN_NUMBER", np.ones(n_rows, dtype=np.int32))
        sigma = noise_jy if noise_jy > 0 else 1.0
        ms.putcol("SIGMA", np.full((n_rows, 4), sigma, dtype=np.float32))
        ms.putcol("WEIGHT", np.full((n_rows, 4), 1.0 / sigma**2, dtype=np.float32))
        if shape.weight_spectrum:
            ms.putcol("WEIGHT_SPECTRUM", np.full((n_rows, n_chan, 4), 1.0 / sigma**2, dtype=np.float32))

        _write_antennas(ct, path, itrf, mount)

        # J2000 UVW of the data phase centre, by casacore's measures.
        direction = f"[{data_centre[0]!r}deg, {data_centre[1]!r}deg]"
        uvw = ct.taql(f"select mscal.uvwj2000({direction}) as U from $ms").getcol("U")
        nan_samples, zero_rows = _bad_samples(ant1, ant2, n_rows, n_chan, shape, seed)
        uvw[zero_rows] = 0.0
        ms.putcol("UVW", uvw)
        flag = np.repeat(nan_samples[:, :, None], 4, axis=2)
        flag[:, list(shape.flagged_channels), :] = True
        flag_row = np.zeros(n_rows, dtype=bool)
        flag_row[zero_rows] = True
        ms.putcol("FLAG", flag)
        ms.putcol("FLAG_ROW", flag_row)

        rng = np.random.default_rng(seed)
        pol_axis = 45.0 - beam_angle
        columns = {"DATA": not fixed_layout}  # column -> instrument frame?
        if shape.askap_state == "preprocessed":
            columns[INSTRUMENT_DATA] = True
        for spw in range(n_spw):
            rows = (np.arange(n_times)[:, None] * n_spw * n_bl + spw * n_bl + np.arange(n_bl)).ravel()
            noise = 0.0
            if noise_jy > 0:
                size = (len(rows), n_chan, 4)
                noise = noise_jy * (rng.standard_normal(size) + 1j * rng.standard_normal(size))
            for column, instrument in columns.items():
                vis = _visibilities(uvw[rows], freqs[spw], sources, data_centre,
                                    raw_askap=raw_askap and instrument, pol_axis_deg=pol_axis) + noise
                vis[:, list(shape.flagged_channels), :] = 0.0
                vis[nan_samples[rows]] = np.nan
                _put_rows(ms, column, rows, vis.astype(np.complex64))
    finally:
        ms.close()

    _write_spectral_windows(ct, path, freqs, chan_width=float(np.diff(freqs.ravel())[0]) if freqs.size > 1
                            else None, ref_first=shape.ref_frequency == "first")
    _write_polarization(ct, path)
    _write_field(ct, path, data_centre if fixed_layout else boresight, field_name, float(times[0]))
    if shape.askap_state == "preprocessed":
        ct.tablecopy(str(path / "FIELD"), str(path / "FIELD_OLD"))
        with ct.table(str(path / "FIELD_OLD"), readonly=False, ack=False) as old:
            for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
                old.putcol(col, np.radians(np.array([[boresight]], dtype=float)))
    if shape.feed_layout == "askap":
        time_mid, span = 0.0, 1e30
    else:
        time_mid, span = float((times[0] + times[-1]) / 2.0), float(times[-1] - times[0]) + 4.0 * interval
    _write_feed(ct, path, n_ant=n_ant, feed_id=feed_id, raw_askap=raw_askap,
                beam_offset_deg=beam_offset_deg, footprint_deg=footprint_deg, angles=angles,
                time_mid=time_mid, span=span, beam_id=0 if shape.feed_layout == "askap" else -1,
                fixed=fixed_layout, keep_instrument_angle=shape.keep_instrument_angle)
    _write_observation(ct, path, telescope, float(times[0] - interval / 2), float(times[-1] + interval / 2))
    _write_small_tables(ct, path)
    if shape.pointing:
        _write_pointing(ct, path, n_ant, times, interval, boresight)
    if shape.history_rows:
        _write_history(ct, path, shape.history_rows, float(times[0]))


def _bad_samples(ant1, ant2, n_rows: int, n_chan: int, shape: _Shape, seed: int):
    """(NaN-and-flagged (row, chan) samples, zero-UVW rows), chosen at random (fixed by seed)."""
    rng = np.random.default_rng(seed + 7919)
    nan_samples = rng.uniform(size=(n_rows, n_chan)) < shape.nan_fraction
    cross = np.flatnonzero(np.tile(ant1 != ant2, n_rows // len(ant1)))
    zero_rows = np.sort(rng.choice(cross, size=min(shape.zero_uvw_rows, len(cross)), replace=False))
    nan_samples[zero_rows] = True
    return nan_samples, zero_rows


def _put_rows(ms, column: str, rows: np.ndarray, values: np.ndarray) -> None:
    """Put values into rows that come in runs of consecutive row numbers (one run per time)."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for chunk_rows, chunk in zip(np.split(rows, breaks), np.split(values, breaks), strict=True):
        ms.putcol(column, chunk, startrow=int(chunk_rows[0]), nrow=len(chunk_rows))


def _visibilities(uvw: np.ndarray, freqs: np.ndarray, sources, centre, *, raw_askap: bool,
                  pol_axis_deg: float) -> np.ndarray:
    """Model visibilities (rows, chans, 4) of point sources for UVW in metres."""
    vis = np.zeros((len(uvw), len(freqs), 4), dtype=np.complex128)
    wavenumber = 2.0 * np.pi * freqs / SPEED_OF_LIGHT  # rad per metre
    for src in sources:
        l_, m_, n_ = lmn(centre, src.ra_deg, src.dec_deg)
        path_m = uvw[:, 0] * l_ + uvw[:, 1] * m_ + uvw[:, 2] * (n_ - 1.0)
        phasor = np.exp(1j * np.outer(path_m, wavenumber))
        stokes = src.stokes(freqs)
        corr = askap_correlations(stokes, pol_axis_deg) if raw_askap else wsclean_correlations(stokes)
        vis += phasor[:, :, None] * corr[None, :, :]
    return vis


def _write_antennas(ct, path: Path, itrf: np.ndarray, mount: str) -> None:
    n_ant = len(itrf)
    with ct.table(str(path / "ANTENNA"), readonly=False, ack=False) as t:
        t.addrows(n_ant)
        t.putcol("NAME", [f"ak{i + 1:02d}" for i in range(n_ant)])
        t.putcol("STATION", ["ASKAP"] * n_ant)
        t.putcol("TYPE", ["GROUND-BASED"] * n_ant)
        t.putcol("MOUNT", [mount] * n_ant)
        t.putcol("POSITION", itrf)
        t.putcol("OFFSET", np.zeros((n_ant, 3)))
        t.putcol("DISH_DIAMETER", np.full(n_ant, 12.0))
        t.putcol("FLAG_ROW", np.zeros(n_ant, dtype=bool))


def _write_spectral_windows(ct, path: Path, freqs: np.ndarray, chan_width, ref_first: bool = False) -> None:
    n_spw, n_chan = freqs.shape
    width = chan_width if chan_width is not None else DEFAULT_CHAN_WIDTH_HZ
    with ct.table(str(path / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        t.addrows(n_spw)
        for spw in range(n_spw):
            t.putcell("CHAN_FREQ", spw, freqs[spw])
            for col in ("CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION"):
                t.putcell(col, spw, np.full(n_chan, width))
            t.putcell("NUM_CHAN", spw, n_chan)
            t.putcell("REF_FREQUENCY", spw, float(freqs[spw][0] if ref_first else freqs[spw].mean()))
            t.putcell("TOTAL_BANDWIDTH", spw, float(n_chan * width))
            t.putcell("MEAS_FREQ_REF", spw, 5)  # TOPO
            t.putcell("NAME", spw, f"SPW{spw}")
            t.putcell("NET_SIDEBAND", spw, 1)
            t.putcell("FREQ_GROUP", spw, 0)
            t.putcell("FREQ_GROUP_NAME", spw, "")
            t.putcell("IF_CONV_CHAIN", spw, 0)
            t.putcell("FLAG_ROW", spw, False)
    with ct.table(str(path / "DATA_DESCRIPTION"), readonly=False, ack=False) as t:
        t.addrows(n_spw)
        t.putcol("SPECTRAL_WINDOW_ID", np.arange(n_spw, dtype=np.int32))
        t.putcol("POLARIZATION_ID", np.zeros(n_spw, dtype=np.int32))
        t.putcol("FLAG_ROW", np.zeros(n_spw, dtype=bool))


def _write_polarization(ct, path: Path) -> None:
    with ct.table(str(path / "POLARIZATION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("NUM_CORR", 0, 4)
        t.putcell("CORR_TYPE", 0, np.array(CORR_TYPES_LINEAR, dtype=np.int32))
        t.putcell("CORR_PRODUCT", 0, np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.int32))
        t.putcell("FLAG_ROW", 0, False)


def _write_field(ct, path: Path, direction_deg, name: str, time: float) -> None:
    direction = np.radians(np.array([[direction_deg]], dtype=float))  # (row, poly, 2)
    with ct.table(str(path / "FIELD"), readonly=False, ack=False) as t:
        t.addrows(1)
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            t.putcol(col, direction)
        t.putcol("NAME", [name])
        t.putcol("CODE", [""])
        t.putcol("NUM_POLY", np.zeros(1, dtype=np.int32))
        t.putcol("SOURCE_ID", np.full(1, -1, dtype=np.int32))
        t.putcol("TIME", np.array([time]))
        t.putcol("FLAG_ROW", np.zeros(1, dtype=bool))


def _write_feed(ct, path: Path, *, n_ant, feed_id, raw_askap, beam_offset_deg, footprint_deg, angles,
                time_mid, span, beam_id, fixed, keep_instrument_angle) -> None:
    """One FEED row per antenna and beam (antenna-major). ASKAP's BEAM_OFFSET holds (-dra, ddec).
    `angles`: the receptor angle, or one per FEED_ID. `fixed`: as FixMS leaves it (offsets zero, RECEPTOR_ANGLE
    45 deg, the instrument's angle in INSTRUMENT_RECEPTOR_ANGLE unless keep_instrument_angle is false)."""
    if raw_askap:
        n_feeds = max(feed_id + 1, len(footprint_deg) if footprint_deg is not None else 0)
        offsets = [footprint_deg[f] if footprint_deg is not None and f < len(footprint_deg)
                   else beam_offset_deg for f in range(n_feeds)]
        offsets[feed_id] = beam_offset_deg
    else:
        n_feeds = 1
        offsets = [(0.0, 0.0)]
    n_rows = n_ant * n_feeds
    beam_offset = np.zeros((n_rows, 2, 2))
    for row in range(n_rows):
        dra, ddec = offsets[row % n_feeds]
        beam_offset[row, :, 0] = -math.radians(dra)
        beam_offset[row, :, 1] = math.radians(ddec)
    per_feed = np.array([angles[f] if len(angles) > 1 else angles[0] for f in range(n_feeds)])
    if len(angles) > 1 and len(angles) < n_feeds:
        raise InputError(f"receptor_angle_deg gives {len(angles)} angles for {n_feeds} beams")
    receptor = np.radians(np.repeat(np.tile(per_feed, n_ant)[:, None], 2, axis=1))
    if fixed:
        beam_offset[:] = 0.0
    with ct.table(str(path / "FEED"), readonly=False, ack=False) as t:
        t.addrows(n_rows)
        t.putcol("ANTENNA_ID", np.repeat(np.arange(n_ant), n_feeds).astype(np.int32))
        t.putcol("FEED_ID", np.tile(np.arange(n_feeds), n_ant).astype(np.int32))
        t.putcol("BEAM_ID", np.full(n_rows, beam_id, dtype=np.int32))
        t.putcol("SPECTRAL_WINDOW_ID", np.full(n_rows, -1, dtype=np.int32))
        t.putcol("TIME", np.full(n_rows, time_mid))
        t.putcol("INTERVAL", np.full(n_rows, span))
        t.putcol("NUM_RECEPTORS", np.full(n_rows, 2, dtype=np.int32))
        t.putcol("BEAM_OFFSET", beam_offset)
        t.putcol("POLARIZATION_TYPE", np.array([["X", "Y"]] * n_rows))
        t.putcol("POL_RESPONSE", np.tile(np.eye(2, dtype=np.complex64), (n_rows, 1, 1)))
        t.putcol("POSITION", np.zeros((n_rows, 3)))
        if fixed:
            if keep_instrument_angle:
                t.addcols(ct.makecoldesc(IRA, t.getcoldesc("RECEPTOR_ANGLE")))
                t.putcol(IRA, receptor)
            receptor = np.full_like(receptor, math.radians(45.0))
        t.putcol("RECEPTOR_ANGLE", receptor)


def _write_pointing(ct, path: Path, n_ant: int, times, interval: float, boresight) -> None:
    """POINTING as ASKAP fills it: one row per antenna and integration, DIRECTION = TARGET = boresight."""
    n_rows = n_ant * len(times)
    direction = np.radians(np.array(boresight, dtype=float))[None, None, :]
    with ct.table(str(path / "POINTING"), readonly=False, ack=False) as t:
        t.addrows(n_rows)
        t.putcol("ANTENNA_ID", np.tile(np.arange(n_ant), len(times)).astype(np.int32))
        t.putcol("TIME", np.repeat(times, n_ant))
        t.putcol("INTERVAL", np.full(n_rows, interval))
        t.putcol("NAME", [""] * n_rows)
        t.putcol("NUM_POLY", np.zeros(n_rows, dtype=np.int32))
        t.putcol("TIME_ORIGIN", np.repeat(times, n_ant))
        t.putcol("DIRECTION", np.repeat(direction, n_rows, axis=0))
        t.putcol("TARGET", np.repeat(direction, n_rows, axis=0))
        t.putcol("TRACKING", np.ones(n_rows, dtype=bool))


def _write_history(ct, path: Path, n_rows: int, time: float) -> None:
    """HISTORY rows like those the ASKAP pipeline leaves (one per processing step)."""
    with ct.table(str(path / "HISTORY"), readonly=False, ack=False) as t:
        t.addrows(n_rows)
        t.putcol("TIME", np.full(n_rows, time))
        t.putcol("OBSERVATION_ID", np.zeros(n_rows, dtype=np.int32))
        t.putcol("MESSAGE", [f"askap pipeline step {i}" for i in range(n_rows)])
        t.putcol("PRIORITY", ["INFO"] * n_rows)
        t.putcol("ORIGIN", ["mpimager.testing.synth"] * n_rows)
        t.putcol("OBJECT_ID", np.zeros(n_rows, dtype=np.int32))
        t.putcol("APPLICATION", ["cimager"] * n_rows)
        for row in range(n_rows):
            t.putcell("CLI_COMMAND", row, np.array(["synth"]))
            t.putcell("APP_PARAMS", row, np.array([""]))


def _write_observation(ct, path: Path, telescope: str, start: float, end: float) -> None:
    with ct.table(str(path / "OBSERVATION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TELESCOPE_NAME", 0, telescope)
        t.putcell("TIME_RANGE", 0, np.array([start, end]))
        t.putcell("OBSERVER", 0, "mpimager.testing.synth")
        t.putcell("PROJECT", 0, "SYNTH")
        t.putcell("SCHEDULE_TYPE", 0, "")
        t.putcell("RELEASE_DATE", 0, 0.0)
        t.putcell("FLAG_ROW", 0, False)


def _write_small_tables(ct, path: Path) -> None:
    with ct.table(str(path / "STATE"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("OBS_MODE", 0, "OBSERVE_TARGET#ON_SOURCE")
        t.putcell("SIG", 0, True)
        t.putcell("REF", 0, False)
        t.putcell("CAL", 0, 0.0)
        t.putcell("LOAD", 0, 0.0)
        t.putcell("SUB_SCAN", 0, 0)
        t.putcell("FLAG_ROW", 0, False)
    with ct.table(str(path / "PROCESSOR"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TYPE", 0, "CORRELATOR")
        t.putcell("SUB_TYPE", 0, "")
        t.putcell("TYPE_ID", 0, 0)
        t.putcell("MODE_ID", 0, 0)
        t.putcell("FLAG_ROW", 0, False)


def make_askap_observation(
    directory,
    n_beams: int = 6,
    *,
    sbid: int = 8593,
    field: str = DEFAULT_FIELD,
    sources: Iterable[Source] | None = None,
    boresight_deg: Sequence[float] | None = None,
    pitch_deg: float = 0.9,
    **ms_kwargs,
) -> list[Path]:
    """Write the raw beams of one ASKAP scheduling block `sbid` on `field` into `directory`, one MS per beam,
    `n_beams` of them.

    Beams sit on a square grid of `pitch_deg` around `boresight_deg` (default: the centre the
    RACS field name implies). Each beam holds `sources` if given (no primary beam), else
    default_sources() around its own centre, so each beam's image shows its own sources.
    Extra keywords `ms_kwargs` go to make_ms (n_ant, n_times, n_chan, noise_jy, ...); noise seeds differ per
    beam.
    """
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    if boresight_deg is None:
        boresight_deg = field_centre_from_name(field) or DEFAULT_PHASE_CENTRE_DEG
    real_feed = ms_kwargs.get("feed_layout") == "askap"  # every footprint beam in FEED: the 36-beam footprint
    footprint = askap_footprint(max(n_beams, ASKAP_FOOTPRINT_BEAMS) if real_feed else n_beams, pitch_deg)
    base_seed = int(ms_kwargs.pop("seed", 0))
    fixed_sources = None if sources is None else tuple(sources)
    paths = []
    for beam, offset in enumerate(footprint[:n_beams]):
        centre = beam_centre(boresight_deg, offset)
        beam_sources = fixed_sources if fixed_sources is not None else default_sources(centre)
        paths.append(make_ms(
            directory / beam_ms_name(sbid, field, beam),
            sources=beam_sources, phase_centre_deg=boresight_deg, raw_askap=True, beam=beam,
            beam_offset_deg=offset, footprint_deg=footprint, field_name=field,
            seed=base_seed + beam, **ms_kwargs,
        ))
    return paths
