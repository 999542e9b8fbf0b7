"""Progress on rank 0: start/end lines, a periodic summary with an ETA, a live bar only on a terminal."""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass

import pytest
from conftest import write_config
from fixtures.report import TINY_CONFIG, launch

from mpimager.pipeline.progress import (
    DEFAULT_INTERVAL_S,
    ENV_INTERVAL,
    Progress,
    estimate_remaining,
    format_duration,
    interval_from_env,
    live_bar_wanted,
)

STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")


@dataclass(frozen=True)
class J:
    id: str
    kind: str
    cost: float


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


# ------------------------------------------------------------------------------------------------ ETA (pure)


@pytest.mark.pure
def test_no_eta_before_a_job_has_ended():
    assert estimate_remaining([("wsclean", 10.0)], [], [], workers=2) is None


@pytest.mark.pure
def test_eta_is_the_measured_seconds_per_cost_unit_times_the_remaining_cost_over_the_workers():
    finished = [("wsclean", 10.0, 20.0), ("wsclean", 5.0, 10.0)]  # 2 s per cost unit
    waiting = [("wsclean", 10.0)] * 4  # 4 x 20 s
    assert estimate_remaining(waiting, [], finished, workers=2) == pytest.approx(40.0)
    assert estimate_remaining(waiting, [], finished, workers=4) == pytest.approx(20.0)


@pytest.mark.pure
def test_each_kind_has_its_own_rate_and_an_unmeasured_kind_uses_the_mean_job_duration():
    finished = [("fixms", 100.0, 1.0), ("wsclean", 1.0, 30.0)]  # fixms cheap per unit, wsclean dear
    assert estimate_remaining([("fixms", 100.0)], [], finished, workers=1) == pytest.approx(1.0)
    assert estimate_remaining([("wsclean", 2.0)], [], finished, workers=1) == pytest.approx(60.0)
    assert estimate_remaining([("reduce", 7.0)], [], finished, workers=1) == pytest.approx(15.5)  # mean of 1, 30


@pytest.mark.pure
def test_a_running_job_counts_for_what_is_left_of_it_and_the_longest_job_bounds_the_eta():
    finished = [("wsclean", 1.0, 10.0)]
    assert estimate_remaining([], [("wsclean", 1.0, 4.0)], finished, workers=8) == pytest.approx(6.0)
    assert estimate_remaining([], [("wsclean", 1.0, 40.0)], finished, workers=8) == 0.0  # overdue: nothing known left
    # one long job and many workers: never less than that job
    assert estimate_remaining([("wsclean", 10.0)], [], finished, workers=8) == pytest.approx(100.0)


@pytest.mark.pure
@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (59.4, "59 s"), (61, "1m01s"), (3599, "59m59s"),
                                           (3600, "1h00m"), (7500, "2h05m")])
def test_durations_read_like_a_clock(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.pure
@pytest.mark.parametrize("value, expected, warned", [(None, DEFAULT_INTERVAL_S, False), ("2.5", 2.5, False),
                                                     ("abc", DEFAULT_INTERVAL_S, True), ("0", DEFAULT_INTERVAL_S, True),
                                                     ("-3", DEFAULT_INTERVAL_S, True)])
def test_the_summary_interval_comes_from_the_environment(value, expected, warned):
    env = {} if value is None else {ENV_INTERVAL: value}
    interval, warning = interval_from_env(env)
    assert interval == expected and (warning is not None) == warned
    if warned:
        assert ENV_INTERVAL in warning


# ------------------------------------------------------------------------------------------------ lines


def _progress(out, clock, tty=False, interval=60.0):
    jobs = [J("fixms:a", "fixms", 10.0), J("wsclean:a", "wsclean", 4.0), J("wsclean:b", "wsclean", 4.0),
            J("reduce:a", "reduce", 1.0)]
    return Progress(jobs, workers=2, out=out, interval=interval, tty=tty, clock=clock)


@pytest.mark.pure
def test_a_line_per_start_end_and_failure_each_whole_and_time_stamped():
    out, clock = io.StringIO(), Clock()
    p = _progress(out, clock)
    p.started("fixms:a", 1, "nodeA")
    clock.t += 2
    p.ended("fixms:a", "ok", 2.0)
    p.started("wsclean:a", 1, "nodeA")
    p.ended("wsclean:a", "failed", 0.5, error="JobError: wsclean exited 255 (log: /r/logs/wsclean_a.log)")
    p.ended("reduce:a", "skipped", 0.0, error="dependency 'wsclean:a' failed")
    p.ended("wsclean:b", "ok", 3.0, notes=("attempt 1: diverged; retrying (mgain halved)",))
    lines = out.getvalue().splitlines()
    assert all(STAMP.match(line) for line in lines) and "\r" not in out.getvalue()
    body = [STAMP.sub("", line) for line in lines]
    assert body == [
        "start fixms:a on rank 1 (nodeA)",
        "done fixms:a in 2.0 s [1/4]",
        "start wsclean:a on rank 1 (nodeA)",
        "FAILED wsclean:a: JobError: wsclean exited 255 (log: /r/logs/wsclean_a.log) [2/4]",
        "SKIPPED reduce:a: dependency 'wsclean:a' failed [3/4]",
        "done wsclean:b in 3.0 s [4/4] (attempt 1: diverged; retrying (mgain halved))",
    ]


@pytest.mark.pure
def test_the_periodic_line_counts_jobs_running_per_host_failures_and_gives_an_eta():
    out, clock = io.StringIO(), Clock()
    p = _progress(out, clock, interval=60.0)
    p.started("fixms:a", 1, "nodeA")
    clock.t += 10
    p.ended("fixms:a", "ok", 10.0)  # 1 s per fixms cost unit
    p.started("wsclean:a", 1, "nodeA")
    p.started("wsclean:b", 2, "nodeB")
    clock.t += 30
    p.tick()
    assert "progress:" not in out.getvalue()  # 40 s < 60 s
    clock.t += 20
    p.tick()
    last = STAMP.sub("", out.getvalue().splitlines()[-1])
    # wsclean unmeasured: mean 10 s per job, both 50 s in: nothing known left; reduce (10 s) waits
    assert last.startswith("progress: 1/4 done, 2 running (nodeA: 1, nodeB: 1), 1 waiting; elapsed 1m00s; ETA 10 s (at ")
    p.ended("wsclean:a", "failed", 50.0, error="x")
    assert "1 failed" in p.summary()
    clock.t += 1
    p.tick()  # only 1 s after the last summary: nothing printed
    assert out.getvalue().count("progress:") == 1


@pytest.mark.pure
def test_before_any_job_ends_the_eta_says_so():
    p = _progress(io.StringIO(), Clock())
    p.started("fixms:a", 1, "h")
    assert p.summary().endswith("; ETA after the first job ends")


@pytest.mark.pure
def test_the_live_bar_is_drawn_only_on_a_terminal():
    tty_out, file_out = io.StringIO(), io.StringIO()
    for out, tty in ((tty_out, True), (file_out, False)):
        p = _progress(out, Clock(), tty=tty)
        p.started("fixms:a", 1, "h")
        p.tick()
        p.stop()
        p.say("after the queue: no bar any more")
    assert "\r" in tty_out.getvalue() and "[" + "." * 30 + "] 0/4" in tty_out.getvalue()
    assert tty_out.getvalue().endswith("after the queue: no bar any more\n")
    assert "\r" not in file_out.getvalue() and "\x1b" not in file_out.getvalue()


@pytest.mark.pure
def test_under_an_mpi_launcher_a_pseudo_terminal_gets_no_bar(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(name, raising=False)
    assert live_bar_wanted(Tty()) is True and live_bar_wanted(io.StringIO()) is False
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")  # what mpirun sets: its ranks' stdout is a pty
    assert live_bar_wanted(Tty()) is False


@pytest.mark.pure
def test_the_timer_thread_prints_the_summary_every_interval_and_stops():
    out = io.StringIO()
    p = _progress(out, time.time, interval=0.05)
    p.start_timer()
    time.sleep(0.4)
    p.stop()
    n = out.getvalue().count("progress:")
    time.sleep(0.15)
    assert n >= 3 and out.getvalue().count("progress:") == n


# ------------------------------------------------------------------------------------------------ real run


def test_a_run_under_mpirun_streams_whole_flushed_lines_to_a_non_terminal(tmp_path, tiny_ms_dir):
    """What a Slurm log gets: each line as it happens (read while the run goes on), no bar, a summary line."""
    config = write_config(tmp_path / "c.toml", TINY_CONFIG)
    proc = launch(config, [tiny_ms_dir], tmp_path / "run", env={ENV_INTERVAL: "0.5"})
    try:
        first = proc.stdout.readline()
        running_when_read = proc.poll() is None
        # not communicate(): it reads the pipe itself and loses what readline() buffered beyond the first line
        rest = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest[-2000:] + err[-2000:]
    assert running_when_read and STAMP.match(first) and "6 jobs: 6 to run" in first
    text = first + rest
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    starts = [x for x in lines if re.match(r"^\[\d\d:\d\d:\d\d\] start wsclean:\S+ on rank [12] \(", x)]
    dones = [x for x in lines if re.match(r"^\[\d\d:\d\d:\d\d\] done wsclean:\S+ in [\d.]+ s \[\d/6\]$", x)]
    assert len(starts) == 6 and len(dones) == 6
    assert any(re.match(r"^\[\d\d:\d\d:\d\d\] progress: \d/6 done, \d running", x) for x in lines), text
    assert any(re.match(r"^\[\d\d:\d\d:\d\d\] report: .*report\.html", x) for x in lines), text
