"""The mosaic's inputs: one PSF-matched cube (or image) per beam, with its channel weights and beams.

A cube as the gather step writes it: one primary HDU with RA, DEC and a FREQ axis (and a STOKES axis of
length 1, in either order), so a channel is one contiguous plane; the restoring beam in the header
(BMAJ/BMIN/BPA) or per channel in a CASA `BEAMS` table (CASAMBM = T); the linmos weights beside it
(`#Channel Weight`, 1/sigma^2 per channel, 0 for a blank channel). The beam centre is the image reference
direction (CRVAL1/2: the phase centre WSClean imaged, which after FixMS is the beam's own direction).
Reading a header costs one read; planes are read later, one at a time, by `read_plane`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpimager.errors import InputError
from mpimager.reduce.beams import Beam, beam_from_header
from mpimager.reduce.cube import read_weights
from mpimager.reduce.fitsio import (
    STOKES_CODES,
    ReadSpec,
    frequency,
    parse_header,
    pixel_matrix,
    read_header_bytes,
    read_plane,
)

_BEAM_IN_NAME = re.compile(r"beam(\d+)", re.IGNORECASE)
_BYTES = {-32: 4, -64: 8, 8: 1, 16: 2, 32: 4, 64: 8}


@dataclass(frozen=True)
class BeamCube:
    """One beam's cube as the mosaic sees it."""

    path: Path
    beam_id: int
    header: Any  # astropy Header (the primary header)
    shape: tuple[int, int]  # (ny, nx)
    freqs: tuple[float, ...]  # Hz per channel
    width: float | None  # channel width, Hz
    stokes: str
    bunit: str
    beams: tuple[Beam | None, ...]  # restoring beam per channel (None: blank channel)
    weights: tuple[float, ...]  # 1/sigma^2 per channel
    weights_path: Path | None
    centre: tuple[float, float]  # (RA, Dec) deg: the image reference direction
    cell: tuple[float, float]  # |pixel size| (deg) along axes 1 and 2
    reads: tuple[ReadSpec, ...]  # where each channel's plane sits

    @property
    def nchan(self) -> int:
        return len(self.freqs)

    def usable(self, c: int) -> bool:
        """Channel `c` takes part: a beam, a positive weight."""
        return self.beams[c] is not None and self.weights[c] > 0

    def celestial_header(self):
        """The 2-axis celestial header (for astropy WCS / reproject)."""
        from astropy.io import fits

        h = fits.Header()
        for key in ("CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT"):
            for i in (1, 2):
                if f"{key}{i}" in self.header:
                    h[f"{key}{i}"] = self.header[f"{key}{i}"]
        for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CROTA2", "LONPOLE",
                    "LATPOLE", "EQUINOX", "RADESYS"):
            if key in self.header:
                h[key] = self.header[key]
        h["NAXIS"] = 2
        h["NAXIS1"], h["NAXIS2"] = self.shape[1], self.shape[0]
        return h

    def wcs(self):
        """The astropy WCS of the cube's celestial axes (`celestial_header`), its warnings silenced."""
        import warnings

        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return WCS(self.celestial_header())

    def plane(self, c: int, out: np.ndarray | None = None) -> np.ndarray:
        """Channel `c` as native float32 (into `out` when given)."""
        spec = self.reads[c]
        return read_plane(spec, np.empty(spec.shape, dtype=np.float32) if out is None else out)


def _axis(header, prefix: str) -> int | None:
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{i}", "")).upper().startswith(prefix):
            return i
    return None


def _frequencies(header, path: Path, fi: int | None, nchan: int) -> tuple[tuple[float, ...], float | None]:
    """Channel frequencies (Hz) and width of a cube's FREQ axis `fi` (or its one RESTFRQ)."""
    if fi is not None:
        unit = {"HZ": 1.0, "KHZ": 1e3, "MHZ": 1e6, "GHZ": 1e9}.get(str(header.get(f"CUNIT{fi}", "Hz")).upper(), 1.0)
        crval, cdelt = float(header[f"CRVAL{fi}"]), float(header.get(f"CDELT{fi}", 0.0))
        crpix = float(header.get(f"CRPIX{fi}", 1.0))
        return tuple((crval + (c + 1 - crpix) * cdelt) * unit for c in range(nchan)), (abs(cdelt) * unit or None)
    freq, width = frequency(header)
    if freq is None:
        raise InputError(f"{path}: no FREQ axis and no RESTFRQ: the primary beam needs a frequency")
    return (freq,), width


def read_cube_axes(path: Path) -> tuple[float, ...]:
    """The channel frequencies of a FITS image or cube at `path` whose axes 1 and 2 are RA and DEC."""
    raw, _ = read_header_bytes(Path(path))
    header = parse_header(raw, path)
    _celestial(header, path)
    fi = _axis(header, "FREQ")
    return _frequencies(header, path, fi, int(header.get(f"NAXIS{fi}", 1)) if fi else 1)[0]


def _celestial(header, path: Path) -> None:
    ctype1, ctype2 = str(header.get("CTYPE1", "")).upper(), str(header.get("CTYPE2", "")).upper()
    if not (ctype1.startswith("RA") and ctype2.startswith("DEC")):
        raise InputError(f"{path}: axes 1 and 2 are not RA and DEC (CTYPE1={ctype1!r}, CTYPE2={ctype2!r})")


def _checked_weights(path: Path, nchan: int, cube: Path) -> tuple[float, ...]:
    """The linmos weights file `path` of `cube` (read by mpimager.reduce.cube.read_weights): `nchan` weights,
    in channel order; InputError naming the file when it is missing, unreadable or malformed, does not give
    every channel, or gives only zeros."""
    try:
        weights = read_weights(path)
    except FileNotFoundError:
        raise InputError(f"{cube}: no weights file {path} beside it (the gather step writes one; "
                         f"or give the weights with --weights)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if sorted(weights) != list(range(nchan)):
        raise InputError(f"{path}: {len(weights)} channel weights for the {nchan} channels of {cube}")
    if not any(weights.values()):
        raise InputError(f"{path}: every channel weight is 0 (no channel of {cube} can take part)")
    return tuple(weights[c] for c in range(nchan))


def _beams_table(path: Path, nchan: int) -> tuple[Beam | None, ...]:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=True) as hdul:
            if "BEAMS" not in hdul:
                raise InputError(f"{path}: CASAMBM is set but there is no BEAMS table")
            t = hdul["BEAMS"].data
            chans = np.asarray(t["CHAN"]) if "CHAN" in t.names else np.arange(len(t))
            columns = zip(chans, t["BMAJ"], t["BMIN"], t["BPA"], strict=True)
            rows = {int(c): (float(a), float(b), float(p)) for c, a, b, p in columns}
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: unreadable BEAMS table ({exc})") from None
    out = []
    for c in range(nchan):
        a, b, p = rows.get(c, (0.0, 0.0, 0.0))
        out.append(Beam(a, b, p) if a > 0 and b > 0 and math.isfinite(a * b * p) else None)
    return tuple(out)


def read_cube(path: Path, beam_id: int | None = None, weights: Path | None = None) -> BeamCube:
    """Header facts of one beam's cube at `path`; `beam_id` (default: the digits after 'beam' in its name);
    `weights`: its weights file (default: the one the gather step wrote beside it)."""
    from mpimager.planner.products import side_files

    path = Path(path).absolute()
    raw, offset = read_header_bytes(path)
    header = parse_header(raw, path)
    bitpix = int(header.get("BITPIX", 0))
    if bitpix not in _BYTES:
        raise InputError(f"{path}: unsupported BITPIX {bitpix}")
    _celestial(header, path)
    naxis = int(header.get("NAXIS", 0))
    fi, si = _axis(header, "FREQ"), _axis(header, "STOKES")
    extra = {i: int(header.get(f"NAXIS{i}", 1)) for i in range(3, naxis + 1)}
    if si is not None and extra.get(si, 1) != 1:
        raise InputError(f"{path}: holds {extra[si]} Stokes planes; give one cube per Stokes")
    if any(n != 1 for i, n in extra.items() if i not in (fi, si)):
        raise InputError(f"{path}: an axis other than FREQ and STOKES has more than one plane")
    nchan = extra.get(fi, 1) if fi is not None else 1
    nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    plane_bytes = nx * ny * _BYTES[bitpix]
    size = os.stat(path).st_size
    if size < offset + nchan * plane_bytes:
        raise InputError(f"{path}: truncated FITS data ({size} bytes, need {offset + nchan * plane_bytes})")
    freqs, width = _frequencies(header, path, fi, nchan)
    if header.get("CASAMBM") in (True, "T"):
        beams = _beams_table(path, nchan)
    else:
        beam, problem = beam_from_header(header)
        if beam is None:
            raise InputError(f"{path}: {problem}")
        beams = (beam,) * nchan
    stokes = STOKES_CODES.get(round(float(header.get(f"CRVAL{si}", 1.0)))) if si is not None else "I"
    if beam_id is None:
        found = _BEAM_IN_NAME.findall(path.name)
        if not found:
            raise InputError(f"{path}: no beam number in its name (beamNN); give them with --beam-ids")
        beam_id = int(found[-1])
    weights_path = Path(weights).absolute() if weights is not None else side_files(path).weights
    m = pixel_matrix(header, path)
    cell = (math.hypot(m[0][0], m[1][0]), math.hypot(m[0][1], m[1][1]))
    reads = tuple(ReadSpec(str(path), offset + c * plane_bytes, bitpix, (ny, nx), float(header.get("BSCALE", 1.0)),
                           float(header.get("BZERO", 0.0)), None) for c in range(nchan))
    return BeamCube(path=path, beam_id=int(beam_id), header=header, shape=(ny, nx), freqs=freqs, width=width,
                    stokes=stokes or "I", bunit=str(header.get("BUNIT", "")).strip(), beams=beams,
                    weights=_checked_weights(weights_path, nchan, path), weights_path=weights_path,
                    centre=(float(header["CRVAL1"]) % 360.0, float(header["CRVAL2"])), cell=cell, reads=reads)


def read_cubes(paths: Sequence[Path], beam_ids: Sequence[int] | None = None,
               weights: Sequence[Path] | None = None) -> list[BeamCube]:
    """Every input cube of `paths` (with `beam_ids` and `weights` files in the same order when given)."""
    if not paths:
        raise InputError("mosaic: no input cubes given")
    for what, given in (("beam ids", beam_ids), ("weights files", weights)):
        if given is not None and len(given) != len(paths):
            raise InputError(f"mosaic: {len(given)} {what} for {len(paths)} cubes")
    cubes = [read_cube(p, None if beam_ids is None else beam_ids[i], None if weights is None else weights[i])
             for i, p in enumerate(paths)]
    seen: dict[int, Path] = {}
    for c in cubes:
        if c.beam_id in seen:
            raise InputError(f"{c.path}: beam {c.beam_id} is also {seen[c.beam_id]}")
        seen[c.beam_id] = c.path
    return cubes


def check_compatible(cubes: Sequence[BeamCube]) -> None:
    """Refuse (InputError naming the cube and what differs) `cubes` that cannot be mosaicked together:
    another Stokes or unit, another spectral axis, another pixel size, or another restoring beam in a
    channel both use; or no channel of any cube usable."""
    from mpimager.reduce.beams import same_beam

    first = cubes[0]
    for c in cubes[1:]:
        if c.stokes != first.stokes:
            raise InputError(f"{c.path}: Stokes {c.stokes}, but {first.path} is Stokes {first.stokes}")
        if c.bunit.upper() != first.bunit.upper():
            raise InputError(f"{c.path}: BUNIT {c.bunit!r}, but {first.path} has {first.bunit!r}")
        if c.nchan != first.nchan or any(abs(a - b) > 1e-6 * abs(b) for a, b in zip(c.freqs, first.freqs, strict=True)):
            raise InputError(f"{c.path}: another spectral axis ({c.nchan} channels from {c.freqs[0] / 1e6:.4f} MHz) "
                             f"than {first.path} ({first.nchan} from {first.freqs[0] / 1e6:.4f} MHz)")
        if any(abs(a - b) > 1e-6 * b for a, b in zip(c.cell, first.cell, strict=True)):
            raise InputError(f"{c.path}: pixel size {c.cell[0] * 3600:.4f}\" x {c.cell[1] * 3600:.4f}\", but "
                             f"{first.path} has {first.cell[0] * 3600:.4f}\" x {first.cell[1] * 3600:.4f}\"")
    for ch in range(first.nchan):
        using = [c for c in cubes if c.usable(ch)]
        ref = using[0].beams[ch] if using else None
        for c in using[1:]:
            beam = c.beams[ch]
            if beam is not None and ref is not None and not same_beam(beam, ref):
                raise InputError(f"{c.path}: channel {ch} ({c.freqs[ch] / 1e6:.4f} MHz) has the restoring beam "
                                 f"{c.beams[ch]}, but {using[0].path} has {using[0].beams[ch]}: the inputs must share "
                                 f"one beam per channel (gather them with [reduce] scope = 'observation')")
    if not any(c.usable(ch) for c in cubes for ch in range(first.nchan)):
        raise InputError("mosaic: no channel of any input has both a restoring beam and a weight")
