"""obs_id patterns resolved through the data-handler file, and the combined modes built on them."""

import json

import pytest
from conftest import run_cli, write_config

from mpimager.testing.synth import make_ms

OBS = {"20231201_NT04": {"SW01": 2, "SW02": 1}, "20231202_NT04": {"SW01": 2}}


@pytest.fixture(scope="module")
def handled(tmp_path_factory):
    root = tmp_path_factory.mktemp("nenufar")
    for obs, windows in OBS.items():
        for sw, n in windows.items():
            for t in range(1, n + 1):
                make_ms(root / obs / "L2" / f"{sw}_T{t:03d}.MS", telescope="NenuFAR", seed=t)
    write_config(root / "dh.toml", """
        [L2."20231201_NT04"]
        SW01 = "20231201_NT04/L2/SW01_T*.MS"
        SW02 = ["20231201_NT04/L2/SW02_T001.MS"]
        [L2."20231202_NT04"]
        SW01 = "20231202_NT04/L2/SW01_T*.MS"
        [L1."20231201_NT04"]
        SW01 = "elsewhere/*.MS"
    """)
    return root


def plan(handled, tmp_path, name, *args):
    config = write_config(tmp_path / "c.toml", f"""
        [data_handler]
        config_file = "{handled / 'dh.toml'}"
        data_level = "L2"
        [wsclean]
        name = "{name}"
        out-dir = "$run_dir$/$obs_id$/$sw$"
        size = "64 64"
        scale = "20asec"
        niter = 10
    """)
    r = run_cli(config, *args, "--dry-run", "--json", "--run-dir", tmp_path / "run")
    return config, r


def test_an_obs_id_pattern_gives_one_job_per_ms(handled, tmp_path):
    _, r = plan(handled, tmp_path, "$ms_stem$", "2023120?_NT04")
    assert r.returncode == 0, r.stderr
    jobs = json.loads(r.stdout)["jobs"]
    assert [j["argv"][j["argv"].index("-name") + 1].split("/run/")[1] for j in jobs] == [
        "20231201_NT04/SW01/SW01_T001", "20231201_NT04/SW01/SW01_T002", "20231201_NT04/SW02/SW02_T001",
        "20231202_NT04/SW01/SW01_T001", "20231202_NT04/SW01/SW01_T002"]


def test_a_spectral_window_pattern_narrows_it(handled, tmp_path):
    _, r = plan(handled, tmp_path, "$ms_stem$", "20231201_NT04:SW02")
    assert [j["ms"] for j in json.loads(r.stdout)["jobs"]] == [[str(handled / "20231201_NT04/L2/SW02_T001.MS")]]


def test_combine_makes_one_job_per_obs_id_and_window_and_it_runs(handled, tmp_path):
    config, r = plan(handled, tmp_path, "img", "2023120*", "--combine")
    jobs = json.loads(r.stdout)["jobs"]
    assert [(j["id"], len(j["ms"])) for j in jobs] == [
        ("wsclean:20231201_NT04/SW01/img", 2), ("wsclean:20231201_NT04/SW02/img", 1),
        ("wsclean:20231202_NT04/SW01/img", 2)]
    run = run_cli(config, "20231201_NT04:SW01", "--combine", "--run-dir", tmp_path / "run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "run" / "20231201_NT04" / "SW01" / "img-image.fits").is_file()


def test_combine_obs_ids_makes_one_job_per_window(handled, tmp_path):
    config = write_config(tmp_path / "c.toml", f"""
        [data_handler]
        config_file = "{handled / 'dh.toml'}"
        data_level = "L2"
        [wsclean]
        name = "deep"
        out-dir = "$run_dir$/$sw$"
    """)
    r = run_cli(config, "2023120*", "-c", "-o", "--dry-run", "--json", "--run-dir", tmp_path / "run")
    assert [(j["id"], len(j["ms"])) for j in json.loads(r.stdout)["jobs"]] == [
        ("wsclean:SW01/deep", 4), ("wsclean:SW02/deep", 1)]


@pytest.mark.parametrize("pattern, message", [
    ("2024*", r"'2024\*': no obs_id in .*dh\.toml \[L2\] matches '2024\*' \(it has 20231201_NT04, 20231202_NT04\)"),
    ("20231201_NT04:SW09", r"no spectral window matches 'SW09' in obs_id\(s\) 20231201_NT04"),
])
def test_patterns_matching_nothing_are_named(handled, tmp_path, pattern, message):
    _, r = plan(handled, tmp_path, "$ms_stem$", pattern)
    assert r.returncode == 2
    assert __import__("re").search(message, r.stderr), r.stderr


def test_a_level_that_is_not_in_the_file_is_named(handled, tmp_path):
    config = write_config(tmp_path / "c.toml", f"""
        [data_handler]
        config_file = "{handled / 'dh.toml'}"
        data_level = "L3"
    """)
    r = run_cli(config, "2023*", "--dry-run")
    assert r.returncode == 2 and "no data level [L3]" in r.stderr and "(it has L1, L2)" in r.stderr


@pytest.mark.pure
def test_every_bad_entry_of_a_data_handler_file_is_named_in_one_error(tmp_path):
    from mpimager.errors import ConfigError
    from mpimager.inputs.datahandler import load_data_handler

    dh = write_config(tmp_path / "dh.toml", """
        [L2]
        "20231201_NT04" = "not a table"
        [L2."20231202_NT04"]
        SW01 = 3
        SW02 = "20231202_NT04/L2/SW02_T*.MS"
    """)
    with pytest.raises(ConfigError) as err:
        load_data_handler(dh, "L2")
    assert str(err.value) == (f'{dh}: [L2] 20231201_NT04: expected a table of spectral windows (and 1 more: '
                              f'{dh}: [L2."20231202_NT04"] SW01: expected a path, a glob or a list of them)')
