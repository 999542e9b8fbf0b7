"""The mosaic's quick-look: the MFS image's quick-look with the beam centres drawn on it.

A mosaic MFS image (`NAME.mosaic.mfs.fits`: mpimager.planner.products.is_mosaic_mfs) is drawn as every image
is (`quicklook.image_quicklook`); then its BEAMCENTRES table is read and each beam centre is marked (a cross
and the beam number) where the image quick-look puts that sky position (`ImageLook.world_to_png`), on the
same PNG.
"""

from __future__ import annotations


def beam_centres(fits_path: str) -> list[tuple[int, float, float]]:
    """(beam, RA deg, Dec deg) of the BEAMCENTRES table of the mosaic file `fits_path` (empty without one)."""
    from astropy.io import fits

    with fits.open(fits_path, memmap=True) as hdul:
        if "BEAMCENTRES" not in hdul:
            return []
        t = hdul["BEAMCENTRES"].data
        return [(int(b), float(r), float(d)) for b, r, d in zip(t["BEAM"], t["RA"], t["DEC"], strict=True)]


def mark_beam_centres(look, fits_path: str) -> int:
    """Draw the beam centres of mosaic `fits_path` onto its image quick-look `look` (a quicklook.ImageLook,
    its PNG rewritten in place); the number of centres drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    centres = beam_centres(fits_path)
    if not centres:
        return 0
    pixels = imread(look.png)
    height, width = pixels.shape[:2]
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(pixels, interpolation="nearest")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_axis_off()
    for beam, ra, dec in centres:
        col, row = look.world_to_png(ra, dec)
        ax.plot([col], [row], marker="+", markersize=9, markeredgewidth=1.5, color="cyan")
        ax.annotate(str(beam), (col, row), xytext=(4, 4), textcoords="offset points", color="cyan", fontsize=8)
    fig.savefig(look.png, dpi=dpi)
    return len(centres)
