"""`mpimager CONFIG INPUTS --dry-run`: the plan a user sees, and the one-line refusals of bad input."""

import glob
import json
import os
import shutil
import subprocess

import pytest
from conftest import run_cli, snapshot, write_config

CONFIG = """
[wsclean]
name = "$ms_stem$"
out-dir = "{out}/$ms_stem$"
size = "64 64"
scale = "20asec"
niter = 50
mgain = 0.8
channels-out = "every2"
join-channels = true
[passes.I]
pol = "I"
[passes.QU]
pol = "QU"
join-polarizations = true
"""


@pytest.fixture
def setup(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", CONFIG.format(out=tmp_path / "img"))
    return tmp_path, config, tiny_ms_dir


def test_dry_run_json_lists_every_job_and_writes_nothing(setup):
    tmp, config, data = setup
    before = snapshot(tmp, data)
    r = run_cli(config, data / "obs0.ms", data / "obs1.ms", "--dry-run", "--json", "--run-dir", tmp / "run", cwd=tmp)
    assert r.returncode == 0, r.stderr
    jobs = json.loads(r.stdout)["jobs"]
    imaging = ["wsclean:obs0.I", "wsclean:obs0.QU", "wsclean:obs1.I", "wsclean:obs1.QU"]
    assert [j["id"] for j in jobs] == imaging + [i.replace("wsclean:", "reduce:") for i in imaging]
    for j in jobs:
        assert all(os.path.isabs(p) for p in j["ms"] + j["outputs"]) and j["host"] is None
        if j["kind"] == "wsclean":
            assert j["depends_on"] == [] and j["argv"][-1] == j["ms"][0]
        else:
            assert j["depends_on"] == [j["id"].replace("reduce:", "wsclean:")]
    assert snapshot(tmp, data) == before  # no run dir, no image dir, MSs untouched


def test_dry_run_table_is_readable(setup):
    tmp, config, data = setup
    r = run_cli(config, data, "--dry-run", "--run-dir", tmp / "run", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("12 jobs (0 FixMS, 6 WSClean, 6 reduce)")
    assert "wsclean:obs2.QU" in r.stdout and "-join-polarizations" in r.stdout


def test_a_planned_command_run_for_real_writes_exactly_the_predicted_files(setup):
    tmp, config, data = setup
    jobs = json.loads(run_cli(config, data / "obs0.ms", "--dry-run", "--json", "--run-dir", tmp / "run").stdout)["jobs"]
    for job in [j for j in jobs if j["kind"] == "wsclean"]:
        prefix = job["argv"][job["argv"].index("-name") + 1]
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        os.makedirs(job["argv"][job["argv"].index("-temp-dir") + 1], exist_ok=True)
        assert subprocess.run(job["argv"], capture_output=True).returncode == 0
        assert sorted(glob.glob(prefix + "-*")) == sorted(job["outputs"])


# ---------------------------------------------------------------------------------------------------- bad input

BAD_CONFIGS = {
    "malformed TOML": ("[wsclean\nniter = 3\n", r"c\.toml:1:\d+: malformed TOML"),
    "unknown section": ("[wsclen]\nniter = 3\n", r"unknown section \[wsclen\] \(did you mean 'wsclean'\?\)"),
    "unknown key": ("[inputs]\nnum_beam = 3\n", r"unknown key 'num_beam' \(did you mean 'num_beams'\?\)"),
    "wrong type": ("[worker]\nretries = 'twice'\n", r"\[worker\] retries: expected an integer >= 0, got 'twice'"),
    "unknown WSClean option": ("[wsclean]\nauto-treshold = 3\n",
                               r"\[wsclean\] auto-treshold: unknown WSClean option 'auto-treshold' "
                               r"\(did you mean 'auto-threshold'\?\)"),
    "unknown token": ("[wsclean]\nout-dir = '/tmp/$ms_bassename$'\n", r"unknown token \$ms_bassename\$"),
    "everyN giving 0": ("[wsclean]\nchannels-out = 'every9'\n", r"'every9' gives 0 output channels .* 4 channels"),
    "unreadable data handler": ("[data_handler]\nconfig_file = 'missing_handler.toml'\n",
                                r"missing_handler\.toml: data handler file cannot be read \(no such file\)"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_bad_config_is_refused_with_one_line_and_exit_2(setup, case):
    tmp, _, data = setup
    text, pattern = BAD_CONFIGS[case]
    config = write_config(tmp / "c.toml", text)
    inputs = ["20231201_NT04"] if case == "unreadable data handler" else [data / "obs0.ms"]
    before = snapshot(tmp, data)
    r = run_cli(config, *inputs, "--run-dir", tmp / "run", cwd=tmp)
    assert r.returncode == 2
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert __import__("re").search(pattern, r.stderr), r.stderr
    assert snapshot(tmp, data) == before


def _corrupt_copy(src, dst):
    shutil.copytree(src, dst)
    with open(dst / "table.dat", "r+b") as f:
        f.truncate(40)
    return dst


BAD_INPUTS = {
    "missing MS": (lambda tmp, data: [tmp / "nowhere.ms"], r"nowhere\.ms: no such MeasurementSet"),
    "directory that is not an MS": (lambda tmp, data: [tmp / "img"],
                                    r"img: is not a MeasurementSet and holds none matching '\*\.\[Mm\]\[Ss\]'"),
    "empty glob": (lambda tmp, data: [str(data / "*.MSX")], r"\*\.MSX': the pattern matches nothing"),
    "corrupt MS": (lambda tmp, data: [_corrupt_copy(data / "obs1.ms", tmp / "bad.ms")],
                   r"bad\.ms: not a readable MeasurementSet"),
    "a file given as MS": (lambda tmp, data: [tmp / "c.toml"], r"c\.toml: not a MeasurementSet"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_are_refused_with_one_line_and_exit_2(setup, case):
    tmp, config, data = setup
    (tmp / "img").mkdir()
    make, pattern = BAD_INPUTS[case]
    inputs = make(tmp, data)
    before = snapshot(tmp, data)
    r = run_cli(config, data / "obs0.ms", *inputs, "--run-dir", tmp / "run", cwd=tmp)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert __import__("re").search(pattern, r.stderr), r.stderr
    assert snapshot(tmp, data) == before


def test_a_num_beams_mismatch_lists_what_was_found(setup):
    tmp, _, data = setup
    config = write_config(tmp / "c.toml", "[inputs]\nnum_beams = 36\n")
    r = run_cli(config, data, "--run-dir", tmp / "run")
    assert r.returncode == 2
    assert "expected 36 MeasurementSets ([inputs] num_beams in" in r.stderr
    assert "found 3: obs0.ms, obs1.ms, obs2.ms" in r.stderr


def test_an_unwritable_output_directory_is_refused_before_any_job(setup):
    tmp, _, data = setup
    config = write_config(tmp / "c.toml", "[wsclean]\nout-dir = '/proc/sys/mpimager-images'\n")
    before = snapshot(tmp, data)
    r = run_cli(config, data / "obs0.ms", "--run-dir", tmp / "run")
    assert r.returncode == 2 and "/proc/sys/mpimager-images: cannot be written" in r.stderr, r.stderr
    assert snapshot(tmp, data) == before


def test_the_askap_example_is_checked_against_the_wsclean_that_will_run(tmp_path):
    """configs/askap.toml needs the force-mask WSClean build; Debian's 3.1 lacks two of its options."""
    from conftest import ROOT

    text = (ROOT / "configs" / "askap.toml").read_text().replace('runtime = "singularity"', 'runtime = "native"')
    config = write_config(tmp_path / "askap.toml", text)
    r = run_cli(config, tmp_path, "--dry-run")
    assert r.returncode == 2
    assert "unknown WSClean option 'force-mask-rounds'" in r.stderr and "and 1 more" in r.stderr
    assert "unknown WSClean option 'gridder'" in r.stderr
