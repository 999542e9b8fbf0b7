"""The environment jobs see: CPUs from the affinity mask, caches under XDG/Apptainer dirs, casacore variables."""

import json
import os
import subprocess
import sys

import pytest
from conftest import run_cli, snapshot, write_config

from mpimager.environment import cache_dir, without_casacore_defaults


def test_default_threads_follow_the_affinity_mask(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", '[reduce]\nenabled = false\n[wsclean]\nsize = "64 64"\n'
                                               'scale = "20asec"\n')
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"}
    r = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "mpimager", str(config),
                        str(tiny_ms_dir / "obs0.ms"), "--dry-run", "--json"], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    argv = json.loads(r.stdout)["jobs"][0]["argv"]
    assert argv[argv.index("-j") + 1] == "1"  # one usable CPU, whatever os.cpu_count() says


@pytest.mark.pure
def test_caches_live_under_xdg_and_apptainer_cache_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("APPTAINER_CACHEDIR", raising=False)
    monkeypatch.delenv("SINGULARITY_CACHEDIR", raising=False)
    assert cache_dir("wsclean") == tmp_path / "xdg" / "mpimager" / "wsclean"
    assert cache_dir("images") == tmp_path / "xdg" / "mpimager" / "images"
    monkeypatch.setenv("APPTAINER_CACHEDIR", str(tmp_path / "scratch"))
    assert cache_dir("images") == tmp_path / "scratch" / "mpimager"


def test_a_dry_run_writes_no_option_cache(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", '[wsclean]\nsize = "64 64"\nscale = "20asec"\n')
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    r = run_cli(config, tiny_ms_dir, "--dry-run", cwd=tmp_path, env={"XDG_CACHE_HOME": str(xdg)})
    assert r.returncode == 0, r.stderr
    assert snapshot(xdg) == {}


@pytest.mark.pure
def test_jobs_get_casacore_variables_only_when_the_user_set_them():
    import casacore
    import casacore.tables

    package = os.path.dirname(casacore.__file__)
    env = {"AIPSPATH": package, "CASACORE_DATADIR": os.path.join(package, "data"), "PATH": "/usr/bin"}
    assert without_casacore_defaults(env) == {"PATH": "/usr/bin"}
    mine = {"AIPSPATH": "/site/casacore", "CASACORE_DATADIR": "/site/measures"}
    assert without_casacore_defaults(mine) == mine


def test_casacore_measures_warning_is_one_line_saying_what_to_do(tmp_path):
    r = run_cli("synth", tmp_path / "ms", "--beams", "2", "--times", "4", "--channels", "2")
    assert r.returncode == 0, r.stderr
    assert "Leap second table TAI_UTC" not in r.stderr and "SEVERE" not in r.stderr
    assert r.stdout.count("measures data is out of date") <= 1  # once, where casacore's data is old
    assert len([p for p in r.stdout.splitlines() if p.endswith(".ms")]) == 2
