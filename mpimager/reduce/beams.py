"""Beam algebra on plain float64 numbers: reading a beam, the common beam, the convolving beam.

Pure functions. A beam is FWHM major/minor in arcsec and a position angle in degrees east of north.
Gaussian beams compose by adding covariance matrices, so "A encloses B" (B can be convolved up to A) is
"cov(A) - cov(B) is positive semi-definite", checked with a relative tolerance `RTOL` suited to beams
that went through float32 (FITS BEAMS tables, headers written by float32 code): about 16 float32 ulps.

The common beam takes the cheap exact cases first (one distinct beam; the largest beam enclosing all of
them) and only then radio-beam's minimum-volume enclosing ellipse solver (imported lazily: it costs a
second of start-up). Beams that are zero, absent or not finite never reach the solver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: relative tolerance on beam variances for "encloses" and "equal" (float32 header values)
RTOL = 2e-6
_VAR_PER_FWHM2 = 1.0 / (8.0 * math.log(2.0))
_DEG = 3600.0


@dataclass(frozen=True)
class Beam:
    """An elliptical Gaussian beam: FWHM axes in arcsec, position angle in degrees east of north."""

    major: float
    minor: float
    pa: float

    def __str__(self) -> str:
        return f'{self.major:.3f}"x{self.minor:.3f}" pa {self.pa:.1f}deg'

    @property
    def area(self) -> float:
        """Proportional to the beam solid angle (major * minor, arcsec^2)."""
        return self.major * self.minor

    def cov(self) -> tuple[float, float, float]:
        """Covariance (arcsec^2) in (east, north): (c_ee, c_en, c_nn)."""
        va = self.major ** 2 * _VAR_PER_FWHM2
        vb = self.minor ** 2 * _VAR_PER_FWHM2
        t = math.radians(self.pa)
        s, c = math.sin(t), math.cos(t)
        return (va * s * s + vb * c * c, (va - vb) * s * c, va * c * c + vb * s * s)

    @classmethod
    def from_cov(cls, cov: tuple[float, float, float]) -> Beam:
        """The beam of a covariance `cov` (arcsec^2: c_ee, c_en, c_nn), position angle folded into (-90, 90]."""
        ee, en, nn = cov
        half_trace = 0.5 * (ee + nn)
        root = math.hypot(0.5 * (nn - ee), en)
        lmax, lmin = half_trace + root, max(half_trace - root, 0.0)
        pa = 0.5 * math.degrees(math.atan2(2.0 * en, nn - ee)) if root > 0 else 0.0
        return cls(math.sqrt(lmax / _VAR_PER_FWHM2), math.sqrt(lmin / _VAR_PER_FWHM2), _wrap_pa(pa))

    def header_values(self) -> dict[str, float]:
        """BMAJ, BMIN (degrees) and BPA (degrees) as FITS headers hold them."""
        return {"BMAJ": self.major / _DEG, "BMIN": self.minor / _DEG, "BPA": self.pa}


def _wrap_pa(pa: float) -> float:
    """Position angle folded into (-90, 90]."""
    pa = math.fmod(pa, 180.0)
    if pa <= -90.0:
        pa += 180.0
    elif pa > 90.0:
        pa -= 180.0
    return pa


#: arcsec: a beam axis below this is no beam but a marker (RACS-tools writes float32's minimum, 1.2e-38,
#: for a "NaN PSF"; in degrees in a header that is 4e-35 arcsec). VLBI beams are ~1e-3 arcsec.
TINY = 1e-6


def beam_from_values(bmaj: float, bmin: float, bpa: float) -> tuple[Beam | None, str | None]:
    """A beam from `bmaj`, `bmin` (arcsec) and `bpa` (deg), or (None, why it is no beam: zero, tiny, not
    finite)."""
    if bmaj == 0.0:
        return None, "zero beam (BMAJ=0: no PSF fit; WSClean writes this when niter = 0 or its fit failed)"
    if not all(math.isfinite(v) for v in (bmaj, bmin, bpa)):
        return None, "beam is not finite (NaN PSF)"
    if bmaj < 0 or bmin <= 0:
        return None, f"beam axes not positive (BMAJ={bmaj:g}\", BMIN={bmin:g}\")"
    if min(bmaj, bmin) < TINY:
        return None, f"tiny beam (BMAJ={bmaj:.3g}\", BMIN={bmin:.3g}\": the float32-minimum 'NaN PSF' marker)"
    if bmin > bmaj:
        bmaj, bmin, bpa = bmin, bmaj, bpa + 90.0
    return Beam(bmaj, bmin, _wrap_pa(bpa)), None


def beam_from_header(header: Mapping) -> tuple[Beam | None, str | None]:
    """The restoring beam of an image header (BMAJ, BMIN in degrees), or (None, why it is unusable)."""
    if "BMAJ" not in header:
        return None, "no beam in header (BMAJ absent)"
    try:
        bmaj = float(header["BMAJ"])
        bmin = float(header.get("BMIN", float("nan")))
        bpa = float(header.get("BPA", 0.0))
    except (TypeError, ValueError):
        return None, "beam keywords are not numbers"
    if bmaj != 0.0 and "BMIN" not in header:
        return None, "no BMIN in header"
    return beam_from_values(bmaj * _DEG, bmin * _DEG, bpa)


def _min_eig(a: tuple[float, float, float]) -> float:
    ee, en, nn = a
    return 0.5 * (ee + nn) - math.hypot(0.5 * (nn - ee), en)


def _diff(big: Beam, small: Beam) -> tuple[float, float, float]:
    b, s = big.cov(), small.cov()
    return (b[0] - s[0], b[1] - s[1], b[2] - s[2])


def _tol(beam: Beam, rtol: float) -> float:
    return rtol * beam.major ** 2 * _VAR_PER_FWHM2


def encloses(big: Beam, small: Beam, rtol: float = RTOL) -> bool:
    """True when `small` can be convolved up to `big` (to within `rtol` of big's major variance)."""
    return _min_eig(_diff(big, small)) >= -_tol(big, rtol)


def same_beam(a: Beam, b: Beam, rtol: float = RTOL) -> bool:
    """Beams `a` and `b` equal to within the relative tolerance `rtol` (each encloses the other)."""
    return encloses(a, b, rtol) and encloses(b, a, rtol)


def convolving_beam(target: Beam, beam: Beam, rtol: float = RTOL) -> Beam | None:
    """The Gaussian that takes `beam` to `target`; a zero beam when they are equal; None if impossible.

    Variances that are negative within the tolerance `rtol` (of target's major variance: float32 round-off)
    are clipped to zero.
    """
    d = _diff(target, beam)
    tol = _tol(target, rtol)
    if _min_eig(d) < -tol:
        return None
    ee, en, nn = d
    half_trace = 0.5 * (ee + nn)
    root = math.hypot(0.5 * (nn - ee), en)
    if half_trace + root <= tol:
        return Beam(0.0, 0.0, 0.0)
    lmin = half_trace - root
    if lmin < 0:  # clip: rebuild the covariance with the small eigenvalue at zero
        pa = 0.5 * math.atan2(2.0 * en, nn - ee) if root > 0 else 0.0
        return Beam(math.sqrt((half_trace + root) / _VAR_PER_FWHM2), 0.0, _wrap_pa(math.degrees(pa)))
    return Beam.from_cov(d)


def round_up_beam(beam: Beam, step: float) -> Beam:
    """The axes of `beam` rounded up to a multiple of `step` arcsec (values already on the grid stay put)."""
    if step <= 0:
        return beam

    def up(x):
        n = math.ceil(x / step - 1e-6)
        return round(n * step, 10)

    major, minor = up(beam.major), up(beam.minor)
    return Beam(major, min(minor, major), beam.pa)


def distinct(beams: Sequence[Beam], rtol: float = RTOL) -> list[Beam]:
    """The beams with duplicates (equal within `rtol`) removed, in first-seen order."""
    out: list[Beam] = []
    for b in beams:
        if not any(same_beam(b, o, rtol) for o in out):
            out.append(b)
    return out


def common_beam(beams: Sequence[Beam], round_up: float = 0.0, rtol: float = RTOL,
                log=None) -> Beam:
    """The smallest beam every beam in `beams` can be convolved to, then rounded up to `round_up` arcsec.

    rtol: tolerance of "encloses". log: where the solver's notes go (None: nowhere).
    Raises ValueError on an empty sequence (the caller names the product).
    """
    if not beams:
        raise ValueError("no beams")
    unique = distinct(beams, rtol)
    largest = max(unique, key=lambda b: (b.area, b.major))
    if all(encloses(largest, b, rtol) for b in unique):
        result = largest
    else:
        result = _solve_mve(unique, rtol, log)
    rounded = round_up_beam(result, round_up)
    return rounded if all(encloses(rounded, b, rtol) for b in unique) else result


def _solve_mve(unique: Sequence[Beam], rtol: float, log) -> Beam:
    """radio-beam's minimum-volume enclosing ellipse; a safe circle if it fails or falls short."""
    import astropy.units as u
    import numpy as np
    from radio_beam import Beams
    from radio_beam.utils import BeamError

    beams = Beams(major=np.array([b.major for b in unique], dtype=np.float64) * u.arcsec,
                  minor=np.array([b.minor for b in unique], dtype=np.float64) * u.arcsec,
                  pa=np.array([b.pa for b in unique], dtype=np.float64) * u.deg)
    for kwargs in ({}, {"epsilon": 1e-3, "max_epsilon": 1e-2, "nsamps": 400}):
        try:
            cb = beams.common_beam(tolerance=1e-4, **{"nsamps": 200, **kwargs})
        except (BeamError, ValueError) as exc:
            if log:
                log(f"radio-beam common beam failed ({exc}); retrying")
            continue
        result = Beam(float(cb.major.to_value(u.arcsec)), float(cb.minor.to_value(u.arcsec)),
                      _wrap_pa(float(cb.pa.to_value(u.deg))))
        if all(encloses(result, b, rtol) for b in unique):
            return result
    circle = max(b.major for b in unique)
    if log:
        log(f'radio-beam found no enclosing beam; using a circular {circle:.3f}" beam')
    return Beam(circle, circle, 0.0)
