"""FixMS runs once per MS, safely: right images, no-op reruns, recovery from a kill at any step (the MS is
never half-changed), an exact roll-back, every state an ASKAP beam arrives in, no silent use of a column FixMS
did not make, fixms' own errors as JobErrors, read-only MSs refused with nothing changed."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import casacore.tables as ct
import numpy as np
import pytest
from fixms.fix_ms_corrs import fix_ms_corrs
from fixms.fix_ms_dir import fix_ms_dir
from fixtures.ms_compare import assert_same_ms, disk_bytes, file_digests
from fixtures.synth import copy_ms, flux_tolerance, source_peak, wsclean_image

from mpimager.errors import InputError, JobError
from mpimager.inputs.msstate import read_evidence, work_dir
from mpimager.reduce.receptor import pol_axis_from_ms
from mpimager.runtime.fixms import RECORD_NAME, FixMSOptions, corrections_match, fixms_state, run_fixms
from mpimager.testing import synth

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
        wanted = ("RECEPTOR_ANGLE", "INSTRUMENT_RECEPTOR_ANGLE", "BEAM_OFFSET")
        return {c: feed.getcol(c) for c in feed.colnames() if c in wanted}


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
    assert not work_dir(ms).exists()
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


def test_a_fix_killed_while_filling_corrected_data_leaves_the_ms_untouched_and_is_redone(big_raw_beam, tmp_path):
    ms = copy_ms(big_raw_beam, tmp_path / "big.ms")
    before = file_digests(ms)
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
    assert file_digests(ms) == before  # the fix ran on a working copy: not one byte of the MS changed
    assert work_dir(ms).exists() and fixms_state(ms, FixMSOptions()) == "interrupted"

    assert run_fixms(ms, FixMSOptions()) == "completed-interrupted"
    assert fixms_state(ms, FixMSOptions()) == "fixed"
    assert not work_dir(ms).exists()
    _assert_fixed_feed(ms)
    # The end state is that of an uninterrupted run on the original beam (which the tests above image right).
    reference = copy_ms(big_raw_beam, tmp_path / "reference" / "big.ms")
    run_fixms(reference, FixMSOptions())
    assert_same_ms(ms, reference)


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
KILL_BEFORE_SWAP = """
import os, signal, mpimager.runtime.fixms as step
step._exchange = lambda work, ms: os.kill(os.getpid(), signal.SIGKILL)
"""
KILL_AFTER_SWAP = """
import os, signal, mpimager.runtime.fixms as step
original = step._exchange
def exchange(work, ms):
    original(work, ms)
    os.kill(os.getpid(), signal.SIGKILL)
step._exchange = exchange
"""


@pytest.mark.parametrize("patch, expected", [
    (KILL_AFTER_FIX_MS_DIR, "completed-interrupted"),  # the copy's FIELD moved, FIELD_OLD made, no data column
    (KILL_MID_FILL_FLUSHED, "completed-interrupted"),  # a partly filled CORRECTED_DATA in the copy
    (KILL_BEFORE_RECORD, "completed-interrupted"),  # the copy fixed and checked, RECEPTOR_ANGLE already moved
    (KILL_BEFORE_SWAP, "completed-interrupted"),  # the copy complete with its record
    (KILL_AFTER_SWAP, "already-fixed"),  # the fixed MS in place, the old one left at the working path
], ids=["after-fix_ms_dir", "mid-fill-flushed", "before-record", "before-swap", "after-swap"])
def test_a_fix_killed_at_any_step_ends_correctly_fixed(patch, expected, tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms", n_ant=16, n_times=16)  # 2176 rows: 3 fixms chunks of 1000
    pristine = copy_ms(ms, tmp_path / "pristine" / "beam.ms")
    before = file_digests(ms)
    script = patch + f"\nstep_ms = {str(ms)!r}\nfrom mpimager.runtime.fixms import run_fixms, FixMSOptions\n" \
                     "run_fixms(step_ms, FixMSOptions())\n"
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert work_dir(ms).exists()
    if patch is KILL_AFTER_SWAP:
        assert (ms / RECORD_NAME).exists()  # already complete: the old MS waits to be removed
    else:
        assert file_digests(ms) == before  # exactly as it was, byte for byte
    assert run_fixms(ms, FixMSOptions()) == expected
    assert not work_dir(ms).exists()
    _assert_fixed_feed(ms)
    run_fixms(pristine, FixMSOptions())
    assert_same_ms(ms, pristine)
    _assert_images_right(ms, tmp_path / "img")


FAIL_THE_CHECK = """
import fixms.fix_ms_corrs as corrs
original = corrs.process_chunk
async def chunk(**kwargs):  # fixms writes a subtly wrong first chunk
    await original(**kwargs)
    if kwargs["chunk_num"] == 0:
        tab, column = kwargs["tab"], kwargs["corrected_data_column"]
        tab.putcol(column, tab.getcol(column, 0, 10) * 1.01, 0, 10)
corrs.process_chunk = chunk
"""


def test_a_failed_fix_leaves_the_ms_exactly_as_it_was_history_and_disk_size_included(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms", n_ant=16, n_times=16, history_rows=20, pointing=True)
    pristine = copy_ms(ms, tmp_path / "pristine" / "beam.ms")
    before, size, history = file_digests(ms), disk_bytes(ms), _history_rows(ms)
    script = FAIL_THE_CHECK + f"\nfrom mpimager.runtime.fixms import main\nraise SystemExit(main([{str(ms)!r}]))\n"
    for _attempt in range(3):  # repeated failures add nothing either
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert child.returncode == 1, child.stdout + child.stderr
        assert "do not hold the corrected DATA" in child.stderr and "the MS was not changed" in child.stderr
    assert file_digests(ms) == before
    assert disk_bytes(ms) == size and _history_rows(ms) == history == 20
    assert not work_dir(ms).exists()
    assert_same_ms(ms, pristine)  # every table, every column
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beam.ms", "pristine"]


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
    assert not (ms / "FIELD_OLD").exists() and not work_dir(ms).exists()

    # Another output column name fixes the beam and leaves the foreign column alone.
    other = FixMSOptions(corrected_data_column="FIXED_DATA")
    assert run_fixms(ms, other) == "fixed"
    with ct.table(str(ms), ack=False) as main:
        assert np.array_equal(main.getcol("CORRECTED_DATA"), main.getcol("DATA"))
    _assert_images_right(ms, tmp_path / "img", "-data-column", "FIXED_DATA")


def test_a_non_equatorial_mount_is_a_job_error_and_the_ms_is_unchanged(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms", mount="alt-az")
    before = file_digests(ms)
    with pytest.raises(JobError, match="pol_fixed") as err:
        run_fixms(ms, FixMSOptions())
    assert str(ms) in str(err.value) and "the MS was not changed" in str(err.value)
    assert file_digests(ms) == before and not work_dir(ms).exists()


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
    outputs = sorted(child.communicate()[0].splitlines()[-1].split(": ")[1].split()[0] for child in children)
    assert [c.returncode for c in children] == [0, 0]
    assert outputs == ["already-fixed", "fixed"]
    _assert_fixed_feed(ms)


def test_the_command_line_exits_1_with_a_one_line_error(tmp_path):
    ms = _raw_beam(tmp_path / "beam.ms", mount="alt-az")
    child = subprocess.run([sys.executable, "-m", "mpimager.runtime.fixms", str(ms)], capture_output=True, text=True)
    assert child.returncode == 1
    assert child.stderr.startswith("error: ") and str(ms) in child.stderr
    assert child.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------- states and checks


def _real_beam(path, **kwargs):
    """A beam with the real ASKAP shapes: 36-beam FEED, NaN in flagged samples, no autocorrelations, ..."""
    return _raw_beam(path, **{**synth.REAL_ASKAP_KWARGS, **kwargs})


def _field_deg(ms):
    return read_evidence(ms).field_deg


@pytest.mark.pure
def test_the_check_takes_nan_as_equal_to_nan_and_builds_its_tolerance_from_finite_values():
    expected = np.array([[[1 + 1j, np.nan, 2, 3]]], dtype=np.complex64)
    assert corrections_match(expected.copy(), expected)
    assert not corrections_match(expected * 1.01, expected)
    moved_nan = np.array([[[np.nan, 1, 2, 3]]], dtype=np.complex64)
    assert not corrections_match(moved_nan, expected)  # NaN where a finite value belongs
    flag = np.array([[[True, True, False, False]]])
    assert corrections_match(moved_nan, expected, flag)  # flagged samples are not compared


def test_a_beam_with_nan_in_flagged_samples_and_no_autocorrelations_is_fixed_and_points_at_its_beam(tmp_path):
    ms = _real_beam(tmp_path / "beam.ms", nan_fraction=0.05)
    with ct.table(str(ms), ack=False) as main:
        assert np.isnan(main.getcol("DATA")).any()
        assert ct.taql("select from $main where ANTENNA1==ANTENNA2").nrows() == 0
    assert run_fixms(ms, FixMSOptions()) == "fixed"
    expected = synth.beam_centre(synth.DEFAULT_PHASE_CENTRE_DEG, OFFSET)
    assert read_evidence(ms).phase_centre_error_arcsec < 0.01
    assert np.allclose(_field_deg(ms), expected, atol=1e-7)
    with ct.table(str(ms), ack=False) as main:
        data, fixed = main.getcol("DATA"), main.getcol("CORRECTED_DATA")
    assert np.array_equal(np.isnan(data).any(axis=2), np.isnan(fixed).any(axis=2))  # NaN stay where they were
    _assert_images_right(ms, tmp_path / "img")


def test_an_ms_fixed_by_upstream_fixms_without_autocorrelations_gets_its_field_repaired(tmp_path):
    ms = _real_beam(tmp_path / "beam.ms")
    fix_ms_dir(str(ms))
    fix_ms_corrs(ms)
    boresight = synth.DEFAULT_PHASE_CENTRE_DEG
    assert np.allclose(_field_deg(ms), boresight)  # upstream fix_ms_dir moved nothing, said nothing
    assert fixms_state(ms, FixMSOptions()) == "fixed-externally"
    history = _history_rows(ms)
    assert run_fixms(ms, FixMSOptions()) == "direction-repaired"
    assert read_evidence(ms).phase_centre_error_arcsec < 0.01
    assert _history_rows(ms) == history  # only FIELD (and our record) changed
    assert run_fixms(ms, FixMSOptions()) == "fixed-externally"  # now right: nothing to do
    _assert_images_right(ms, tmp_path / "img")


@pytest.mark.parametrize("askap_state, state", [("preprocessed", "preprocessed"), ("split", "split-after-fix")])
def test_data_already_in_the_sky_frame_is_never_rotated_again(tmp_path, askap_state, state):
    ms = _real_beam(tmp_path / "beam.ms", askap_state=askap_state)
    before = file_digests(ms)
    assert fixms_state(ms, FixMSOptions()) == state
    assert run_fixms(ms, FixMSOptions()) == "imaged-as-is"
    assert file_digests(ms) == before
    _assert_images_right(ms, tmp_path / "img", "-data-column", "DATA")


def test_a_split_without_the_instrument_angle_is_refused_naming_the_evidence(tmp_path):
    ms = _real_beam(tmp_path / "beam.ms", askap_state="split", keep_instrument_angle=False)
    assert fixms_state(ms, FixMSOptions()) == "unknown"
    with pytest.raises(JobError, match="enabled = false") as err:
        run_fixms(ms, FixMSOptions())
    assert str(ms) in str(err.value) and "POINTING" in str(err.value)


def test_the_receptor_angle_is_the_beams_own_with_fixms_off_and_on(tmp_path):
    angles = [90.0 - 3.0 * b for b in range(36)]
    ms = _raw_beam(tmp_path / "beam.ms", feed_layout="askap", receptor_angle_deg=angles)
    with ct.table(str(ms / "FEED"), ack=False) as feed:
        assert feed.nrows() == 36 * 8 and set(feed.getcol("BEAM_ID")) == {0}
    assert pol_axis_from_ms(ms) == pytest.approx(45.0 - angles[2])  # FixMS off: RECEPTOR_ANGLE of beam 2
    run_fixms(ms, FixMSOptions())
    assert pol_axis_from_ms(ms) == pytest.approx(45.0 - angles[2])  # FixMS on: INSTRUMENT_RECEPTOR_ANGLE
    with ct.table(str(ms / "FEED"), readonly=False, ack=False) as feed:  # one antenna's row of beam 2 differs
        ira = feed.getcol("INSTRUMENT_RECEPTOR_ANGLE")
        ira[5 * 36 + 2] += 0.1
        feed.putcol("INSTRUMENT_RECEPTOR_ANGLE", ira)
    with pytest.raises(InputError, match="not constant"):
        pol_axis_from_ms(ms)


@pytest.mark.parametrize("what", ["directory", "files"])
def test_a_read_only_ms_is_a_job_error_and_nothing_is_left_behind(tmp_path, what):
    ms = _raw_beam(tmp_path / "beam.ms")
    before = file_digests(ms)
    for path in [ms] if what == "directory" else [p for p in ms.rglob("table.*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        with pytest.raises(JobError, match="nothing was changed") as err:
            run_fixms(ms, FixMSOptions())
    finally:
        ms.chmod(0o755)
    assert ("not writable" if what == "directory" else "read-only") in str(err.value)
    assert file_digests(ms) == before and sorted(p.name for p in tmp_path.iterdir()) == ["beam.ms"]
