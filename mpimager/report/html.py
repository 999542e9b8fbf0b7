"""The report page: one self-contained HTML file (inline CSS and SVG, no script, PNGs by relative path).

Pure: `render(ReportData) -> str`. Sections: summary (run state, job counts, wall time, busy fraction
per rank, failures with their logs), the per-rank timeline, quick-looks of the MFS images, cubes
(beams, noise, spectrum), the job table (links to logs, relative to the run directory), provenance
(versions, the run's argv, the config as resolved, the exact argv of every job).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from urllib.parse import quote

from mpimager.report.gantt import gantt_svg, legend_html
from mpimager.rundir.status import RunStatus, count_line, describe_run

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 1.5em 2em; color: #222;
       max-width: 1400px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td, tr.flagged td { background: #fde8e8; } td.flag { color: #b00; font-weight: bold; }
tr.interrupted td { background: #eee; } tr.running td { background: #eef6ff; }
.state-failed, .beam-failed { color: #b00; font-weight: bold; } .state-done, .beam-done { color: #176b17; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #ddd; padding: 6px; background: #fafafa; }
figure img { display: block; } figcaption { font-size: 0.8em; color: #333; overflow-wrap: anywhere; }
.img-look figcaption { max-width: 360px; }
.img-look img { width: 360px; height: auto; } .cube-look img { width: 100%; max-width: 1350px; height: auto; }
.warn { background: #fff4ce; border: 1px solid #e0c060; padding: 6px 10px; }
.error { color: #b00; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 0.8em; }
.key { margin-right: 1em; font-size: 0.85em; } .swatch { display: inline-block; width: 12px; height: 12px;
       margin-right: 4px; vertical-align: middle; border-radius: 2px; }
"""


@dataclass(frozen=True)
class ImageEntry:
    fits: str
    png: str | None  # relative to the report page
    caption: str
    error: str | None = None
    job: str = ""  # the job that made it: tiles are captioned by job (NenuFAR runs all write img-MFS-image.fits)


@dataclass(frozen=True)
class CubeEntry:
    fits: str
    png: str | None
    caption: str
    error: str | None = None
    job: str = ""


@dataclass(frozen=True)
class ReportData:
    status: RunStatus
    images: Sequence[ImageEntry] = ()
    cubes: Sequence[CubeEntry] = ()
    provenance: dict | None = None
    provenance_note: str = ""
    image_wsclean: Sequence[str] = ()
    missing: str | None = None  # what quick-looks need, when they cannot be made
    problems: Sequence[str] = ()
    generated: float = field(default_factory=time.time)
    beams: Sequence = ()  # mpimager.report.beams.BeamRow
    aux: Sequence[ImageEntry] = ()  # MFS residuals and PSFs
    live: bool = False  # written while the run goes on (rewritten every few minutes)


def href(path: str | None, base: str) -> str | None:
    """A link to `path` from a page in `base`: relative inside `base`, file:// URL outside."""
    if not path:
        return None
    path = os.path.abspath(path)
    base = os.path.abspath(base)
    if path == base or path.startswith(base + os.sep):
        return quote(os.path.relpath(path, base))
    return "file://" + quote(path)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _summary(d: ReportData) -> list[str]:
    st = d.status
    out = ["<h2 id='summary'>Summary</h2>", f"<p>{escape(describe_run(st))}</p>",
           f"<p><b>{escape(count_line(st))}</b></p>"]
    busy: dict[int, float] = {}
    for j in st.jobs:
        if j.rank is not None and j.start is not None and not j.earlier:
            d_ = j.duration(st.now)
            if d_ is not None:
                busy[j.rank] = busy.get(j.rank, 0.0) + d_
    wall = None
    if st.started:
        wall = (st.ended or (st.now if st.state == "running" else st.last_record) or st.started) - st.started
    facts = []
    if wall is not None:
        facts.append(f"wall time {wall:.1f} s")
    if busy and wall:
        facts.append("busy fraction per rank: " + ", ".join(f"rank {r} {t / max(wall, 1e-9):.0%}"
                                                           for r, t in sorted(busy.items())))
    facts.append(f"{len(d.images)} MFS image{'s' * (len(d.images) != 1)}, {len(d.cubes)} "
                 f"cube{'s' * (len(d.cubes) != 1)}")
    out.append("<p>" + escape("; ".join(facts)) + "</p>")
    failed = [j for j in st.jobs if j.state == "failed"]
    if failed:
        out.append("<p class='error'><b>Failures</b></p><ul>")
        for j in failed:
            link = href(j.log, st.run_dir)
            log = f" &mdash; <a href='{escape(link)}'>log</a>" if link else ""
            out.append(f"<li class='error'>{escape(j.id)}: {escape(j.error or '')}{log}</li>")
        out.append("</ul>")
    if d.missing:
        out.append(f"<p class='warn'>{escape(d.missing)}</p>")
    for p in d.problems:
        out.append(f"<p class='warn'>{escape(p)}</p>")
    return out


def _images(d: ReportData) -> list[str]:
    out = ["<h2 id='images'>MFS images</h2>"]
    if not d.images:
        return out + ["<p>No MFS image among the products.</p>"]
    return out + ["<div class='grid'>"] + [_figure(e, d, "img-look", "quick-look of") for e in d.images] + ["</div>"]


def _cubes(d: ReportData) -> list[str]:
    out = ["<h2 id='cubes'>Cubes</h2>"]
    if not d.cubes:
        return out + ["<p>No cube among the products.</p>"]
    return out + [_figure(e, d, "cube-look", "beams, noise and spectrum of") for e in d.cubes]


def _figure(e, d: ReportData, css: str, alt: str) -> str:
    """One quick-look: its PNG (or why there is none), captioned with a link to the FITS file."""
    link = href(e.fits, d.status.run_dir)
    name = escape(os.path.basename(e.fits))
    title = f"<a href='{escape(link)}'>{name}</a>" if link else name
    if e.job:
        title = f"<b>{escape(e.job)}</b><br>{title}"
    if e.png:
        img = f"<a href='{escape(e.png)}'><img src='{escape(e.png)}' alt='{alt} {name}'></a>"
    else:
        img = f"<p class='{'error' if e.error else 'warn'}'>{escape(e.error or d.missing or '')}</p>"
    return f"<figure class='{css}'>{img}<figcaption>{title}<br>{escape(e.caption)}</figcaption></figure>"


def _beams(d: ReportData) -> list[str]:
    from mpimager.report.beams import footprint_svg, table_html

    if not d.beams:
        return []
    out = table_html(d.beams)
    svg = footprint_svg(d.beams)
    if svg:
        out += ["<h2 id='footprint'>Footprint on the sky</h2>", svg]
    return out


def _aux(d: ReportData) -> list[str]:
    if not d.aux:
        return []
    return ["<h2 id='residuals'>Residuals and PSFs</h2>", "<div class='grid'>"] + \
        [_figure(e, d, "img-look", "quick-look of") for e in d.aux] + ["</div>"]


def _timeline(d: ReportData) -> list[str]:
    st = d.status
    svg = gantt_svg(st.jobs, now=st.now, last_record=st.last_record)
    out = ["<h2 id='timeline'>Timeline per rank</h2>"]
    if not svg:
        return out + ["<p>No job of this run has started.</p>"]
    earlier = sum(j.earlier for j in st.jobs)
    out += [f"<p>{legend_html()}</p>", svg]
    if earlier:
        out.append(f"<p>{earlier} job{'s' * (earlier > 1)} done by an earlier run of this directory "
                   f"{'are' if earlier > 1 else 'is'} not shown.</p>")
    return out


def _jobs(d: ReportData) -> list[str]:
    st = d.status
    t0 = min((j.start for j in st.jobs if j.start is not None and not j.earlier), default=None)
    out = ["<h2 id='jobs'>Jobs</h2>", "<table><tr><th>job</th><th>kind</th><th>state</th><th>host</th>"
           "<th>rank</th><th>start (s)</th><th>wall (s)</th><th>retries</th><th>log</th><th>error / reason</th></tr>"]
    for j in st.jobs:
        dur = j.duration(st.now)
        start = "-" if j.start is None or t0 is None or j.earlier else f"{j.start - t0:.1f}"
        link = href(j.log, st.run_dir) if j.state in ("done", "failed", "running", "interrupted") or j.earlier \
            else None
        log = f"<a href='{escape(link)}'>{escape(os.path.basename(j.log))}</a>" if link and j.log else "-"
        why = j.error or ""
        out.append(f"<tr class='{j.state}'><td>{escape(j.id)}</td><td>{escape(j.kind)}</td>"
                   f"<td class='state-{j.state}'>{escape(j.state)}</td><td>{escape(j.host or '-')}</td>"
                   f"<td class='num'>{'-' if j.rank is None else j.rank}</td><td class='num'>{start}</td>"
                   f"<td class='num'>{'-' if dur is None else f'{dur:.1f}'}</td>"
                   f"<td class='num'>{'-' if j.retries is None else j.retries}</td><td>{log}</td>"
                   f"<td>{escape(why)}</td></tr>")
    out.append("</table>")
    return out


def _provenance(d: ReportData) -> list[str]:
    out = ["<h2 id='provenance'>Provenance</h2>"]
    p = d.provenance or {}
    if d.provenance_note:
        out.append(f"<p class='warn'>{escape(d.provenance_note)}</p>")
    versions = p.get("versions", {})
    if versions:
        out.append("<table><tr><th>component</th><th>version</th></tr>")
        for name, v in versions.items():
            if isinstance(v, dict):
                v = "; ".join(f"{k}: {x}" for k, x in v.items())
            out.append(f"<tr><td>{escape(str(name))}</td><td>{escape(str(v))}</td></tr>")
        if d.image_wsclean:
            out.append(f"<tr><td>WSClean (image headers)</td><td>{escape(', '.join(d.image_wsclean))}</td></tr>")
        out.append("</table>")
    facts = [(k, p[k]) for k in ("recorded", "host", "platform", "cwd", "config") if p.get(k)]
    if facts:
        out.append("<p>" + "<br>".join(f"{escape(k)}: {escape(str(v))}" for k, v in facts) + "</p>")
    if p.get("argv"):
        out.append(f"<p>command line:</p><pre>{escape(shlex.join(map(str, p['argv'])))}</pre>")
    if p.get("config_resolved") is not None:
        out.append("<details><summary>config as resolved (every table after merging defaults, "
                   "includes and the file)</summary>"
                   f"<pre>{escape(json.dumps(p['config_resolved'], indent=1))}</pre></details>")
    argvs = "\n\n".join(f"# {j.id}\n{shlex.join(j.argv)}" for j in d.status.jobs if j.argv)
    if argvs:
        out.append(f"<details><summary>exact argv of every job</summary><pre>{escape(argvs)}</pre></details>")
    return out


def render(d: ReportData) -> str:
    """The whole page of the report data `d`, as HTML text."""
    st = d.status
    title = f"mpimager run report: {os.path.basename(st.run_dir.rstrip(os.sep)) or st.run_dir}"
    body: list[str] = [f"<h1>{escape(title)}</h1>",
                       f"<p class='sub'>{escape(st.run_dir)} &mdash; report written {escape(_when(d.generated))}</p>",
                       "<p><a href='#summary'>summary</a> &middot; <a href='#timeline'>timeline</a> &middot; "
                       "<a href='#beams'>per beam</a> &middot; "
                       "<a href='#images'>images</a> &middot; <a href='#residuals'>residuals and PSFs</a> &middot; "
                       "<a href='#cubes'>cubes</a> &middot; "
                       "<a href='#jobs'>jobs</a> &middot; <a href='#provenance'>provenance</a></p>"]
    if d.live:
        body.append("<p class='warn'>The run is going on: this page is rewritten every few minutes "
                    "(reload to see the latest).</p>")
    for section in (_summary, _timeline, _beams, _images, _aux, _cubes, _jobs, _provenance):
        body += section(d)
    from mpimager.report.provenance import printable

    return printable("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
                     f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
                     + "\n".join(body) + "\n</body>\n</html>\n")

