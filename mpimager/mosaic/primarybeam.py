"""Primary beams: the response of each beam on the field grid, at each channel's frequency.

Two models, one interface (`response(grid, box, freqs) -> (k, ny, nx)` float32 on the grid pixels of
`box`, and `radius(level, freqs)`, the largest distance from the centre where the response reaches
`level`, None when not known):

- `GaussianBeam`: exp(-4 ln2 theta^2 / FWHM^2) with FWHM = factor x lambda / D (radians) and theta the
  angular distance from the beam centre, the image reference direction of the beam's cube (the phase
  centre after FixMS), never the array boresight. Presets in `options.TELESCOPES` (ASKAP: D = 12 m,
  factor 1.09, as linmos' Gaussian model).
- `ImageBeam`: a user's primary-beam image or cube (holography, a model), with its own WCS; its planes are
  reprojected onto the grid (bilinear) and interpolated linearly in frequency (the nearest plane beyond
  the ends; a single plane serves every frequency).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpimager.errors import InputError
from mpimager.mosaic.grid import Box, FieldGrid

SPEED_OF_LIGHT = 299792458.0
_FOUR_LN2 = 4.0 * math.log(2.0)


@dataclass(frozen=True)
class GaussianBeam:
    """A circular Gaussian primary beam centred on `centre` (RA, Dec deg)."""

    centre: tuple[float, float]
    dish_m: float
    factor: float

    def fwhm_deg(self, freq: float) -> float:
        """FWHM (degrees) at `freq` Hz."""
        return math.degrees(self.factor * SPEED_OF_LIGHT / freq / self.dish_m)

    def at(self, theta_deg, freq: float):
        """Response at angular distances `theta_deg` from the centre at `freq` Hz."""
        return np.exp(-_FOUR_LN2 * (np.asarray(theta_deg) / self.fwhm_deg(freq)) ** 2)

    def radius(self, level: float, freqs: Sequence[float]) -> float | None:
        """Largest distance (deg) from the centre where the response is `level`, over `freqs`."""
        return self.fwhm_deg(min(freqs)) * math.sqrt(math.log(1.0 / level) / _FOUR_LN2)

    def response(self, grid: FieldGrid, box: Box, freqs: Sequence[float]) -> np.ndarray:
        """(len(freqs), ny, nx) float32 response at `freqs` (Hz) on the pixels of `box` of `grid`."""
        theta2 = grid.separation_from(self.centre, box) ** 2
        out = np.empty((len(freqs), *theta2.shape), dtype=np.float32)
        for k, f in enumerate(freqs):
            np.exp(-_FOUR_LN2 / self.fwhm_deg(f) ** 2 * theta2, out=out[k], casting="same_kind")
        return out


@dataclass(frozen=True)
class ImageBeam:
    """A primary beam given as a FITS image or cube at `path` (a FREQ axis, or one plane for all)."""

    path: Path
    freqs: tuple[float, ...]

    @classmethod
    def open(cls, path: Path) -> ImageBeam:
        """Check the primary-beam file at `path` and read its frequencies."""
        from mpimager.mosaic.inputs import read_cube_axes

        path = Path(path).absolute()
        freqs = read_cube_axes(path)
        return cls(path, freqs)

    def radius(self, level: float, freqs: Sequence[float]) -> float | None:
        """None: the image itself bounds where it can be used (`level` and `freqs` do not matter)."""
        return None  # the image itself bounds where it can be used

    def _planes(self, indices: Sequence[int]) -> tuple[np.ndarray, object]:
        import warnings

        from astropy.io import fits
        from astropy.wcs import WCS

        with fits.open(self.path, memmap=True) as hdul:
            data = hdul[0].data
            planes = np.array([np.asarray(data).reshape(-1, *data.shape[-2:])[i] for i in indices], dtype=np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs = WCS(hdul[0].header).celestial
        return planes, wcs

    def response(self, grid: FieldGrid, box: Box, freqs: Sequence[float]) -> np.ndarray:
        """(len(freqs), ny, nx) float32 response at `freqs` (Hz) on the pixels of `box` of `grid`: the image's
        planes reprojected (bilinear) and interpolated linearly in frequency; NaN (off the image) as 0."""
        from reproject import reproject_interp

        pairs = [_bracket(self.freqs, f) for f in freqs]
        needed = sorted({i for (i, j, _) in pairs for i in (i, j)})
        planes, wcs = self._planes(needed)
        shape = (box[1] - box[0], box[3] - box[2])
        on_grid = reproject_interp((planes, wcs), grid.wcs(box), shape_out=(len(needed), *shape), order="bilinear",
                                   return_footprint=False, roundtrip_coords=False)
        at = {n: k for k, n in enumerate(needed)}
        out = np.empty((len(freqs), *shape), dtype=np.float32)
        for k, (i, j, t) in enumerate(pairs):
            out[k] = (1.0 - t) * on_grid[at[i]] + t * on_grid[at[j]]
        np.nan_to_num(out, copy=False, nan=0.0)
        return out


def _bracket(freqs: Sequence[float], f: float) -> tuple[int, int, float]:
    """(i, j, t): `f` = (1-t) freqs[i] + t freqs[j], clamped to the ends (freqs ascending or descending)."""
    order = sorted(range(len(freqs)), key=lambda i: freqs[i])
    fs = [freqs[i] for i in order]
    if len(fs) == 1 or f <= fs[0]:
        return order[0], order[0], 0.0
    if f >= fs[-1]:
        return order[-1], order[-1], 0.0
    k = next(k for k in range(1, len(fs)) if fs[k] >= f)
    t = (f - fs[k - 1]) / (fs[k] - fs[k - 1])
    return order[k - 1], order[k], t


def primary_beams(cubes, options, files: Sequence[Path] | None = None) -> list:
    """One primary beam per cube of `cubes`: the user's `files` (or `options.primary_beams` with $beam$),
    else the Gaussian of `options` at each cube's image reference direction."""
    if files is None and options.primary_beams:
        files = [Path(options.primary_beams.replace("$beam$", f"{c.beam_id:02d}")) for c in cubes]
    if files is not None:
        if len(files) != len(cubes):
            raise InputError(f"mosaic: {len(files)} primary-beam files for {len(cubes)} cubes")
        return [ImageBeam.open(f) for f in files]
    dish, factor = options.dish_and_factor
    return [GaussianBeam(c.centre, dish, factor) for c in cubes]
