"""The beam log: one ECSV row per cube plane (astropy.table), and reading beam logs back (ours or RACS-tools').

Columns follow RACS-tools' names where it has one, so code written for its logs finds what it expects:
`Channel`, the input beam `BMAJ`/`BMIN` (arcsec) and `BPA` (deg), `Target BMAJ/BMIN/BPA`, `Convolving
BMAJ/BMIN/BPA` and `Convolving factor`; then mpimager's own `FREQ` (Hz), `beam_from` (where the input beam
came from: BEAMS table, header, beam log), `status` (convolved | copied | blanked | gap), `sigma`
(robust, Jy/beam), `source` and `reason`. A missing beam is NaN. The table's meta holds the cube label,
resolution, common beam and mpimager's version. `Table.read(path)` reads it (units included).

`read_beams` reads the per-channel beams of a cube from a beam log: ours (the target beams, i.e. the
cube's own), RACS-tools' input logs (`#Channel BMAJ[arcsec] BMIN[arcsec] BPA[deg]`, commented header)
and its convolving logs (`Target BMAJ ...`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from mpimager.errors import InputError
from mpimager.reduce.beams import Beam, convolving_beam

_NAN = float("nan")


def _triple(b: Beam | None) -> tuple[float, float, float]:
    return (_NAN, _NAN, _NAN) if b is None else (b.major, b.minor, b.pa)


def preload() -> None:
    """Import what `write_beamlog` needs (astropy.table and its ECSV writer: 0.4 s here), e.g. on a helper
    thread while the planes are made, so that the beam logs do not wait for it at the end. A failed import is
    left for `write_beamlog` to raise."""
    with contextlib.suppress(ImportError):
        import astropy.io.ascii.ecsv  # noqa: F401
        import astropy.io.misc.yaml  # noqa: F401
        import astropy.table  # noqa: F401
        import astropy.units  # noqa: F401


def write_beamlog(path: Path, plan, sigmas: Sequence[float], version: str) -> None:
    """The ECSV beam log of `plan` (a CubePlan) with the robust sigma of each plane.

    path: the file written. plan: the cube's plan. sigmas: per plane, in plane order. version: mpimager's.
    """
    import astropy.units as u
    from astropy.table import Table

    rows = []
    for r, s in zip(plan.records, sigmas, strict=True):
        conv = convolving_beam(r.beam_out, r.beam_in) if (r.beam_in and r.beam_out) else None
        factor = r.beam_out.area / r.beam_in.area if (conv is not None and r.status == "convolved") else \
            (1.0 if r.status == "copied" else _NAN)
        rows.append((r.index, r.freq, *_triple(r.beam_in), r.beam_from or "-", *_triple(r.beam_out),
                     *_triple(conv), factor, r.status, s, str(r.source) if r.source else "-", r.reason or "-"))
    names = ["Channel", "FREQ", "BMAJ", "BMIN", "BPA", "beam_from", "Target BMAJ", "Target BMIN", "Target BPA",
             "Convolving BMAJ", "Convolving BMIN", "Convolving BPA", "Convolving factor", "status", "sigma",
             "source", "reason"]
    t = Table(rows=rows, names=names) if rows else Table(names=names)
    for col in names:
        if col.endswith("BMAJ") or col.endswith("BMIN"):
            t[col].unit = u.arcsec
        elif col.endswith("BPA"):
            t[col].unit = u.deg
    t["FREQ"].unit = u.Hz
    t["sigma"].unit = u.Jy / u.beam
    t.meta["cube"] = plan.label
    t.meta["resolution"] = plan.resolution
    if plan.beam is not None:
        t.meta["common_beam_arcsec_deg"] = list(_triple(plan.beam))
    t.meta["written_by"] = f"mpimager {version}"
    tmp = path.with_name(f".{path.name}.tmp")
    t.write(tmp, format="ascii.ecsv", overwrite=True)
    tmp.replace(path)


def _to(col, unit: str) -> list[float]:
    import astropy.units as u

    if getattr(col, "unit", None) is not None:
        return [float(v) for v in col.quantity.to_value(u.Unit(unit))]
    return [float(v) for v in col]


def read_beams(path: Path) -> list[tuple[float, float, float]]:
    """Per-channel (BMAJ arcsec, BMIN arcsec, BPA deg) in channel order from a beam log (NaN: none);
    InputError naming the file if it is unreadable. `beams.beam_from_values` judges each.

    path: an mpimager ECSV beam log or a RACS-tools `beamlog.NAME.txt`.
    """
    from astropy.table import Table

    try:
        with open(path) as f:
            first = f.readline()
        if first.startswith("# %ECSV"):
            t = Table.read(path, format="ascii.ecsv")
        else:
            t = Table.read(path, format="ascii.commented_header")
            for col in list(t.colnames):  # RACS-tools: 'BMAJ[arcsec]' -> 'BMAJ' (arcsec)
                if "[" in col and col.endswith("]"):
                    name, unit = col[:-1].split("[", 1)
                    t[col].unit = unit
                    t.rename_column(col, name)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: unreadable beam log ({exc})") from None
    for prefix in ("Target ", ""):
        if all(f"{prefix}{k}" in t.colnames for k in ("BMAJ", "BMIN", "BPA")):
            try:
                majors, minors = _to(t[f"{prefix}BMAJ"], "arcsec"), _to(t[f"{prefix}BMIN"], "arcsec")
                pas = _to(t[f"{prefix}BPA"], "deg")
            except (ValueError, TypeError) as exc:
                raise InputError(f"{path}: beam log columns are not numbers ({exc})") from None
            order = list(t["Channel"]) if "Channel" in t.colnames else list(range(len(t)))
            beams = list(zip(majors, minors, pas, strict=True))
            return [b for _, b in sorted(zip(order, beams, strict=True), key=lambda x: int(x[0]))]
    raise InputError(f"{path}: beam log has no BMAJ, BMIN, BPA columns (has {', '.join(t.colnames)})")
