"""Reading channel images: the header facts the plan needs, and one plane straight into a buffer.

A channel image is the primary HDU of a FITS file with two celestial axes (1 and 2) and any further
axes of length 1 (WSClean: FREQ, STOKES). The header is parsed once (astropy), the data offset is
remembered, and a plane is later read with one `readinto` into a caller's float32 buffer and
byte-swapped in place: no per-plane astropy machinery, no extra copy.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpimager.errors import InputError
from mpimager.reduce.beams import Beam, beam_from_header

BLOCK = 2880
STOKES_CODES = {1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR",
                -5: "XX", -6: "YY", -7: "XY", -8: "YX"}
STOKES_VALUES = {v: k for k, v in STOKES_CODES.items()}
_FREQ_UNITS = {"HZ": 1.0, "KHZ": 1e3, "MHZ": 1e6, "GHZ": 1e9}
_BITPIX = {-32: ">f4", -64: ">f8", 8: "u1", 16: ">i2", 32: ">i4", 64: ">i8"}
#: header keys that must agree for two planes to share a pixel grid
GRID_KEYS = ("NAXIS1", "NAXIS2", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2",
             "CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2",
             "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CROTA2", "LONPOLE", "LATPOLE", "EQUINOX", "RADESYS")


@dataclass(frozen=True)
class ReadSpec:
    """Where and how a plane sits in its file."""

    path: str
    offset: int
    bitpix: int
    shape: tuple[int, int]
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None


@dataclass(frozen=True)
class ChannelImage:
    """One channel image as the plan sees it (the header itself is kept for building cube headers)."""

    path: Path
    read: ReadSpec
    header: object  # astropy.io.fits.Header
    freq: float | None
    width: float | None
    stokes: str | None
    beam: Beam | None
    beam_problem: str | None
    grid: tuple
    pixel_matrix: tuple[tuple[float, float], tuple[float, float]]
    bunit: str


def read_header_bytes(path: Path) -> tuple[bytes, int]:
    """The primary header's raw bytes and the data offset; InputError if this is not FITS."""
    try:
        with open(path, "rb") as f:
            chunks = []
            while True:
                block = f.read(BLOCK)
                if len(block) < BLOCK:
                    if not chunks and block[:9] != b"SIMPLE  =":
                        raise InputError(f"{path}: not a FITS file")
                    raise InputError(f"{path}: truncated FITS header")
                if not chunks and block[:9] != b"SIMPLE  =":
                    raise InputError(f"{path}: not a FITS file")
                chunks.append(block)
                for i in range(0, BLOCK, 80):
                    if block[i:i + 8] == b"END     ":
                        raw = b"".join(chunks)
                        return raw, len(raw)
                if len(chunks) > 10000:
                    raise InputError(f"{path}: FITS header without END")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a FITS file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None


def parse_header(raw: bytes, path: Path):
    from astropy.io import fits
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.Header.fromstring(raw.decode("ascii", errors="replace"))
    except Exception as exc:  # astropy raises several types for a damaged header
        raise InputError(f"{path}: unreadable FITS header ({exc})") from None


def _axis_value(header, i: int) -> float:
    return float(header.get(f"CRVAL{i}", 0.0)) + (1.0 - float(header.get(f"CRPIX{i}", 1.0))) * \
        float(header.get(f"CDELT{i}", 1.0))


def _find_axis(header, prefix: str) -> int | None:
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{i}", "")).upper().startswith(prefix):
            return i
    return None


def frequency(header) -> tuple[float | None, float | None]:
    """Centre frequency and width (Hz) from the FREQ axis, else None."""
    i = _find_axis(header, "FREQ")
    if i is None:
        for key in ("RESTFRQ", "RESTFREQ", "FREQ"):
            if key in header:
                return float(header[key]), None
        return None, None
    unit = _FREQ_UNITS.get(str(header.get(f"CUNIT{i}", "Hz")).strip().upper(), 1.0)
    width = abs(float(header.get(f"CDELT{i}", 0.0))) * unit
    return _axis_value(header, i) * unit, (width or None)


def stokes(header) -> str | None:
    i = _find_axis(header, "STOKES")
    if i is None:
        return None
    return STOKES_CODES.get(int(round(_axis_value(header, i))))


def pixel_matrix(header, path) -> tuple[tuple[float, float], tuple[float, float]]:
    """Degrees of intermediate world coordinate (east, north) per pixel along axes 1 and 2."""
    if "CD1_1" in header:
        m = [[float(header.get(f"CD{i}_{j}", 0.0)) for j in (1, 2)] for i in (1, 2)]
    else:
        if "CDELT1" not in header or "CDELT2" not in header:
            raise InputError(f"{path}: no CDELT1/CDELT2 (pixel scale) in the header")
        c1, c2 = float(header["CDELT1"]), float(header["CDELT2"])
        if any(k in header for k in ("PC1_1", "PC1_2", "PC2_1", "PC2_2")):
            pc = [[float(header.get(f"PC{i}_{j}", 1.0 if i == j else 0.0)) for j in (1, 2)] for i in (1, 2)]
        elif float(header.get("CROTA2", 0.0)):
            r = math.radians(float(header["CROTA2"]))
            pc = [[math.cos(r), -math.sin(r) * c2 / c1], [math.sin(r) * c1 / c2, math.cos(r)]]
        else:
            pc = [[1.0, 0.0], [0.0, 1.0]]
        m = [[c1 * pc[0][0], c1 * pc[0][1]], [c2 * pc[1][0], c2 * pc[1][1]]]
    det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
    if not math.isfinite(det) or det == 0:
        raise InputError(f"{path}: singular pixel scale matrix in the header")
    return (m[0][0], m[0][1]), (m[1][0], m[1][1])


def read_channel(path: Path) -> ChannelImage:
    """Header facts of one channel image; InputError (one line, naming the file) when it is unusable."""
    path = Path(path).absolute()
    raw, offset = read_header_bytes(path)
    header = parse_header(raw, path)
    bitpix = int(header.get("BITPIX", 0))
    if bitpix not in _BITPIX:
        raise InputError(f"{path}: unsupported BITPIX {bitpix}")
    naxis = int(header.get("NAXIS", 0))
    if naxis < 2:
        raise InputError(f"{path}: not an image (NAXIS={naxis})")
    extra = [int(header.get(f"NAXIS{i}", 1)) for i in range(3, naxis + 1)]
    if any(n != 1 for n in extra):
        raise InputError(f"{path}: is a cube (NAXIS3..={extra}); give one channel image per file")
    ctype1, ctype2 = str(header.get("CTYPE1", "")).upper(), str(header.get("CTYPE2", "")).upper()
    if not (ctype1[:4] in ("RA--", "GLON", "ELON") and ctype2[:4] in ("DEC-", "GLAT", "ELAT")):
        raise InputError(f"{path}: axes 1 and 2 are not celestial (CTYPE1={ctype1!r}, CTYPE2={ctype2!r})")
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    nbytes = nx * ny * abs(bitpix) // 8
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    if size < offset + nbytes:
        raise InputError(f"{path}: truncated FITS data ({size} bytes, need {offset + nbytes})")
    blank = header.get("BLANK") if bitpix > 0 else None
    read = ReadSpec(str(path), offset, bitpix, (ny, nx), float(header.get("BSCALE", 1.0)),
                    float(header.get("BZERO", 0.0)), None if blank is None else int(blank))
    freq, width = frequency(header)
    beam, problem = beam_from_header(header)
    grid = tuple((k, header.get(k)) for k in GRID_KEYS)
    return ChannelImage(path=path, read=read, header=header, freq=freq, width=width, stokes=stokes(header),
                        beam=beam, beam_problem=problem, grid=grid, pixel_matrix=pixel_matrix(header, path),
                        bunit=str(header.get("BUNIT", "")).strip())


def grid_difference(a: tuple, b: tuple) -> str | None:
    """The first grid key on which two channel images differ ('CRVAL1 187.5 != 187.6'), or None."""
    for (key, va), (_, vb) in zip(a, b):
        if va == vb:
            continue
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            if math.isclose(float(va), float(vb), rel_tol=1e-9, abs_tol=1e-12):
                continue
        if isinstance(va, str) and isinstance(vb, str) and va.strip() == vb.strip():
            continue
        return f"{key} {va!r} != {vb!r}"
    return None


def _read_exact(fd: int, view: memoryview, offset: int, path: str) -> None:
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise OSError(f"{path}: unexpected end of file")
        done += n


def read_plane(spec: ReadSpec, out: np.ndarray) -> np.ndarray:
    """Read the plane of `spec` into `out` (C-contiguous float32 of spec.shape) and return it."""
    fd = os.open(spec.path, os.O_RDONLY)
    try:
        if spec.bitpix == -32:
            _read_exact(fd, memoryview(out).cast("B"), spec.offset, spec.path)
            if sys.byteorder == "little":
                out.byteswap(inplace=True)
            raw = None
        else:
            raw = np.empty(spec.shape, dtype=_BITPIX[spec.bitpix])
            _read_exact(fd, memoryview(raw).cast("B"), spec.offset, spec.path)
    finally:
        os.close(fd)
    if raw is not None:
        np.copyto(out, raw, casting="unsafe")
        if spec.blank is not None:
            out[raw == spec.blank] = np.nan
    if spec.bscale != 1.0 or spec.bzero != 0.0:
        out *= np.float32(spec.bscale)
        out += np.float32(spec.bzero)
    return out
