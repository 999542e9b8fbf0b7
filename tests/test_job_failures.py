"""How a job fails and is retried: divergence, timeouts, exit 0 without the promised outputs."""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import run_cli, write_config

from mpimager.errors import JobError
from mpimager.rundir.journal import read_records
from mpimager.runtime.runner import install, lower_gains

SMALL = """
[worker]
retries = {retries}
{extra}
[wsclean]
size = "{size}"
scale = "10asec"
niter = {niter}
{options}
[reduce]
enabled = false
"""


def config(tmp_path, retries=1, extra="", size="128 128", niter=5000, options=""):
    return write_config(tmp_path / "c.toml", SMALL.format(retries=retries, extra=extra, size=size, niter=niter,
                                                          options=options))


def end_record(run_dir, job):
    return [r for r in read_records(run_dir) if r["event"] == "end" and r["job"] == job][-1]


def test_lower_gains_halves_gain_and_mgain_and_sets_unset_ones_to_half_wscleans_defaults():
    assert lower_gains(["wsclean", "-gain", "0.2", "-mgain", "0.8", "-name", "p", "a.ms"]) == \
        ["wsclean", "-gain", "0.1", "-mgain", "0.4", "-name", "p", "a.ms"]
    # WSClean 3.1's defaults (wsclean --help): gain 0.1, mgain 1.0
    assert lower_gains(["wsclean", "-niter", "9", "-name", "p", "a.ms"]) == \
        ["wsclean", "-niter", "9", "-gain", "0.05", "-mgain", "0.5", "-name", "p", "a.ms"]
    assert lower_gains(["wsclean", "-mgain", "0.8", "-name", "p", "a.ms"]) == \
        ["wsclean", "-mgain", "0.4", "-gain", "0.05", "-name", "p", "a.ms"]
    assert lower_gains(["wsclean", "-gain", "0.3", "-name", "p", "a.ms"]) == \
        ["wsclean", "-gain", "0.15", "-mgain", "0.5", "-name", "p", "a.ms"]


@pytest.fixture(params=["same file system", "another file system"])
def staging(request, tmp_path):
    """A staging directory beside the out-dir, or on /dev/shm (copied, then renamed)."""
    if request.param == "same file system":
        yield tmp_path / "stage"
        return
    scratch = Path("/dev/shm") / f"mpimager-test-{os.getpid()}-{tmp_path.name}"
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _staged_and_finals(stage, out):
    stage.mkdir()
    out.mkdir()
    names = ["a.fits", "b.fits", "c.fits"]
    for n in names:
        (stage / n).write_bytes(b"new " + n.encode())
    (out / "a.fits").write_bytes(b"old a")
    (out / "c.fits").write_bytes(b"old c")
    return [(str(stage / n), str(out / n)) for n in names]


def test_outputs_moved_into_place_replace_the_old_finals_and_leave_nothing_hidden(staging, tmp_path):
    out = tmp_path / "out"
    install(_staged_and_finals(staging, out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == \
        {"a.fits": b"new a.fits", "b.fits": b"new b.fits", "c.fits": b"new c.fits"}


def test_a_final_that_cannot_be_replaced_leaves_every_other_final_with_its_old_bytes(staging, tmp_path):
    out = tmp_path / "out"
    pairs = _staged_and_finals(staging, out)
    (out / "b.fits").mkdir()  # a directory where an output goes: a.fits is renamed in before b.fits fails
    (out / "b.fits" / "x").write_text("kept")
    with pytest.raises(JobError, match=rf"cannot move the outputs into place: {out / 'b.fits'}: "):
        install(pairs)
    assert sorted(p.name for p in out.iterdir()) == ["a.fits", "b.fits", "c.fits"]  # no partial or kept copy left
    assert (out / "a.fits").read_bytes() == b"old a" and (out / "c.fits").read_bytes() == b"old c"
    assert (out / "b.fits" / "x").read_text() == "kept"


def test_the_default_gains_are_those_the_installed_wsclean_states():
    import re
    import subprocess

    from mpimager.wsclean.options import DEFAULT_GAINS

    help_text = subprocess.run(["wsclean", "--help"], capture_output=True, text=True).stdout
    for flag, default in DEFAULT_GAINS.items():
        stated = re.search(rf"^{flag} <gain>\n(?:   .*\n)*?   .*Default: ([0-9.]+)", help_text, re.M)
        assert stated and float(stated.group(1)) == default, flag


def test_a_diverging_wsclean_is_stopped_and_retried_with_lower_gains(tmp_path, tiny_ms_dir):
    # gain 1.95 makes WSClean 3.1 diverge to -1.8 KJy on this MS; gain 0.975 with mgain 0.4 converges (with
    # mgain 0.975 it diverges to -388 Jy: mpimager.wsclean.watcher sees the peak grow, tests/test_wsclean_watcher.py)
    c = config(tmp_path, options="gain = 1.95\nmgain = 0.8")
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run")
    assert r.returncode == 0, r.stdout + r.stderr
    end = end_record(tmp_path / "run", "wsclean:obs0")
    assert end["attempts"] == 2
    (note,) = end["notes"]
    assert note.startswith("attempt 1: wsclean stopped: WSClean deconvolution diverged: Stopped on peak")
    assert note.endswith("KJy, because maximum number of iterations was reached.; retrying (gain and mgain halved)")
    argv = end["argv_run"]
    assert argv[argv.index("-gain") + 1] == "0.975" and argv[argv.index("-mgain") + 1] == "0.4"
    logs = sorted(os.listdir(tmp_path / "run" / "logs"))
    assert logs == ["wsclean_obs0.attempt2.log", "wsclean_obs0.log"]
    first = (tmp_path / "run" / "logs" / "wsclean_obs0.log").read_text()
    assert first.startswith("# mpimager: wsclean:obs0, attempt 1 of 2:") and "KJy" in first


def test_without_retries_divergence_fails_the_job(tmp_path, tiny_ms_dir):
    c = config(tmp_path, retries=0, options="gain = 1.95\nmgain = 1.95")
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run")
    assert r.returncode == 1
    end = end_record(tmp_path / "run", "wsclean:obs0")
    assert end["status"] == "failed" and "KJy" in end["error"] and "wsclean_obs0.log" in end["error"]
    assert end["attempts"] == 1 and end["exit"] is None and end["log"].endswith("wsclean_obs0.log")
    assert not list((tmp_path / "run" / "images").glob("obs0*"))  # partial outputs removed
    assert not os.listdir(tmp_path / "run" / "tmp")  # and the job's temp dir


def test_a_job_over_its_timeout_is_killed_and_not_retried(tmp_path, tiny_ms_dir):
    c = config(tmp_path, extra="timeout = 1", size="4096 4096", niter=1000000, options="mgain = 0.9")
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run")
    assert r.returncode == 1
    end = end_record(tmp_path / "run", "wsclean:obs0")
    assert "timed out after 1 s" in end["error"] and end["exit"] is None
    assert os.listdir(tmp_path / "run" / "logs") == ["wsclean_obs0.log"]
    assert end["end"] - end["start"] < 30


def test_exit_0_without_the_predicted_outputs_is_a_failure(tmp_path, tiny_ms_dir):
    fake = tmp_path / "lazy-wsclean"
    fake.write_text('#!/bin/sh\ncase "$1" in --help|--version) exec wsclean "$@";; esac\n'
                    'echo "pretending to image"; exit 0\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    c = config(tmp_path, extra=f'[container]\nwsclean = "{fake}"')
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run")
    assert r.returncode == 1
    end = end_record(tmp_path / "run", "wsclean:obs0")
    assert "exited 0 but outputs are missing or unreadable: obs0-dirty.fits (missing)" in end["error"]
    assert end["exit"] == 0 and end["outputs"] == []
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["products"] == []
