"""The run report: RUN_DIR/report.html, its quick-look PNGs in RUN_DIR/report/, all within the run directory.

`write_report(run_dir)` reads the journal (mpimager.rundir.status), the manifest (provenance) and the products
of the finished jobs, draws a quick-look of each MFS image and each cube (mpimager.report.quicklook:
needs matplotlib, the `[report]` extra; without it the page says so and keeps its other sections) and
renders the page (mpimager.report.html): summary, a per-beam table that flags the beam that stands out
(mpimager.report.beams) with the beams' footprint on the sky, quick-looks captioned by the job that made them
(MFS images, residuals and PSFs, cubes), jobs and provenance. It is written at the end of every run, every
`REFRESH_S` seconds while a run goes on (`LiveReport`), and by `mpimager report`.
A product that cannot be drawn gets its error in the page instead of a picture. Quick-looks are cached
in RUN_DIR/report/quicklooks.json by FITS path, size and mtime: writing the report again only draws
what changed. The page is replaced atomically.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mpimager.atomic import write_text_atomic
from mpimager.report import products
from mpimager.report.html import CubeEntry, ImageEntry, ReportData, render
from mpimager.rundir import layout
from mpimager.rundir.layout import REPORT_DIR, REPORT_HTML

CACHE = "quicklooks.json"
CACHE_VERSION = 1


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote."""

    path: Path
    images: int
    cubes: int
    drawn: int  # PNGs drawn now
    reused: int  # PNGs reused from an earlier report
    failed: int  # products that could not be drawn
    seconds: float
    missing: str | None  # what quick-looks need, if they could not be made


def _png_name(fits_path: str, taken: set[str]) -> str:
    stem = os.path.basename(fits_path)
    stem = stem[:-5] if stem.endswith(".fits") else stem
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", stem)
    name, n = f"{stem}.png", 2
    while name in taken:
        name, n = f"{stem}-{n}.png", n + 1
    taken.add(name)
    return name


def _radec(ra: float, dec: float) -> str:
    from astropy.coordinates import Angle

    return (f"{Angle(ra % 360, 'deg').to_string(unit='hourangle', sep=':', precision=1, pad=True)} "
            f"{Angle(dec, 'deg').to_string(unit='deg', sep=':', precision=0, alwayssign=True, pad=True)}")


def _scaled(value: float, unit: str) -> str:
    if unit == "Jy/beam" and value == value and abs(value) < 1:
        return f"{value * 1e3:.3g} mJy/beam"
    return f"{value:.3g} {unit}".strip()


def _image_caption(look) -> str:
    """The caption of an image quick-look `look` (a quicklook.ImageLook): size (and drawing factor),
    frequency, peak and where, rms, restoring beam."""
    ny, nx = look.shape
    parts = [f"{nx} x {ny} px" + (f" (drawn 1:{look.factor})" if look.factor > 1 else "")]
    if look.freq_hz:
        parts.append(f"{look.freq_hz / 1e6:.1f} MHz")
    parts.append(f"peak {_scaled(look.peak, look.unit)} at {_radec(*look.peak_radec)}")
    parts.append(f"rms {_scaled(look.rms, look.unit)}")
    if look.beam:
        parts.append(f"beam {look.beam[0]:.1f}\" x {look.beam[1]:.1f}\" pa {look.beam[2]:.0f} deg")
    return "; ".join(parts)


def _cube_caption(look) -> str:
    """The caption of a cube quick-look `look` (a quicklook.CubeLook): channels and band, common beam,
    median noise and where it came from, brightest pixel, blank channels."""
    import numpy as np

    f = [v / 1e6 for v in look.freqs_hz]
    parts = [f"{len(f)} channels, {min(f):.1f}-{max(f):.1f} MHz" if f else "no channels"]
    if look.common_beam:
        b = look.common_beam
        parts.append(f"common beam {b[0]:.1f}\" x {b[1]:.1f}\" pa {b[2]:.0f} deg")
    noise = np.array(look.noise, dtype=float)
    if np.isfinite(noise).any():
        parts.append(f"median noise {_scaled(float(np.nanmedian(noise)), look.unit)} ({look.noise_from})")
    parts.append(f"brightest pixel {look.peak_pixel} at {_radec(*look.peak_radec)}")
    if look.blank:
        parts.append(f"{look.blank} blank channel{'s' * (look.blank > 1)}")
    return "; ".join(parts)


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _load_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    from mpimager.report.quicklook import LOOK_VERSION

    fresh = cache.get("version") == CACHE_VERSION and cache.get("look_version") == LOOK_VERSION
    return cache.get("entries", {}) if fresh else {}


def _draw(kind: str, fits_path: str, png_path: Path, cache: dict, max_px: int, cube=None):
    """(caption, error, drawn now) of one product, reusing a cached PNG when the FITS did not change."""
    from mpimager.report import quicklook

    stat = _stat(fits_path)
    if stat is None:
        return "", "missing: the file is gone", False
    key = f"{kind}:{fits_path}"
    hit = cache.get(key)
    if hit and hit.get("stat") == stat and hit.get("max_px") == max_px and hit.get("png") == png_path.name \
            and png_path.is_file():
        return hit["caption"], None, False
    try:
        if kind == "image":
            look = quicklook.image_quicklook(fits_path, str(png_path), max_px=max_px)
            caption = _image_caption(look) + _mosaic_note(look, fits_path)
        else:
            caption = _cube_caption(quicklook.cube_quicklook(fits_path, str(png_path), cube.beamlog, cube.weights))
    except Exception as exc:  # noqa: BLE001 - one bad product must not lose the report
        cache.pop(key, None)
        return "", f"no quick-look: {type(exc).__name__}: {exc}", False
    cache[key] = {"stat": stat, "max_px": max_px, "png": png_path.name, "caption": caption}
    return caption, None, True


def _mosaic_note(look, fits_path: str) -> str:
    """A mosaic MFS image gets its beam centres drawn (mpimager.report.mosaiclook)."""
    from mpimager.planner.products import is_mosaic_mfs
    from mpimager.report import mosaiclook

    if not is_mosaic_mfs(fits_path):
        return ""
    return f"; {mosaiclook.mark_beam_centres(look, fits_path)} beam centres marked"


def recorded_provenance(run_dir: Path) -> dict | None:
    """The provenance the run in `run_dir` recorded: in manifest.json, else (a run going on or killed) in
    the journal's last `provenance` record; None when neither has one."""
    from mpimager.rundir.journal import read_records

    try:
        found = json.loads((run_dir / layout.MANIFEST).read_text()).get("provenance")
    except (OSError, ValueError, AttributeError):
        found = None
    if found:
        return found
    records = [r for r in read_records(run_dir) if r.get("event") == "provenance"]
    if not records:
        return None
    return {k: v for k, v in records[-1].items() if k not in ("event", "time")}


def residuals_and_psfs(jobs) -> list[tuple[str, str]]:
    """(job id, path) of the MFS (or single-channel) residual and PSF images of the finished WSClean jobs."""
    from mpimager.wsclean.names import overview_image

    out = []
    for j in jobs:
        if j.kind == "wsclean" and j.state == "done":
            for p in j.outputs:
                n = overview_image(os.path.basename(p))
                if n is not None and n.kind in ("residual", "psf"):
                    out.append((j.id, p))
    return out


def write_report(run_dir, *, provenance: dict | None = None, max_px: int | None = None,
                 now: float | None = None, live: bool = False) -> Report:
    """Write RUN_DIR/report.html for the run in `run_dir` (see the module docstring); InputError if it
    holds no journal. Returns what was written (`Report`).

    `provenance`: what to show (default: what the run recorded, else this environment's); `max_px`: the
    largest side of an image quick-look (default quicklook.DEFAULT_MAX_PX); `now`: the time the status is
    read at (default: the clock); `live`: the run is going on (the page says it is rewritten every few minutes).
    """
    from mpimager.report import quicklook
    from mpimager.report.beams import beam_rows
    from mpimager.report.provenance import gather, image_wsclean_versions
    from mpimager.rundir.status import read_status

    t_start = time.time()
    run_dir = Path(run_dir).absolute()
    status = read_status(run_dir, now=now)
    max_px = max_px or quicklook.DEFAULT_MAX_PX
    note = ""
    if provenance is None:
        provenance = recorded_provenance(run_dir)
        if provenance is None:
            provenance = gather()
            note = ("the run recorded no provenance (no manifest.json with it yet): the versions below are "
                    "those of this report's environment")
    images, cubes = products.select(products.run_outputs(status.jobs, run_dir))
    missing = quicklook.missing()
    out_dir = run_dir / REPORT_DIR
    out_dir.mkdir(exist_ok=True)
    cache_path = out_dir / CACHE
    cache = _load_cache(cache_path)
    taken: set[str] = set()
    drawn = reused = failed = 0
    image_entries: list[ImageEntry] = []
    cube_entries: list[CubeEntry] = []
    aux_entries: list[ImageEntry] = []
    made_by = {p: j.id for j in status.jobs for p in j.outputs}
    aux = residuals_and_psfs(status.jobs)
    for kind, paths in (("image", images), ("cube", cubes), ("aux", [p for _, p in aux])):
        for path in paths:
            png = out_dir / _png_name(path, taken)
            side = products.find_side_files(path) if kind == "cube" else None
            if missing:
                caption, error, now_drawn = "", None, False
            else:
                caption, error, now_drawn = _draw("cube" if kind == "cube" else "image", path, png, cache, max_px,
                                                  side)
                drawn += now_drawn
                reused += not now_drawn and error is None
                failed += error is not None
            rel = f"{REPORT_DIR}/{png.name}" if not missing and error is None else None
            job = made_by.get(path, "")
            if kind == "cube":
                cube_entries.append(CubeEntry(path, rel, caption, error, job=job))
            else:
                (image_entries if kind == "image" else aux_entries).append(
                    ImageEntry(path, rel, caption, error, job=job))
    if not missing:
        write_text_atomic(cache_path, json.dumps({"version": CACHE_VERSION, "look_version": quicklook.LOOK_VERSION,
                                                  "entries": cache}, indent=1))
    problems = []
    try:
        rows = beam_rows(status.jobs)
    except Exception as exc:  # noqa: BLE001 - the per-beam table is one section; the page keeps the others
        rows = []
        problems.append(f"no per-beam table: {type(exc).__name__}: {exc}")
    data = ReportData(status=status, images=image_entries, cubes=cube_entries, provenance=provenance,
                      provenance_note=note, image_wsclean=image_wsclean_versions(cubes + images),
                      missing=missing, beams=rows, aux=aux_entries, live=live, problems=problems)
    page = run_dir / REPORT_HTML
    write_text_atomic(page, render(data))
    return Report(page, len(images), len(cubes), drawn, reused, failed, time.time() - t_start, missing)


REFRESH_S = 180.0  # while a run goes on, its report is rewritten this often


class LiveReport:
    """Rewrites RUN_DIR/report.html every `interval` seconds while a run goes on (a daemon thread), so a user can
    watch it without a server; each write is atomic (`write_report` replaces the page). A failing write is
    logged and tried again at the next interval; it never stops the run."""

    def __init__(self, run_dir, provenance: dict | None = None, interval: float = REFRESH_S):
        import threading

        self.run_dir, self.provenance, self.interval = Path(run_dir), provenance, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mpimager-report", daemon=True)
        self.writes = 0

    def _loop(self) -> None:
        import logging

        while not self._stop.wait(self.interval):
            try:
                write_report(self.run_dir, provenance=self.provenance, live=True)
                self.writes += 1
            except Exception as exc:  # noqa: BLE001 - the report is a view; the run goes on
                logging.getLogger(__name__).warning("report not rewritten: %s: %s", type(exc).__name__, exc)

    def start(self) -> LiveReport:
        """Start the rewriting thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the rewriting thread, waiting (up to 120 s) for a write under way to finish."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=120)
