"""The Python API: `mpimager.plan` and `mpimager.run` drive whole runs without the command line."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from conftest import ROOT, run_cli, snapshot, write_config

import mpimager
from mpimager.errors import ConfigError

CONFIG = {"wsclean": {"size": "64 64", "scale": "20asec", "niter": 50, "mgain": 0.8, "channels-out": 2,
                      "join-channels": True}}


def test_import_is_cheap_and_loads_the_api_on_first_use():
    code = ("import sys, mpimager; heavy = [m for m in ('numpy', 'astropy', 'casacore', 'mpi4py', 'mpimager.api') "
            "if m in sys.modules]; print(heavy); mpimager.run; print('mpimager.api' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.stdout.split("\n")[:2] == ["[]", "True"], r.stdout + r.stderr


def test_plan_returns_the_jobs_dry_run_json_shows(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", "[wsclean]\n" + "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in CONFIG["wsclean"].items()))
    jobs = mpimager.plan(config, [tiny_ms_dir], run_dir=tmp_path / "run")
    r = run_cli(config, tiny_ms_dir, "--dry-run", "--json", "--run-dir", tmp_path / "run", cwd=tmp_path)
    shown = json.loads(r.stdout)["jobs"]  # each job as planned, with the dry run's estimates beside it
    assert len(shown) == len(jobs)
    assert [j.to_json() for j in jobs] == [{key: s[key] for key in j.to_json()} for j, s in zip(jobs, shown)]
    assert not (tmp_path / "run").exists()


def test_a_whole_run_through_the_api_only(tmp_path, tiny_ms_dir, capsys):
    before = snapshot(tiny_ms_dir)
    result = mpimager.run(CONFIG, [tiny_ms_dir], run_dir=tmp_path / "run")  # a mapping, serially, in-process
    assert result.exit_code == 0 and result.ok and not result.failures
    assert result.states == {f"{k}:obs{i}": "done" for k in ("wsclean", "reduce") for i in range(3)}
    images = [p for p in result.products if p.name.endswith("-MFS-image.fits")]
    assert len(images) == 3 and all(p.is_file() for p in result.products)
    assert np.isfinite(fits.getdata(images[0])).all()
    assert capsys.readouterr().out == ""  # library use: silent unless logging is configured
    run_log = (tmp_path / "run" / "mpimager.log").read_text()
    assert "6 jobs: 6 to run, 0 already done" in run_log and "done wsclean:obs0 in" in run_log
    assert "6 done, 0 already done, 0 failed" in run_log  # the summary too
    assert snapshot(tiny_ms_dir) == before

    again = mpimager.run(CONFIG, [tiny_ms_dir], run_dir=tmp_path / "run")
    assert again.exit_code == 0 and set(again.states.values()) == {"skipped"}
    assert run_log in (tmp_path / "run" / "mpimager.log").read_text()  # every run appends its lines


@pytest.mark.pure
def test_a_failed_job_is_in_the_result_with_its_log(tmp_path, tiny_ms_dir):
    bad = tmp_path / "bad.ms"
    bad.mkdir()
    (bad / "table.dat").write_text("not a table")
    import shutil

    shutil.copytree(tiny_ms_dir / "obs0.ms", tmp_path / "good.ms")
    config = {"wsclean": {**CONFIG["wsclean"], "data-column": "DATA"}, "reduce": {"enabled": False}}
    with pytest.raises(mpimager.errors.InputError):  # an unreadable MS is bad input: refused before any job
        mpimager.run(config, [bad], run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    config["wsclean"]["niter"] = 50
    config["worker"] = {"timeout": 0.001, "retries": 0}  # every attempt times out: a failure at run time
    result = mpimager.run(config, [tmp_path / "good.ms"], run_dir=tmp_path / "run2")
    assert result.exit_code == 1 and [j.id for j in result.failures] == ["wsclean:good"]
    assert result.failures[0].error and result.failures[0].log


@pytest.mark.pure
def test_a_loaded_config_and_bad_mappings(tmp_path, tiny_ms_dir):
    base = write_config(tmp_path / "base.toml", "[worker]\nretries = 3\n")
    config = mpimager.load_config(write_config(tmp_path / "c.toml", f'default_settings = "{base}"\n'))
    assert mpimager.plan(config, [tiny_ms_dir / "obs0.ms"], run_dir=tmp_path / "r")
    from mpimager.config.load import load_config_mapping

    layered = load_config_mapping({"default_settings": "base.toml"}, base=tmp_path)
    assert layered.worker.retries == 3 and layered.origins["worker retries"] == base.resolve()
    with pytest.raises(ConfigError, match=r"<mapping>: \[worker\] retries: expected an integer >= 0"):
        mpimager.plan({"worker": {"retries": -1}}, [tiny_ms_dir])


def test_a_run_on_a_communicator_of_an_mpi_program(tmp_path, tiny_ms_dir):
    env_ok = subprocess.run(["mpirun", "--version"], capture_output=True).returncode == 0
    if not env_ok:
        pytest.skip("no mpirun")
    r = subprocess.run(["mpirun", "-n", "4", sys.executable, str(ROOT / "tests" / "mpi_scripts" / "api_comm_driver.py"),
                        str(tiny_ms_dir), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(4)]
    assert [(x["sub"], x["exit"]) for x in ranks] == [(3, 0), (3, 0), (3, 0), (1, None)]
    assert ranks[0]["states"] == ranks[2]["states"] == {f"wsclean:obs{i}": "done" for i in range(3)}
    ranks_used = {rec["rank"] for rec in map(json.loads, (tmp_path / "run" / "journal.jsonl").read_text().splitlines())
                  if rec.get("event") == "end"}
    assert ranks_used <= {1, 2}


def test_the_cli_log_options(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", "[reduce]\nenabled = false\n[wsclean]\n" + "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in CONFIG["wsclean"].items()))
    r = run_cli(config, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run", "-q", "--log-file", tmp_path / "l.log",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "start wsclean:obs0" not in r.stdout and "1 done, 0 already done, 0 failed" in r.stdout  # -q: summary
    assert "start wsclean:obs0" in (tmp_path / "l.log").read_text()
    assert "start wsclean:obs0" in (tmp_path / "run" / "mpimager.log").read_text()
    logging.getLogger("mpimager").handlers[:] = [h for h in logging.getLogger("mpimager").handlers
                                                 if isinstance(h, logging.NullHandler)]
