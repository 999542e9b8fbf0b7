"""Shared test helpers for synthetic MeasurementSets: make them, image them with the real WSClean,
and measure point sources in the FITS images.

Import the fixtures into a test module to use them:
    from _synth_fixtures import raw_observation, wsclean_image, source_peak  # noqa: F401
Session fixtures are shared read-only: copy an MS (copy_ms) before changing it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from mpimager.testing import synth

# Tiny images resolve the default sources: the 8-antenna layout gives a ~13 arcsec beam, and the
# default sources sit on whole multiples of 3 arcsec from the data phase centre.
IMAGE_SIZE = 256
IMAGE_SCALE_ASEC = 3.0


def wsclean_image(ms, prefix, *extra, size=IMAGE_SIZE, scale_asec=IMAGE_SCALE_ASEC, temp_dir=None):
    """Run the real wsclean (niter 1000, mgain 0.8, MS left untouched); return the prefix Path."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    argv = ["wsclean", "-size", str(size), str(size), "-scale", f"{scale_asec}asec",
            "-niter", "1000", "-mgain", "0.8", "-no-update-model-required",
            "-temp-dir", str(temp_dir or prefix.parent), "-name", str(prefix), *map(str, extra)]
    argv += [str(m) for m in (ms if isinstance(ms, (list, tuple)) else [ms])]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"wsclean failed ({result.returncode}): {result.stdout[-3000:]}{result.stderr[-2000:]}")
    return prefix


@dataclass(frozen=True)
class Peak:
    """The brightest (by |value|) pixel near where a source should be."""

    value: float  # Jy/beam at that pixel
    offset_pix: float  # distance from the expected pixel
    in_image: bool
    freq_hz: float


def source_peak(fits_path, ra_deg, dec_deg, *, box=3) -> Peak:
    """The signed value of the largest-|value| pixel within `box` pixels of (ra, dec)."""
    with fits.open(fits_path) as hdul:
        header = hdul[0].header
        data = np.asarray(hdul[0].data).squeeze()
        wcs = WCS(header).celestial
    freq = float(header.get("CRVAL3", 0.0))
    x, y = (float(v) for v in wcs.world_to_pixel_values(ra_deg, dec_deg))
    xi, yi = int(round(x)), int(round(y))
    if not (box <= xi < data.shape[1] - box and box <= yi < data.shape[0] - box):
        return Peak(float("nan"), float("inf"), False, freq)
    cut = data[yi - box: yi + box + 1, xi - box: xi + box + 1]
    j, i = np.unravel_index(np.argmax(np.abs(cut)), cut.shape)
    return Peak(float(cut[j, i]), float(np.hypot(xi - box + i - x, yi - box + j - y)), True, freq)


def brightest_pixel_world(fits_path) -> tuple[float, float, float]:
    """(ra, dec, value) of the brightest pixel of an image."""
    with fits.open(fits_path) as hdul:
        data = np.asarray(hdul[0].data).squeeze()
        wcs = WCS(hdul[0].header).celestial
    j, i = np.unravel_index(np.argmax(data), data.shape)
    ra, dec = wcs.pixel_to_world_values(i, j)
    return float(ra), float(dec), float(data[j, i])


def flux_tolerance(expected: float, stokes_i: float) -> float:
    """5% of the expected flux; for a zero-flux Stokes parameter, 1% of Stokes I."""
    return 0.05 * abs(expected) if expected != 0 else 0.01 * abs(stokes_i)


def copy_ms(src, dst) -> Path:
    """A private copy of an MS (session fixtures are shared: never change them in place)."""
    shutil.copytree(src, dst)
    return Path(dst)


@pytest.fixture(scope="session")
def raw_observation(tmp_path_factory):
    """Four raw ASKAP beams of one scheduling block (tiny defaults), shared read-only."""
    return synth.make_askap_observation(tmp_path_factory.mktemp("raw_obs"), n_beams=4)


@pytest.fixture(scope="session")
def plain_ms(tmp_path_factory):
    """A tiny plain MS with the default sources, shared read-only."""
    return synth.make_ms(tmp_path_factory.mktemp("plain") / "plain.ms")
