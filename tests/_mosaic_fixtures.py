"""Beam cubes for the mosaic tests: what the gather step writes for each beam of a field, made directly.

Each cube is RA---SIN/DEC--SIN at its beam centre, FREQ, STOKES, with one restoring beam in the header (or a
BEAMS table), Gaussian noise of a known sigma per beam, and point sources drawn through the restoring beam and
attenuated by the beam's Gaussian primary beam (drawn here from first principles). The linmos weights file
(1/sigma^2 per channel) sits beside it, named as the gather step names it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class Sky:
    ra: float
    dec: float
    flux: float


def gaussian_pb(theta_deg, freq, dish=12.0, factor=1.09):
    fwhm = math.degrees(factor * 299792458.0 / freq / dish)
    return np.exp(-4 * math.log(2) * (np.asarray(theta_deg) / fwhm) ** 2)


def angular_distance(ra1, dec1, ra2, dec2):
    ra1, dec1, ra2, dec2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    c = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def cube_header(centre, shape, cell_asec, freqs, beam=(60.0, 60.0, 0.0), stokes=1, beams_table=False):
    ny, nx = shape
    h = fits.Header()
    h["NAXIS"] = 4
    h["NAXIS1"], h["NAXIS2"], h["NAXIS3"], h["NAXIS4"] = nx, ny, len(freqs), 1
    cards = [("RA---SIN", nx // 2 + 1, centre[0], -cell_asec / 3600, "deg"),
             ("DEC--SIN", ny // 2 + 1, centre[1], cell_asec / 3600, "deg"),
             ("FREQ", 1.0, freqs[0], (freqs[1] - freqs[0]) if len(freqs) > 1 else 1e6, "Hz"),
             ("STOKES", 1.0, float(stokes), 1.0, "")]
    for i, (ctype, crpix, crval, cdelt, cunit) in enumerate(cards, start=1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CUNIT{i}"] = \
            ctype, float(crpix), crval, cdelt, cunit
    h["BUNIT"] = "JY/BEAM"
    h["TELESCOP"] = "ASKAP"
    if beams_table:
        h["CASAMBM"] = True
    else:
        h["BMAJ"], h["BMIN"], h["BPA"] = beam[0] / 3600, beam[1] / 3600, beam[2]
    return h


def render(header, sky: Sequence[Sky], freq, beam, centre, pb=True) -> np.ndarray:
    """Point sources through a circular-ish restoring beam, attenuated by the primary beam at `freq`."""
    wcs = WCS(header).celestial
    ny, nx = header["NAXIS2"], header["NAXIS1"]
    cell = abs(header["CDELT1"]) * 3600
    sig = beam[0] / cell / FWHM_PER_SIGMA
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.zeros((ny, nx))
    for s in sky:
        x, y = wcs.world_to_pixel_values(s.ra, s.dec)
        att = gaussian_pb(angular_distance(s.ra, s.dec, *centre), freq) if pb else 1.0
        img += s.flux * att * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sig * sig))
    return img


def correlated_noise(rng, shape, fwhm_px: float, sigma: float) -> np.ndarray:
    """Gaussian noise of rms `sigma` correlated over a beam of `fwhm_px` pixels (as an image's noise is)."""
    from scipy.ndimage import gaussian_filter

    white = gaussian_filter(rng.standard_normal(shape), max(fwhm_px, 0.5) / FWHM_PER_SIGMA, mode="wrap")
    return sigma * white / white.std()


def write_beam_cube(path: Path, centre, sky, *, shape=(128, 128), cell_asec=30.0, freqs=(800e6, 900e6),
                    beam=(120.0, 120.0, 0.0), sigma=0.01, seed=0, weights=True, beams=None,
                    weight_values=None) -> Path:
    """A beam's PSF-matched cube (noise `sigma`) with its weights file; `beams`: per-channel beams (BEAMS table)."""
    rng = np.random.default_rng(seed)
    h = cube_header(centre, shape, cell_asec, list(freqs), beam, beams_table=beams is not None)
    data = np.empty((len(freqs), *shape), dtype=np.float32)
    for c, f in enumerate(freqs):
        b = beams[c] if beams is not None and beams[c][0] > 0 else beam
        data[c] = render(h, sky, f, b, centre) + correlated_noise(rng, shape, b[0] / cell_asec, sigma)
    hdus = [fits.PrimaryHDU(data[None], header=h)]
    if beams is not None:
        cols = [fits.Column("BMAJ", "1E", "arcsec", array=[b[0] for b in beams]),
                fits.Column("BMIN", "1E", "arcsec", array=[b[1] for b in beams]),
                fits.Column("BPA", "1E", "deg", array=[b[2] for b in beams]),
                fits.Column("CHAN", "1J", array=np.arange(len(beams))),
                fits.Column("POL", "1J", array=[0] * len(beams))]
        hdus.append(fits.BinTableHDU.from_columns(cols, name="BEAMS"))
    path = Path(path)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    if weights:
        values = weight_values if weight_values is not None else [1 / sigma ** 2] * len(freqs)
        stem = path.name[:-5]
        path.with_name(f"{stem}.weights.txt").write_text(
            "#Channel Weight\n" + "".join(f"{i} {w:.10g}\n" for i, w in enumerate(values)))
    return path


def square_field(directory: Path, n_side=2, pitch_deg=0.9, centre=(206.75, -37.0), sky=(), **kw) -> list[Path]:
    """n_side x n_side beams on a square grid (RA offsets as great-circle arcs), beamNN-I-restored.cube.fits."""
    from mpimager.testing.synth import askap_footprint, beam_centre

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for b, offset in enumerate(askap_footprint(n_side * n_side, pitch_deg)):
        c = beam_centre(centre, offset)
        paths.append(write_beam_cube(directory / f"beam{b:02d}.I-I-restored.cube.fits", c, sky, seed=b, **kw))
    return paths
