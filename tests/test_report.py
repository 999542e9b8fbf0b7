"""The run report: written at the end of the demo run, quick-looks that show the synthesised sources where they
are, cube beams/noise/spectrum, provenance, rendered by headless Chromium; without matplotlib it says so."""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import ROOT, run_cli, write_config
from fixtures.report import (  # noqa: F401
    TINY_CONFIG,
    assert_not_blank,
    chromium,
    env_without_matplotlib,
    images_loaded,
    luminance,
    png_pixels,
    png_size,
    screenshot,
)

from mpimager.cli.synth import synthesise
from mpimager.report.quicklook import MISSING, cube_quicklook, image_quicklook, read_beamlog
from mpimager.testing import synth

DEMO_CONFIG = ROOT / "configs" / "demo.toml"
BEAMS = 2
LOOKS = 11 * BEAMS  # quick-looks on the page: see test_every_run_ends_with_its_report...


def beam_sources(beam: int):
    """The sources mpimager.testing.synth put in a beam of the demo observation, around that beam's centre."""
    boresight = synth.field_centre_from_name(synth.DEFAULT_FIELD)
    centre = synth.beam_centre(boresight, synth.askap_footprint(BEAMS)[beam])
    return synth.default_sources(centre)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo (configs/demo.toml) over 2 synthesised raw beams under `mpirun -n 3`."""
    tmp = tmp_path_factory.mktemp("demo")
    synthesise(tmp / "data", beams=BEAMS)
    r = run_cli(DEMO_CONFIG, tmp / "data", "--run-dir", tmp / "run", mpi=3, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp / "run", r


def _pngs(page: str) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page)


def test_every_run_ends_with_its_report_and_a_quicklook_per_mfs_image_and_cube(demo_run):
    run_dir, r = demo_run
    m = re.search(r"^\[\d\d:\d\d:\d\d\] report: (\S+) \((\d+) MFS images, (\d+) cubes; ([\d.]+) s\)$", r.stdout, re.M)
    assert m, r.stdout[-2000:]
    assert m.group(1) == str(run_dir / "report.html") and (int(m.group(2)), int(m.group(3))) == (3 * BEAMS, 3 * BEAMS)
    page = (run_dir / "report.html").read_text()
    pngs = _pngs(page)
    # per beam: 3 MFS images (I, Q, U), 3 cubes, 5 residuals and PSFs (I residual and PSF; Q, U residuals, PSF)
    assert len(pngs) == LOOKS and all(p.startswith("report/") for p in pngs)  # relative: inside RUN_DIR
    for p in pngs:
        path = run_dir / p
        width, height = png_size(path)
        assert (width, height) == ((720, 640) if "MFS" in p else (1350, 380)), p
        assert_not_blank(path)


def test_the_quicklook_shows_the_synthesised_sources_at_their_positions(demo_run, tmp_path):
    run_dir, _ = demo_run
    for beam in range(BEAMS):
        fits_path = run_dir / "images" / f"image.RACS_1347-37A.contcube.beam{beam:02d}.I-MFS-image.fits"
        png = run_dir / "report" / f"{fits_path.name[:-5]}.png"
        look = image_quicklook(str(fits_path), str(tmp_path / "again.png"))  # the same layout: where things are
        assert png_size(png) == look.png_size
        rgb = png_pixels(png)[..., :3]
        lum = luminance(rgb)
        left, top, right, bottom = (round(v) for v in look.axes_box)
        sky = lum[top + 3:bottom - 3, left + 3:right - 3]
        # the restoring beam: white, outlined in cyan (no colour of the map has that much blue) at the lower left
        ellipse = np.argwhere(rgb[top + 3:bottom - 3, left + 3:right - 3, 2] > 0.8)
        assert len(ellipse) and ellipse[:, 0].min() > 0.9 * sky.shape[0] and ellipse[:, 1].max() < 0.1 * sky.shape[1]
        sky = np.where(rgb[top + 3:bottom - 3, left + 3:right - 3, 2] > 0.8, 0.0, sky)
        background = float(np.median(sky))
        spots = []
        for src in beam_sources(beam):
            col, row = (round(v) for v in look.world_to_png(src.ra_deg, src.dec_deg))
            assert left < col < right and top < row < bottom
            spot = float(lum[row - 2:row + 3, col - 2:col + 3].max())
            assert spot > 0.6 and spot > background + 0.4, (beam, src, spot, background)
            spots.append((row - top - 3, col - left - 3))
        # and nothing else is that bright: every bright pixel of the drawn sky is at a synthesised source
        bright = np.argwhere(sky > 0.6)
        assert len(bright) > 0
        far = [p for p in bright if min(np.hypot(p[0] - r0, p[1] - c0) for r0, c0 in spots) > 6]
        assert not far, (beam, far[:5])


def test_the_quicklook_has_ra_dec_axes_a_colour_bar_in_jansky_and_the_beam(demo_run, tmp_path):
    run_dir, _ = demo_run
    fits_path = run_dir / "images" / "image.RACS_1347-37A.contcube.beam00.I-MFS-image.fits"
    look = image_quicklook(str(fits_path), str(tmp_path / "q.png"))
    header = fits.getheader(fits_path)
    assert look.unit == "Jy/beam" and look.factor == 1 and look.shape == (256, 256)
    assert look.beam == pytest.approx((header["BMAJ"] * 3600, header["BMIN"] * 3600, header["BPA"]))
    src = beam_sources(0)[0]  # the brightest
    assert look.peak == pytest.approx(src.flux(look.freq_hz), rel=0.05)
    assert np.hypot((look.peak_radec[0] - src.ra_deg) * np.cos(np.radians(src.dec_deg)),
                    look.peak_radec[1] - src.dec_deg) * 3600 < 2 * 6.0  # within 2 pixels of 6"
    assert look.wcs.wcs.ctype[0].startswith("RA") and look.wcs.wcs.ctype[1].startswith("DEC")


def test_a_large_image_is_block_averaged_and_its_sources_stay_where_they_are(tmp_path):
    n, factor = 3000, 3
    ra0, dec0, scale = 150.0, -30.0, 2.0 / 3600
    header = fits.Header({"NAXIS": 2, "NAXIS1": n, "NAXIS2": n, "CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN",
                          "CRPIX1": n / 2 + 1, "CRPIX2": n / 2 + 1, "CRVAL1": ra0, "CRVAL2": dec0,
                          "CDELT1": -scale, "CDELT2": scale, "BUNIT": "JY/BEAM", "BMAJ": 10 / 3600,
                          "BMIN": 8 / 3600, "BPA": 30.0})
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1e-4, (n, n)).astype(np.float32)
    yy, xx = np.mgrid[0:n, 0:n]
    spots = [(700, 2100), (2400, 900)]  # (x, y) pixels
    for x, y in spots:
        data += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0 ** 2)).astype(np.float32)
    path = tmp_path / "big-image.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    look = image_quicklook(str(path), str(tmp_path / "big.png"), max_px=1024)
    assert look.factor == factor and look.shape == (n, n) and png_size(tmp_path / "big.png") == look.png_size
    lum = luminance(png_pixels(tmp_path / "big.png")[..., :3])
    from astropy.wcs import WCS

    for x, y in spots:
        ra, dec = WCS(header).pixel_to_world_values(x, y)
        col, row = (round(v) for v in look.world_to_png(float(ra), float(dec)))
        assert lum[row - 1:row + 2, col - 1:col + 2].max() > 0.6


def test_the_cube_quicklook_reads_beams_noise_and_the_spectrum_at_the_brightest_source(demo_run, tmp_path):
    run_dir, _ = demo_run
    cube = run_dir / "images" / "image.RACS_1347-37A.contcube.beam00.I-I-restored.cube.fits"
    beamlog = cube.with_name(cube.name[:-5] + ".beamlog.ecsv")
    weights = cube.with_name(cube.name[:-5] + ".weights.txt")
    look = cube_quicklook(str(cube), str(tmp_path / "c.png"), str(beamlog), str(weights))
    log = read_beamlog(str(beamlog))
    header = fits.getheader(cube)
    assert len(look.freqs_hz) == header["NAXIS3"] == 4 and look.beams == log.beams
    assert np.array_equal(look.noise, log.sigmas, equal_nan=True)
    assert look.common_beam == pytest.approx((header["BMAJ"] * 3600, header["BMIN"] * 3600, header["BPA"]))
    # the demo's top channel has a stretched PSF fit, blanked by psf_cutoff = 25: no noise for it
    assert look.noise_from == "beam log" and all(s > 0 for s in look.noise[:3]) and np.isnan(look.noise[3])
    src = beam_sources(0)[0]
    assert np.hypot((look.peak_radec[0] - src.ra_deg) * np.cos(np.radians(src.dec_deg)),
                    look.peak_radec[1] - src.dec_deg) * 3600 < 2 * 6.0
    assert look.spectrum[0] == pytest.approx(src.flux(look.freqs_hz[0]), rel=0.1)
    # without the beam log, the noise comes from the weights (1/sigma^2)
    again = cube_quicklook(str(cube), str(tmp_path / "c2.png"), None, str(weights))
    assert again.noise_from == "weights" and again.noise == pytest.approx(log.sigmas, rel=1e-6, nan_ok=True)
    assert png_size(tmp_path / "c.png") == (1350, 380)


def test_the_cube_quicklook_puts_each_weights_line_on_its_own_channel_whatever_the_line_order(tmp_path):
    n, nchan = 32, 4
    header = fits.Header({"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CTYPE3": "FREQ", "CRPIX1": 17, "CRPIX2": 17,
                          "CRPIX3": 1, "CRVAL1": 150.0, "CRVAL2": -30.0, "CRVAL3": 1.0e9, "CDELT1": -1 / 3600,
                          "CDELT2": 1 / 3600, "CDELT3": 1.0e6, "BUNIT": "JY/BEAM"})
    cube = tmp_path / "p-I-image.cube.fits"
    fits.PrimaryHDU(np.random.default_rng(2).normal(0, 1e-3, (nchan, n, n)).astype(np.float32), header).writeto(cube)
    weights = tmp_path / "p-I-image.cube.weights.txt"
    # channel 1 blank (weight 0); lines as a hand-edited or merged file may have them, not in channel order
    weights.write_text("#Channel Weight\n3 1e6\n1 0\n0 2.5e7\n2 4e6\n")
    look = cube_quicklook(str(cube), str(tmp_path / "c.png"), None, str(weights))
    assert look.noise_from == "weights"
    assert look.noise == pytest.approx((2e-4, float("nan"), 5e-4, 1e-3), rel=1e-9, nan_ok=True)


def test_the_report_holds_the_summary_jobs_logs_timeline_and_provenance(demo_run):
    run_dir, _ = demo_run
    page = (run_dir / "report.html").read_text()
    journal = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines()]
    jobs = next(r for r in reversed(journal) if r["event"] == "plan")["jobs"]
    assert "10 jobs: 10 done" in page  # 2 FixMS, 4 WSClean, 4 reduce
    for job in jobs:
        assert f"<td>{html.escape(job['id'])}</td>" in page
        assert html.escape(shlex.join(job["argv"])) in page  # the exact argv of every job
    logs = re.findall(r"<td><a href='(logs/[^']+)'>", page)
    assert len(logs) == len(jobs) and all((run_dir / x).is_file() for x in logs)
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert svg.count("<rect") == len(jobs) and "rank 1" in svg and "rank 2" in svg
    manifest = json.loads((run_dir / "manifest.json").read_text())
    versions = manifest["provenance"]["versions"]
    assert versions["wsclean"]["version"].startswith("WSClean version 3.1")
    import importlib.metadata

    assert versions["fixms"] == importlib.metadata.version("fixms")
    assert versions["python-casacore"] == importlib.metadata.version("python-casacore")
    assert "libcasa_casa" in versions["casacore (C++)"] and "Open MPI" in versions["MPI"]
    assert manifest["provenance"]["config_resolved"]["reduce"]["psf_cutoff"] == 25
    assert manifest["provenance"]["argv"][-2:] == ["--run-dir", str(run_dir)]
    for needle in ("WSClean version 3.1", "Open MPI", "libcasa_casa", "psf_cutoff", "3.1.0 (2022-04-01)"):
        assert needle in page, needle


def test_the_report_renders_in_headless_chromium_without_errors(demo_run, chromium, tmp_path):  # noqa: F811
    run_dir, _ = demo_run
    out_dir = Path(os.environ.get("MPIMAGER_TEST_ARTIFACTS", tmp_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    shot = out_dir / "report-screenshot.png"
    log = screenshot(chromium, (run_dir / "report.html").as_uri(), shot, tmp_path / "profile")
    console = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert png_size(shot) == (1280, 2000)
    assert_not_blank(shot)
    count, broken = images_loaded(chromium, run_dir / "report.html", tmp_path / "profile2")
    assert count == LOOKS and broken == []


def test_writing_the_report_again_draws_only_what_changed(demo_run):
    run_dir, _ = demo_run
    r = run_cli("report", run_dir)
    assert r.returncode == 0 and f"0 drawn, {LOOKS} unchanged" in r.stdout, r.stdout + r.stderr


def test_without_matplotlib_the_report_keeps_its_tables_and_says_what_is_missing(demo_run, tmp_path):
    run_dir, _ = demo_run
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("journal.jsonl", "manifest.json"):  # the products stay where the run made them
        shutil.copy(run_dir / name, copy / name)
    env = env_without_matplotlib(tmp_path / "site")
    blocked = subprocess.run([sys.executable, "-c", "import matplotlib"], env={**os.environ, **env},
                             capture_output=True, text=True)
    assert blocked.returncode != 0 and "blocked" in blocked.stderr
    r = run_cli("report", copy, env=env)
    assert r.returncode == 0, r.stderr
    assert f"no quick-looks: {MISSING}" in r.stdout
    page = (copy / "report.html").read_text()
    assert html.escape(MISSING) in page and "pip install mpimager[report]" in page
    assert "<img" not in page and "<svg" in page and "10 jobs: 10 done" in page
    assert page.count("<td class='state-done'>") == 10


def test_a_report_that_cannot_be_written_is_a_line_in_the_log_not_a_failed_run(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", TINY_CONFIG)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report").write_text("a file where the report's directory goes")
    r = run_cli(config, tiny_ms_dir, "--run-dir", tmp_path / "run", mpi=3)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert re.search(r"^\[\d\d:\d\d:\d\d\] report not written: \w+Error: ", r.stdout, re.M), r.stdout[-1500:]
    assert (tmp_path / "run" / "manifest.json").is_file()


def test_report_of_a_directory_that_is_not_a_run_is_bad_input(tmp_path):
    r = run_cli("report", tmp_path / "nowhere")
    assert r.returncode == 2 and r.stderr.strip() == f"mpimager: error: {tmp_path / 'nowhere'}: no such run directory"


# ------------------------------------------------------------------------------------------------ pure parts


def test_mfs_images_and_cubes_are_told_from_the_other_products():
    from mpimager.report.products import select

    outputs = [("wsclean", "/i/p-MFS-image.fits"), ("wsclean", "/i/p-0000-image.fits"), ("wsclean", "/i/p-MFS-psf.fits"),
               ("wsclean", "/i/q-MFS-Q-image.fits"), ("wsclean", "/i/single-image.fits"),
               ("wsclean", "/i/single-U-image.fits"), ("wsclean", "/i/p-MFS-residual.fits"),
               ("reduce", "/i/p-I-restored.cube.fits"), ("reduce", "/i/p-I-restored.cube.beamlog.txt"),
               ("", "/i/image.restored.i.SB1.beam00.conv.fits"), ("wsclean", "/i/p-MFS-image.fits")]
    images, cubes = select(outputs)
    assert images == ["/i/p-MFS-image.fits", "/i/q-MFS-Q-image.fits", "/i/single-image.fits", "/i/single-U-image.fits"]
    assert cubes == ["/i/p-I-restored.cube.fits", "/i/image.restored.i.SB1.beam00.conv.fits"]


def test_a_cubes_beam_log_and_weights_are_found_beside_it_under_either_naming(tmp_path):
    from mpimager.report.products import find_side_files

    ours = tmp_path / "p-I-restored.cube.fits"
    arrakis = tmp_path / "image.restored.i.SB1.beam00.conv.fits"
    for p in (ours, arrakis, tmp_path / "p-I-restored.cube.beamlog.txt", tmp_path / "p-I-restored.cube.weights.txt",
              tmp_path / "beamlog.image.restored.i.SB1.beam00.conv.txt", tmp_path / "weights.restored.i.SB1.beam00.conv.txt"):
        p.write_text("x")
    assert find_side_files(str(ours)).beamlog == str(tmp_path / "p-I-restored.cube.beamlog.txt")
    assert find_side_files(str(arrakis)).beamlog == str(tmp_path / "beamlog.image.restored.i.SB1.beam00.conv.txt")
    assert find_side_files(str(arrakis)).weights == str(tmp_path / "weights.restored.i.SB1.beam00.conv.txt")
    assert find_side_files(str(tmp_path / "lonely.cube.fits")).beamlog is None
    racs = tmp_path / "beamlog.q-I-restored.cube.txt"  # RACS-tools' beam log beside any cube
    racs.write_text("x")
    assert find_side_files(str(tmp_path / "q-I-restored.cube.fits")).beamlog == str(racs)


def test_the_page_escapes_what_it_shows_and_links_inside_the_run_directory_relatively():
    from mpimager.report.html import ReportData, href, render
    from mpimager.rundir.status import JobStatus, RunStatus

    jobs = (JobStatus("wsclean:<b>x</b>", "wsclean", "failed", rank=1, host="h&1", start=10.0, end=12.0,
                      attempts=1, log="/r/logs/w.log", error="exited 1: <oops>"),
            JobStatus("wsclean:y", "wsclean", "interrupted", rank=2, host="h2", start=10.0, log="/r/logs/y.log"),
            JobStatus("reduce:y", "reduce", "pending"))
    st = RunStatus("/r", "died", jobs, started=9.0, now=20.0, last_record=13.0, ranks=3, runs=1)
    page = render(ReportData(status=st))
    assert "<b>x</b>" not in page and "wsclean:&lt;b&gt;x&lt;/b&gt;" in page and "exited 1: &lt;oops&gt;" in page
    assert "<script" not in page.lower()
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert svg.count("<rect") == 2 and 'fill="#d62728"' in svg and 'fill="#9c9c9c"' in svg  # failed, interrupted
    assert href("/r/logs/a b.log", "/r") == "logs/a%20b.log" and href("/elsewhere/x.fits", "/r") == "file:///elsewhere/x.fits"


def test_a_version_that_cannot_be_found_is_recorded_as_unknown_never_raised():
    from mpimager.errors import InputError
    from mpimager.report.provenance import gather

    class BrokenRuntime:
        def version(self):
            raise InputError("`wsclean --version` failed in native WSClean wsclean (exit 127)")

        def describe(self):
            return "native WSClean wsclean"

        def identity(self):
            raise FileNotFoundError("wsclean is gone")

    prov = gather(BrokenRuntime(), None, argv=["mpimager", "c.toml"])
    assert prov["versions"]["wsclean"] == {
        "version": "unknown (`wsclean --version` failed in native WSClean wsclean (exit 127))",
        "runtime": "native WSClean wsclean", "identity": "unknown (wsclean is gone)"}
    assert prov["argv"] == ["mpimager", "c.toml"] and prov["versions"]["fixms"] != "not installed"
