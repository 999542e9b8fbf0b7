"""FixMS runs once per MS, safely in place: right images, no-op reruns, recovery from a kill,
no silent use of a column FixMS did not make, fixms' own errors as JobErrors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import casacore.tables as ct
import numpy as np
import pytest
import astropy.units as u
from fixms.fix_ms_corrs import convert_correlations, fix_ms_corrs
from fixms.fix_ms_dir import fix_ms_dir

from mpimager.testing import synth
from mpimager.errors import JobError
from mpimager.runtime.fixms import MARKER_NAME, RECORD_NAME, FixMSOptions, fixms_state, run_fixms

from fixtures.synth import copy_ms, flux_tolerance, source_peak, wsclean_image

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

OFFSET = (0.6, -0.4)
BAND_CENTRE_HZ = synth.DEFAULT_FREQ_START_HZ + 1.5 * synth.DEFAULT_CHAN_WIDTH_HZ
POL_AXIS_DEG = 45.0 - synth.DEFAULT_RECEPTOR_ANGLE_DEG
SOURCES = synth.default_sources(synth.beam_centre(synth.DEFAULT_PHASE_CENTRE_DEG, OFFSET))


def _raw_beam(path, **kwargs):
    return synth.make_ms(path, raw_askap=True, beam=2, beam_offset_deg=OFFSET, **kwargs)


@pytest.fixture(scope="module")
def big_raw_beam(tmp_path_factory):
    """A raw beam whose CORRECTED_DATA takes a fraction of a second to fill (36 ant, 40k rows, 74 MB)."""
    return _raw_beam(tmp_path_factory.mktemp("big") / "big.ms", n_ant=36, n_times=60, n_chan=32,
                     freq_start_hz=748e6, chan_width_hz=9e6)  # same band as the tiny beams


def _assert_images_right(ms, prefix, *extra):
    wsclean_image(ms, prefix, "-pol", "IQU", "-join-polarizations", *extra)
    for src in SOURCES:
        for st in "IQU":
            peak = source_peak(f"{prefix}-{st}-image.fits", src.ra_deg, src.dec_deg)
            expected = src.flux(BAND_CENTRE_HZ, st)
            if expected != 0:
                assert peak.offset_pix <= 0.5, (st, src, peak)
            assert abs(peak.value - expected) <= flux_tolerance(expected, src.i_jy), (st, src, peak)


def _feed(ms):
    with ct.table(str(Path(ms) / "FEED"), ack=False) as feed:
        return {c: feed.getcol(c) for c in feed.colnames() if c in ("RECEPTOR_ANGLE", "INSTRUMENT_RECEPTOR_ANGLE", "BEAM_OFFSET")}


def _columns(ms):
    with ct.table(str(ms), ack=False) as main:
        return set(main.colnames())


def _history_rows(ms):
    with ct.table(str(Path(ms) / "HISTORY"), ack=False) as hist:
        return hist.nrows()


def _mtimes(ms):
    return {str(p): p.stat().st_mtime_ns for p in Path(ms).rglob("*")}


def _assert_fixed_feed(ms, receptor_angle_deg=synth.DEFAULT_RECEPTOR_ANGLE_DEG):
    feed = _feed(ms)
    assert np.degrees(feed["RECEPTOR_ANGLE"]) == pytest.approx(45.0)
    assert np.degrees(feed["INSTRUMENT_RECEPTOR_ANGLE"]) == pytest.approx(receptor_angle_deg)
    assert not feed["BEAM_OFFSET"].any()


def test_a_raw_beam_fixed_by_run_fixms_images_right_in_i_q_u(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms")
    assert fixms_state(ms, FixMSOptions()) == "raw"
    log = tmp_path / "fixms.log"
    assert run_fixms(ms, FixMSOptions(), log=log) == "fixed"
    assert fixms_state(ms, FixMSOptions()) == "fixed"
    _assert_fixed_feed(ms)
    record = json.loads((ms / RECORD_NAME).read_text())
    (fix,) = record["fixes"]
    assert fix["corrected_data_column"] == "CORRECTED_DATA" and fix["fix_stokes_factor"] is True
    assert fix["pol_axis_deg"] == pytest.approx(45.0 - synth.DEFAULT_RECEPTOR_ANGLE_DEG)
    assert record["versions"]["fixms"]
    assert not (ms / MARKER_NAME).exists()
    assert "Successful read/write open" in log.read_text()  # casacore's console noise went to the log
    _assert_images_right(ms, tmp_path / "img")


def test_a_second_run_changes_nothing(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms")
    run_fixms(ms, FixMSOptions())
    before, history = _mtimes(ms), _history_rows(ms)
    started = time.perf_counter()
    assert run_fixms(ms, FixMSOptions()) == "already-fixed"
    assert time.perf_counter() - started < 1.0
    assert _mtimes(ms) == before
    assert _history_rows(ms) == history


def test_fixms_output_goes_to_the_log_not_the_console(tmp_path, capfd):
    ms = _raw_beam(tmp_path / "beam.ms")
    run_fixms(ms, FixMSOptions(), log=tmp_path / "fix.log")
    out, err = capfd.readouterr()
    assert "Successful" not in out and "FixMS" not in out + err
    assert "Fixing FEED directions" in (tmp_path / "fix.log").read_text()


def test_a_fix_killed_while_filling_corrected_data_is_completed_by_the_next_run(big_raw_beam, tmp_path):
    ms = copy_ms(big_raw_beam, tmp_path / "big.ms")
    log = tmp_path / "fixms.log"
    child = subprocess.Popen([sys.executable, "-m", "mpimager.runtime.fixms", "--log", str(log), str(ms)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while "Correcting data" not in (log.read_text() if log.exists() else ""):  # the fill has begun
            assert child.poll() is None and time.monotonic() < deadline, "fixms finished before the kill"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert "Finished correcting" not in log.read_text()  # killed part-way through the fill
    assert (ms / MARKER_NAME).exists() and not (ms / RECORD_NAME).exists()
    assert fixms_state(ms, FixMSOptions()) == "interrupted"

    assert run_fixms(ms, FixMSOptions()) == "completed-interrupted"
    assert fixms_state(ms, FixMSOptions()) == "fixed"
    assert not (ms / MARKER_NAME).exists()
    _assert_fixed_feed(ms)
    # The end state is exactly that of an uninterrupted FixMS run on the original beam (which the
    # tests above image right); imaging this 40k-row MS would take ~15 s.
    reference = copy_ms(big_raw_beam, tmp_path / "reference.ms")
    fix_ms_dir(str(reference))
    fix_ms_corrs(reference)
    with ct.table(str(ms), ack=False) as got, ct.table(str(reference), ack=False) as want:
        assert np.array_equal(got.getcol("CORRECTED_DATA"), want.getcol("CORRECTED_DATA"))
    for sub, column in [("FIELD", "PHASE_DIR"), ("FIELD_OLD", "PHASE_DIR"), ("FEED", "RECEPTOR_ANGLE"),
                        ("FEED", "INSTRUMENT_RECEPTOR_ANGLE"), ("FEED", "BEAM_OFFSET"), ("FEED_OLD", "BEAM_OFFSET")]:
        with ct.table(str(ms / sub), ack=False) as got, ct.table(str(reference / sub), ack=False) as want:
            assert np.array_equal(got.getcol(column), want.getcol(column)), (sub, column)


# Deterministic kill points: the child SIGKILLs itself at a chosen step of a real run.
KILL_AFTER_FIX_MS_DIR = """
import os, signal, fixms.fix_ms_corrs as corrs
corrs.fix_ms_corrs = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
"""
KILL_MID_FILL_FLUSHED = """
import os, signal, fixms.fix_ms_corrs as corrs
original = corrs.process_chunk
async def chunk(**kwargs):
    if kwargs["chunk_num"] == 2:  # as if casacore had flushed the table part-way through the fill
        kwargs["tab"].flush()
        os.kill(os.getpid(), signal.SIGKILL)
    await original(**kwargs)
corrs.process_chunk = chunk
"""
KILL_BEFORE_RECORD = """
import os, signal, mpimager.runtime.fixms as step
original = step._write_json_atomic
def write(path, value):
    if path.name == step.RECORD_NAME:
        os.kill(os.getpid(), signal.SIGKILL)
    original(path, value)
step._write_json_atomic = write
"""
KILL_AFTER_RECORD = """
import os, signal, mpimager.runtime.fixms as step
original = step._write_json_atomic
def write(path, value):
    original(path, value)
    if path.name == step.RECORD_NAME:
        os.kill(os.getpid(), signal.SIGKILL)
step._write_json_atomic = write
"""


@pytest.mark.parametrize("patch, expected", [
    (KILL_AFTER_FIX_MS_DIR, "completed-interrupted"),  # FIELD moved, FIELD_OLD made, no data column
    (KILL_MID_FILL_FLUSHED, "completed-interrupted"),  # a partly filled CORRECTED_DATA on disk
    (KILL_BEFORE_RECORD, "completed-interrupted"),  # everything done, RECEPTOR_ANGLE already moved
    (KILL_AFTER_RECORD, "already-fixed"),  # record written, in-progress file left
], ids=["after-fix_ms_dir", "mid-fill-flushed", "before-record", "after-record"])
def test_a_fix_killed_at_any_step_ends_correctly_fixed(patch, expected, tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms", n_ant=16, n_times=16)  # 2176 rows: 3 fixms chunks of 1000
    script = patch + f"\nstep_ms = {str(ms)!r}\nfrom mpimager.runtime.fixms import run_fixms, FixMSOptions\n" \
                     "run_fixms(step_ms, FixMSOptions())\n"
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert (ms / MARKER_NAME).exists()
    if patch is KILL_MID_FILL_FLUSHED:  # fixms alone would now say "already applied"
        with ct.table(str(ms), ack=False) as main:
            corrected = main.getcol("CORRECTED_DATA", startrow=2000)
            want = convert_correlations(main.getcol("DATA", startrow=2000), POL_AXIS_DEG * u.deg)
        assert not np.allclose(corrected, want)  # the last chunk was never written
    assert run_fixms(ms, FixMSOptions()) == expected
    assert not (ms / MARKER_NAME).exists()
    _assert_fixed_feed(ms)
    with ct.table(str(ms / "FIELD_OLD"), ack=False) as old:  # the boresight, never the beam centre
        assert np.degrees(old.getcol("PHASE_DIR")[0, 0]) == pytest.approx(synth.DEFAULT_PHASE_CENTRE_DEG)
    _assert_images_right(ms, tmp_path / "img")


def test_a_corrected_data_column_fixms_did_not_make_is_refused(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms")
    with ct.table(str(ms), readonly=False, ack=False) as main:  # e.g. calibrated data
        desc = main.getcoldesc("DATA")
        main.addcols(ct.makecoldesc("CORRECTED_DATA", desc))
        main.putcol("CORRECTED_DATA", main.getcol("DATA"))
    assert fixms_state(ms, FixMSOptions()) == "foreign-column"
    with pytest.raises(JobError, match=str(ms)) as err:
        run_fixms(ms, FixMSOptions())
    assert "CORRECTED_DATA" in str(err.value) and "not made by FixMS" in str(err.value)
    assert not (ms / "FIELD_OLD").exists() and not (ms / MARKER_NAME).exists()

    # Another output column name fixes the beam and leaves the foreign column alone.
    other = FixMSOptions(corrected_data_column="FIXED_DATA")
    assert run_fixms(ms, other) == "fixed"
    with ct.table(str(ms), ack=False) as main:
        assert np.array_equal(main.getcol("CORRECTED_DATA"), main.getcol("DATA"))
    _assert_images_right(ms, tmp_path / "img", "-data-column", "FIXED_DATA")


def test_a_non_equatorial_mount_is_a_job_error_and_the_ms_is_unchanged(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms", mount="alt-az")
    feed = _feed(ms)
    with pytest.raises(JobError, match="pol_fixed") as err:
        run_fixms(ms, FixMSOptions())
    assert str(ms) in str(err.value)
    assert not (ms / "FIELD_OLD").exists() and not (ms / MARKER_NAME).exists()
    assert "CORRECTED_DATA" not in _columns(ms)
    after = _feed(ms)
    assert all(np.array_equal(feed[k], after[k]) for k in feed)


def test_fixms_applied_by_someone_else_is_done_and_said_so(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms")
    fix_ms_dir(str(ms))
    fix_ms_corrs(ms)
    before = _mtimes(ms)
    assert fixms_state(ms, FixMSOptions()) == "fixed-externally"
    assert run_fixms(ms, FixMSOptions()) == "fixed-externally"
    assert _mtimes(ms) == before


def test_a_column_fixed_with_other_options_is_refused(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms")
    run_fixms(ms, FixMSOptions(fix_stokes_factor=False))
    with pytest.raises(JobError, match="fix_stokes_factor=False"):
        run_fixms(ms, FixMSOptions())


def test_two_runs_at_once_fix_the_ms_once(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms", n_ant=24, n_times=30, n_chan=8)
    argv = [sys.executable, "-m", "mpimager.runtime.fixms", str(ms)]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = sorted(child.communicate()[0].split(": ")[1].split()[0] for child in children)
    assert [c.returncode for c in children] == [0, 0]
    assert outputs == ["already-fixed", "fixed"]
    _assert_fixed_feed(ms)


def test_the_command_line_exits_1_with_a_one_line_error(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms", mount="alt-az")
    child = subprocess.run([sys.executable, "-m", "mpimager.runtime.fixms", str(ms)], capture_output=True, text=True)
    assert child.returncode == 1
    assert child.stderr.startswith("error: ") and str(ms) in child.stderr
    assert child.stderr.count("\n") == 1
