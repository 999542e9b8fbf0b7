"""Reading inputs: channel images and cubes as planes, the header facts the plan needs, one plane at a time.

A channel image is the primary HDU of a FITS file with two celestial axes (1 and 2) and any further
axes of length 1 (WSClean: FREQ, STOKES). A cube has a FREQ axis longer than one and maybe a STOKES
axis, in any order after RA and DEC (or no STOKES axis: Stokes I); each of its planes becomes a
`ChannelImage` of its own (same header, its frequency, Stokes, beam and byte offset), so the plan treats
cubes and channel images alike. A cube's per-plane beams come, in this order of trust, from its CASA
BEAMS table (CASAMBM = T), its header beam (one for every plane), or a beam log beside it (mpimager's
ECSV or RACS-tools' `beamlog.NAME.txt`); `use_beamlogs` puts the beam log before the header beam. Where
each plane's beam came from is kept (`beam_from`) and written into the cube's beam log.

The header is parsed once (astropy), the data offset is remembered, and a plane is later read a block of
rows at a time (`read_rows`: one `preadv` into a small buffer, converted to native float32 from there):
never a whole cube, no plane-size temporary.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mpimager.errors import InputError
from mpimager.reduce.beams import Beam, beam_from_header, beam_from_values

if TYPE_CHECKING:
    from astropy.io.fits import Header

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
    header: Header
    freq: float | None
    width: float | None
    stokes: str | None
    beam: Beam | None
    beam_problem: str | None
    grid: tuple
    pixel_matrix: tuple[tuple[float, float], tuple[float, float]]
    bunit: str
    origin: PlaneOrigin | None = None  # set for a plane of a cube
    beam_from: str = "header"


@dataclass(frozen=True)
class PlaneOrigin:
    """Where a cube's plane comes from: the cube's name parts and the plane's channel along FREQ."""

    prefix: str
    kind: str  # image | residual
    chan: int
    cube_planes: int


def read_header_bytes(path: Path) -> tuple[bytes, int]:
    """The primary header's raw bytes and the data offset of the file `path`; InputError if it is not FITS."""
    try:
        with open(path, "rb") as f:
            chunks: list[bytes] = []
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
    """The astropy Header of the header bytes `raw` read from `path` (named in the InputError if unreadable)."""
    import warnings

    from astropy.io import fits
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
    """Centre frequency and width (Hz) from the FREQ axis of `header`, else None."""
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
    """The Stokes parameter ('I', 'Q', ...) of the STOKES axis of `header`, else None."""
    i = _find_axis(header, "STOKES")
    if i is None:
        return None
    return STOKES_CODES.get(round(_axis_value(header, i)))


def pixel_matrix(header, path) -> tuple[tuple[float, float], tuple[float, float]]:
    """Degrees of intermediate world coordinate (east, north) per pixel along axes 1 and 2 of `header`
    (CD, PC or CROTA2); InputError naming `path` if it has none or it is singular."""
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


def _open(path: Path):
    """(header, data offset) of an image file, checked: BITPIX, celestial axes 1-2, data all there."""
    raw, offset = read_header_bytes(path)
    header = parse_header(raw, path)
    bitpix = int(header.get("BITPIX", 0))
    if bitpix not in _BITPIX:
        raise InputError(f"{path}: unsupported BITPIX {bitpix}")
    naxis = int(header.get("NAXIS", 0))
    if naxis < 2:
        raise InputError(f"{path}: not an image (NAXIS={naxis})")
    ctype1, ctype2 = str(header.get("CTYPE1", "")).upper(), str(header.get("CTYPE2", "")).upper()
    if not (ctype1[:4] in ("RA--", "GLON", "ELON") and ctype2[:4] in ("DEC-", "GLAT", "ELAT")):
        raise InputError(f"{path}: axes 1 and 2 are not celestial (CTYPE1={ctype1!r}, CTYPE2={ctype2!r})")
    nbytes = abs(bitpix) // 8
    for i in range(1, naxis + 1):
        nbytes *= int(header.get(f"NAXIS{i}", 1))
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    if size < offset + nbytes:
        raise InputError(f"{path}: truncated FITS data ({size} bytes, need {offset + nbytes})")
    return header, offset


def _image(path: Path, header, offset: int, **plane) -> ChannelImage:
    bitpix = int(header["BITPIX"])
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    blank = header.get("BLANK") if bitpix > 0 else None
    read = ReadSpec(str(path), offset, bitpix, (ny, nx), float(header.get("BSCALE", 1.0)),
                    float(header.get("BZERO", 0.0)), None if blank is None else int(blank))
    return ChannelImage(path=path, read=read, header=header, grid=tuple((k, header.get(k)) for k in GRID_KEYS),
                        pixel_matrix=pixel_matrix(header, path), bunit=str(header.get("BUNIT", "")).strip(),
                        **plane)


def read_channel(path: Path) -> ChannelImage:
    """Header facts of the channel image `path`; InputError (one line, naming the file) when it is unusable."""
    [image] = read_inputs(path, allow_cubes=False)
    return image


def read_inputs(path: Path, allow_cubes: bool = True, use_beamlogs: bool = False) -> list[ChannelImage]:
    """The planes of one input file: [the channel image], or every (channel, Stokes) plane of a cube.

    path: a FITS image. allow_cubes: False refuses cubes. use_beamlogs: a beam log beside a cube is
    trusted before its header beam. InputError (one line, naming the file) when it is unusable.
    """
    path = Path(path).absolute()
    header, offset = _open(path)
    naxis = int(header["NAXIS"])
    extra = [int(header.get(f"NAXIS{i}", 1)) for i in range(3, naxis + 1)]
    if all(n == 1 for n in extra):
        freq, width = frequency(header)
        beam, problem = beam_from_header(header)
        return [_image(path, header, offset, freq=freq, width=width, stokes=stokes(header), beam=beam,
                       beam_problem=problem)]
    if not allow_cubes:
        raise InputError(f"{path}: is a cube (NAXIS3..={extra}); give one channel image per file")
    return _cube_planes(path, header, offset, use_beamlogs)


def _axis_values(header, i: int) -> list[float]:
    crval, crpix = float(header.get(f"CRVAL{i}", 0.0)), float(header.get(f"CRPIX{i}", 1.0))
    cdelt = float(header.get(f"CDELT{i}", 1.0))
    return [crval + (k + 1 - crpix) * cdelt for k in range(int(header.get(f"NAXIS{i}", 1)))]


def _cube_planes(path: Path, header, offset: int, use_beamlogs: bool) -> list[ChannelImage]:
    from mpimager.planner.products import cube_name_parts

    naxis = int(header["NAXIS"])
    f_axis, s_axis = _find_axis(header, "FREQ"), _find_axis(header, "STOKES")
    for i in range(3, naxis + 1):
        n = int(header.get(f"NAXIS{i}", 1))
        if n > 1 and i not in (f_axis, s_axis):
            raise InputError(f"{path}: cube axis {i} ({header.get(f'CTYPE{i}', '?')!r}, {n} long) is neither "
                             f"FREQ nor STOKES")
    if f_axis is None:
        raise InputError(f"{path}: cube without a FREQ axis (CTYPE3..: "
                         f"{[header.get(f'CTYPE{i}') for i in range(3, naxis + 1)]})")
    unit = _FREQ_UNITS.get(str(header.get(f"CUNIT{f_axis}", "Hz")).strip().upper(), 1.0)
    freqs = [v * unit for v in _axis_values(header, f_axis)]
    width = abs(float(header.get(f"CDELT{f_axis}", 0.0))) * unit or None
    pols = ([STOKES_CODES.get(round(v)) for v in _axis_values(header, s_axis)] if s_axis else [None])
    if s_axis and None in pols:
        raise InputError(f"{path}: unknown STOKES value on axis {s_axis}")
    strides, step = {}, 1
    for i in range(3, naxis + 1):
        strides[i] = step
        step *= int(header.get(f"NAXIS{i}", 1))
    beams = _cube_beams(path, header, len(freqs), len(pols), use_beamlogs)
    name = cube_name_parts(path)
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    plane_bytes = nx * ny * abs(int(header["BITPIX"])) // 8
    out = []
    for p, pol in enumerate(pols):
        for c, freq in enumerate(freqs):
            index = c * strides[f_axis] + (p * strides[s_axis] if s_axis else 0)
            beam, problem, beam_from = beams(c, p)
            out.append(_image(path, header, offset + index * plane_bytes, freq=freq, width=width,
                              stokes=pol or name.stokes, beam=beam, beam_problem=problem, beam_from=beam_from,
                              origin=PlaneOrigin(name.prefix, name.kind, c, len(freqs))))
    return out


def _cube_beams(path: Path, header, nchan: int, npol: int, use_beamlogs: bool):
    """A function (channel, pol index) -> (beam, problem, where from), by the order of trust."""
    from mpimager.planner.products import beamlog_candidates
    from mpimager.reduce.beamlog import read_beams

    table = _beams_table(path) if header.get("CASAMBM", False) else None
    if table is not None:
        def from_table(c, p):
            values = table.get((c, p))
            if values is None:
                return None, f"no row for channel {c} in the BEAMS table", "BEAMS table"
            return (*beam_from_values(*values), "BEAMS table")
        return from_table
    header_beam, header_problem = beam_from_header(header)
    logs = [p for p in beamlog_candidates(path) if p.is_file()]
    if logs and (use_beamlogs or "BMAJ" not in header):
        values = read_beams(logs[0])
        if len(values) != nchan:
            raise InputError(f"{logs[0]}: {len(values)} channels in the beam log, {nchan} in the cube {path.name}")
        where = f"beam log {logs[0].name}"
        return lambda c, p: (*beam_from_values(*values[c]), where)
    where = "header" + (" (CASAMBM=T but no BEAMS table)" if header.get("CASAMBM", False) else "")
    if header_beam is None and "BMAJ" not in header:
        header_problem = "no beam: no BEAMS table, no BMAJ in the header, no beam log beside the cube"
    return lambda c, p: (header_beam, header_problem, where)


def _beams_table(path: Path) -> dict[tuple[int, int], tuple[float, float, float]] | None:
    """{(CHAN, POL): (BMAJ arcsec, BMIN arcsec, BPA deg)} of a cube's BEAMS table, None if it has none.

    Only the table is read (astropy seeks past the cube's data)."""
    import warnings

    from astropy.io import fits

    scale = {"ARCSEC": 1.0, "DEG": 3600.0, "ARCMIN": 60.0, "RAD": math.degrees(1.0) * 3600.0}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                hdu = next((h for h in hdul[1:] if str(h.header.get("EXTNAME", "")).upper() == "BEAMS"), None)
                if hdu is None:
                    return None
                data, cols = hdu.data, hdu.columns
                units = {c.name.upper(): str(c.unit or "").strip().upper() for c in cols}
                n = len(data)
                chan = data["CHAN"] if "CHAN" in units else range(n)
                pol = data["POL"] if "POL" in units else [0] * n
                f = {k: scale.get(units.get(k, ""), 1.0) for k in ("BMAJ", "BMIN")}
                fpa = 1.0 if units.get("BPA", "DEG") in ("DEG", "") else math.degrees(1.0)
                return {(int(c), int(p)): (float(a) * f["BMAJ"], float(b) * f["BMIN"], float(t) * fpa)
                        for c, p, a, b, t in zip(chan, pol, data["BMAJ"], data["BMIN"], data["BPA"], strict=True)}
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise InputError(f"{path}: unreadable BEAMS table ({exc})") from None


def grid_difference(a: tuple, b: tuple) -> str | None:
    """The first grid key on which two channel images' grids `a` and `b` (ChannelImage.grid) differ
    ('CRVAL1 187.5 != 187.6'), or None."""
    for (key, va), (_, vb) in zip(a, b, strict=True):  # both GRID_KEYS long
        if va == vb:
            continue
        if (isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool)
                and math.isclose(float(va), float(vb), rel_tol=1e-9, abs_tol=1e-12)):
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


def read_rows(spec: ReadSpec, out: np.ndarray | None = None,
              rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """The plane of `spec` as native float32, a block of rows at a time: yields (first row, block).

    spec: where the plane is. out: a C-contiguous float32 array of spec.shape to fill (each block is a view
    of it); None: one block buffer is reused between yields (use a block before asking for the next).
    rows: rows per block (default: about a megabyte). Each block is read into a small buffer in the file's
    byte order and converted from there while in cache: one pass over the plane, no plane-size temporary.
    """
    from mpimager.reduce.kernel import block_rows

    ny, nx = spec.shape
    raw_type = np.dtype(_BITPIX[spec.bitpix])
    step = rows or block_rows(nx, raw_type.itemsize)
    raw = np.empty((min(step, ny), nx), dtype=raw_type)
    buf = np.empty(raw.shape, dtype=np.float32) if out is None else None
    scaled = spec.bscale != 1.0 or spec.bzero != 0.0
    fd = os.open(spec.path, os.O_RDONLY)
    try:
        for r0 in range(0, ny, step):
            n = min(step, ny - r0)
            src = raw[:n]
            _read_exact(fd, src.data.cast("B"), spec.offset + r0 * nx * raw_type.itemsize, spec.path)
            block = out[r0:r0 + n] if out is not None else buf[:n]  # type: ignore[index]
            np.copyto(block, src, casting="unsafe")
            if spec.blank is not None:
                block[src == spec.blank] = np.nan
            if scaled:
                block *= np.float32(spec.bscale)
                block += np.float32(spec.bzero)
            yield r0, block
    finally:
        os.close(fd)


def read_plane(spec: ReadSpec, out: np.ndarray) -> np.ndarray:
    """Read the plane of `spec` into `out` (C-contiguous float32 of spec.shape) and return it.

    spec: where the plane is. out: the buffer filled.
    """
    for _ in read_rows(spec, out):
        pass
    return out
