"""The weighted linear combination: reproject a beam's planes, add them in, divide at the end.

For the beams i reaching a pixel (primary-beam response P_i >= cutoff there, finite data), with noise
weights w_i = 1/sigma_i^2 of the channel:

    mosaic = sum_i w_i P_i I_i / sum_i w_i P_i^2          weight (sensitivity) = sum_i w_i P_i^2

so the mosaic's noise is 1/sqrt(weight) and a source has its true flux wherever a beam reaches it.
Pixels no beam reaches are NaN. Accumulators are float64 (one numerator and one weight plane per channel
being made); the reprojection is reproject's `reproject_interp`, broadcast over a block of channels so
the coordinate transform of a beam is computed once per block.
"""

from __future__ import annotations

import numpy as np

#: a reprojected pixel is valid when at least this fraction of its interpolation weight fell on valid data
VALID = 0.999


def reproject_planes(planes: np.ndarray, wcs_in, wcs_out, shape_out: tuple[int, int], order: str) -> np.ndarray:
    """`planes` (k, ny, nx) on `wcs_in` reprojected onto `wcs_out` (`shape_out`) with reproject's
    interpolation `order` ('bilinear', 'bicubic', ...): (k, *shape_out) float32.

    NaN pixels (blanked edges, holes) stay NaN without spreading through the spline: they are interpolated
    as zeros and the pixels whose interpolation leant on them are blanked (a bilinear map of validity).
    """
    from reproject import reproject_interp

    k = planes.shape[0]
    bad = ~np.isfinite(planes)
    holes = bool(bad.any())
    data = np.where(bad, np.float32(0), planes) if holes else planes
    out = reproject_interp((data, wcs_in), wcs_out, shape_out=(k, *shape_out), order=order, return_footprint=False,
                           roundtrip_coords=False, output_array=np.empty((k, *shape_out), dtype=np.float32))
    if holes:
        valid = reproject_interp(((~bad).astype(np.float32), wcs_in), wcs_out, shape_out=(k, *shape_out),
                                 order="bilinear", return_footprint=False, roundtrip_coords=False,
                                 output_array=np.empty((k, *shape_out), dtype=np.float32))
        out[~(valid >= VALID)] = np.nan
    return out


def accumulate(num: np.ndarray, den: np.ndarray, data: np.ndarray, pb: np.ndarray, weight: float,
               cutoff: float) -> None:
    """Add one beam's plane in place: num += w P I and den += w P^2 where P >= `cutoff` and I is finite.

    num, den: float64 views (ny, nx) of the accumulators on the beam's box; data, pb: its reprojected plane
    and primary-beam response there; weight: its 1/sigma^2 in this channel."""
    use = (pb >= cutoff) & np.isfinite(data)
    wp = np.where(use, weight * pb.astype(np.float64), 0.0)
    num += wp * np.where(use, data, 0.0)
    den += wp * pb


def finish(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """The mosaic plane num / den as float32, NaN where no beam reached (den == 0)."""
    out = np.full(num.shape, np.nan, dtype=np.float32)
    np.divide(num, den, out=out, where=den > 0, casting="unsafe")
    return out
