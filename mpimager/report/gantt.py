"""The per-rank timeline of a run's jobs as inline SVG (pure text: no matplotlib needed).

One row per rank that ran a job, one bar per job from its start to its end (a running job to now, an
interrupted one to the journal's last record), coloured by kind; failed jobs red, interrupted ones grey
with a red outline; each bar's tooltip (<title>) gives the job, its state and its duration.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

KIND_COLOURS = {"fixms": "#4e79a7", "wsclean": "#59a14f", "reduce": "#f28e2b"}
OTHER_COLOUR = "#b07aa1"
FAILED_COLOUR = "#d62728"
INTERRUPTED_COLOUR = "#9c9c9c"
ROW_H, BAR_H, LABEL_W, TOP, BOTTOM = 22, 16, 150, 26, 34


_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)


def _ticks(span: float) -> float:
    """A round tick step giving at most 10 ticks over `span` seconds."""
    return float(next((s for s in _STEPS if span / s <= 10), span / 10))


def _label(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _bars(jobs: Sequence, now: float, last_record: float | None) -> list[tuple]:
    """(rank, host, start, end, job) of every job of `jobs` (JobStatus) this run started on a rank; a
    running job ends at `now`, one without an end at `last_record` (the journal's last record)."""
    out = []
    for j in jobs:
        if j.start is None or j.rank is None or j.earlier:
            continue
        end = j.end if j.end is not None else (now if j.state == "running" else (last_record or j.start))
        out.append((j.rank, j.host, j.start, max(end, j.start), j))
    return out


def gantt_svg(jobs: Sequence, *, now: float, last_record: float | None = None, width: int = 1100) -> str:
    """The timeline of `jobs` (JobStatus) as an <svg> element `width` pixels wide ('' when no job of this
    run started); `now` and `last_record` end the bars of jobs without an end, as in `_bars`."""
    rows = _bars(jobs, now, last_record)
    if not rows:
        return ""
    t0 = min(r[2] for r in rows)
    t1 = max(r[3] for r in rows)
    span = max(t1 - t0, 1.0)
    ranks = sorted({r[0] for r in rows})
    hosts = {r[0]: r[1] for r in rows}
    plot_w = width - LABEL_W - 20
    height = TOP + ROW_H * len(ranks) + BOTTOM

    def x(t: float) -> float:
        return LABEL_W + (t - t0) / span * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="per-rank timeline of the jobs">']
    step = _ticks(span)
    k = 0
    while k * step <= span + 1e-9:
        xx = x(t0 + k * step)
        parts.append(f'<line x1="{xx:.1f}" y1="{TOP - 4}" x2="{xx:.1f}" y2="{height - BOTTOM + 4}" '
                     f'stroke="#ddd" stroke-width="1"/>')
        parts.append(f'<text x="{xx:.1f}" y="{height - BOTTOM + 18}" font-size="11" text-anchor="middle" '
                     f'fill="#444">{escape(_label(k * step))}</text>')
        k += 1
    for i, rank in enumerate(ranks):
        y: float = TOP + i * ROW_H
        label = f"rank {rank}" + (f" ({hosts[rank]})" if hosts.get(rank) else "")
        parts.append(f'<text x="{LABEL_W - 8}" y="{y + ROW_H / 2 + 4:.1f}" font-size="12" text-anchor="end" '
                     f'fill="#222">{escape(label)}</text>')
    for rank, _, start, end, j in rows:
        y = TOP + ranks.index(rank) * ROW_H + (ROW_H - BAR_H) / 2
        colour = {"failed": FAILED_COLOUR, "interrupted": INTERRUPTED_COLOUR}.get(
            j.state, KIND_COLOURS.get(j.kind, OTHER_COLOUR))
        extra = ' stroke="#d62728" stroke-width="1.5"' if j.state == "interrupted" else \
            ' stroke="#fff" stroke-width="0.5"'
        if j.state == "running":
            extra += ' fill-opacity="0.55"'
        w = max(x(end) - x(start), 1.0)
        tip = f"{j.id}: {j.state}, {end - start:.1f} s" + (f", rank {rank}" if rank is not None else "")
        parts.append(f'<rect x="{x(start):.1f}" y="{y:.1f}" width="{w:.1f}" height="{BAR_H}" rx="2" '
                     f'fill="{colour}"{extra}><title>{escape(tip)}</title></rect>')
    parts.append(f'<text x="{LABEL_W}" y="14" font-size="11" fill="#444">time since the first job started; '
                 f'hover a bar for the job</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def legend_html() -> str:
    """The colour key of the timeline as HTML: one swatch per job kind, failed and interrupted."""
    items = [(c, k) for k, c in KIND_COLOURS.items()] + [(FAILED_COLOUR, "failed"),
                                                        (INTERRUPTED_COLOUR, "interrupted")]
    return " ".join(f'<span class="key"><span class="swatch" style="background:{c}"></span>{escape(k)}</span>'
                    for c, k in items)
