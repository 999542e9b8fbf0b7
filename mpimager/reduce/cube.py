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
import errno
import io
import mmap
import os
import re
import threading
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
        os.pwrite(fd, tail, layout.tail_offset)
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
    buffer). Each chunk is converted into a small big-endian buffer and handed to a `_PlaneSink`.
    """
    total = layout.plane_bytes // 4
    offset = layout.data_offset + index * layout.plane_bytes
    buf = np.empty(0, dtype=">f4")
    crc, written = 0, 0
    sink = _PlaneSink(layout.path, offset, offset + layout.plane_bytes)
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
            sink.write(view)
            written += flat.size
        sink.flush()
    finally:
        sink.close()
    if written != total:
        raise ValueError(f"write_pixels: {written} pixels written of a plane of {total}")
    return crc if with_crc else None


#: alignment of direct writes (file offset, length and memory): a page, which every filesystem accepts
_PAGE = 4096
#: bytes gathered before one direct write, and how many such writes a plane keeps in flight
_STAGE = 1 << 20
_IN_FLIGHT = 3
_stages = threading.local()  # a thread's page-aligned staging buffers, reused plane after plane
_writer_lock = threading.Lock()
_writer: ThreadPoolExecutor | None = None


def _direct_writer() -> ThreadPoolExecutor:
    """The process's threads that make direct writes (a thread waiting on the disk holds no core)."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(2, thread_name_prefix="mpimager-write")
        return _writer


def _pwrite_all(fd: int, data: memoryview, at: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], at + done)


class _PlaneSink:
    """The bytes of one plane, from `start` to `end` of the file at `path`, written in order.

    The whole pages inside the plane are written with O_DIRECT, past the page cache, a megabyte at a time
    by the writer threads while the caller goes on: a cube is written once and not read back here, and
    filling the page cache with a cube's worth of new pages costs more CPU than the disk write (1.8 GB on
    the 2-core machine: 0.3-5 s of CPU buffered, 0.2 s direct). The partial pages at the plane's two
    ends, which it shares with the header or the planes beside it, go through the page cache, and so
    does everything where O_DIRECT is refused (tmpfs on older kernels, some network filesystems).
    """

    def __init__(self, path: str, start: int, end: int) -> None:
        self.fd = os.open(path, os.O_WRONLY)
        self.pos, self.end = start, end  # the file position of the next byte
        self.head_end = min(end, -(-start // _PAGE) * _PAGE)  # the first page boundary inside the plane
        self.direct: int | None = None
        if end - self.head_end >= _PAGE and hasattr(os, "O_DIRECT"):
            try:
                self.direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError:
                self.direct = None
        if not hasattr(_stages, "free"):
            _stages.free = []
        self.pending: deque[tuple[Future, mmap.mmap, int, int]] = deque()  # (write, buffer, bytes, at)
        self.stage = self._buffer() if self.direct is not None else None
        self.fill = 0  # bytes staged: the file's [pos - fill, pos), starting on a page boundary

    def write(self, data: memoryview) -> None:
        """Take the plane's next bytes."""
        if self.pos + len(data) > self.end:
            raise ValueError(f"write_pixels: {self.pos + len(data) - self.end} bytes past the plane's end")
        i = 0
        if self.pos < self.head_end:  # the plane's first, partial page
            i = min(len(data), self.head_end - self.pos)
            self._buffered(data[:i], self.pos)
            self.pos += i
        if self.stage is None:
            self._buffered(data[i:], self.pos)
            self.pos += len(data) - i
            return
        while i < len(data):
            k = min(len(data) - i, _STAGE - self.fill)
            self.stage[self.fill:self.fill + k] = data[i:i + k]
            self.fill, self.pos, i = self.fill + k, self.pos + k, i + k
            if self.fill == _STAGE:
                self._send(_STAGE, self.pos - _STAGE)

    def flush(self) -> None:
        """Write what is staged (its whole pages directly, the plane's last partial page buffered) and wait
        for every write of the plane; a failed write raises here."""
        if self.fill:
            assert self.stage is not None, "staged bytes without a stage"
            n, at = self.fill // _PAGE * _PAGE, self.pos - self.fill
            self._buffered(memoryview(self.stage)[n:self.fill], at + n)
            if n:
                self._send(n, at)
            self.fill = 0
        while self.pending:
            self._finish_oldest()

    def close(self) -> None:
        """Wait for writes still in flight (after a failure) and close the files."""
        for future, buf, _, _ in self.pending:
            with contextlib.suppress(Exception):
                future.result()
            _stages.free.append(buf)
        self.pending.clear()
        if self.stage is not None:
            _stages.free.append(self.stage)
            self.stage = None
        os.close(self.fd)
        if self.direct is not None:
            os.close(self.direct)
            self.direct = None

    def _buffer(self) -> mmap.mmap:
        return _stages.free.pop() if _stages.free else mmap.mmap(-1, _STAGE)  # page-aligned

    def _send(self, n: int, at: int) -> None:
        """Hand the first `n` staged bytes (whole pages, for file position `at`) to a writer thread; take a
        fresh stage."""
        assert self.stage is not None, "no stage to send"
        if self.direct is None:
            self._buffered(memoryview(self.stage)[:n], at)
        else:
            write = _direct_writer().submit(_pwrite_all, self.direct, memoryview(self.stage)[:n], at)
            self.pending.append((write, self.stage, n, at))
            self.stage = None
            if len(self.pending) >= _IN_FLIGHT:
                self._finish_oldest()
            self.stage = self._buffer()
        self.fill = 0

    def _finish_oldest(self) -> None:
        write, buf, n, at = self.pending.popleft()
        try:
            write.result()
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                _stages.free.append(buf)
                raise
            self._give_up_direct([(buf, n, at)])
            return
        _stages.free.append(buf)

    def _give_up_direct(self, failed: list[tuple[mmap.mmap, int, int]]) -> None:
        """O_DIRECT refused after all: wait for the writes in flight, write them again (with the `failed`
        ones) through the page cache, and use it from now on."""
        for write, buf, n, at in self.pending:
            with contextlib.suppress(OSError):
                write.result()
            failed.append((buf, n, at))
        self.pending.clear()
        for buf, n, at in failed:
            self._buffered(memoryview(buf)[:n], at)
            _stages.free.append(buf)
        if self.direct is not None:
            os.close(self.direct)
            self.direct = None

    def _buffered(self, data: memoryview, at: int) -> None:
        _pwrite_all(self.fd, data, at)


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
