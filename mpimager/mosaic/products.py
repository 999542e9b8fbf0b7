"""The mosaic's files: headers, the beam-centre and BEAMS tables, the beam log (their paths: planner.products).

Names, for a mosaic NAME (in a run: FIELD[.PASS]-STOKES-KIND, e.g. RACS_1347-37A.I-I-restored):
    NAME.mosaic.fits          the cube: RA, DEC, FREQ, STOKES (one plane per channel)
    NAME.mosaic.mfs.fits      the MFS image: every channel combined by the same formula (one plane)
    NAME.mosaic.weight.fits   the sensitivity cube sum_i w_i P_i^2 (the noise is 1/sqrt of it)
    NAME.mosaic.beamlog.txt   per channel: restoring beam, beams used, peak weight; then per beam
Every FITS file carries a `BEAMCENTRES` binary table (BEAM, RA, DEC in degrees, WEIGHT = the beam's
mean 1/sigma^2 over its channels) and, when the channels' restoring beams differ, a CASA `BEAMS` table
(CASAMBM = T). Files are created at full size under `.NAME.partial` names and renamed when verified.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mpimager.mosaic.grid import FieldGrid
from mpimager.mosaic.inputs import BeamCube
from mpimager.reduce.beams import Beam
from mpimager.reduce.fitsio import STOKES_VALUES

BEAM_TABLE = "BEAMCENTRES"
#: header keys copied from the first input cube
_COPIED = ("BUNIT", "BTYPE", "TELESCOP", "INSTRUME", "OBSERVER", "OBJECT", "DATE-OBS", "MJD-OBS", "TIMESYS",
           "SPECSYS", "RESTFRQ", "ORIGIN")


def partial(path: Path) -> Path:
    """The hidden name a mosaic file at `path` is written under until it is verified: `.NAME.partial`."""
    return path.with_name(f".{path.name}.partial")


def channel_beams(cubes: Sequence[BeamCube]) -> list[Beam | None]:
    """The restoring beam of each channel of `cubes` (that of the inputs using it; None: no input uses it)."""
    return [next((c.beams[ch] for c in cubes if c.usable(ch)), None) for ch in range(cubes[0].nchan)]


def one_beam(beams: Sequence[Beam | None]) -> Beam | None:
    """The beam every used channel of `beams` (None: unused) shares, else None."""
    from mpimager.reduce.beams import same_beam

    used = [b for b in beams if b is not None]
    return used[0] if used and all(same_beam(b, used[0]) for b in used) else None


def header(cubes: Sequence[BeamCube], grid: FieldGrid, freqs: Sequence[float], width: float,
           beam: Beam | None, what: str, history: str):
    """The primary header of a mosaic file: the field `grid`, a FREQ axis of `freqs` (regular; one channel
    `width` Hz wide when there is one) and STOKES, keys copied from the first of `cubes`, the restoring `beam`
    (None: per channel in BEAMS for a cube, none for the MFS image), a `history` line.

    `what` is the file: "cube", "mfs" or "weight" (unitless sensitivity).
    """
    import warnings

    from astropy.io import fits

    first = cubes[0]
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = -32
    h["NAXIS"] = 4
    h["NAXIS1"], h["NAXIS2"], h["NAXIS3"], h["NAXIS4"] = grid.shape[1], grid.shape[0], len(freqs), 1
    h["EXTEND"] = True
    for key, value in grid.cards().items():
        if not key.startswith("NAXIS"):
            h[key] = value
    step = (freqs[1] - freqs[0]) if len(freqs) > 1 else width
    for key, value in (("CTYPE3", "FREQ"), ("CRPIX3", 1.0), ("CRVAL3", float(freqs[0])), ("CDELT3", float(step)),
                       ("CUNIT3", "Hz"), ("CTYPE4", "STOKES"), ("CRPIX4", 1.0),
                       ("CRVAL4", float(STOKES_VALUES.get(first.stokes, 1))), ("CDELT4", 1.0), ("CUNIT4", "")):
        h[key] = value
    for key in _COPIED:
        if key in first.header:
            h[key] = first.header[key]
    if beam is not None:
        for key, value in beam.header_values().items():
            h[key] = value
    elif what == "cube":
        h["CASAMBM"] = (True, "one beam per plane in the BEAMS table")
    elif what == "mfs":
        h["COMMENT"] = "the channels' restoring beams differ: this MFS image has no single restoring beam"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "INSTRUMENT_RECEPTOR_ANGLE" in first.header:
            h["HIERARCH INSTRUMENT_RECEPTOR_ANGLE"] = (float(first.header["INSTRUMENT_RECEPTOR_ANGLE"]), "deg")
    if what == "weight":
        h["BUNIT"] = ""
        h["BTYPE"] = "Weight"
        h["COMMENT"] = "sum_i w_i P_i^2, w = 1/sigma^2 of each beam: the mosaic noise is 1/sqrt(weight)"
    h["MOSAIC"] = (what, "mpimager mosaic product")
    h.add_history(history)
    return h


def _bytes_of(hdu) -> bytes:
    """An extension HDU serialised as it sits after a primary HDU."""
    from astropy.io import fits

    buf = io.BytesIO()
    primary = fits.PrimaryHDU()
    fits.HDUList([primary, hdu]).writeto(buf)
    return buf.getvalue()[len(primary.header.tostring()):]


def beam_centre_table(cubes: Sequence[BeamCube]) -> bytes:
    """The `BEAMCENTRES` table of `cubes`: BEAM, RA (deg), DEC (deg), WEIGHT (mean 1/sigma^2 over the beam's
    used channels), as the bytes of a FITS extension."""
    from astropy.io import fits

    weights = [float(np.mean([w for ch, w in enumerate(c.weights) if c.usable(ch)] or [0.0])) for c in cubes]
    cols = [fits.Column("BEAM", "1J", array=np.array([c.beam_id for c in cubes], dtype=np.int32)),
            fits.Column("RA", "1D", "deg", array=np.array([c.centre[0] for c in cubes])),
            fits.Column("DEC", "1D", "deg", array=np.array([c.centre[1] for c in cubes])),
            fits.Column("WEIGHT", "1D", array=np.array(weights))]
    hdu = fits.BinTableHDU.from_columns(cols, name=BEAM_TABLE)
    hdu.header["COMMENT"] = "beam centres: the image reference direction of each beam's cube"
    return _bytes_of(hdu)


def beams_table(beams: Sequence[Beam | None]) -> bytes:
    """A CASA `BEAMS` table of the channels' `beams` (arcsec, arcsec, deg; zeros for channels without a
    beam), as the bytes of a FITS extension."""
    from astropy.io import fits

    rows = np.array([(b.major, b.minor, b.pa) if b is not None else (0.0, 0.0, 0.0) for b in beams], dtype=np.float32)
    n = len(beams)
    cols = [fits.Column("BMAJ", "1E", "arcsec", array=rows[:, 0]),
            fits.Column("BMIN", "1E", "arcsec", array=rows[:, 1]),
            fits.Column("BPA", "1E", "deg", array=rows[:, 2]),
            fits.Column("CHAN", "1J", array=np.arange(n, dtype=np.int32)),
            fits.Column("POL", "1J", array=np.zeros(n, dtype=np.int32))]
    hdu = fits.BinTableHDU.from_columns(cols, name="BEAMS")
    hdu.header["EXTVER"], hdu.header["NCHAN"], hdu.header["NPOL"] = 1, n, 1
    return _bytes_of(hdu)


def write_beamlog(path: Path, name: str, cubes: Sequence[BeamCube], beams: Sequence[Beam | None],
                  used: Sequence[int], peaks: Sequence[float], grid: FieldGrid, cutoff: float, model: str) -> None:
    """Write the beam log of the mosaic `name` to `path`: the `grid`, the primary-beam `model` and `cutoff`,
    then per channel (freq, restoring beam of `beams`, the number of beams `used`, the peak weight of `peaks`),
    then per beam of `cubes` (number, RA, Dec, file, weight per channel)."""
    def fmt(b):
        return "- - -" if b is None else f"{b.major:.4f} {b.minor:.4f} {b.pa:.3f}"

    lines = [f"# mpimager mosaic beam log: {name}",
             f"# grid RA---SIN/DEC--SIN at ({grid.centre[0]:.6f}, {grid.centre[1]:.6f}) deg, "
             f"{grid.cell * 3600:.4f}\" pixels, {grid.shape[1]} x {grid.shape[0]}",
             f"# primary beam {model}, cutoff {cutoff:g}",
             "#channel freq_Hz bmaj bmin bpa beams_used peak_weight"]
    for ch, (b, n, p) in enumerate(zip(beams, used, peaks, strict=True)):
        lines.append(f"{ch} {cubes[0].freqs[ch]:.6f} {fmt(b)} {n} {p:.6g}")
    lines.append("#beam ra_deg dec_deg file weights...")
    for c in cubes:
        lines.append(f"# {c.beam_id} {c.centre[0]:.8f} {c.centre[1]:.8f} {c.path} "
                     + " ".join(f"{w:.6g}" for w in c.weights))
    path.write_text("\n".join(lines) + "\n")
