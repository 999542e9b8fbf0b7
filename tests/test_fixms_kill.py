"""FixMS survives a SIGKILL at any moment (issue 13 item 2): on a beam big enough that the fix takes seconds,
the step is killed at 24 moments spread over its whole run. After each kill the MS is either byte for byte as
it was or completely fixed (never half-changed, always readable), and the next run leaves it equal, table by
table and column by column, to a pristine copy fixed without interruption."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import casacore.tables as ct
import pytest
from fixtures.ms_compare import assert_same_ms, file_digests, table_contents
from fixtures.synth import copy_ms

from mpimager.inputs.msstate import RECORD_NAME, work_dir
from mpimager.runtime.fixms import FixMSOptions, run_fixms
from mpimager.testing import synth

KILLS = 24


def _fix_command(ms):
    return [sys.executable, "-m", "mpimager.runtime.fixms", str(ms)]


def _all_tables_readable(ms) -> None:
    for path in [ms, *sorted(p for p in ms.iterdir() if (p / "table.dat").is_file())]:
        with ct.table(str(path), ack=False) as t:
            for column in t.colnames():
                if t.nrows() and t.iscelldefined(column, 0):
                    t.getcell(column, t.nrows() - 1)


def test_a_fix_killed_at_any_of_24_moments_ends_exactly_like_an_uninterrupted_fix(tmp_path):
    pristine = synth.make_ms(tmp_path / "pristine" / "beam.ms", raw_askap=True, beam=2, beam_offset_deg=(0.6, -0.4),
                             n_ant=36, n_times=160, n_chan=32, freq_start_hz=748e6, chan_width_hz=9e6,
                             history_rows=20, pointing=True)
    original = file_digests(pristine)
    reference = copy_ms(pristine, tmp_path / "reference" / "beam.ms")
    started = time.monotonic()
    subprocess.run(_fix_command(reference), check=True, capture_output=True)
    duration = time.monotonic() - started  # the whole step, interpreter start included
    assert duration > 1.5, f"the fix took only {duration:.1f} s: make the beam bigger"
    want = table_contents(reference)
    first_duration = duration

    phases = Counter()

    def rerun_and_compare(ms):  # the next run ends the MS exactly as an uninterrupted fix
        outcome = run_fixms(ms, FixMSOptions())
        assert outcome in ("fixed", "completed-interrupted", "already-fixed"), outcome
        assert not work_dir(ms).exists()
        assert_same_ms(ms, want)
        shutil.rmtree(ms.parent)  # keep the disk use of the test to a few beams

    k = 0
    while k < KILLS:
        ms = copy_ms(pristine, tmp_path / f"kill{k:02d}" / "beam.ms")
        moment = duration * (k + 0.5) / KILLS
        begun = time.monotonic()
        child = subprocess.Popen(_fix_command(ms), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            child.wait(timeout=moment)
            duration = time.monotonic() - begun  # finished first (a less loaded machine): spread over this
            phases["finished before the kill (moment redone)"] += 1
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
            k += 1
        _all_tables_readable(ms)
        if (ms / RECORD_NAME).exists():
            phases["killed after the swap" if child.returncode == -signal.SIGKILL else "finished"] += 1
        else:
            assert file_digests(ms) == original, f"kill {k} at {moment:.2f} s left the MS half-changed"
            phases["killed before the swap" if work_dir(ms).exists() else "killed before the copy"] += 1
        rerun_and_compare(ms)
    def kill_a_fix(name, wait):  # a fix of a fresh copy, SIGKILLed once `wait(child, ms)` returns
        ms = copy_ms(pristine, tmp_path / name / "beam.ms")
        child = subprocess.Popen(_fix_command(ms), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(child, ms)
        child.send_signal(signal.SIGKILL)
        child.wait()
        _all_tables_readable(ms)
        return ms, child

    # before the copy is only the interpreter's start-up, a short window on an idle machine (one kill of 24 landed
    # there once): these kills land in it
    for attempt in range(10):
        if phases["killed before the copy"] >= 2:
            break
        delay = 0.02 * (attempt + 1)
        ms, _ = kill_a_fix(f"early{attempt:02d}", lambda child, ms, delay=delay: time.sleep(delay))
        assert file_digests(ms) == original, f"a kill {delay:.2f} s in left the MS half-changed"
        phases["killed before the swap" if work_dir(ms).exists() else "killed before the copy"] += 1
        rerun_and_compare(ms)

    # after the swap only the old copy's clean-up is left: too short a window for moments spread over seconds, so
    # these kills wait for the swap (the completion record appears in the MS) and land at once
    def until_swapped(child, ms):
        while child.poll() is None and not (ms / RECORD_NAME).exists():
            time.sleep(0.0005)

    for attempt in range(10):
        if phases["killed after the swap"] >= 2:
            break
        ms, child = kill_a_fix(f"after{attempt:02d}", until_swapped)
        phases["killed after the swap" if child.returncode == -signal.SIGKILL else "finished"] += 1
        rerun_and_compare(ms)
    print(f"{KILLS} kills over {first_duration:.1f} s (last estimate {duration:.1f} s): {dict(phases)}")
    for phase in ("killed before the copy", "killed before the swap", "killed after the swap"):
        assert phases[phase] >= 2, phases  # the moments cover the whole step


@pytest.mark.parametrize("leftover", ["work", "old"])
def test_a_swap_by_two_renames_interrupted_between_them_is_finished_by_the_next_run(tmp_path, leftover):
    """The fallback swap where RENAME_EXCHANGE is missing: MS path empty, the fixed copy (or the old MS) waits."""
    from mpimager.runtime import fixms as step

    ms = synth.make_ms(tmp_path / "beam.ms", raw_askap=True, beam=1)
    reference = copy_ms(ms, tmp_path / "ref" / "beam.ms")
    run_fixms(reference, FixMSOptions())
    fixed = copy_ms(reference, tmp_path / "fixed.ms")
    old = step._old_path(ms)
    ms.rename(old)  # as if killed after the first rename of the fallback
    if leftover == "work":
        fixed.rename(work_dir(ms))
    else:
        shutil.rmtree(fixed)
    assert not ms.exists()
    outcome = run_fixms(ms, FixMSOptions())
    assert outcome == ("already-fixed" if leftover == "work" else "fixed")
    assert not old.exists() and not work_dir(ms).exists()
    if leftover == "work":
        assert file_digests(ms) == file_digests(reference)  # the fixed copy, moved into place
    else:
        assert_same_ms(ms, reference)  # the untouched MS, put back and fixed
