"""Loading a config: layers, path resolution, Stokes passes, and one-line errors that say where and what."""

from pathlib import Path

import pytest
from conftest import write_config

from mpimager.config.load import load_config
from mpimager.errors import ConfigError


@pytest.mark.pure
def test_packaged_defaults_fill_every_section(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.toml", "[wsclean]\nniter = 10\n"))
    assert cfg.worker.max_concurrent is None and cfg.worker.retries == 1  # None: one job per worker rank
    assert cfg.fixms.enabled == "auto" and cfg.container.runtime == "native"
    (p,) = cfg.passes
    assert p.suffix == "" and p.name == "$ms_stem$" and p.out_dir == "$run_dir$/images"
    assert p.options == (("no-update-model-required", True), ("niter", 10))


@pytest.mark.pure
def test_false_removes_a_default_flag(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.toml", "[wsclean]\nno-update-model-required = false\n"))
    assert "no-update-model-required" not in dict(cfg.passes[0].options)


@pytest.mark.pure
def test_layers_merge_key_by_key_and_relative_paths_follow_the_file_that_names_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SITE", str(tmp_path / "site"))
    (tmp_path / "site").mkdir()
    write_config(tmp_path / "site" / "base.toml", """
        [worker]
        max_concurrent = 4
        env_file = "env.sh"
        [wsclean]
        niter = 500
        mgain = 0.8
        fits-mask = "masks/m.fits"
    """)
    (tmp_path / "user").mkdir()
    cfg = load_config(write_config(tmp_path / "user" / "c.toml", """
        default_settings = "$SITE/base.toml"
        [worker]
        temp_dir = "~/scratch"
        [wsclean]
        niter = 1000
        out-dir = "images/$ms_stem$"
    """))
    assert cfg.worker.max_concurrent == 4
    assert cfg.worker.env_file == tmp_path / "site" / "env.sh"
    assert cfg.worker.temp_dir == Path.home() / "scratch"
    opts = dict(cfg.passes[0].options)
    assert opts["niter"] == 1000 and opts["mgain"] == 0.8
    assert opts["fits-mask"] == str(tmp_path / "site" / "masks" / "m.fits")
    assert cfg.passes[0].out_dir == str(tmp_path / "user" / "images" / "$ms_stem$")
    assert cfg.layers[1:] == (tmp_path / "site" / "base.toml", tmp_path / "user" / "c.toml")


@pytest.mark.pure
def test_stokes_passes_override_the_common_options(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.toml", """
        [wsclean]
        niter = 1000
        multiscale = true
        auto-mask = 4
        [passes.I]
        pol = "I"
        [passes.QU]
        pol = "QU"
        join-polarizations = true
        squared-channel-joining = true
        multiscale = false
        auto-mask = 16
    """))
    i, qu = cfg.passes
    assert (i.suffix, dict(i.options)["pol"], dict(i.options)["multiscale"]) == ("I", "I", True)
    assert qu.suffix == "QU" and "multiscale" not in dict(qu.options)
    assert dict(qu.options)["auto-mask"] == 16 and dict(qu.options)["join-polarizations"] is True


@pytest.mark.pure
@pytest.mark.parametrize("text, message", [
    ("[wsclean\nniter = 1", r"c\.toml:1:\d+: malformed TOML"),
    ("[worker]\nmax_concurrent = 2\nmax_concurrent = 3\n", r"c\.toml:3:\d+: malformed TOML"),
    ("[wroker]\n", r"c\.toml: unknown section \[wroker\] \(did you mean 'worker'\?\)"),
    ("[worker]\nmax_concurent = 2\n", r"c\.toml: \[worker\]: unknown key 'max_concurent' \(did you mean 'max_concurrent'\?\)"),
    ("[worker]\nmax_concurrent = 'four'\n", r"c\.toml: \[worker\] max_concurrent: expected an integer >= 1, got 'four'"),
    ("[worker]\nretries = -1\n", r"\[worker\] retries: expected an integer >= 0, got -1"),
    ("[worker]\ntimeout = 'soon'\n", r"\[worker\] timeout: expected a positive number of seconds"),
    ("[worker]\nrun_on_file_host_pattern = '/net/node'\n", r"run_on_file_host_pattern: expected a regular expression with one \(group\)"),
    ("[fixms]\nenabled = 'yes'\n", r"\[fixms\] enabled: expected true, false or \"auto\", got 'yes'"),
    ("[wsclean]\nsize = ''\n", r"\[wsclean\] size: expected a value, got an empty string"),
    ("[wsclean]\nniter = {a = 1}\n", r"\[wsclean\] niter: expected a value .*got a table"),
    ("[wsclean]\nname = 3\n", r"\[wsclean\] name: expected a string"),
    ("[wsclean]\nout-dir = '$NO_SUCH_VARIABLE_X/img'\n", r"environment variable \$NO_SUCH_VARIABLE_X is not set"),
    ("default_settings = 'nowhere.toml'\n", r"nowhere\.toml: no such config file"),
])
def test_bad_config_gives_one_line_naming_file_key_and_expectation(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(write_config(tmp_path / "c.toml", text))
    assert "\n" not in str(e.value)


@pytest.mark.pure
def test_all_problems_are_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write_config(tmp_path / "c.toml", "[worker]\nmax_concurrent = 0\nretries = 'x'\n"))
    assert "max_concurrent" in str(e.value) and "and 1 more" in str(e.value) and "retries" in str(e.value)


@pytest.mark.pure
def test_timeouts_take_units(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.toml", "[worker]\ntimeout = '90m'\n"))
    assert cfg.worker.timeout == 5400.0


@pytest.mark.pure
def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such config file"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.pure
def test_a_default_settings_loop_is_refused(tmp_path):
    write_config(tmp_path / "a.toml", "default_settings = 'b.toml'\n")
    write_config(tmp_path / "b.toml", "default_settings = 'a.toml'\n")
    with pytest.raises(ConfigError, match="default_settings forms a loop"):
        load_config(tmp_path / "a.toml")
