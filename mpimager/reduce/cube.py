"""The cube on disk: names, header, preallocation, writing a plane at its offset, verifying, side files.

A cube is one primary HDU (RA, DEC, FREQ, STOKES or RA, DEC, STOKES, FREQ; one Stokes, so a plane is
contiguous whatever the order) and, for cubes with one beam per plane, a CASA `BEAMS` table with
CASAMBM=T (never CASAMBM without the table; a natural cube also carries a reference beam in
BMAJ/BMIN/BPA when `ref_chan` or `ref_freq` names one). The header says BUNIT = 'Jy/beam' (for Jy/beam
inputs), DATE, and ORIGIN = 'mpimager VERSION' with a HISTORY line of what was done. The file is created
at full size by one process (header, sparse data area, BEAMS table) under a `.partial` name; any process
then writes any plane with one `pwrite` at its offset; the coordinating process rewrites the BEAMS table
if planes were blanked while being made (all-NaN or all-zero), verifies and renames it. Beside it: a beam
log (beamlog.py) and linmos weights (`#Channel Weight`, 1/sigma^2 of a robust sigma per plane, 0 for
blank planes).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpimager.config.reduce import ReduceOptions
from mpimager.errors import InputError
from mpimager.reduce.fitsio import BLOCK, STOKES_VALUES, parse_header, read_header_bytes
from mpimager.reduce.plan import CubePlan

_AXIS_KEY = re.compile(r"^(CTYPE|CRPIX|CRVAL|CDELT|CUNIT|CROTA|CNAME|CRDER|CSYER|CPERI|CZPHS)([3-9])$")
_MATRIX_KEY = re.compile(r"^(PC|CD)(\d)_(\d)$")
_PV_KEY = re.compile(r"^P[VS]([3-9])_\d+$")
_DROP = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM",
         "BMAJ", "BMIN", "BPA", "CASAMBM", "DATAMIN", "DATAMAX", "END", "INSTRUMENT_RECEPTOR_ANGLE",
         # WSClean's per-channel figures would describe the first channel only
         "WSCCHANS", "WSCCHANE", "WSCENVIS", "WSCIMGWG", "WSCNORMF", "WSCNVIS", "WSCVWSUM"}
RECEPTOR_KEY = "INSTRUMENT_RECEPTOR_ANGLE"


def _dropped(key: str) -> bool:
    if key in _DROP or key.startswith("NAXIS"):
        return True
    if _AXIS_KEY.match(key) or _PV_KEY.match(key):
        return True
    m = _MATRIX_KEY.match(key)
    return bool(m and (int(m[2]) > 2 or int(m[3]) > 2))


def cube_header(plan: CubePlan, options: ReduceOptions, receptor_angle: float | None = None):
    """The primary header of the cube (astropy Header).

    plan: the cube's plan. options: the [reduce] options (axis order). receptor_angle: degrees written as
    INSTRUMENT_RECEPTOR_ANGLE (None: the template's, if any).
    """
    import datetime
    import warnings

    from astropy.io import fits

    from mpimager import __version__

    template = plan.template.header
    ny, nx = plan.shape
    nplanes = len(plan.planes)
    stokes_code = STOKES_VALUES.get(plan.stokes, 1)
    freq_cards = [("CTYPE{}", "FREQ", None), ("CRPIX{}", 1.0, None), ("CRVAL{}", plan.freq0, None),
                  ("CDELT{}", plan.step, None), ("CUNIT{}", "Hz", None)]
    stokes_cards = [("CTYPE{}", "STOKES", None), ("CRPIX{}", 1.0, None), ("CRVAL{}", float(stokes_code), None),
                    ("CDELT{}", 1.0, None), ("CUNIT{}", "", None)]
    if options.axis_order == "freq-stokes":
        axes = [(3, nplanes, freq_cards), (4, 1, stokes_cards)]
    else:
        axes = [(3, 1, stokes_cards), (4, nplanes, freq_cards)]
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = -32
    h["NAXIS"] = 4
    h["NAXIS1"] = nx
    h["NAXIS2"] = ny
    for i, n, _ in axes:
        h[f"NAXIS{i}"] = n
    h["EXTEND"] = True
    for card in template.cards:
        if card.keyword in ("HISTORY", "COMMENT", ""):
            continue
        if _dropped(card.keyword):
            continue
        h.append(card, end=True)
    for i, _, cards in axes:
        for key, value, _ in cards:
            h[key.format(i)] = value
    bunit = plan.template.bunit
    if not bunit or "BEAM" in bunit.upper():
        h["BUNIT"] = ("Jy/beam", "Jansky per beam")
    h["DATE"] = (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC, file written")
    h["ORIGIN"] = (f"mpimager {__version__}", "PSF matching and cube stacking")
    header_beam = plan.beam or plan.ref_beam
    if header_beam is not None:
        for key, value in header_beam.header_values().items():
            h[key] = value
    if plan.beam is None and plan.resolution != "none":
        h["CASAMBM"] = (True, "one beam per plane in the BEAMS table")
    angle = receptor_angle
    if angle is None and RECEPTOR_KEY in template:
        angle = float(template[RECEPTOR_KEY])
    if angle is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h[f"HIERARCH {RECEPTOR_KEY}"] = (float(angle), "deg")
    for card in template.cards:
        if card.keyword in ("HISTORY", "COMMENT"):
            h.append(card, end=True)
    what = ("PSF-matched to one beam" if plan.beam is not None else
            "PSF-matched, one beam per plane" if plan.kind != "unconvolved" else
            "unconvolved" if plan.resolution != "none" else "unconvolved, no restoring beam (niter = 0?)")
    sources = {r.source for r in plan.records if r.source is not None}
    h.add_history(f"mpimager {__version__} reduce: {sum(r.source is not None for r in plan.records)} planes "
                  f"from {len(sources)} file(s) of {plan.prefix or 'cube'} Stokes {plan.stokes} ({plan.kind}), "
                  f"{what}")
    return h


def beams_table_bytes(plan: CubePlan) -> bytes:
    """A CASA BEAMS binary table (arcsec, arcsec, deg; zero for blank planes) of `plan` as FITS bytes."""
    from astropy.io import fits

    n = len(plan.records)
    bmaj = np.zeros(n, dtype=np.float32)
    bmin = np.zeros(n, dtype=np.float32)
    bpa = np.zeros(n, dtype=np.float32)
    for r in plan.records:
        if r.beam_out is not None:
            bmaj[r.index], bmin[r.index], bpa[r.index] = r.beam_out.major, r.beam_out.minor, r.beam_out.pa
    cols = [fits.Column("BMAJ", "1E", "arcsec", array=bmaj), fits.Column("BMIN", "1E", "arcsec", array=bmin),
            fits.Column("BPA", "1E", "deg", array=bpa),
            fits.Column("CHAN", "1J", array=np.arange(n, dtype=np.int32)),
            fits.Column("POL", "1J", array=np.zeros(n, dtype=np.int32))]
    hdu = fits.BinTableHDU.from_columns(cols, name="BEAMS")
    hdu.header["EXTVER"] = 1
    hdu.header["NCHAN"] = n
    hdu.header["NPOL"] = 1
    buf = io.BytesIO()
    primary = fits.PrimaryHDU()
    fits.HDUList([primary, hdu]).writeto(buf)
    raw = buf.getvalue()
    skip = len(primary.header.tostring())
    if raw[skip:skip + 8] != b"XTENSION":  # pragma: no cover - astropy layout guard
        raise RuntimeError("unexpected BEAMS table serialisation")
    return raw[skip:]


def padded(n: int) -> int:
    """`n` bytes rounded up to whole FITS blocks."""
    return -(-n // BLOCK) * BLOCK


@dataclass(frozen=True)
class Layout:
    """Byte layout of a preallocated cube."""

    path: str  # the .partial file written to
    data_offset: int
    plane_bytes: int
    nplanes: int
    size: int
    tail_offset: int  # where the BEAMS table (if any) starts


def _reserve(fd: int, size: int) -> None:
    """Reserve disk blocks for the whole file when the filesystem can do it natively (a full disk fails
    here, before any work, and planes are then written into allocated blocks); else leave it sparse.
    glibc's posix_fallocate is avoided: on filesystems without fallocate it writes every block."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
    if fallocate(fd, 0, 0, size) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(err, os.strerror(err))


def preallocate(path: Path, header, tail: bytes, nplanes: int, shape: tuple[int, int]) -> Layout:
    """Create the cube file at full size: header, data area (blocks reserved), then `tail` (BEAMS or b'').

    path: the file made (its `.partial` name). header: astropy Header. nplanes, shape: the data area's size.
    """
    head = header.tostring().encode("ascii")
    plane_bytes = shape[0] * shape[1] * 4
    data_end = len(head) + padded(nplanes * plane_bytes)
    try:
        with open(path, "wb") as f:
            _reserve(f.fileno(), data_end + len(tail))
            f.write(head)
            f.truncate(data_end)
            f.seek(data_end)
            f.write(tail)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise InputError(f"{path.parent}: cannot write the cube {path.name.removeprefix('.').removesuffix('.partial')}"
                         f" ({exc.strerror})") from None
    return Layout(str(path), len(head), plane_bytes, nplanes, data_end + len(tail), data_end)


def rewrite_tail(layout: Layout, tail: bytes) -> None:
    """Write a new BEAMS table `tail` of the same length over the old one in the file of `layout`."""
    if layout.size - layout.tail_offset != len(tail):  # pragma: no cover - fixed-width table
        raise RuntimeError("the BEAMS table changed length")
    fd = os.open(layout.path, os.O_WRONLY)
    try:
        _pwrite_all(fd, memoryview(tail), layout.tail_offset)
    finally:
        os.close(fd)


def write_plane(layout: Layout, index: int, plane: np.ndarray | None, with_crc: bool = False) -> int | None:
    """Write one float32 plane at its offset (big-endian); the CRC-32 of its bytes if `with_crc`.

    layout: the cube's. index: the plane's place. plane: (ny, nx) values, left unchanged; None = a NaN
    plane. with_crc: also return the CRC of the bytes written.
    """
    from mpimager.reduce.kernel import block_rows

    total = layout.plane_bytes // 4
    if plane is None:
        step = 1 << 18
        nan = np.full(min(step, total), np.nan, dtype=np.float32)
        return write_pixels(layout, index, ((p0, nan[:min(step, total - p0)]) for p0 in range(0, total, step)),
                            with_crc)
    if plane.size != total:
        raise ValueError(f"write_plane: {plane.size} pixels for a plane of {total}")
    nx = plane.shape[-1]
    step = block_rows(nx)
    return write_pixels(layout, index, ((r0 * nx, plane[r0:r0 + step]) for r0 in range(0, plane.shape[0], step)),
                        with_crc)


def write_pixels(layout: Layout, index: int, chunks: Iterable[tuple[int, np.ndarray]],
                 with_crc: bool = False) -> int | None:
    """Write a plane given a chunk at a time at its offset (big-endian); the CRC-32 of its bytes if `with_crc`.

    layout: the cube's. index: the plane's place. chunks: (first pixel, C-contiguous float32 values), in
    order and covering the plane, each used before the next is asked for (a producer may reuse one
    buffer). Each chunk is converted into a small big-endian buffer and written from there (`pwrite`).
    """
    total = layout.plane_bytes // 4
    offset = layout.data_offset + index * layout.plane_bytes
    buf = np.empty(0, dtype=">f4")
    crc, written = 0, 0
    fd = os.open(layout.path, os.O_WRONLY)
    try:
        for p0, values in chunks:
            flat = values.reshape(-1)
            if p0 != written or written + flat.size > total:
                raise ValueError(f"write_pixels: pixels {p0}-{p0 + flat.size} out of order in a plane of {total}")
            if buf.size < flat.size:
                buf = np.empty(flat.size, dtype=">f4")
            np.copyto(buf[:flat.size], flat, casting="unsafe")
            view = buf[:flat.size].data.cast("B")
            if with_crc:
                crc = zlib.crc32(view, crc)
            _pwrite_all(fd, view, offset + 4 * written)
            written += flat.size
    finally:
        os.close(fd)
    if written != total:
        raise ValueError(f"write_pixels: {written} pixels written of a plane of {total}")
    return crc if with_crc else None


def _pwrite_all(fd: int, data: memoryview, at: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], at + done)


def verify(layout: Layout, crcs: dict[int, int] | None = None) -> str | None:
    """None if the cube file of `layout` is complete (size, header, and the planes' `crcs` when given: plane
    index -> CRC-32 of its bytes); else what is wrong."""
    path = Path(layout.path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if size != layout.size:
        return f"{path}: size {size} bytes, expected {layout.size}"
    raw, offset = read_header_bytes(path)
    if offset != layout.data_offset:
        return f"{path}: header length changed"
    header = parse_header(raw, path)
    nplanes = max(int(header.get("NAXIS3", 1)), int(header.get("NAXIS4", 1)))
    if nplanes != layout.nplanes:
        return f"{path}: {nplanes} planes in the header, expected {layout.nplanes}"
    if crcs:
        fd = os.open(path, os.O_RDONLY)
        try:
            buf = bytearray(layout.plane_bytes)
            for index, crc in sorted(crcs.items()):
                n = os.preadv(fd, [buf], layout.data_offset + index * layout.plane_bytes)
                if n != layout.plane_bytes or zlib.crc32(buf) != crc:
                    return f"{path}: plane {index} does not read back as written"
        finally:
            os.close(fd)
    return None


def robust_sigma(plane: np.ndarray, samples: int = 1 << 16) -> float:
    """1.4826 x median absolute deviation of the finite pixels of `plane`, on a regular subsample of
    ~`samples`."""
    sample = SigmaSample(plane.size, samples)
    sample.add(0, np.atleast_2d(plane))
    return sample.sigma()


class SigmaSample:
    """`robust_sigma` of a plane seen a block of rows at a time: every `step`-th pixel of every `step`-th row
    is kept (the same pixels as `robust_sigma` of the whole plane), so no plane needs to be held."""

    def __init__(self, size: int, samples: int = 1 << 16) -> None:
        self.step = max(1, int((size / samples) ** 0.5))
        self.parts: list[np.ndarray] = []

    def add(self, r0: int, rows: np.ndarray) -> None:
        """Take the sample of `rows` (2-D), the block starting at row `r0` of the plane."""
        sub = rows[(-r0) % self.step::self.step, ::self.step]
        self.parts.append(sub[np.isfinite(sub)])

    def watch(self, blocks: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
        """The row blocks `blocks` passed on unchanged, each sampled on the way."""
        for r0, rows in blocks:
            self.add(r0, rows)
            yield r0, rows

    def sigma(self) -> float:
        """1.4826 x the median absolute deviation of the pixels sampled so far (NaN if none)."""
        values = np.concatenate(self.parts) if self.parts else np.empty(0, dtype=np.float32)
        if values.size == 0:
            return float("nan")
        med = np.median(values)
        return float(1.4826 * np.median(np.abs(values - med)))


def write_weights(path: Path, sigmas: list[float]) -> None:
    """linmos weights to `path`: '#Channel Weight' then one 'index 1/sigma^2' line per plane of `sigmas`
    (0 if unknown)."""
    lines = ["#Channel Weight"]
    for i, s in enumerate(sigmas):
        w = 1.0 / (s * s) if (s == s and s > 0) else 0.0
        lines.append(f"{i} {w:.10g}")
    path.write_text("\n".join(lines) + "\n")


def read_weights(path: Path | str) -> dict[int, float]:
    """The linmos weights file at `path` (as `write_weights` writes it) as {channel: weight}, whatever the order
    of its lines; the one reader of the format (the report, the mosaic).

    path: the file. Lines starting with '#' and blank lines are skipped. InputError naming the file and line
    for a line that is not 'CHANNEL WEIGHT' with a finite weight >= 0; OSError when the file cannot be read.
    """
    weights: dict[int, float] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        try:
            chan, value = int(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise InputError(f"{path}:{n}: expected 'CHANNEL WEIGHT', got {text!r}") from None
        if not (np.isfinite(value) and value >= 0):
            raise InputError(f"{path}:{n}: weight {value!r} is not a finite number >= 0")
        weights[chan] = value
    return weights
