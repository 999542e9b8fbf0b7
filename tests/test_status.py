"""`mpimager status`: the state of every job of a run, from its journal, while it runs, after it ends or dies."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli, write_config
from fixtures.report import TINY_CONFIG, kill_session, launch, open_jobs, wait_for

from mpimager.rundir.journal import read_records
from mpimager.rundir.status import RUN_DIED, RUN_FINISHED, RUN_RUNNING, format_table, job_states, read_status
from mpimager.testing import synth

RUN = "/runs/r1"


def plan(*ids):
    return {"event": "plan", "time": 10.0, "jobs": [{"id": i, "kind": i.split(":")[0], "argv": [i, "x"], "cost": 1.0,
                                                    "tags": {}} for i in ids]}


def start(job, t, rank=1, host="h1"):
    return {"event": "start", "time": t, "job": job, "rank": rank, "host": host, "argv": [job, "x"]}


def ok(job, t0, t1, rank=1, host="h1", attempts=1, outputs=("/o/a-image.fits",), argv_run=None):
    return {"event": "end", "time": t1, "job": job, "status": "ok", "rank": rank, "host": host, "start": t0, "end": t1,
            "argv": [job, "x"], "argv_run": argv_run or [job, "x"], "attempts": attempts,
            "logs": [f"{RUN}/logs/{job}.log"], "outputs": [{"path": p, "size": 1} for p in outputs]}


def failed(job, t0, t1, error, rank=1, host="h1", **more):
    return {"event": "end", "time": t1, "job": job, "status": "failed", "rank": rank, "host": host, "start": t0,
            "end": t1, "argv": [job, "x"], "error": error, **more}


def run_start(t, pid=111):
    return {"event": "run", "state": "start", "time": t, "pid": pid, "ranks": 3}


def run_end(t):
    return {"event": "run", "state": "end", "time": t}


def states(status):
    return {j.id: j.state for j in status.jobs}


@pytest.mark.pure
def test_a_finished_run_shows_done_failed_and_skipped_jobs_with_their_logs():
    error = "JobError: wsclean exited 255: bad option after 2 attempts (log: /runs/r1/logs/wsclean_b.attempt2.log)"
    records = [run_start(1), plan("wsclean:a", "wsclean:b", "reduce:b"), start("wsclean:a", 11),
               start("wsclean:b", 11, rank=2, host="h2"), ok("wsclean:a", 11, 15, attempts=2),
               failed("wsclean:b", 11, 12, error, rank=2, host="h2", attempts=2, exit=255,
                      log="/runs/r1/logs/wsclean_b.attempt2.log"),
               {"event": "end", "time": 12, "job": "reduce:b", "status": "skipped", "rank": None, "host": None,
                "start": 12, "end": 12, "error": "dependency 'wsclean:b' failed"}, run_end(16)]
    st = job_states(records, RUN, holder=None, now=100)
    assert st.state == RUN_FINISHED and states(st) == {"wsclean:a": "done", "wsclean:b": "failed",
                                                      "reduce:b": "skipped"}
    a, b, r = st.jobs
    assert (a.host, a.rank, a.duration(st.now), a.retries, a.log) == ("h1", 1, 4, 1, f"{RUN}/logs/wsclean:a.log")
    assert b.log == "/runs/r1/logs/wsclean_b.attempt2.log" and b.retries == 1 and b.host == "h2"  # the last attempt's
    assert r.error == "dependency 'wsclean:b' failed" and r.log is None
    text = format_table(st)
    assert "finished" in text.splitlines()[0] and "3 jobs: 1 done, 1 failed, 1 skipped" in text
    assert "failures:\n  wsclean:b: " + error + "\n    log: /runs/r1/logs/wsclean_b.attempt2.log" in text


@pytest.mark.pure
def test_a_failure_in_an_older_journal_takes_its_log_and_attempts_from_its_error():
    error = "JobError: wsclean was killed by signal 9 after 3 attempts (log: /runs/r1/logs/w.attempt3.log)"
    records = [run_start(1), plan("wsclean:w"), start("wsclean:w", 11), failed("wsclean:w", 11, 12, error), run_end(13)]
    (w,) = job_states(records, RUN, now=20).jobs
    assert (w.state, w.log, w.retries) == ("failed", "/runs/r1/logs/w.attempt3.log", 2)


@pytest.mark.pure
def test_a_start_without_end_is_running_while_the_run_holds_its_lock_and_interrupted_once_it_does_not():
    records = [run_start(1, pid=4242), plan("wsclean:a", "wsclean:b", "wsclean:c"), start("wsclean:a", 11),
               start("wsclean:b", 11, rank=2), ok("wsclean:a", 11, 14), start("wsclean:c", 14)]
    live = job_states(records, RUN, holder="pid 4242 on h0", now=20)
    assert live.state == RUN_RUNNING and states(live) == {"wsclean:a": "done", "wsclean:b": "running",
                                                         "wsclean:c": "running"}
    assert live.jobs[1].duration(live.now) == 9 and live.jobs[1].log == f"{RUN}/logs/wsclean_b.log"
    dead = job_states(records, RUN, holder=None, now=20)
    assert dead.state == RUN_DIED and states(dead) == {"wsclean:a": "done", "wsclean:b": "interrupted",
                                                      "wsclean:c": "interrupted"}
    assert dead.jobs[1].duration(dead.now) is None
    # the lock held by a new run that has not written its journal yet: the old run is dead
    assert job_states(records, RUN, holder="pid 999 on h0", now=20).state == RUN_DIED
    text = format_table(dead)
    assert "stopped without finishing" in text and "a re-run starts it again" in text


@pytest.mark.pure
def test_planned_jobs_never_started_are_pending():
    records = [run_start(1), plan("fixms:a", "wsclean:a", "reduce:a"), start("fixms:a", 11)]
    assert states(job_states(records, RUN, now=12)) == {"fixms:a": "interrupted", "wsclean:a": "pending",
                                                        "reduce:a": "pending"}


@pytest.mark.pure
def test_a_resumed_run_shows_jobs_done_before_as_skipped_with_what_the_earlier_run_recorded():
    first = [run_start(1, pid=1), plan("wsclean:a", "wsclean:b"), start("wsclean:a", 11), start("wsclean:b", 11),
             ok("wsclean:a", 11, 13, host="old", outputs=("/o/a-MFS-image.fits",))]  # then killed
    second = [run_start(50, pid=2), plan("wsclean:a", "wsclean:b"),
              {"event": "skip", "time": 50, "job": "wsclean:a", "reason": "done at 2024-01-01 00:00:13"},
              start("wsclean:b", 51, host="new")]
    st = job_states(first + second, RUN, holder="pid 2 on h", now=60)
    assert st.runs == 2 and st.started == 50 and states(st) == {"wsclean:a": "skipped", "wsclean:b": "running"}
    a = st.jobs[0]
    assert a.earlier and a.error == "done at 2024-01-01 00:00:13" and a.host == "old" \
        and a.outputs == ("/o/a-MFS-image.fits",) and a.duration(st.now) == 2
    # an earlier end without a skip record of the current run does not count: b's old start is not b's state
    assert st.jobs[1].start == 51


@pytest.mark.pure
def test_an_earlier_success_counts_only_through_a_skip_record_of_the_current_run():
    records = [run_start(1, pid=1), plan("wsclean:a"), start("wsclean:a", 2), ok("wsclean:a", 2, 3), run_end(4),
               run_start(10, pid=2), plan("wsclean:a")]  # the second run re-runs it (argv changed): not started yet
    assert states(job_states(records, RUN, holder=None, now=11)) == {"wsclean:a": "pending"}


@pytest.mark.pure
def test_a_journal_without_a_plan_says_so():
    st = job_states([run_start(1)], RUN, holder=None, now=2)
    assert st.jobs == () and "no run has written its plan yet" in format_table(st)


def test_status_of_a_directory_that_is_not_a_run_is_bad_input(tmp_path):
    r = run_cli("status", tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"mpimager: error: {tmp_path}: not a run directory (no journal.jsonl); " \
                               "give the --run-dir of a run"


# ------------------------------------------------------------------------------------------------ real runs


def _rows(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in stdout.splitlines() if line.startswith("wsclean:")}


def test_status_of_a_run_killed_part_way_shows_done_running_when_killed_and_pending_jobs(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", TINY_CONFIG.replace('"64 64"', '"1024 1024"'))  # ~1 s jobs
    run_dir = tmp_path / "run"
    proc = launch(config, [tiny_ms_dir], run_dir)
    try:
        def one_done_one_running():
            ended_ok, running = open_jobs(run_dir)
            return len(ended_ok) >= 1 and len(running) >= 1

        assert wait_for(one_done_one_running, proc, timeout=300), proc.communicate()[0][-2000:]
        live = read_status(run_dir)  # while it runs: the lock is held
    finally:
        kill_session(proc)  # mpirun and every rank
    assert live.state == RUN_RUNNING and "running" in {j.state for j in live.jobs}
    assert live.holder.startswith("pid ")

    ended_ok, running = open_jobs(run_dir)
    r = run_cli("status", run_dir)
    assert r.returncode == 0, r.stderr
    assert "stopped without finishing (killed or crashed)" in r.stdout.splitlines()[0]
    rows = _rows(r.stdout)
    assert len(rows) == 6
    assert {j for j, row in rows.items() if row[1] == "done"} == ended_ok
    assert {j for j, row in rows.items() if row[1] == "interrupted"} == running
    pending = {j for j, row in rows.items() if row[1] == "pending"}
    assert pending and pending == set(rows) - ended_ok - running
    for job in ended_ok | running:  # where it ran and where its log is (a job killed just as it was sent
        assert rows[job][2] != "-" and rows[job][3] in ("1", "2")  # may not have opened its log yet)
        assert rows[job][-1].startswith(str(run_dir / "logs")) and (job in running or os.path.exists(rows[job][-1]))
    assert "interrupted: the job was running when the run stopped" in r.stdout

    as_json = json.loads(run_cli("status", run_dir, "--json").stdout)
    assert as_json["state"] == "died" and as_json["counts"]["pending"] == len(pending)

    # the report of a killed run says the same, and draws what was made
    rep = run_cli("report", run_dir)
    assert rep.returncode == 0, rep.stderr
    page = (run_dir / "report.html").read_text()
    assert "stopped without finishing" in page and page.count("<td class='state-interrupted'>") == len(running)


def test_status_names_the_log_of_each_failed_job_and_the_jobs_it_kept_from_running(tmp_path):
    data = tmp_path / "data"
    for i in range(2):
        synth.make_ms(data / f"obs{i}.ms", telescope="TEST", seed=i)
    for f in (data / "obs1.ms").glob("table.f*"):  # metadata intact, visibilities unreadable: fails at run time
        if f.stat().st_size > 100_000:
            f.write_bytes(b"\0" * 100)
    config = write_config(tmp_path / "c.toml", TINY_CONFIG.replace("[passes.I]", "channels-out = 2\n[passes.I]"))
    r = run_cli(config, data, "--run-dir", tmp_path / "run", mpi=3, timeout=600)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    st = run_cli("status", tmp_path / "run")
    assert st.returncode == 0 and "finished" in st.stdout.splitlines()[0]
    lines = st.stdout.splitlines()
    failed_rows = [x.split() for x in lines if x.startswith("wsclean:obs1")]
    assert failed_rows and all(row[1] == "failed" for row in failed_rows)
    skipped = [x for x in lines if x.startswith("reduce:obs1")]
    assert skipped and all(x.split()[1] == "skipped" and "dependency 'wsclean:obs1" in x for x in skipped)
    failures = st.stdout.split("failures:\n", 1)[1]
    for row in failed_rows:
        log = next(x.split("log: ", 1)[1] for x in failures.splitlines() if x.strip().startswith("log:")
                   and row[0].split(":")[1] in x)
        assert os.path.isfile(log) and log.startswith(str(tmp_path / "run" / "logs"))
    assert all(row[1] == "done" for row in (x.split() for x in lines if x.startswith("wsclean:obs0")))
