"""PSF matching of one plane: the analytic Gaussian taper in the uv plane and a NaN-aware convolution.

Pure numpy/scipy on arrays. The convolving beam (arcsec, PA east of north) is turned into a pixel
covariance with the image's pixel matrix (so any pixel scale, sign of CDELT1 or PC rotation is right),
its Fourier transform exp(-2 pi^2 k^T C k) multiplies the plane's float32 2-D real FFT (threads via
scipy.fft workers), and the result is scaled by the beam-area ratio so Jy/beam stays Jy/beam.

NaN pixels: a plain FFT convolution would have to zero them, which pulls their neighbours low (a pixel
next to a hole loses the weight of the hole). Here the valid-pixel mask is convolved too and the result
divided by it (normalised convolution): a flat field stays flat up to the edge of a hole; blanked pixels
stay blanked; a pixel with almost no valid weight around it (< `min_weight`) is blanked.
The convolution is circular, like RACS-tools': sources within a kernel width of one edge leak into
the opposite edge.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from mpimager.reduce.beams import Beam

_VAR_PER_FWHM2 = 1.0 / (8.0 * math.log(2.0))
_ARCSEC_PER_DEG = 3600.0


def pixel_covariance(beam: Beam, matrix) -> tuple[float, float, float]:
    """Covariance (pixel^2: c_xx, c_xy, c_yy) of a Gaussian beam on a grid with this pixel matrix.

    `matrix` maps pixel offsets (axis 1, axis 2) to intermediate world offsets (east, north) in degrees.
    """
    (a, b), (c, d) = matrix
    det = a * d - b * c
    inv = ((d / det, -b / det), (-c / det, a / det))  # deg -> pixel
    s = 1.0 / _ARCSEC_PER_DEG
    ee, en, nn = (v * s * s for v in beam.cov())
    # C_pix = inv @ C_sky @ inv.T
    m00 = inv[0][0] * ee + inv[0][1] * en
    m01 = inv[0][0] * en + inv[0][1] * nn
    m10 = inv[1][0] * ee + inv[1][1] * en
    m11 = inv[1][0] * en + inv[1][1] * nn
    cxx = m00 * inv[0][0] + m01 * inv[0][1]
    cxy = m00 * inv[1][0] + m01 * inv[1][1]
    cyy = m10 * inv[1][0] + m11 * inv[1][1]
    return cxx, cxy, cyy


def _exponents(cov) -> tuple[float, float, float]:
    cxx, cxy, cyy = cov
    two_pi2 = 2.0 * math.pi ** 2
    return -two_pi2 * cxx, -2.0 * two_pi2 * cxy, -two_pi2 * cyy


def uv_taper(shape: tuple[int, int], cov: tuple[float, float, float], rows: slice = slice(None)) -> np.ndarray:
    """The Fourier transform of a unit-sum Gaussian of pixel covariance `cov` on rfft2's grid (float32)."""
    ny, nx = shape
    ax, axy, ay = _exponents(cov)
    ky = np.fft.fftfreq(ny).astype(np.float32)[rows]
    kx = np.fft.rfftfreq(nx).astype(np.float32)
    arg = np.multiply.outer(ky * np.float32(axy), kx)
    arg += (np.float32(ax) * kx * kx)[None, :]
    arg += (np.float32(ay) * ky * ky)[:, None]
    np.exp(arg, out=arg)
    return arg


def apply_taper(spec: np.ndarray, cov: tuple[float, float, float], shape: tuple[int, int], block: int = 256) -> None:
    """spec *= uv_taper(shape, cov), a block of rows at a time (no full-size taper in memory)."""
    for r0 in range(0, shape[0], block):
        rows = slice(r0, min(r0 + block, shape[0]))
        spec[rows] *= uv_taper(shape, cov, rows)


def beam_scale(target: Beam, beam: Beam, bunit: str) -> float:
    """Factor that keeps the brightness unit right after convolution: the beam-area ratio for Jy/beam."""
    if bunit and "BEAM" not in bunit.upper():
        return 1.0
    return target.area / beam.area


def fft_convolve(plane: np.ndarray, cov: tuple[float, float, float], workers: int = 1) -> np.ndarray:
    """Circular convolution of a finite float32 plane by the Gaussian `cov`, in place (returns `plane`).

    Two 1-D passes each way (real rows, complex columns): faster here than rfft2/irfft2, and the
    inverse writes straight back into `plane`, so a plane costs about twice its size in memory.
    """
    nx = plane.shape[1]
    spec = scipy.fft.rfft(plane, axis=1, workers=workers)
    spec = scipy.fft.fft(spec, axis=0, overwrite_x=True, workers=workers)
    apply_taper(spec, cov, plane.shape)
    spec = scipy.fft.ifft(spec, axis=0, overwrite_x=True, workers=workers)
    np.fft.irfft(spec, n=nx, axis=1, out=plane)
    return plane


def empty_plane(plane: np.ndarray) -> str | None:
    """Why a plane holds no data (every pixel NaN; every finite pixel zero: a fully flagged channel), or None.

    Two reductions that skip NaN (fmax/fmin), no temporary the size of the plane."""
    hi = np.fmax.reduce(plane, axis=None)
    if np.isnan(hi):
        return "all pixels NaN"
    if hi == 0 and np.fmin.reduce(plane, axis=None) == 0:
        return "all pixels zero (a fully flagged channel)"
    return None


def convolve_plane(plane: np.ndarray, cov: tuple[float, float, float] | None, scale: float, workers: int = 1,
                   min_weight: float = 1e-3) -> np.ndarray:
    """Convolve a float32 plane in place by the Gaussian of pixel covariance `cov`, scale it; NaN-aware.

    `cov` None means the identity (only the scale is applied). Returns `plane`.
    """
    bad = ~np.isfinite(plane)
    has_bad = bool(bad.any())
    if has_bad and bad.all():
        plane[:] = np.nan
        return plane
    if cov is None:
        if scale != 1.0:
            plane *= np.float32(scale)
        if has_bad:
            plane[bad] = np.nan
        return plane
    if has_bad:
        plane[bad] = 0.0
    fft_convolve(plane, cov, workers)
    if has_bad:
        weight = fft_convolve((~bad).astype(np.float32), cov, workers)
        bad |= weight < min_weight
        np.maximum(weight, np.float32(min_weight), out=weight)
        plane /= weight
        del weight
        plane[bad] = np.nan
    if scale != 1.0:
        plane *= np.float32(scale)
    return plane
