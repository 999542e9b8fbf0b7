"""A dry run that decides, and the pre-flight checks every run makes before its first job.

- `--dry-run` on a half-done run directory: per kind what would run and what the journal skips; totals in
  stated units (core-hours, peak memory per job, disk written); the launcher line of multi-rank jobs;
  `--json` holds the same summary; `--json` without `--dry-run` is an error.
- Each pre-flight refusal: exit 2, one line on stderr, nothing written (no run directory, MSs untouched).
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
from conftest import SMALL_CONFIG, run_cli, small_config, snapshot, write_config


def config(tmp_path, top: str = "", wsclean: str = ""):
    return small_config(tmp_path / "c.toml", top, wsclean)


def test_a_dry_run_on_a_half_done_run_says_what_runs_and_what_the_journal_skips(tmp_path, tiny_ms_dir):
    c = config(tmp_path)
    run = tmp_path / "run"
    assert run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", run).returncode == 0  # half of the work, done
    before = snapshot(tmp_path, tiny_ms_dir)

    r = run_cli(c, tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms", "--run-dir", run, "--dry-run")

    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"4 jobs (0 FixMS, 2 WSClean, 2 reduce); 2 to run, 2 skipped (done in the journal); " \
                       f"run directory {run}"
    assert lines[1].split() == ["kind", "run", "skip", "core-hours", "peak", "memory/job", "disk", "written"]
    assert lines[3].split()[:3] == ["WSClean", "1", "1"] and lines[4].split()[:3] == ["reduce", "1", "1"]
    assert lines[5].split()[:3] == ["total", "2", "2"]
    assert any(line.startswith("wsclean:obs0  wsclean  skip") for line in lines)
    assert any(line.startswith("wsclean:obs1  wsclean  run") for line in lines)
    assert "# wsclean:obs0: skipped (done at " in r.stdout and "# wsclean:obs1\nwsclean " in r.stdout
    assert snapshot(tmp_path, tiny_ms_dir) == before

    j = run_cli(c, tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms", "--run-dir", run, "--dry-run", "--json")
    data = json.loads(j.stdout)
    summary = data["summary"]
    assert summary["kinds"]["wsclean"] == {**summary["kinds"]["wsclean"], "run": 1, "skip": 1, "name": "WSClean"}
    assert summary["total"]["run"] == 2 and summary["total"]["skip"] == 2
    by_id = {job["id"]: job for job in data["jobs"]}
    assert by_id["wsclean:obs0"]["status"] == "skip" and by_id["wsclean:obs0"]["reason"].startswith("done at ")
    assert by_id["wsclean:obs1"]["status"] == "run"
    # the units are stated, and the numbers add up: 64 x 64 float32 images (dirty, image, model, residual, psf)
    # for 2 channels and MFS = 15 files of 16384 + 5760 bytes
    assert by_id["wsclean:obs1"]["disk_bytes"] == 15 * (64 * 64 * 4 + 5760)
    assert summary["kinds"]["wsclean"]["disk_bytes"] == by_id["wsclean:obs1"]["disk_bytes"]
    assert summary["kinds"]["wsclean"]["core_hours"] == pytest.approx(by_id["wsclean:obs1"]["seconds"] / 3600,
                                                                       abs=1e-4)
    assert set(summary["units"]) == {"core_hours", "seconds", "memory_bytes", "disk_bytes"}
    assert "--force" not in r.stdout
    f = json.loads(run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", run, "--dry-run", "--json", "--force").stdout)
    assert f["summary"]["total"] == {**f["summary"]["total"], "run": 2, "skip": 0}


def test_json_without_dry_run_is_an_error(tmp_path, tiny_ms_dir):
    c = config(tmp_path)
    before = snapshot(tmp_path, tiny_ms_dir)
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--json", "--run-dir", tmp_path / "run")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "mpimager: error: --json: only with --dry-run (it prints the plan as JSON instead " \
                               "of running it)"
    assert snapshot(tmp_path, tiny_ms_dir) == before


def test_the_launcher_line_of_a_multi_rank_job_is_shown(tmp_path, tiny_ms_dir):
    fake = tmp_path / "bin" / "wsclean-mp"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    c = config(tmp_path, top=f'[container]\nwsclean_mp = "{fake}"')
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--nodes-mpi", "2", "--dry-run", "--run-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    launch = r.stdout.split("# as started over 2 ranks (hosts chosen by the queue at run time):\n")[1].split("\n")[0]
    # over two hosts, each rank first checks that its node sees the job's temp dir and paths (runtime/multinode)
    assert launch.startswith("mpirun --bind-to none -np 2 -H HOST1:1,HOST2:1 ")
    assert " -m mpimager.runtime.multinode --temp-dir " in launch and f" -- {fake} -j " in launch
    j = json.loads(run_cli(c, tiny_ms_dir / "obs0.ms", "--nodes-mpi", "2", "--dry-run", "--json",
                           "--run-dir", tmp_path / "run").stdout)
    assert j["summary"]["launch"]["wsclean:obs0"][:7] == ["mpirun", "--bind-to", "none", "-np", "2", "-H",
                                                          "HOST1:1,HOST2:1"]


# ------------------------------------------------------------------------------------------------ pre-flight


def refused(tmp_path, c, *inputs, extra=()) -> str:
    """Run for real; assert the run was refused before any job: exit 2, one line, nothing written."""
    roots = [tmp_path] + [os.path.dirname(str(i)) for i in inputs]
    before = snapshot(*roots)
    r = run_cli(c, *inputs, *extra, "--run-dir", tmp_path / "run")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert snapshot(*roots) == before and not (tmp_path / "run").exists()
    return lines[0]


def test_a_missing_env_file_is_refused_before_any_job(tmp_path, tiny_ms_dir):
    c = config(tmp_path, top=f'[worker]\nenv_file = "{tmp_path}/no-such-env.sh"')
    line = refused(tmp_path, c, tiny_ms_dir / "obs0.ms")
    assert line == f"mpimager: error: {c}: [worker] env_file: {tmp_path}/no-such-env.sh does not exist"


def test_an_env_file_that_fails_to_source_is_refused_before_any_job(tmp_path, tiny_ms_dir):
    env = tmp_path / "env.sh"
    env.write_text("module load wsclean-3.4\n")  # no `module` here: the source fails with bash's own line
    c = config(tmp_path, top=f'[worker]\nenv_file = "{env}"')
    line = refused(tmp_path, c, tiny_ms_dir / "obs0.ms")
    assert line.startswith(f"mpimager: error: {c}: [worker] env_file: env_file {env}: sourcing it failed (")
    assert "module: command not found" in line


def test_a_missing_wsclean_mp_is_refused_before_any_job(tmp_path, tiny_ms_dir):
    c = config(tmp_path, top='[container]\nwsclean_mp = "no-such-wsclean-mp"')
    line = refused(tmp_path, c, tiny_ms_dir / "obs0.ms", extra=["--nodes-mpi", "2"])
    assert line.startswith("mpimager: error: [container] wsclean_mp: 'no-such-wsclean-mp' not found (not on PATH; "
                           "needed by --nodes-mpi")


def test_a_missing_container_image_is_refused_before_any_job(tmp_path, tiny_ms_dir):
    c = config(tmp_path, top=f'[container]\nruntime = "singularity"\nimage = "{tmp_path}/wsclean.sif"\n'
                             f'binary = "{shutil.which("true")}"')
    line = refused(tmp_path, c, tiny_ms_dir / "obs0.ms")
    assert line == f"mpimager: error: [container] image: {tmp_path}/wsclean.sif does not exist (a SIF file or " \
                   "sandbox directory)"


def test_a_missing_data_column_is_refused_before_any_job(tmp_path, tiny_ms_dir):
    c = config(tmp_path, wsclean='data-column = "CORRECTED_DATA"')
    line = refused(tmp_path, c, tiny_ms_dir / "obs0.ms")
    assert line == f"mpimager: error: {tiny_ms_dir / 'obs0.ms'}: has no column CORRECTED_DATA to image " \
                   "(columns: DATA, DATA_DESC_ID)"


@pytest.mark.parametrize("value, message", [
    ('size = 256', "WSClean's -size takes 2 values, got 1 (256)"),
    ('size = "256"', "WSClean's -size takes 2 values, got 1 ('256')"),
    ('shift = "13h47m00s"', "WSClean's -shift takes 2 values, got 1 ('13h47m00s')"),
    ('channels-out = true', "WSClean's -channels-out takes 1 value, got true"),
])
def test_an_option_with_fewer_values_than_wscleans_help_states_is_refused(tmp_path, tiny_ms_dir, value, message):
    text = SMALL_CONFIG.format(top="", wsclean="").replace('size = "64 64"\n', "").replace("channels-out = 2\n", "")
    c = write_config(tmp_path / "c.toml", text + value + "\n")
    line = refused(tmp_path, c, tiny_ms_dir / "obs0.ms")
    key = value.split(" =")[0]
    assert line == f"mpimager: error: {c}: [wsclean] {key}: {message}"


def test_a_read_only_ms_that_needs_fixms_is_refused_before_any_job(tmp_path):
    from mpimager.testing.synth import make_ms

    ms = make_ms(tmp_path / "data" / "beam00.ms", raw_askap=True)
    for f in [ms, *ms.rglob("*")]:
        f.chmod(f.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        c = write_config(tmp_path / "c.toml", SMALL_CONFIG.format(top="", wsclean="").replace("enabled = false",
                                                                                        "enabled = true"))
        line = refused(tmp_path, c, ms)
        assert line.startswith(f"mpimager: error: {ms}: FixMS must change ") and "is not writable" in line
    finally:
        for f in [ms, *ms.rglob("*")]:
            f.chmod(f.stat().st_mode | stat.S_IWUSR)
