"""Synthetic WSClean-like channel images for the reduce tests and benchmark.

Each channel image is a 4-axis FITS file (RA---SIN, DEC--SIN, FREQ, STOKES) holding point sources
rendered analytically through that channel's restoring beam (so a source's peak in Jy/beam is its flux
in Jy), with the beam in BMAJ/BMIN/BPA (degrees) as WSClean writes it. The beam is drawn here from
first principles (PA east of north, east towards -x because CDELT1 < 0), independently of
mpimager.reduce.kernel, so the tests check the kernel against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
STOKES = {"I": 1, "Q": 2, "U": 3, "V": 4}


@dataclass(frozen=True)
class Source:
    x: int  # pixel column (0-based)
    y: int  # pixel row
    flux: float  # Jy


def beam_cov_pixels(bmaj: float, bmin: float, bpa: float, cell: float) -> np.ndarray:
    """2x2 covariance (pixels^2, order x, y) of a beam (arcsec, arcsec, deg) on a grid with CDELT1=-cell."""
    sa, sb = bmaj / cell / FWHM_PER_SIGMA, bmin / cell / FWHM_PER_SIGMA
    t = math.radians(bpa)
    u = np.array([-math.sin(t), math.cos(t)])  # major axis: towards north-east is up and left
    v = np.array([math.cos(t), math.sin(t)])
    return sa * sa * np.outer(u, u) + sb * sb * np.outer(v, v)


def render(sources: Sequence[Source], beam: tuple[float, float, float], shape: tuple[int, int],
           cell: float, background: float = 0.0) -> np.ndarray:
    """Sources through a beam: peak value = flux (Jy/beam); float64, windowed to +-8 sigma."""
    ny, nx = shape
    img = np.full(shape, background, dtype=np.float64)
    cinv = np.linalg.inv(beam_cov_pixels(*beam, cell))
    half = int(math.ceil(8 * beam[0] / cell / FWHM_PER_SIGMA)) + 1
    dy, dx = np.mgrid[-half:half + 1, -half:half + 1]
    q = cinv[0, 0] * dx * dx + 2 * cinv[0, 1] * dx * dy + cinv[1, 1] * dy * dy
    stamp = np.exp(-0.5 * q)
    for s in sources:
        y0, y1, x0, x1 = s.y - half, s.y + half + 1, s.x - half, s.x + half + 1
        sy0, sx0 = max(0, -y0), max(0, -x0)
        sy1, sx1 = stamp.shape[0] - max(0, y1 - ny), stamp.shape[1] - max(0, x1 - nx)
        img[max(y0, 0):min(y1, ny), max(x0, 0):min(x1, nx)] += s.flux * stamp[sy0:sy1, sx0:sx1]
    return img


def channel_header(shape, cell, freq, width, beam, stokes="I", crval=(187.5, -45.0)):
    from astropy.io import fits

    ny, nx = shape
    h = fits.Header()
    h["BSCALE"] = 1.0
    h["BZERO"] = 0.0
    h["BUNIT"] = ("JY/BEAM", "Units are in Jansky per beam")
    if beam == "absent":
        pass
    elif beam is None or beam == 0:
        h["BMAJ"], h["BMIN"], h["BPA"] = 0.0, 0.0, 0.0
    else:
        h["BMAJ"], h["BMIN"], h["BPA"] = beam[0] / 3600.0, beam[1] / 3600.0, beam[2]
    h["EQUINOX"] = 2000.0
    h["BTYPE"] = "Intensity"
    h["TELESCOP"] = "ASKAP"
    h["ORIGIN"] = "WSClean"
    for i, (ctype, crpix, cv, cdelt, cunit) in enumerate([
            ("RA---SIN", nx // 2 + 1, crval[0], -cell / 3600.0, "deg"),
            ("DEC--SIN", ny // 2 + 1, crval[1], cell / 3600.0, "deg"),
            ("FREQ", 1.0, freq, width, "Hz"),
            ("STOKES", 1.0, float(STOKES[stokes]), 1.0, "")], start=1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CUNIT{i}"] = \
            ctype, float(crpix), cv, cdelt, cunit
    h["SPECSYS"] = "TOPOCENT"
    h["WSCVERSI"] = "3.1.0"
    return h


def write_channel(path: Path, data: np.ndarray, header) -> Path:
    from astropy.io import fits

    hdu = fits.PrimaryHDU(data.astype(np.float32)[None, None], header=header)
    hdu.writeto(path, overwrite=True)
    return path


@dataclass(frozen=True)
class ChannelSet:
    paths: list[Path]  # channel images in channel order (per Stokes: I first)
    freqs: list[float]
    beams: list  # per channel: (bmaj, bmin, bpa) or None (zero) or "absent"
    sources: list[Source]
    cell: float
    shape: tuple[int, int]


def varying_beams(n: int, big=25.0, small=15.0, ratio=0.8, pa0=-40.0, pa1=70.0) -> list:
    """Beams shrinking with frequency from `big` to `small` arcsec, elongated, PA turning."""
    out = []
    for i in range(n):
        f = i / max(1, n - 1)
        bmaj = big + (small - big) * f
        out.append((bmaj, bmaj * (ratio + 0.1 * math.sin(3 * f)), pa0 + (pa1 - pa0) * f))
    return out


def point_sources(shape, n: int, seed: int = 1, margin: int = 40, fmin=1e-3, fmax=1.0) -> list[Source]:
    """`n` sources on a jittered grid (well apart, away from the edges), log-uniform fluxes."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    side = int(math.ceil(math.sqrt(n)))
    xs = np.linspace(margin, nx - margin - 1, side).astype(int)
    ys = np.linspace(margin, ny - margin - 1, side).astype(int)
    out = []
    for k in range(n):
        x, y = xs[k % side], ys[k // side]
        flux = float(np.exp(rng.uniform(math.log(fmin), math.log(fmax))))
        out.append(Source(int(x), int(y), flux))
    return out


def make_channels(directory: Path, prefix: str = "obs", nchan: int = 8, shape=(256, 256), cell: float = 2.5,
                  f0: float = 800e6, df: float = 8e6, beams: list | None = None, sources=None,
                  stokes: Sequence[str] = ("I",), kinds: Sequence[str] = ("image",), skip: Sequence[int] = (),
                  background: float = 0.0, holes: dict | None = None, pol_in_name: bool | None = None,
                  crval=(187.5, -45.0), flux_scale: dict | None = None) -> ChannelSet:
    """WSClean-named channel images P-000N[-S]-KIND.fits; beams per channel (None: BMAJ=0; 'absent').

    `skip`: channel indices not written (gaps). `holes`: {channel: (y0, y1, x0, x1)} set to NaN.
    `flux_scale`: {stokes: factor} applied to the sources (e.g. Q = 0.3 I). Residuals are
    low-level copies (0.01 x the image) so they carry structure too.
    """
    directory.mkdir(parents=True, exist_ok=True)
    beams = beams if beams is not None else varying_beams(nchan)
    sources = sources if sources is not None else point_sources(shape, 16)
    pol_in_name = (len(stokes) > 1 or stokes[0] != "I") if pol_in_name is None else pol_in_name
    paths, freqs = [], []
    for s in stokes:
        scale = (flux_scale or {}).get(s, 1.0)
        srcs = [Source(q.x, q.y, q.flux * scale) for q in sources]
        for c in range(nchan):
            if c in skip:
                continue
            freq = f0 + c * df
            beam = beams[c]
            draw = beam if isinstance(beam, tuple) else (20.0, 16.0, 10.0)  # a failed fit still has data
            data = render(srcs, draw, shape, cell, background)
            if holes and c in holes:
                y0, y1, x0, x1 = holes[c]
                data[y0:y1, x0:x1] = np.nan
            for kind in kinds:
                name = f"{prefix}-{c:04d}-{s}-{kind}.fits" if pol_in_name else f"{prefix}-{c:04d}-{kind}.fits"
                plane = data if kind == "image" else 0.01 * data
                write_channel(directory / name, plane, channel_header(shape, cell, freq, df, beam, s, crval))
                if kind == kinds[0]:
                    paths.append(directory / name)
                    freqs.append(freq)
    return ChannelSet(paths, freqs, beams, list(sources), cell, shape)


TINY = float(np.finfo(np.float32).tiny)  # RACS-tools' "NaN PSF" marker


def beams_hdu(beams: Sequence, npol: int = 1):
    """A CASA BEAMS table (arcsec, arcsec, deg) with one row per (channel, pol); None -> the tiny marker."""
    from astropy.io import fits

    rows = [(c, p, b) for p in range(npol) for c, b in enumerate(beams)]
    val = [(b if isinstance(b, tuple) else (TINY, TINY, TINY)) for _, _, b in rows]
    cols = [fits.Column("BMAJ", "1E", "arcsec", array=np.array([v[0] for v in val], np.float32)),
            fits.Column("BMIN", "1E", "arcsec", array=np.array([v[1] for v in val], np.float32)),
            fits.Column("BPA", "1E", "deg", array=np.array([v[2] for v in val], np.float32)),
            fits.Column("CHAN", "1J", array=np.array([r[0] for r in rows], np.int32)),
            fits.Column("POL", "1J", array=np.array([r[1] for r in rows], np.int32))]
    hdu = fits.BinTableHDU.from_columns(cols, name="BEAMS")
    hdu.header["NCHAN"], hdu.header["NPOL"] = len(beams), npol
    return hdu


def cube_from_channels(channels: Sequence[Path], path: Path, order: str = "freq-stokes", beams: str = "table",
                       header_beam: tuple | None = None) -> Path:
    """Stack channel images (one Stokes or several, frequency-sorted as given) into a cube written by astropy.

    order: 'freq-stokes' (RA DEC FREQ STOKES), 'stokes-freq' (RA DEC STOKES FREQ) or 'freq' (no STOKES
    axis). beams: 'table' (CASAMBM + BEAMS), 'header' (`header_beam`, else the first channel's), 'none'.
    """
    from astropy.io import fits

    heads = [fits.getheader(p) for p in channels]
    data = [fits.getdata(p)[0, 0] for p in channels]
    freqs = sorted({h["CRVAL3"] for h in heads})
    pols = list(dict.fromkeys(h["CRVAL4"] for h in heads))
    cube = np.full((len(pols), len(freqs)) + data[0].shape, np.nan, np.float32)
    chan_beams: list = [None] * len(freqs)
    for h, d in zip(heads, data):
        c, s = freqs.index(h["CRVAL3"]), pols.index(h["CRVAL4"])
        cube[s, c] = d
        if h.get("BMAJ"):
            chan_beams[c] = (h["BMAJ"] * 3600, h["BMIN"] * 3600, h["BPA"])
    h = heads[0].copy()
    for k in ("BMAJ", "BMIN", "BPA"):
        h.remove(k, ignore_missing=True)
    h["CRVAL3"], h["CDELT3"] = freqs[0], (freqs[1] - freqs[0]) if len(freqs) > 1 else h["CDELT3"]
    h["CRVAL4"] = pols[0]
    if order == "stokes-freq":
        cube = np.swapaxes(cube, 0, 1)
        for key in ("CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT"):
            h[f"{key}3"], h[f"{key}4"] = h[f"{key}4"], h[f"{key}3"]
    elif order == "freq":
        assert len(pols) == 1
        cube = cube[0]
        for key in ("CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT"):
            h.remove(f"{key}4")
    hdus = [fits.PrimaryHDU(cube, header=h)]
    hdus[0].header.remove("NAXIS4", ignore_missing=True) if order == "freq" else None
    if beams == "table":
        hdus[0].header["CASAMBM"] = True
        hdus.append(beams_hdu(chan_beams, len(pols)))
    elif beams == "header":
        b = header_beam or chan_beams[0]
        hdus[0].header["BMAJ"], hdus[0].header["BMIN"], hdus[0].header["BPA"] = b[0] / 3600, b[1] / 3600, b[2]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
