"""Quick-look PNGs: one per MFS image (sky, RA/Dec axes, beam, colour bar), one per cube (beams, noise, spectrum).

matplotlib (the `[report]` extra) is imported only inside these functions, through its object API
(Figure + Agg canvas: no pyplot, no global backend state). `missing()` says what is missing without it.

Image: the first plane of the image's non-celestial axes, block-averaged by an integer factor so the
drawn array is at most `max_px` pixels a side (a 10k image costs one read, not a 10k-pixel PNG), drawn
with its own WCS (the celestial WCS sliced by the same factor) in an asinh stretch from the 0.5th
percentile to the peak, so that both the noise and the sources show. Colour bar in the image's BUNIT,
restoring beam (BMAJ/BMIN/BPA) as a filled ellipse in the lower left, the file name as title.
`ImageLook` records where the drawn image sits in the PNG so a position on the sky maps to a PNG pixel.

Cube: per-channel beams (from the beam log beside the cube) against the common beam (the cube's BMAJ/
BMIN), the noise per channel (the beam log's robust sigma, else 1/sqrt(weight), else measured), and the
spectrum at the brightest pixel (brightest in |sum| over up to 8 evenly spaced channels).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpimager.errors import MpimagerError
from mpimager.reduce.cube import read_weights, robust_sigma

LOOK_VERSION = 1  # bump when the drawings change: cached PNGs of another version are drawn again
MISSING = "quick-looks need the [report] extra (pip install mpimager[report])"
DEFAULT_MAX_PX = 1024
IMAGE_FIGSIZE = (7.2, 6.4)  # inches at DPI: a 720 x 640 PNG
CUBE_FIGSIZE = (13.5, 3.8)
DPI = 100
CMAP = "inferno"
PEAK_PLANES = 8


class QuickLookError(MpimagerError):
    """A product could not be drawn (unreadable FITS, no celestial axes, ...)."""




def _open(fits_path: str):
    """The FITS file opened (memory-mapped), or a QuickLookError naming it."""
    from astropy.io import fits

    try:
        return fits.open(fits_path, memmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a quick-look not drawn
        raise QuickLookError(f"{fits_path}: cannot be read ({exc})") from None


def missing() -> str | None:
    """None if quick-looks can be made, else what to install."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        return MISSING
    return None


@contextlib.contextmanager
def _quiet():
    """Astropy's header-fixing notes and numpy's all-NaN warnings say nothing useful in a report."""
    from astropy.utils.exceptions import AstropyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@dataclass(frozen=True)
class ImageLook:
    """What the quick-look of an image shows and where its pixels are in the PNG."""

    fits: str
    png: str
    shape: tuple[int, int]  # (ny, nx) of the image
    factor: int  # block-averaging factor of the drawn array
    unit: str
    beam: tuple[float, float, float] | None  # (bmaj", bmin", bpa deg)
    peak: float
    peak_radec: tuple[float, float]  # RA in [0, 360) deg, Dec deg
    rms: float
    freq_hz: float | None
    wsclean: str | None  # WSCVERSI of the header
    png_size: tuple[int, int]  # (width, height) pixels
    axes_box: tuple[float, float, float, float]  # drawn image area in the PNG: left, top, right, bottom
    limits: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax of the drawn array (pixel edges)
    wcs: Any = field(default=None, compare=False, repr=False)  # celestial WCS of the drawn array

    def world_to_png(self, ra_deg: float, dec_deg: float) -> tuple[float, float]:
        """(column, row) in the PNG (row 0 at the top) of the sky position `ra_deg`, `dec_deg` (degrees)."""
        x, y = (float(v) for v in self.wcs.world_to_pixel_values(ra_deg, dec_deg))
        left, top, right, bottom = self.axes_box
        xmin, xmax, ymin, ymax = self.limits
        col = left + (x - xmin) / (xmax - xmin) * (right - left)
        row = bottom - (y - ymin) / (ymax - ymin) * (bottom - top)
        return col, row


@dataclass(frozen=True)
class CubeLook:
    fits: str
    png: str
    freqs_hz: tuple[float, ...]
    beams: tuple[tuple[float, float, float] | None, ...]  # per channel, arcsec/deg; None if unknown/blank
    common_beam: tuple[float, float, float] | None
    noise: tuple[float, ...]  # per channel, in the cube's unit (nan if unknown)
    noise_from: str  # "beam log" | "weights" | "measured"
    peak_pixel: tuple[int, int]  # (x, y)
    peak_radec: tuple[float, float]
    spectrum: tuple[float, ...]
    unit: str
    blank: int  # blank channels


# ------------------------------------------------------------------------------------------------ reading


def _celestial_plane(hdu) -> tuple[np.ndarray, Any, Any]:
    """(2-D data view, celestial WCS, full WCS) of the first plane of an image HDU."""
    from astropy.wcs import WCS

    header = hdu.header
    wcs = WCS(header)
    if not wcs.has_celestial or (wcs.wcs.lng, wcs.wcs.lat) not in ((0, 1), (1, 0)):
        raise QuickLookError("no RA/Dec axes as FITS axes 1 and 2")
    data = hdu.data
    if data is None or data.ndim < 2:
        raise QuickLookError("no image data")
    plane = data[(0,) * (data.ndim - 2)]
    return plane, wcs.celestial, wcs


def block_average(plane: np.ndarray, factor: int) -> np.ndarray:
    """Mean of factor x factor blocks (NaNs ignored; all-NaN blocks stay NaN); trailing rows/columns that
    do not fill a block are dropped. Reads the plane in bands to bound memory."""
    if factor <= 1:
        return np.asarray(plane, dtype=np.float32)
    ny, nx = (plane.shape[0] // factor) * factor, (plane.shape[1] // factor) * factor
    out = np.empty((ny // factor, nx // factor), dtype=np.float32)
    band = max(1, 4096 // factor)  # output rows per read
    for r in range(0, ny // factor, band):
        rows = np.asarray(plane[r * factor:min(ny, (r + band) * factor), :nx], dtype=np.float32)
        blocks = rows.reshape(rows.shape[0] // factor, factor, nx // factor, factor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[r:r + blocks.shape[0]] = np.nanmean(blocks, axis=(1, 3))
    return out


def header_beam(header) -> tuple[float, float, float] | None:
    """(BMAJ arcsec, BMIN arcsec, BPA deg) of the FITS `header`'s restoring beam, as written; None without one."""
    try:
        return float(header["BMAJ"]) * 3600.0, float(header["BMIN"]) * 3600.0, float(header.get("BPA", 0.0))
    except (KeyError, TypeError, ValueError):
        return None


def _freq_of(wcs) -> float | None:
    if wcs.wcs.spec < 0:
        return None
    return float(wcs.wcs.crval[wcs.wcs.spec])


# ------------------------------------------------------------------------------------------------ images


def _display_range(values: np.ndarray, rms: float) -> tuple[float, float, float]:
    """(vmin, vmax, asinh softening) of the finite pixel `values` of an image with noise `rms`: from
    -3 sigma (or the 0.5th percentile if lower) to the peak, linear up to about 3 sigma above vmin and
    logarithmic beyond, so noise and sources both show."""
    vmin = float(np.percentile(values, 0.5))
    if rms == rms and rms > 0:
        vmin = min(vmin, -3.0 * rms)
    vmax = float(values.max())
    if not vmax > vmin:
        return vmin, vmin + 1.0, 0.1
    soft = 3.0 * rms / (vmax - vmin) if rms == rms and rms > 0 else 0.02
    return vmin, vmax, float(min(0.1, max(1e-4, soft)))


def image_quicklook(fits_path: str, png_path: str, *, max_px: int = DEFAULT_MAX_PX) -> ImageLook:
    """Draw `fits_path` into `png_path`, at most `max_px` pixels a side (see the module docstring);
    QuickLookError if it cannot."""
    with _quiet():
        return _image_quicklook(str(fits_path), str(png_path), max_px)


def _image_quicklook(fits_path: str, png_path: str, max_px: int) -> ImageLook:
    from astropy.visualization import AsinhStretch, ImageNormalize
    from astropy.wcs.utils import proj_plane_pixel_scales
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse

    with _open(fits_path) as hdul:
        header = hdul[0].header
        plane, cel, full = _celestial_plane(hdul[0])
        if (cel.wcs.lng, cel.wcs.lat) == (1, 0):
            raise QuickLookError(f"{fits_path}: Dec before RA is not supported")
        ny, nx = plane.shape
        factor = max(1, math.ceil(max(ny, nx) / max_px))
        drawn = block_average(plane, factor)
    wcs = cel.slice((slice(0, drawn.shape[0] * factor, factor), slice(0, drawn.shape[1] * factor, factor)))
    finite = drawn[np.isfinite(drawn)]
    if finite.size == 0:
        raise QuickLookError(f"{fits_path}: every pixel is blank")
    j, i = np.unravel_index(np.nanargmax(drawn), drawn.shape)
    peak = float(drawn[j, i])
    ra, dec = (float(v) for v in wcs.pixel_to_world_values(i, j))
    peak_radec = (ra % 360.0, dec)
    rms = robust_sigma(drawn, samples=250_000)
    vmin, vmax, soft = _display_range(finite, rms)
    unit = str(header.get("BUNIT", "")).strip()
    unit_label = {"JY/BEAM": "Jy/beam"}.get(unit.upper(), unit)
    beam = header_beam(header)

    fig = Figure(figsize=IMAGE_FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax: Any = fig.add_axes((0.17, 0.1, 0.62, 0.8), projection=wcs)  # a WCSAxes (astropy has no type stubs)
    norm = ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(soft))
    im = ax.imshow(drawn, origin="lower", cmap=CMAP, norm=norm, interpolation="nearest")
    ax.set_xlim(-0.5, drawn.shape[1] - 0.5)
    ax.set_ylim(-0.5, drawn.shape[0] - 0.5)
    ax.coords[0].set_axislabel("RA (J2000)")
    ax.coords[1].set_axislabel("Dec (J2000)")
    ax.coords[0].set_major_formatter("hh:mm:ss")
    ax.coords[1].set_major_formatter("dd:mm:ss")
    name = os.path.basename(fits_path)
    ax.set_title(name if len(name) <= 70 else "..." + name[-67:], fontsize=9)
    cax = fig.add_axes((0.81, 0.1, 0.03, 0.8))
    ticks = np.ravel(norm.inverse(np.linspace(0.0, 1.0, 7)))  # evenly spaced on the bar, whatever the stretch
    bar = fig.colorbar(im, cax=cax, ticks=ticks)
    scale, label = (1e3, "mJy/beam") if unit_label == "Jy/beam" else (1.0, unit_label or "pixel value")
    bar.ax.set_yticklabels([f"{t * scale:.3g}" for t in ticks])
    bar.set_label(label)
    if beam is not None:
        scale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600.0  # arcsec per drawn pixel
        w, h = beam[1] / scale, beam[0] / scale
        margin = max(w, h) / 2 + 0.02 * drawn.shape[1]
        ax.add_patch(Ellipse((margin - 0.5, margin - 0.5), width=w, height=h, angle=beam[2],
                             facecolor="white", edgecolor="cyan", alpha=0.85, lw=1))
    fig.savefig(png_path, dpi=DPI)
    width, height = fig.canvas.get_width_height()
    box = ax.get_window_extent()  # display pixels, origin bottom left
    axes_box = (float(box.x0), float(height - box.y1), float(box.x1), float(height - box.y0))
    limits = (*ax.get_xlim(), *ax.get_ylim())
    wsc = header.get("WSCVERSI")
    return ImageLook(fits=str(fits_path), png=str(png_path), shape=(ny, nx), factor=factor, unit=unit_label,
                     beam=beam, peak=peak, peak_radec=peak_radec, rms=rms, freq_hz=_freq_of(full),
                     wsclean=str(wsc).strip() if wsc is not None else None, png_size=(width, height),
                     axes_box=axes_box, limits=(float(limits[0]), float(limits[1]), float(limits[2]), float(limits[3])),
                     wcs=wcs)


# ------------------------------------------------------------------------------------------------ cubes


@dataclass(frozen=True)
class BeamLog:
    freqs_hz: tuple[float, ...]
    beams: tuple[tuple[float, float, float] | None, ...]
    common: tuple[float, float, float] | None
    sigmas: tuple[float, ...]
    status: tuple[str, ...]


def _read_ecsv_beamlog(path: str) -> BeamLog:
    """mpimager's ECSV beam log (mpimager.reduce.beamlog)."""
    from astropy.table import Table

    t = Table.read(path, format="ascii.ecsv")

    def beam(row, prefix=""):
        v = tuple(float(row[f"{prefix}{k}"]) for k in ("BMAJ", "BMIN", "BPA"))
        return None if any(x != x for x in v) else v

    beams = tuple(beam(r) for r in t)
    outs = [beam(r, "Target ") for r in t]
    return BeamLog(tuple(float(f) for f in t["FREQ"]), beams, next((b for b in outs if b), None),
                   tuple(float(s) for s in t["sigma"]), tuple(str(s) for s in t["status"]))


def read_beamlog(path: str) -> BeamLog:
    """The beam log at `path`: mpimager's (ECSV; before it `#plane freq_Hz bmaj_in ...`) or RACS-tools'
    (`#Channel BMAJ[arcsec]`)."""
    with open(path) as f:
        if f.readline().startswith("# %ECSV"):
            return _read_ecsv_beamlog(path)
    freqs, beams, sigmas, status, common = [], [], [], [], None
    ours = True
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                if "BMAJ" in line.upper() and "freq_Hz" not in line:
                    ours = False
                continue
            cols = line.split()

            def beam(a, b, c):
                return None if "-" in (a, b, c) else (float(a), float(b), float(c))

            if ours and len(cols) >= 10:
                freqs.append(float(cols[1]))
                beams.append(beam(*cols[2:5]))
                out = beam(*cols[5:8])
                if common is None and out is not None:
                    common = out
                status.append(cols[8])
                sigmas.append(float(cols[9]))
            elif len(cols) >= 4:
                freqs.append(float("nan"))
                beams.append(beam(*cols[1:4]))
                status.append("-")
                sigmas.append(float("nan"))
    return BeamLog(tuple(freqs), tuple(beams), common, tuple(sigmas), tuple(status))


def _weight_sigmas(path: str, nchan: int) -> list[float]:
    """The `nchan` per-channel sigmas (1/sqrt(weight); NaN for weight 0 or a channel the file does not give)
    of the linmos weights file at `path`, in channel order (mpimager.reduce.cube.read_weights reads it)."""
    weights = read_weights(path)
    return [1.0 / math.sqrt(w) if (w := weights.get(c, 0.0)) > 0 else float("nan") for c in range(nchan)]


def _spectral_view(hdu):
    """(view of shape (nchan, ny, nx), full WCS)."""
    from astropy.wcs import WCS

    wcs = WCS(hdu.header)
    data = hdu.data
    if data is None or data.ndim < 3 or wcs.wcs.spec < 0:
        raise QuickLookError("not a cube (no spectral axis)")
    spec_np = data.ndim - 1 - wcs.wcs.spec
    index = tuple(slice(None) if a in (spec_np, data.ndim - 1, data.ndim - 2) else 0 for a in range(data.ndim))
    return data[index], wcs


def cube_quicklook(fits_path: str, png_path: str, beamlog: str | None = None, weights: str | None = None) -> CubeLook:
    """Draw the beams, noise and peak spectrum of the cube `fits_path` into `png_path`, with the beams and
    noise of its `beamlog` and the noise of its `weights` file when given; QuickLookError if it cannot."""
    with _quiet():
        return _cube_quicklook(str(fits_path), str(png_path), beamlog, weights)


def _cube_quicklook(fits_path: str, png_path: str, beamlog: str | None, weights: str | None) -> CubeLook:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _open(fits_path) as hdul:
        header = hdul[0].header
        cube, wcs = _spectral_view(hdul[0])
        nchan = cube.shape[0]
        spec = wcs.wcs.spec
        freqs = [float(wcs.wcs.crval[spec] + (k + 1 - wcs.wcs.crpix[spec]) * wcs.wcs.cdelt[spec])
                 for k in range(nchan)]
        log = read_beamlog(beamlog) if beamlog else None
        beams: list = list(log.beams) if log else [None] * nchan
        beams = (beams + [None] * nchan)[:nchan]
        common = header_beam(header) or (log.common if log else None)
        noise_from = "beam log"
        noise = list(log.sigmas) if log and any(s == s for s in log.sigmas) else []
        if not noise and weights:
            noise, noise_from = _weight_sigmas(weights, nchan), "weights"
        planes = sorted({round(k) for k in np.linspace(0, nchan - 1, min(PEAK_PLANES, nchan))})
        total: np.ndarray | None = None
        measured: dict[int, float] = {}
        for k in planes:
            plane = np.asarray(cube[k], dtype=np.float64)
            if not noise:
                measured[k] = robust_sigma(plane)
            plane = np.nan_to_num(plane, nan=0.0)
            total = plane if total is None else total + plane
        if not noise:
            noise_from = "measured"
            noise = [measured.get(k, float("nan")) for k in range(nchan)]
        noise = (list(noise) + [float("nan")] * nchan)[:nchan]
        assert total is not None  # planes holds at least one channel
        y, x = np.unravel_index(np.argmax(np.abs(total)), total.shape)
        spectrum = [float(v) for v in np.asarray(cube[:, y, x], dtype=np.float64)]
    cel = wcs.celestial
    ra, dec = (float(v) for v in cel.pixel_to_world_values(x, y))
    ra %= 360.0
    unit = str(header.get("BUNIT", "")).strip()
    unit_label = {"JY/BEAM": "Jy/beam"}.get(unit.upper(), unit)
    blank = sum(1 for v in spectrum if v != v)
    if log and log.status:
        blank = max(blank, sum(s.startswith("blank") for s in log.status))

    mhz = np.array(freqs) / 1e6
    fig = Figure(figsize=CUBE_FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    name = os.path.basename(fits_path)
    fig.suptitle(name if len(name) <= 110 else "..." + name[-107:], fontsize=10)
    a1, a2, a3 = fig.subplots(1, 3)
    bmaj = np.array([b[0] if b else np.nan for b in beams])
    bmin = np.array([b[1] if b else np.nan for b in beams])
    if np.isfinite(bmaj).any():
        a1.plot(mhz, bmaj, "o-", color="tab:blue", ms=3, label="BMAJ (channel)")
        a1.plot(mhz, bmin, "s-", color="tab:orange", ms=3, label="BMIN (channel)")
    else:
        a1.text(0.5, 0.5, "no beam log beside the cube", ha="center", va="center", transform=a1.transAxes)
    if common:
        a1.axhline(common[0], color="tab:blue", ls="--", lw=1, label=f"common BMAJ {common[0]:.1f}\"")
        a1.axhline(common[1], color="tab:orange", ls="--", lw=1, label=f"common BMIN {common[1]:.1f}\"")
    a1.set_xlabel("frequency (MHz)")
    a1.set_ylabel("beam axis (arcsec)")
    a1.set_title("restoring beam per channel", fontsize=9)
    if a1.get_legend_handles_labels()[0]:  # none without a beam log and a header beam
        a1.legend(fontsize=7)
    scale, prefix = (1e3, "m") if unit_label == "Jy/beam" else (1.0, "")
    a2.plot(mhz, np.array(noise) * scale, "o-", color="tab:green", ms=3)
    a2.set_xlabel("frequency (MHz)")
    a2.set_ylabel(f"noise ({prefix}{unit_label or 'unit'})")
    a2.set_title(f"noise per channel ({noise_from})", fontsize=9)
    a3.plot(mhz, np.array(spectrum) * scale, "o-", color="tab:red", ms=3)
    a3.axhline(0, color="grey", lw=0.5)
    a3.set_xlabel("frequency (MHz)")
    a3.set_ylabel(f"{prefix}{unit_label or 'value'}")
    a3.set_title(f"spectrum at brightest pixel ({x}, {y})", fontsize=9)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.16, top=0.83, wspace=0.28)
    fig.savefig(png_path, dpi=DPI)
    return CubeLook(fits=str(fits_path), png=str(png_path), freqs_hz=tuple(freqs), beams=tuple(beams),
                    common_beam=common, noise=tuple(float(v) for v in noise), noise_from=noise_from,
                    peak_pixel=(int(x), int(y)), peak_radec=(ra, dec), spectrum=tuple(spectrum), unit=unit_label,
                    blank=blank)
