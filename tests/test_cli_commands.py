"""The command line's conventions: --help lists every command, usage on errors, init, config, status --check."""

import json

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from conftest import run_cli, write_config

from mpimager.cli.main import SUBCOMMANDS


def test_help_lists_every_subcommand():
    r = run_cli("--help")
    assert r.returncode == 0
    listed = r.stdout.split("commands (mpimager COMMAND --help for each):")[1]
    assert [line.split()[0] for line in listed.strip().splitlines()] == [c for c in SUBCOMMANDS if c != "run"]
    assert "-q, --quiet" in r.stdout and "--log-file FILE" in r.stdout


def test_no_arguments_print_the_usage_then_one_error_line():
    r = run_cli()
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("usage: mpimager ") and lines[-1].startswith("mpimager: error: the following")
    assert "mpimager: error: mpimager:" not in r.stderr


def test_init_writes_starters_that_load_and_never_overwrites(tmp_path):
    for telescope in ("generic", "askap", "nenufar"):
        path = tmp_path / telescope / "mpimager.toml"
        r = run_cli("init", "--telescope", telescope, path)
        assert r.returncode == 0, r.stderr
        assert path.read_text().startswith("#")  # commented
        c = run_cli("config", path)
        assert c.returncode == 0, c.stderr
        tomllib.loads(c.stdout)  # the resolved layers are a valid config
    assert (tmp_path / "nenufar" / "data_handler.toml").is_file()
    before = (tmp_path / "generic" / "mpimager.toml").read_text()
    r = run_cli("init", tmp_path / "generic" / "mpimager.toml")
    assert r.returncode == 2 and "exists (mpimager init --force overwrites it)" in r.stderr
    assert (tmp_path / "generic" / "mpimager.toml").read_text() == before


def test_config_names_the_layer_that_set_each_key(tmp_path):
    base = write_config(tmp_path / "site.toml", "[worker]\nretries = 4\n[wsclean]\nniter = 100\n")
    mine = write_config(tmp_path / "mine.toml", f'default_settings = "{base}"\n[wsclean]\nniter = 500\n')
    r = run_cli("config", mine)
    assert r.returncode == 0, r.stderr
    lines = {line.split("=")[0].strip(): line for line in r.stdout.splitlines() if "=" in line}
    assert lines["retries"].endswith("# site.toml") and "4" in lines["retries"]
    assert lines["niter"].endswith("# mine.toml") and "500" in lines["niter"]
    assert lines["run_on_file_host"].endswith("# defaults.toml")  # a packaged default (max_concurrent has none now)
    assert tomllib.loads(r.stdout)["wsclean"]["niter"] == 500


def test_status_check_fails_a_finished_run_with_a_failed_job(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", '[reduce]\nenabled = false\n[worker]\nretries = 0\n'
                                               '[wsclean]\nsize = "64 64"\nscale = "20asec"\nniter = 10\n')
    good = run_cli(config, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "ok", "-q", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert run_cli("status", tmp_path / "ok", "--check").returncode == 0
    bad = write_config(tmp_path / "bad.toml", config.read_text().replace("retries = 0", "retries = 0\ntimeout = 0.01"))
    r = run_cli(bad, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "failed", "-q", cwd=tmp_path)
    assert r.returncode == 1
    st = run_cli("status", tmp_path / "failed", "--check", "--json")
    assert st.returncode == 1 and json.loads(st.stdout)


def test_the_demo_runs_from_the_packaged_config(tmp_path):
    r = run_cli("demo", "--dir", tmp_path, "--beams", "2", "--ranks", "2", timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "mpimager/data/configs/demo.toml" in r.stdout  # the running: line names the packaged config
    assert "MFS images and cubes:" in r.stdout and (tmp_path / "run" / "mpimager.log").is_file()
