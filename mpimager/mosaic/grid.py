"""The field grid: one SIN projection that every beam of a field is reprojected onto.

Pure geometry on numbers (astropy WCS only to map a few thousand boundary points). The grid is centred on
the given centre or on the mean of the beam centres (unit vectors averaged), has the inputs' pixel size,
north up, and extends over the union of every beam's footprint: the part of its image where its primary
beam reaches the cutoff at the lowest frequency (the widest beam). Each beam's footprint is kept as a box
of grid pixels, so a beam is only ever reprojected onto the pixels it can reach.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpimager.inputs.sky import separation_deg
from mpimager.mosaic.inputs import BeamCube

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open) in grid pixels


def unit_vector(ra_deg, dec_deg) -> np.ndarray:
    """Unit vectors (..., 3) of the directions `ra_deg`, `dec_deg` (degrees, arrays broadcast together)."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def mean_direction(centres: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The normalised mean of the unit vectors of `centres` (RA, Dec degrees), as (RA, Dec)."""
    v = unit_vector(*np.array(centres, dtype=float).T).sum(axis=0)
    v /= np.linalg.norm(v)
    return float(math.degrees(math.atan2(v[1], v[0])) % 360.0), float(math.degrees(math.asin(v[2])))


def offset_direction(centre: tuple[float, float], radius_deg: float, bearings_rad: np.ndarray):
    """(RA, Dec) arrays at angular distance `radius_deg` from `centre` along the bearings `bearings_rad`
    (radians, E of N)."""
    ra0, dec0 = math.radians(centre[0]), math.radians(centre[1])
    r = math.radians(radius_deg)
    dec = np.arcsin(math.sin(dec0) * math.cos(r) + math.cos(dec0) * math.sin(r) * np.cos(bearings_rad))
    ra = ra0 + np.arctan2(np.sin(bearings_rad) * math.sin(r) * math.cos(dec0),
                          math.cos(r) - math.sin(dec0) * np.sin(dec))
    return np.degrees(ra) % 360.0, np.degrees(dec)


@dataclass(frozen=True)
class FieldGrid:
    """RA---SIN / DEC--SIN at `centre`, pixel `cell` degrees, `shape` (ny, nx), reference pixel `crpix` (1-based)."""

    centre: tuple[float, float]
    cell: float
    shape: tuple[int, int]
    crpix: tuple[float, float]

    def cards(self, box: Box | None = None) -> dict[str, object]:
        """The celestial header cards (of the sub-grid `box` when given)."""
        y0, x0 = (box[0], box[2]) if box else (0, 0)
        ny, nx = (box[1] - box[0], box[3] - box[2]) if box else self.shape
        return {"NAXIS1": nx, "NAXIS2": ny, "CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN",
                "CRPIX1": self.crpix[0] - x0, "CRPIX2": self.crpix[1] - y0, "CRVAL1": self.centre[0],
                "CRVAL2": self.centre[1], "CDELT1": -self.cell, "CDELT2": self.cell, "CUNIT1": "deg",
                "CUNIT2": "deg", "RADESYS": "FK5", "EQUINOX": 2000.0}

    def wcs(self, box: Box | None = None):
        """astropy WCS of the grid (or of the sub-grid `box`)."""
        from astropy.io import fits
        from astropy.wcs import WCS

        h = fits.Header()
        h["NAXIS"] = 2
        for k, v in self.cards(box).items():
            h[k] = v
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return WCS(h)

    def separation_from(self, centre: tuple[float, float], box: Box) -> np.ndarray:
        """Angular distance (deg, float64 (ny, nx)) of every pixel of `box` from `centre` (exact SIN inverse)."""
        y0, y1, x0, x1 = box
        l_ = np.radians(-self.cell * (np.arange(x0, x1) + 1 - self.crpix[0]))[None, :]
        m_ = np.radians(self.cell * (np.arange(y0, y1) + 1 - self.crpix[1]))[:, None]
        n_ = np.sqrt(np.clip(1.0 - l_ * l_ - m_ * m_, 0.0, 1.0))
        a0, d0 = math.radians(self.centre[0]), math.radians(self.centre[1])
        east = np.array([-math.sin(a0), math.cos(a0), 0.0])
        north = np.array([-math.sin(d0) * math.cos(a0), -math.sin(d0) * math.sin(a0), math.cos(d0)])
        axis = unit_vector(self.centre[0], self.centre[1])
        b = unit_vector(*centre)
        cos_t = l_ * float(east @ b) + m_ * float(north @ b) + n_ * float(axis @ b)
        # chord length from the dot product, then the angle: accurate down to milliarcseconds
        chord = np.sqrt(np.clip(2.0 - 2.0 * cos_t, 0.0, 4.0))
        return np.degrees(2.0 * np.arcsin(chord / 2.0))


def _boundary_pixels(shape: tuple[int, int], n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([t * nx - 0.5, np.full(n, nx - 0.5), (1 - t) * nx - 0.5, np.full(n, -0.5)])
    ys = np.concatenate([np.full(n, -0.5), t * ny - 0.5, np.full(n, ny - 0.5), (1 - t) * ny - 0.5])
    return xs, ys


def footprint_points(cube: BeamCube, radius_deg: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) of points bounding the part of `cube`'s image within `radius_deg` of its centre.

    The intersection of the image (a convex quadrilateral on the sky) and the cutoff circle is convex, so
    its extreme points lie on the image edge inside the circle or on the circle inside the image."""
    wcs = cube.wcs()
    xs, ys = _boundary_pixels(cube.shape)
    ra, dec = wcs.pixel_to_world_values(xs, ys)
    if radius_deg is None:
        return np.asarray(ra), np.asarray(dec)
    inside = separation_deg(ra, dec, *cube.centre) <= radius_deg
    cra, cdec = offset_direction(cube.centre, radius_deg, np.linspace(0, 2 * math.pi, 720, endpoint=False))
    px, py = wcs.world_to_pixel_values(cra, cdec)
    ny, nx = cube.shape
    on_image = (px >= -0.5) & (px <= nx - 0.5) & (py >= -0.5) & (py <= ny - 0.5)
    return np.concatenate([ra[inside], cra[on_image]]), np.concatenate([dec[inside], cdec[on_image]])


def field_grid(cubes: Sequence[BeamCube], radii: Sequence[float | None],
               centre: tuple[float, float] | None = None) -> tuple[FieldGrid, list[Box]]:
    """The grid covering every cube of `cubes` down to its cutoff radius (`radii`, deg; None: the whole
    image), centred on `centre` (default: the mean beam centre); and each cube's box on it."""
    centre = centre if centre is not None else mean_direction([c.centre for c in cubes])
    cell = min(min(c.cell) for c in cubes)
    probe = FieldGrid(centre, cell, (1, 1), (1.0, 1.0))
    wcs = probe.wcs()
    spans = []
    for cube, radius in zip(cubes, radii, strict=True):
        ra, dec = footprint_points(cube, radius)
        px, py = wcs.world_to_pixel_values(ra, dec)
        spans.append((math.floor(np.min(py)) - 2, math.ceil(np.max(py)) + 3,
                      math.floor(np.min(px)) - 2, math.ceil(np.max(px)) + 3))
    y0, x0 = min(s[0] for s in spans), min(s[2] for s in spans)
    y1, x1 = max(s[1] for s in spans), max(s[3] for s in spans)
    grid = FieldGrid(centre, cell, (y1 - y0, x1 - x0), (1.0 - x0, 1.0 - y0))
    boxes = [(s[0] - y0, s[1] - y0, s[2] - x0, s[3] - x0) for s in spans]
    return grid, boxes
