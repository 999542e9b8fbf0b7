"""Beam algebra on plain float64 numbers: reading a beam, the common beam, the convolving beam.

Pure functions. A beam is FWHM major/minor in arcsec and a position angle in degrees east of north.
Gaussian beams compose by adding covariance matrices, so "A encloses B" (B can be convolved up to A) is
"cov(A) - cov(B) is positive semi-definite", checked with a relative tolerance `RTOL` suited to beams
that went through float32 (FITS BEAMS tables, headers written by float32 code): about 16 float32 ulps.

The common beam takes the cheap exact cases first (one distinct beam; the largest beam enclosing all of
them) and only then solves for the minimum-area enclosing ellipse (`_solve_mve`: exact, a few
milliseconds; radio-beam's approximate solver cost 0.2 s a call here, and its import 0.75 s of start-up).
Beams that are zero, absent or not finite never reach the solver.
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


def common_beam(beams: Sequence[Beam], round_up: float = 0.0, rtol: float = RTOL) -> Beam:
    """The smallest beam every beam in `beams` can be convolved to, then rounded up to `round_up` arcsec.

    rtol: tolerance of "encloses".
    Raises ValueError on an empty sequence (the caller names the product).
    """
    if not beams:
        raise ValueError("no beams")
    unique = distinct(beams, rtol)
    largest = max(unique, key=lambda b: (b.area, b.major))
    if all(encloses(largest, b, rtol) for b in unique):
        result = largest
    else:
        result = _solve_mve(unique)
    rounded = round_up_beam(result, round_up)
    return rounded if all(encloses(rounded, b, rtol) for b in unique) else result


#: the common beam's solver stops when its duality gap in log(area) is below this (a relative area of 1e-10)
GAP = 1e-10
#: Newton steps per barrier weight at most (about 4 are needed)
NEWTON_STEPS = 50


def _solve_mve(unique: Sequence[Beam]) -> Beam:
    """The smallest-area beam enclosing `unique` (two or more beams, none enclosing all the others).

    In precision matrices P = C^-1 the problem is convex: maximise log det P subject to P <= P_i for every
    beam i (Loewner order). It has three unknowns, so a log-barrier Newton method solves it to a duality
    gap of GAP, from the strictly feasible P = I/2 (covariances scaled so that the largest variance is 1).
    Every iterate is strictly feasible, so the answer encloses every beam.
    """
    import numpy as np

    unit = max(b.major for b in unique) ** 2 * _VAR_PER_FWHM2
    ee, en, nn = (np.array([b.cov() for b in unique], dtype=np.float64) / unit).T
    det = ee * nn - en * en
    q = np.stack([nn / det, -en / det, ee / det])  # each beam's P_i as (a, b, c): [[a, b], [b, c]]
    quad = np.array([[0.0, 0.0, 1.0], [0.0, -2.0, 0.0], [1.0, 0.0, 0.0]])  # Hessian of a*c - b^2

    def terms(x: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """(P_i - P, det P, det (P_i - P)) at x = (a, b, c)."""
        d = q - x[:, None]
        return d, x[0] * x[2] - x[1] ** 2, d[0] * d[2] - d[1] ** 2

    def barrier(x: np.ndarray, t: float) -> float:
        """-t log det P - sum log det (P_i - P); inf outside the feasible set."""
        d, g, h = terms(x)
        if x[0] <= 0 or g <= 0 or np.any(d[0] <= 0) or np.any(h <= 0):
            return math.inf
        return float(-t * math.log(g) - np.log(h).sum())

    x, t = np.array([0.5, 0.0, 0.5]), 1.0
    while 2.0 * len(unique) / t > GAP:  # 2 per 2x2 constraint: the barrier's bound on the gap
        here = barrier(x, t)  # x is strictly feasible: finite
        for _ in range(NEWTON_STEPS):
            d, g, h = terms(x)
            dg = np.array([x[2], -2.0 * x[1], x[0]])
            dh = np.stack([-d[2], 2.0 * d[1], -d[0]]) / h  # gradients of log det (P_i - P)
            grad = -t * dg / g - dh.sum(axis=1)
            hess = -t * (quad / g - np.outer(dg, dg) / g ** 2) - quad * (1.0 / h).sum() + dh @ dh.T
            step = np.linalg.solve(hess, -grad)
            decrement = float(-grad @ step)  # Newton decrement squared
            if decrement < 1e-8:
                break
            s = 1.0
            while (there := barrier(x + s * step, t)) > here - 0.25 * s * decrement and s > 1e-12:
                s *= 0.5
            if s <= 1e-12:
                break  # float64 rounding: no step decreases the barrier any more
            x, here = x + s * step, there
        t *= 16.0
    a, b, c = x
    g = a * c - b * b
    return Beam.from_cov((unit * c / g, -unit * b / g, unit * a / g))
