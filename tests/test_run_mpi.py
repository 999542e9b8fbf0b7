"""Whole runs under real `mpirun`: FixMS + WSClean I and QU passes + cubes, failures, kills and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import run_cli, write_config
from fixtures.report import kill_session
from fixtures.synth import flux_tolerance, source_peak

from mpimager.inputs.msstate import work_dir
from mpimager.rundir.journal import read_records
from mpimager.testing import synth

CONFIG = """
[fixms]
enabled = {fixms}
[worker]
max_concurrent = 2
retries = 1
[wsclean]
name = "beam$beam$"
out-dir = "$run_dir$/images"
size = "256 256"
scale = "3asec"
niter = 1000
mgain = 0.8
channels-out = 4
join-channels = true
j = 1                      # bit-for-bit reproducible images (several threads are not)
[passes.I]
pol = "I"
[passes.QU]
pol = "QU"
join-polarizations = true
"""


def beams(directory: Path, n=4, **kw) -> list[Path]:
    return synth.make_askap_observation(directory, n_beams=n, **kw)


def field_centre(ms: Path) -> tuple[float, float]:
    from casacore.tables import table

    with table(str(ms / "FIELD"), ack=False) as t:
        ra, dec = np.degrees(t.getcol("PHASE_DIR")[0, 0])
    return float(ra % 360), float(dec)


def launch(config, inputs, run_dir, ranks=3, extra=(), env=None) -> subprocess.Popen:
    """mpimager under mpirun in its own session (so a test can SIGKILL the whole run)."""
    cmd = ["mpirun", "-n", str(ranks), sys.executable, "-m", "mpimager", str(config), *map(str, inputs),
           "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def events(run_dir, kind, job_kind=None, last_run_only=False):
    records = read_records(run_dir)
    if last_run_only:
        records = records[max(i for i, r in enumerate(records) if r["event"] == "run" and r["state"] == "start"):]
    return [r for r in records if r["event"] == kind and (job_kind is None or r["job"].startswith(job_kind + ":"))]


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory):
    """4 raw beams imaged by `mpirun -n 3` with FixMS: the run every check below reads."""
    tmp = tmp_path_factory.mktemp("run")
    paths = beams(tmp / "data")
    config = write_config(tmp / "c.toml", CONFIG.format(fixms="true"))
    r = run_cli(config, tmp / "data", "--run-dir", tmp / "run", mpi=3, timeout=600)
    return tmp, paths, r


def test_a_run_over_raw_beams_images_every_source_right_in_i_q_and_u(fixed_run):
    tmp, paths, r = fixed_run
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "20 done, 0 already done, 0 failed" in r.stdout  # 4 FixMS, 8 WSClean, 8 reduce
    images = tmp / "run" / "images"
    checked = 0
    for ms in paths:
        beam = int(ms.name.split(".beam")[1][:2])
        for src in synth.default_sources(field_centre(ms)):
            for stokes, path in (("I", f"beam{beam:02d}.I-MFS-image.fits"), ("Q", f"beam{beam:02d}.QU-MFS-Q-image.fits"),
                                 ("U", f"beam{beam:02d}.QU-MFS-U-image.fits")):
                peak = source_peak(images / path, src.ra_deg, src.dec_deg)
                expected = src.flux(peak.freq_hz, stokes)
                assert expected == 0 or peak.offset_pix < 1.0, (path, src)
                assert abs(peak.value - expected) <= flux_tolerance(expected, src.flux(peak.freq_hz, "I")), \
                    (path, stokes, peak.value, expected)
                checked += 1
    assert checked == 4 * 3 * 3


def test_the_cubes_follow_the_synthesised_spectra(fixed_run):
    tmp, paths, _r = fixed_run
    images = tmp / "run" / "images"
    for ms in paths[:2]:
        beam = int(ms.name.split(".beam")[1][:2])
        sources = synth.default_sources(field_centre(ms))
        for stokes, cube in (("I", f"beam{beam:02d}.I-I-restored.cube.fits"),
                             ("Q", f"beam{beam:02d}.QU-Q-restored.cube.fits"),
                             ("U", f"beam{beam:02d}.QU-U-restored.cube.fits")):
            with fits.open(images / cube) as h:
                hdr, data = h[0].header, h[0].data
                assert hdr["CTYPE3"] == "FREQ" and hdr["NAXIS3"] == 4 and hdr["BMAJ"] > 0
                assert "INSTRUMENT_RECEPTOR_ANGLE" in hdr  # from the FixMS'd MS
                freqs = hdr["CRVAL3"] + hdr["CDELT3"] * (np.arange(4) + 1 - hdr["CRPIX3"])
            src = sources[0]  # 1 Jy, Q 0.3, U 0.2, alpha -0.7: the brightest
            from astropy.wcs import WCS

            x, y = WCS(hdr).celestial.world_to_pixel_values(src.ra_deg, src.dec_deg)
            spectrum = data[0, :, round(float(y)), round(float(x))]
            good = np.isfinite(spectrum)
            assert good.sum() >= 3, cube
            # PSF-matched to one common beam: the peak of a point source is flux x (common beam / own beam)
            # for every channel alike, so the spectral shape must follow the synthesised index.
            expected = np.array([src.flux(f, stokes) for f in freqs])
            ratio = spectrum[good] / expected[good]
            assert np.ptp(ratio) / np.mean(ratio) < 0.05, (cube, ratio)


def test_without_fixms_the_raw_beams_come_out_visibly_wrong(tmp_path):
    paths = beams(tmp_path / "data", n=2)
    config = write_config(tmp_path / "c.toml", CONFIG.format(fixms="false") + "[reduce]\nenabled = false\n")
    r = run_cli(config, tmp_path / "data", "--run-dir", tmp_path / "run", mpi=3, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ms = paths[0]
    centre = synth.beam_centre(field_centre(ms), synth.askap_footprint(2)[0])  # FIELD still holds the boresight
    src = synth.default_sources(centre)[0]
    peak = source_peak(tmp_path / "run" / "images" / "beam00.I-MFS-image.fits", src.ra_deg, src.dec_deg)
    assert not peak.in_image or abs(peak.value) < 0.6 * src.flux(peak.freq_hz, "I")


def test_a_corrupt_ms_fails_its_jobs_while_the_others_complete(tmp_path):
    paths = beams(tmp_path / "data", n=3)
    # metadata intact (planning passes), visibilities unreadable: WSClean fails at run time
    for f in (paths[1]).glob("table.f*"):
        if f.stat().st_size > 100_000:
            f.write_bytes(b"\0" * 100)
    config = write_config(tmp_path / "c.toml", CONFIG.format(fixms="false"))
    r = run_cli(config, tmp_path / "data", "--run-dir", tmp_path / "run", mpi=3, timeout=600)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    failed = [line for line in r.stdout.splitlines() if " failed " in f" {line} " and "log " in line]
    assert failed and all("beam01" in line for line in failed), r.stdout
    assert "log " + str(tmp_path / "run" / "logs") in r.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    status = {j["id"]: j["status"] for j in manifest["jobs"]}
    assert status["wsclean:beam00.I"] == status["wsclean:beam02.QU"] == "ok"
    assert status["wsclean:beam01.I"] == "failed" and status["reduce:beam01.I"] == "skipped"
    assert not list((tmp_path / "run" / "images").glob("beam01.I-*"))  # no partial products left


def _products(run_dir: Path) -> dict[str, np.ndarray]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {os.path.basename(p): fits.getdata(p) for p in manifest["products"] if p.endswith(".fits")}


def test_a_run_killed_part_way_resumes_without_redoing_finished_jobs(tmp_path):
    for name in ("a", "b"):
        beams(tmp_path / name / "data", n=3)
    config = write_config(tmp_path / "c.toml", CONFIG.format(fixms="true"))
    # reference: uninterrupted
    ref = run_cli(config, tmp_path / "a" / "data", "--run-dir", tmp_path / "a" / "run", mpi=3, timeout=600)
    assert ref.returncode == 0, ref.stdout[-2000:]
    # killed once a few WSClean jobs have ended
    run_dir = tmp_path / "b" / "run"
    proc = launch(config, [tmp_path / "b" / "data"], run_dir)
    deadline = time.time() + 300
    while len(events(run_dir, "end", "wsclean")) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    kill_session(proc)  # mpirun and every rank (Open MPI gives each rank its own process group)
    done_before = {r["job"] for r in events(run_dir, "end") if r["status"] == "ok"}
    assert len(done_before) >= 2 and len(done_before) < 3 * 3 + 6
    mtimes = {o["path"]: os.stat(o["path"]).st_mtime_ns for r in events(run_dir, "end") if r["status"] == "ok"
              for o in r["outputs"]}
    again = run_cli(config, tmp_path / "b" / "data", "--run-dir", run_dir, mpi=3, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert done_before <= {r["job"] for r in events(run_dir, "skip", last_run_only=True)}
    assert not ({r["job"] for r in events(run_dir, "start", last_run_only=True)} & done_before)
    assert all(os.stat(p).st_mtime_ns == t for p, t in mtimes.items())  # finished products untouched
    a, b = _products(tmp_path / "a" / "run"), _products(run_dir)
    assert a.keys() == b.keys() and len(a) > 40
    for name in a:
        assert np.array_equal(a[name], b[name], equal_nan=True), name


def test_a_changed_option_reruns_exactly_the_affected_jobs(tmp_path):
    beams(tmp_path / "data", n=2)
    config = write_config(tmp_path / "c.toml", CONFIG.format(fixms="true"))
    assert run_cli(config, tmp_path / "data", "--run-dir", tmp_path / "run", mpi=3).returncode == 0
    write_config(config, CONFIG.format(fixms="true").replace('pol = "QU"', 'pol = "QU"\nniter = 500'))
    r = run_cli(config, tmp_path / "data", "--run-dir", tmp_path / "run", mpi=3)
    assert r.returncode == 0, r.stdout[-2000:]
    ran = sorted(rec["job"] for rec in events(tmp_path / "run", "start", last_run_only=True))
    assert ran == ["reduce:beam00.QU", "reduce:beam01.QU", "wsclean:beam00.QU", "wsclean:beam01.QU"]
    forced = run_cli(config, tmp_path / "data", "--run-dir", tmp_path / "run", "--force", mpi=3)
    assert forced.returncode == 0 and "10 jobs: 10 to run, 0 already done" in forced.stdout


def test_a_run_killed_during_fixms_ends_with_the_ms_correctly_fixed(tmp_path):
    (ms,) = beams(tmp_path / "data", n=1, n_ant=36, n_times=60, n_chan=16, chan_width_hz=4e6)  # ~1 s of FixMS
    config = write_config(tmp_path / "c.toml", CONFIG.format(fixms="true") + "[reduce]\nenabled = false\n")
    proc = launch(config, [ms], tmp_path / "run", ranks=2)
    marker = work_dir(ms)  # the working copy FixMS fixes before swapping it in
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.002)
    assert marker.exists(), "FixMS never started"
    time.sleep(0.3)  # inside fix_ms_corrs' fill
    kill_session(proc)
    assert not (ms / "MPIMAGER_FIXMS.json").exists()
    r = run_cli(config, ms, "--run-dir", tmp_path / "run", mpi=2, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (ms / "MPIMAGER_FIXMS.json").exists() and not marker.exists()
    src = synth.default_sources(field_centre(ms))[0]
    for stokes, name in (("I", "beam00.I-MFS-image.fits"), ("Q", "beam00.QU-MFS-Q-image.fits")):
        peak = source_peak(tmp_path / "run" / "images" / name, src.ra_deg, src.dec_deg)
        expected = src.flux(peak.freq_hz, stokes)
        assert peak.offset_pix < 1 and abs(peak.value - expected) < 0.05 * abs(expected), (name, peak, expected)


def test_a_config_error_ends_every_rank_at_once_with_one_message(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", "[wsclean]\nauto-treshold = 3\n")
    t0 = time.time()
    r = run_cli(config, tiny_ms_dir, "--run-dir", tmp_path / "run", mpi=3, timeout=60)
    assert r.returncode == 2 and time.time() - t0 < 20
    ours = [line for line in r.stderr.splitlines() if line.startswith("mpimager: error:")]
    assert len(ours) == 1 and "unknown WSClean option 'auto-treshold'" in ours[0]
    assert "Traceback" not in r.stderr and "MPI_ABORT" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_single_rank_runs_the_plan_serially(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", "[wsclean]\nsize = '64 64'\nscale = '20asec'\nniter = 10\n")
    r = run_cli(config, tiny_ms_dir, "--run-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "3 done, 0 already done, 0 failed" in r.stdout
    assert len(json.loads((tmp_path / "run" / "manifest.json").read_text())["products"]) == 3 * 5


def test_a_second_run_on_the_same_run_directory_is_refused_while_one_runs(tmp_path, tiny_ms_dir):
    from mpimager.rundir.journal import RunLock

    (tmp_path / "run").mkdir()
    lock = RunLock(tmp_path / "run")
    try:
        config = write_config(tmp_path / "c.toml", "[wsclean]\nsize = '64 64'\nscale = '20asec'\n")
        r = run_cli(config, tiny_ms_dir, "--run-dir", tmp_path / "run")
        assert r.returncode == 2 and "the run directory is in use by another mpimager run (pid" in r.stderr
    finally:
        lock.release()


@pytest.mark.container
def test_the_singularity_path_makes_the_same_images_as_native(tmp_path, wsclean_rootfs, singularity_standin):
    """The whole run with WSClean in a real Debian rootfs, through spython and the bubblewrap stand-in."""
    for name in ("native", "container"):
        beams(tmp_path / name / "data", n=2)
    base = CONFIG.format(fixms="true") + "[reduce]\nenabled = false\n"
    native = write_config(tmp_path / "native.toml", base)
    contained = write_config(tmp_path / "container.toml", base + f"""
[container]
runtime = "singularity"
image = "{wsclean_rootfs}"
binary = "{singularity_standin}"
""")
    for name, config in (("native", native), ("container", contained)):
        r = run_cli(config, tmp_path / name / "data", "--run-dir", tmp_path / name / "run", mpi=3, timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = (tmp_path / "container" / "run" / "logs" / "wsclean_beam00.I.log").read_text()
    assert "WSClean version 3.1.0" in log
    a, b = _products(tmp_path / "native" / "run"), _products(tmp_path / "container" / "run")
    assert a.keys() == b.keys() and len(a) == 2 * (25 + 45)  # per beam: I (5 stems x 5) and QU (5 stems x 9)
    for name in a:
        assert np.array_equal(a[name], b[name], equal_nan=True), name
