"""A synthetic ASKAP field: raw beams of one scheduling block whose visibilities see the sky through each
beam's own primary beam. For the mosaic's end-to-end tests, the demo and benchmarks.

Built on `synth`'s primitives: each beam is a raw ASKAP MS (`synth.make_ms(raw_askap=True)`: FIELD at the
boresight, data phased at the beam centre, instrument-frame correlations, noise), then every source is added
to DATA with its Stokes fluxes multiplied, channel by channel, by that beam's circular Gaussian primary beam
exp(-4 ln2 theta^2 / FWHM^2), FWHM = factor x lambda / D, theta the distance of the source from the beam
centre (the beam's direction, not the boresight). The model is written here from first principles, apart
from mpimager's own primary-beam code, so that tests compare the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mpimager.testing import synth


def gaussian_response(theta_deg, freq_hz, dish_m: float = 12.0, factor: float = 1.09):
    """A circular Gaussian primary beam's response at `theta_deg` from its centre, at `freq_hz`: FWHM =
    `factor` x lambda / `dish_m` (arrays broadcast together)."""
    fwhm = np.degrees(factor * synth.SPEED_OF_LIGHT / np.asarray(freq_hz, dtype=float) / dish_m)
    return np.exp(-4.0 * math.log(2.0) * (np.asarray(theta_deg, dtype=float) / fwhm) ** 2)


def distance_deg(a: Sequence[float], b: Sequence[float]) -> float:
    """Angular distance (deg) between the (RA, Dec) directions `a` and `b`, in degrees."""
    ra1, dec1, ra2, dec2 = (math.radians(v) for v in (*a, *b))
    h = math.sin((dec2 - dec1) / 2) ** 2 + math.cos(dec1) * math.cos(dec2) * math.sin((ra2 - ra1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h))))


def beam_centres(n_beams: int, pitch_deg: float, boresight_deg: Sequence[float]) -> list[tuple[float, float]]:
    """The directions of the `n_beams` beams of `synth.askap_footprint` (`pitch_deg` apart) around
    `boresight_deg`."""
    return [synth.beam_centre(boresight_deg, off) for off in synth.askap_footprint(n_beams, pitch_deg)]


def _add_sources(ms: Path, sources: Sequence[synth.Source], centre: tuple[float, float], pol_axis_deg: float,
                 dish_m: float, factor: float) -> None:
    """DATA += the visibilities of `sources` attenuated by the primary beam centred on `centre`."""
    from casacore import tables as ct

    with ct.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as t:
        freqs = t.getcol("CHAN_FREQ")
    if freqs.shape[0] != 1:
        raise ValueError("the field synthesiser writes one spectral window per beam")
    freqs = freqs[0]
    wavenumber = 2.0 * np.pi * freqs / synth.SPEED_OF_LIGHT
    with ct.table(str(ms), readonly=False, ack=False) as t:
        uvw = t.getcol("UVW")
        data = t.getcol("DATA").astype(np.complex128)
        for src in sources:
            l_, m_, n_ = synth.lmn(centre, src.ra_deg, src.dec_deg)
            phasor = np.exp(1j * np.outer(uvw[:, 0] * l_ + uvw[:, 1] * m_ + uvw[:, 2] * (n_ - 1.0), wavenumber))
            gain = gaussian_response(distance_deg(centre, (src.ra_deg, src.dec_deg)), freqs, dish_m, factor)
            corr = synth.askap_correlations(src.stokes(freqs) * gain[:, None], pol_axis_deg)
            data += phasor[:, :, None] * corr[None, :, :]
        t.putcol("DATA", data.astype(np.complex64))


def make_askap_field(directory, sources: Sequence[synth.Source], n_beams: int = 4, *, pitch_deg: float = 0.9,
                     boresight_deg: Sequence[float] | None = None, field: str = synth.DEFAULT_FIELD,
                     sbid: int = 8593, dish_m: float = 12.0, fwhm_factor: float = 1.09,
                     receptor_angle_deg: float = synth.DEFAULT_RECEPTOR_ANGLE_DEG, seed: int = 0,
                     **ms_kwargs) -> list[Path]:
    """Write the raw beams of one ASKAP field into `directory`, each seeing `sources` through its own
    Gaussian primary beam (dish `dish_m`, FWHM = `fwhm_factor` lambda / D); one MS per beam, named as ASKAP
    names them (scheduling block `sbid`, `field`). Beams sit on `synth.askap_footprint(n_beams, pitch_deg)`
    around `boresight_deg` (default: the centre the RACS field name implies), with the receptor angle
    `receptor_angle_deg`. Extra keywords `ms_kwargs` go to `synth.make_ms` (n_ant, n_times, n_chan,
    noise_jy, max_radius_m, ...); noise seeds differ per beam (`seed` + beam)."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    if boresight_deg is None:
        boresight_deg = synth.field_centre_from_name(field) or synth.DEFAULT_PHASE_CENTRE_DEG
    footprint = synth.askap_footprint(n_beams, pitch_deg)
    paths = []
    for beam, offset in enumerate(footprint):
        path = synth.make_ms(directory / synth.beam_ms_name(sbid, field, beam), sources=(),
                             phase_centre_deg=boresight_deg, raw_askap=True, beam=beam, beam_offset_deg=offset,
                             footprint_deg=footprint, field_name=field, receptor_angle_deg=receptor_angle_deg,
                             seed=seed + beam, **ms_kwargs)
        _add_sources(path, sources, synth.beam_centre(boresight_deg, offset), 45.0 - receptor_angle_deg, dish_m,
                     fwhm_factor)
        paths.append(path)
    return paths
