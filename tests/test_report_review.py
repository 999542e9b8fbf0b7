"""A console and report that review a run with one failed beam of four (ASKAP-like, I and QU passes).

One beam's WSClean fails the way WSClean fails (its `>>>` line between `+ + +` borders, exit 255): the console
names that line, not the border; the report's per-beam table, opened in headless Chromium, flags that beam and
only it; tiles are captioned by job; residual and PSF quick-looks and the beams' footprint are on the page;
no output file holds a control character. A screenshot goes to /work/tools/arrakis-report.png.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, write_config
from fixtures.report import CHROMIUM_FLAGS, assert_not_blank, chromium, screenshot  # noqa: F401

from mpimager.cli.synth import synthesise

BEAMS = 4
BAD = "02"

FAILING_WSCLEAN = """#!/bin/sh
# WSClean, except for beam {bad}: fails as WSClean 3.1 does on an exception
case "$*" in
  *beam{bad}*) echo "Reordering..."; echo "+ + + + + + + + + + + + + + + + + + +"; echo "+ An exception occured:"
               echo "+ >>> Kernel size > image dimension"; echo "+ + + + + + + + + + + + + + + + + + +"; exit 255;;
esac
exec wsclean "$@"
"""


@pytest.fixture(scope="module")
def review_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review")
    synthesise(tmp / "data", beams=BEAMS)
    fake = tmp / "bin" / "wsclean"
    fake.parent.mkdir()
    fake.write_text(FAILING_WSCLEAN.format(bad=BAD))
    fake.chmod(0o755)
    config = write_config(tmp / "c.toml", f"""
        default_settings = "{ROOT / 'configs' / 'demo.toml'}"
        [container]
        wsclean = "{fake}"
        [worker]
        retries = 0
        [wsclean]
        out-dir = "$run_dir$/images/$pass$"
        size = "128 128"
        niter = 500
        channels-out = 2
        [reduce]
        psf_cutoff = false
        names = "arrakis"
        scope = "beam"
        """)
    r = run_cli(config, tmp / "data", "--run-dir", tmp / "run", mpi=3, timeout=900)
    return tmp / "run", r


def test_the_console_names_the_failed_beams_wsclean_error_line_not_its_border(review_run):
    _run_dir, r = review_run
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    failed = [line for line in r.stdout.splitlines() if "FAILED wsclean:" in line]
    assert len(failed) == 2 and all(f"beam{BAD}" in line for line in failed)  # its I and QU jobs
    assert all("wsclean exited 255: Kernel size > image dimension" in line for line in failed), failed
    assert "+ + +" not in "\n".join(failed)


def test_the_per_beam_table_in_chromium_flags_the_failed_beam_only(review_run, chromium):  # noqa: F811
    run_dir, _ = review_run
    page = run_dir / "report.html"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={run_dir.parent / 'profile'}",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL).stdout
    table = re.search(r"<table id=\"beam-table\">(.*?)</table>", dom, re.S)
    assert table, dom[:2000]
    rows = re.findall(r"<tr class=\"(flagged|ok)\" data-beam=\"(\d+)\">(.*?)</tr>", table.group(1), re.S)
    beams = {b for _, b, _ in rows}
    assert beams == {f"{b:02d}" for b in range(BEAMS)}
    assert {b for c, b, _ in rows if c == "flagged"} == {BAD}
    bad = [cells for c, b, cells in rows if b == BAD]
    assert all("failed" in cells and "Kernel size &gt; image dimension" in cells for cells in bad)
    good = [cells for c, b, cells in rows if c == "ok"]
    assert len(good) == 3 * (BEAMS - 1)  # I, Q and U of each good beam
    assert all(re.search(r"mJy|Jy", cells) and "\" x " in cells for cells in good)  # rms, peak, restoring beam
    assert "<svg" in dom and "id=\"footprint\"" in dom and "no image of 02" in dom
    assert "Residuals and PSFs" in dom and re.search(r"<b>wsclean:I/image\.[^<]*beam00</b>", dom)
    shot = run_dir.parent / "report.png"  # inside the test's own directory: writable wherever the suite runs
    screenshot(chromium, page.as_uri(), shot, run_dir.parent / "profile2", size=(1280, 1600))
    assert_not_blank(shot)


def test_no_output_file_holds_a_control_character(review_run):
    run_dir, _ = review_run
    texts = [p for p in run_dir.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".jsonl", ".txt")]
    assert any(p.name == "report.html" for p in texts) and any(p.name == "manifest.json" for p in texts)
    for p in texts:
        data = p.read_bytes()
        assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", data), p


def test_the_report_is_rewritten_while_a_run_goes_on(review_run, tmp_path):
    from mpimager.report import LiveReport

    run_dir, _ = review_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = (copy / "report.html").stat().st_mtime_ns
    live = LiveReport(copy, interval=0.5).start()
    try:
        deadline = time.time() + 60
        while live.writes < 2 and time.time() < deadline:
            time.sleep(0.1)
    finally:
        live.stop()
    assert live.writes >= 2 and (copy / "report.html").stat().st_mtime_ns > before
    assert "rewritten every few minutes" in (copy / "report.html").read_text()
    assert not list(copy.glob(".report.html.tmp"))  # replaced atomically, no partial page left


def test_blanked_channels_and_their_reason_reach_the_console_and_the_report(tmp_path, tiny_ms_dir):
    """The tiny MS's two channels have PSFs of 6.3" and 21.0": psf_cutoff 15 blanks the second."""
    from conftest import small_config

    c = small_config(tmp_path / "c.toml", wsclean="[reduce]\npsf_cutoff = 15")
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert re.search(r"done reduce:obs0 in [\d.]+ s \[2/2\] \(obs0-I-restored\.cube: 1 channel blanked "
                     r"\(plane 1: BMAJ 2\d\.\d\d\" > psf_cutoff 15\"\)\)", r.stdout), r.stdout
    page = (tmp_path / "run" / "report.html").read_text()
    row = re.search(r"<tr class='flagged' data-beam='obs0'>(.*?)</tr>", page, re.S)
    assert row and "plane 1: BMAJ" in row.group(1) and "1 blanked channel" in row.group(1)


@pytest.mark.pure
def test_control_characters_never_reach_the_provenance():
    """Open MPI's MPI_Get_library_version string ends in a NUL byte; the manifest and the page drop it."""
    from mpimager.report.provenance import jsonable, printable

    assert printable("Open MPI v4.1.4, package: Debian OpenMPI\x00") == "Open MPI v4.1.4, package: Debian OpenMPI"
    assert printable("tab\tand\nnewline kept, \x1b[31mescape\x7f gone") == "tab\tand\nnewline kept, [31mescape gone"
    assert jsonable({"MPI": "v4\x00", "argv": ["a\x00b"]}) == {"MPI": "v4", "argv": ["ab"]}
