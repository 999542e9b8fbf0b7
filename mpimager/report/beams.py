"""The per-beam review of a run: one row per imaging job and Stokes, with the numbers that tell a bad beam.

`beam_rows(jobs)` reads each WSClean job's MFS image(s) (rms, peak, dynamic range, restoring beam, centre and
extent) and the beam logs of the gather jobs (blanked channels and why); `flag_rows` marks the rows that stand
out by a documented rule (`FLAG_FACTOR`); `footprint_svg` draws where the beams are on the sky. Pure apart from
reading FITS headers/pixels and beam logs.

Flag rule, per Stokes over the run's beams: a job that failed (or was not run: a dependency failed); an rms
more than `FLAG_FACTOR` times the median rms; a dynamic range below the median / `FLAG_FACTOR` (with at least
3 beams to compare); any blanked channel.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from html import escape

FLAG_FACTOR = 3.0


@dataclass(frozen=True)
class BeamRow:
    """One imaging job's Stokes: what its MFS image and its cube's beam log say."""

    beam: str  # the ASKAP beam number, else the job id
    job: str
    stokes: str
    state: str
    error: str = ""
    image: str | None = None
    rms: float | None = None
    peak: float | None = None
    restoring: tuple[float, float, float] | None = None  # arcsec, arcsec, deg
    centre: tuple[float, float] | None = None  # RA, Dec (deg)
    radius_deg: float | None = None  # half the image side
    blanked: tuple[str, ...] = ()  # "plane 2: reason"
    flags: tuple[str, ...] = field(default=())

    @property
    def dynamic_range(self) -> float | None:
        return self.peak / self.rms if self.peak is not None and self.rms else None


def mfs_images(outputs: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Stokes -> (path, prefix) of the MFS (or single-channel) restored image among a WSClean job's outputs."""
    from mpimager.wsclean.names import overview_image

    found = {}
    for path in outputs:
        n = overview_image(os.path.basename(path))
        if n is not None and n.kind == "image":
            found[n.pol or "I"] = (path, n.prefix)
    return found


def _blanked_channels(beamlog: str) -> list[str]:
    """'plane N: reason' of each blanked plane of the mpimager beam log at `beamlog` (ECSV with `status`
    and `reason` columns; the older text log with the status in column 9 is read too)."""
    try:
        with open(beamlog) as f:
            first = f.readline()
        if first.startswith("# %ECSV"):
            from astropy.table import Table

            t = Table.read(beamlog, format="ascii.ecsv")
            if "status" not in t.colnames:
                return []
            plane = t["Channel"] if "Channel" in t.colnames else range(len(t))
            reason = t["reason"] if "reason" in t.colnames else ["no reason given"] * len(t)
            return [f"plane {p}: {r}" for p, st, r in zip(plane, t["status"], reason, strict=True) if st == "blanked"]
        out = []
        with open(beamlog) as f:
            for line in f:
                cols = line.split(maxsplit=11)
                if not line.startswith("#") and len(cols) >= 10 and cols[8] == "blanked":
                    out.append(f"plane {cols[0]}: {cols[11].strip() if len(cols) > 11 else 'no reason given'}")
        return out
    except (OSError, ValueError):
        return []


def blanked_summary(outputs: Sequence[str]) -> list[str]:
    """One line per cube with blanked channels, from the beam logs among a gather job's outputs, e.g.
    'beam00.I-I-restored.cube: 1 channel blanked (plane 0: BMAJ 31.2" > psf_cutoff 25")'."""
    lines = []
    for out in outputs:
        name = os.path.basename(out)
        if "beamlog" not in name or not name.endswith((".txt", ".ecsv")):
            continue
        blanked = _blanked_channels(out)
        if blanked:
            cube = re.sub(r"\.(txt|ecsv)$", "", name.replace(".beamlog.", ".").replace("beamlog.", ""))
            more = f"; and {len(blanked) - 1} more" if len(blanked) > 1 else ""
            lines.append(f"{cube}: {len(blanked)} channel{'s' * (len(blanked) > 1)} blanked ({blanked[0]}{more})")
    return lines


def _image_facts(path: str) -> dict:
    import numpy as np
    from astropy.io import fits

    from mpimager.reduce.cube import robust_sigma
    from mpimager.report.quicklook import header_beam

    with fits.open(path, memmap=True) as hdul:
        header = hdul[0].header
        data = np.asarray(hdul[0].data, dtype=np.float32).squeeze()
    finite = data[np.isfinite(data)]
    side = max(int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0)))
    return {"rms": robust_sigma(np.atleast_2d(data), samples=data.size) if finite.size else None,
            "peak": float(np.max(np.abs(finite))) if finite.size else None,
            "restoring": header_beam(header),
            "centre": (float(header["CRVAL1"]), float(header["CRVAL2"])) if "CRVAL1" in header else None,
            "radius_deg": abs(float(header.get("CDELT1", 0.0))) * side / 2 or None}


def beam_rows(jobs: Sequence) -> list[BeamRow]:
    """Rows for every WSClean job of `jobs` (mpimager.rundir.status.JobStatus), with the blanked channels of the
    gather job that took its images."""
    cube_logs: dict[str, list[str]] = {}  # "prefix basename Stokes" -> blanked planes
    for j in jobs:
        if j.kind == "reduce":
            for out in j.outputs:
                if "beamlog" in os.path.basename(out) and out.endswith((".txt", ".ecsv")):
                    cube_logs[os.path.basename(out)] = _blanked_channels(out)
    rows = []
    for j in jobs:
        if j.kind != "wsclean":
            continue
        tags = dict(j.tags)
        beam = tags.get("beam") or j.id.split(":", 1)[-1]
        images = mfs_images(j.outputs)
        if not images:
            rows.append(BeamRow(beam=beam, job=j.id, stokes="-", state=j.state, error=j.error or ""))
            continue
        for stokes, (path, prefix) in sorted(images.items(), key=lambda kv: "IQUV".find(kv[0][0])):
            blanked = next((v for k, v in cube_logs.items() if _log_of(k, prefix, stokes)), [])
            try:
                facts = _image_facts(path)
            except Exception as exc:  # noqa: BLE001 - one unreadable image must not lose the table
                rows.append(BeamRow(beam, j.id, stokes, j.state, error=f"unreadable: {exc}", image=path))
                continue
            rows.append(BeamRow(beam, j.id, stokes, j.state, image=path, blanked=tuple(blanked), **facts))
    return flag_rows(rows)


def _log_of(log_name: str, prefix: str, stokes: str) -> bool:
    """Is `log_name` the beam log of the cube of (`prefix`, `stokes`) under either naming?"""
    if log_name.startswith(f"{prefix}-{stokes}-"):
        return True
    rest = prefix[len("image."):] if prefix.startswith("image.") else prefix
    return f".{stokes.lower()}.{rest}." in log_name


def flag_rows(rows: Sequence[BeamRow]) -> list[BeamRow]:
    """The rows with their flags set by the module's rule."""
    by_stokes: dict[str, list[BeamRow]] = {}
    for r in rows:
        by_stokes.setdefault(r.stokes, []).append(r)
    out = []
    for r in rows:
        flags = []
        if r.state in ("failed", "skipped", "interrupted") or r.error:
            flags.append(f"{r.state}: {r.error}" if r.error else r.state)
        peers = [p for p in by_stokes.get(r.stokes, []) if p.rms]
        if len(peers) >= 3 and r.rms:
            med_rms = statistics.median(p.rms for p in peers if p.rms is not None)
            if med_rms and r.rms > FLAG_FACTOR * med_rms:
                flags.append(f"rms {r.rms / med_rms:.1f}x the median of Stokes {r.stokes}")
            drs = [p.dynamic_range for p in peers if p.dynamic_range]
            med_dr = statistics.median(drs) if drs else None
            if med_dr and r.dynamic_range and r.dynamic_range < med_dr / FLAG_FACTOR:
                flags.append(f"dynamic range {r.dynamic_range:.0f}, median {med_dr:.0f}")
        if r.blanked:
            flags.append(f"{len(r.blanked)} blanked channel{'s' * (len(r.blanked) > 1)}")
        out.append(replace(r, flags=tuple(flags)))
    return out


def _flux(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v * 1e3:.3g} mJy" if abs(v) < 1 else f"{v:.3g} Jy"


def table_html(rows: Sequence[BeamRow]) -> list[str]:
    """The per-beam table; flagged rows stand out (class 'flagged') with their reasons."""
    bad = sum(bool(r.flags) for r in rows)
    out = ["<h2 id='beams'>Per beam</h2>",
           f"<p>{len(rows)} row{'s' * (len(rows) != 1)} (an imaging job's Stokes), "
           f"<b>{bad} flagged</b> (failed, rms over {FLAG_FACTOR:g}x or dynamic range under 1/{FLAG_FACTOR:g} of "
           "the median of its Stokes, or blanked channels)</p>",
           "<table id='beam-table'><tr><th>beam</th><th>job</th><th>Stokes</th><th>state</th><th>rms</th>"
           "<th>peak</th><th>dynamic range</th><th>restoring beam</th><th>blanked channels</th><th>flag</th></tr>"]
    for r in rows:
        beam = f"{r.restoring[0]:.1f}\" x {r.restoring[1]:.1f}\" pa {r.restoring[2]:.0f}" if r.restoring else "-"
        dr = f"{r.dynamic_range:.0f}" if r.dynamic_range else "-"
        blank = "; ".join(r.blanked) if r.blanked else "0"
        flag = "; ".join(r.flags)
        out.append(f"<tr class='{'flagged' if r.flags else 'ok'}' data-beam='{escape(r.beam)}'>"
                   f"<td>{escape(r.beam)}</td><td>{escape(r.job)}</td><td>{escape(r.stokes)}</td>"
                   f"<td class='beam-{escape(r.state)}'>{escape(r.state)}</td><td class='num'>{_flux(r.rms)}</td>"
                   f"<td class='num'>{_flux(r.peak)}</td><td class='num'>{dr}</td><td>{escape(beam)}</td>"
                   f"<td>{escape(blank)}</td><td class='flag'>{'&#9873; ' + escape(flag) if flag else ''}</td></tr>")
    out.append("</table>")
    return out


def footprint_svg(rows: Sequence[BeamRow], size: int = 420) -> str:
    """The beams of `rows` on the sky (tangent plane around their mean centre, north up, east left) as an
    <svg> `size` pixels square: a circle of each image's half side, its number, red when any of its rows is
    flagged; '' without positions."""
    beams: dict[str, tuple[tuple[float, float], float, bool]] = {}
    for r in rows:
        if r.centre and r.radius_deg:
            old = beams.get(r.beam)
            beams[r.beam] = (r.centre, r.radius_deg, bool(r.flags) or bool(old and old[2]))
    failed = {r.beam for r in rows if r.flags and not r.centre}
    if not beams:
        return ""
    ra0 = math.degrees(math.atan2(sum(math.sin(math.radians(c[0])) for c, _, _ in beams.values()),
                                  sum(math.cos(math.radians(c[0])) for c, _, _ in beams.values())))
    dec0 = sum(c[1] for c, _, _ in beams.values()) / len(beams)
    pts = {b: (-((c[0] - ra0 + 180) % 360 - 180) * math.cos(math.radians(dec0)), c[1] - dec0, rad, bad)
           for b, (c, rad, bad) in beams.items()}
    extent = max(max(abs(x), abs(y)) + rad for x, y, rad, _ in pts.values()) or 1.0
    scale = (size / 2 - 20) / extent
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{size}' height='{size}' "
             f"viewBox='0 0 {size} {size}' id='footprint' style='background: #fafafa'>"]
    for b, (x, y, rad, bad) in sorted(pts.items()):
        cx, cy, rr = size / 2 + x * scale, size / 2 - y * scale, rad * scale
        colour = "#c00" if bad or b in failed else "#2a6"
        parts.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='{rr:.1f}' fill='{colour}' fill-opacity='0.12' "
                     f"stroke='{colour}'/><text x='{cx:.1f}' y='{cy + 4:.1f}' text-anchor='middle' font-size='12' "
                     f"fill='{colour}'>{escape(b)}</text>")
    lost = f"; no image of {', '.join(sorted(failed))}" if failed else ""
    parts.append(f"<text x='6' y='{size - 6}' font-size='11' fill='#555'>N up, E left; "
                 f"{2 * extent:.2f} deg across; red: flagged{escape(lost)}</text></svg>")
    return "".join(parts)
