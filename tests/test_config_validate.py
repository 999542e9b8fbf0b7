"""One validator vocabulary for every config section: every problem of every layer and section in one line,
the nearest valid key or value for a misspelt one, and the command-line flags checked like a config table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_cli, write_config

from mpimager.cli.main import build_parser
from mpimager.cli.mosaic import options_from_args as mosaic_options
from mpimager.cli.reduce import options_from_args as reduce_options
from mpimager.config import validate as v
from mpimager.config.container import ContainerOptions
from mpimager.config.load import SECTIONS, FixMSSettings, InputsOptions, WorkerOptions, load_config
from mpimager.config.mosaic import MosaicOptions
from mpimager.config.reduce import ReduceOptions
from mpimager.errors import ConfigError


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    text = str(e.value)
    assert "\n" not in text
    return text


@pytest.mark.pure
def test_two_bad_reduce_keys_and_a_bad_mosaic_key_are_one_error_naming_all_three(tmp_path):
    c = write_config(tmp_path / "c.toml", """
        [reduce]
        resolution = "natral"
        threads = 0
        [mosaic]
        cutoff = 2
    """)
    text = _error(c)
    assert f"{c}: [reduce] resolution: expected 'total' or 'natural', got 'natral' (did you mean 'natural'?)" in text
    assert f"{c}: [reduce] threads: expected a positive integer, got 0" in text
    assert f"{c}: [mosaic] cutoff: expected a number between 0 and 1, got 2" in text
    assert "(and 2 more: " in text


@pytest.mark.pure
def test_problems_of_every_layer_and_section_come_together_each_naming_its_file(tmp_path):
    site = write_config(tmp_path / "site.toml", "[worker]\nretries = -1\n[container]\nruntime = 'docker'\n")
    user = write_config(tmp_path / "c.toml", f"default_settings = '{site}'\n[inputs]\nnum_beams = 0\n"
                                             "[fixms]\nenabled = 'maybe'\n[reduce]\npsf_cutof = 3\n")
    text = _error(user)
    for problem in (f"{site}: [worker] retries: expected an integer >= 0, got -1",
                    f"{site}: [container] runtime: expected one of 'native', 'singularity', 'apptainer', got 'docker'",
                    f"{user}: [inputs] num_beams: expected an integer >= 1, got 0",
                    f"{user}: [fixms] enabled: expected true, false or \"auto\", got 'maybe'",
                    f"{user}: [reduce] unknown key 'psf_cutof' (did you mean 'psf_cutoff'?)"):
        assert problem in text
    assert "(and 4 more: " in text


@pytest.mark.pure
@pytest.mark.parametrize("text, hint", [
    ("[reduce]\naxis_order = 'stokes_freq'\n", "[reduce] axis_order: expected 'freq-stokes' or 'stokes-freq', "
                                              "got 'stokes_freq' (did you mean 'stokes-freq'?)"),
    ("[reduce]\ncubes = ['restored', 'residuals']\n", "(did you mean 'residual'?)"),
    ("[reduce]\nscope = 'observaton'\n", "(did you mean 'observation'?)"),
    ("[reduce]\nnames = 'arakis'\n", "(did you mean 'arrakis'?)"),
    ("[container]\nruntime = 'singularty'\nimage = '/x.sif'\n", "(did you mean 'singularity'?)"),
    ("[container]\nwsclen = 'wsclean'\n", "[container] wsclen: unknown key (did you mean 'wsclean'?)"),
    ("[mosaic]\ntelescope = 'meerkt'\n", "telescope: expected one of ASKAP, MEERKAT, VLA, got 'meerkt' "
                                         "(did you mean 'MEERKAT'?)"),
    ("[mosaic]\ninterpolation = 'bicubik'\n", "(did you mean 'bicubic'?)"),
    ("[fixms]\nfix_stokes_facter = true\n", "[fixms]: unknown key 'fix_stokes_facter' (did you mean "
                                            "'fix_stokes_factor'?)"),
    ("[data_handler]\ndata_levl = 'L2'\n", "(did you mean 'data_level'?)"),
])
def test_a_misspelt_key_or_choice_is_answered_with_the_nearest_valid_one(tmp_path, text, hint):
    assert hint in _error(write_config(tmp_path / "c.toml", text))


@pytest.mark.pure
def test_a_section_checked_as_a_whole_still_reports_its_other_problems(tmp_path):
    text = _error(write_config(tmp_path / "c.toml", "[container]\nruntime = 'apptainer'\nbinds = ['rel:/x']\n"
                                                   "[reduce]\nround_up = -1\n"))
    assert "[container] image: required when runtime = 'apptainer'" in text
    assert "[reduce] round_up: expected a number >= 0, got -1" in text
    assert f"bind '{tmp_path}/rel:/x'" not in text  # a relative bind source resolves against the file


@pytest.mark.pure
def test_a_refused_value_is_not_reported_again_by_a_whole_table_check(tmp_path):
    text = _error(write_config(tmp_path / "c.toml", "[container]\nruntime = 'apptainer'\nimage = 3\n"))
    assert "[container] image: expected a non-empty string, got 3" in text and "required" not in text


@pytest.mark.pure
def test_a_bad_image_name_and_a_bad_out_dir_of_two_passes_are_reported_together(tmp_path):
    text = _error(write_config(tmp_path / "c.toml", "[passes.I]\nname = '..'\n[passes.V]\nout-dir = 3\n"))
    assert "[passes.I] name: '..' is not a file name" in text and "[passes.V] out-dir: expected a path string" in text


@pytest.mark.pure
def test_paths_resolve_against_the_file_that_sets_them_in_every_section(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH", "/scratch/me")
    cfg = load_config(write_config(tmp_path / "c.toml", """
        [worker]
        env_file = "env.sh"
        temp_dir = "$SCRATCH/tmp"
        [data_handler]
        config_file = "dh.toml"
        [container]
        runtime = "apptainer"
        image = "img/wsclean.sif"
        binds = ["data:/data:ro"]
        cache_dir = "cache"
        [mosaic]
        out_dir = "$run_dir$/mos"
        primary_beams = "pb/beam$beam$.fits"
    """))
    assert cfg.worker.env_file == tmp_path / "env.sh" and cfg.worker.temp_dir == Path("/scratch/me/tmp")
    assert cfg.data_handler.config_file == tmp_path / "dh.toml"
    assert cfg.container.image == str(tmp_path / "img" / "wsclean.sif")
    assert cfg.container.binds == (f"{tmp_path}/data:/data:ro",) and cfg.container.cache_dir == str(tmp_path / "cache")
    assert cfg.mosaic.out_dir == "$run_dir$/mos" and cfg.mosaic.primary_beams == str(tmp_path / "pb/beam$beam$.fits")


@pytest.mark.pure
def test_every_section_declares_exactly_the_fields_of_its_option_class():
    import dataclasses

    for name, (cls, section) in SECTIONS.items():
        assert set(section.keys) == {f.name for f in dataclasses.fields(cls)}, name


@pytest.mark.pure
def test_from_mapping_reports_every_problem_of_a_table_at_once():
    with pytest.raises(ConfigError) as e:
        ReduceOptions.from_mapping({"resolution": "x", "purge": "yes", "colour": 1}, where="t.toml: [reduce]")
    text = str(e.value)
    assert text.startswith("t.toml: [reduce] resolution: expected 'total' or 'natural', got 'x'")
    assert "purge: expected true or false" in text and "unknown key 'colour'" in text and "(and 2 more" in text
    with pytest.raises(ConfigError, match=r"MosaicOptions centre: expected \[RA deg, Dec deg\].*MosaicOptions "
                                          r"planes: expected a positive integer, got 0"):
        MosaicOptions(planes=0, centre=(1.0, 100.0))


@pytest.mark.pure
def test_values_built_in_code_are_stored_as_a_config_would_hold_them():
    assert ReduceOptions(psf_cutoff=30, cubes=["residual", "residual"]) == \
        ReduceOptions.from_mapping({"psf_cutoff": 30.0, "cubes": "residual"})
    assert ReduceOptions(psf_cutoff=30).psf_cutoff.__class__ is float
    assert MosaicOptions(telescope="vla", centre=(-10, 5)) == MosaicOptions(telescope="VLA", centre=(350.0, 5.0))
    options = ReduceOptions.from_mapping({"beam": [30, 20, 5], "ref_chan": 3, "psf_outlier": 0, "threads": 2})
    assert ReduceOptions.from_mapping(options.to_mapping()) == options
    assert ContainerOptions.from_mapping({"binds": ["/a:/b:ro"]}, "x").binds == ("/a:/b:ro",)


@pytest.mark.pure
@pytest.mark.parametrize("build, message", [
    (lambda: WorkerOptions(retries=-1), "WorkerOptions retries: expected an integer >= 0, got -1"),
    (lambda: WorkerOptions(timeout="1x"), "WorkerOptions timeout: expected a positive number of seconds"),
    (lambda: InputsOptions(num_beams=0), "InputsOptions num_beams: expected an integer >= 1, got 0"),
    (lambda: FixMSSettings(enabled="yes"), "FixMSSettings enabled: expected true, false or \"auto\", got 'yes'"),
    (lambda: ContainerOptions(runtime="singularity"), "ContainerOptions image: required when runtime = 'singularity'"),
    (lambda: ReduceOptions(names="arakis"), "(did you mean 'arrakis'?)"),
])
def test_every_option_class_checks_values_built_in_code_as_a_config_table(build, message):
    with pytest.raises(ConfigError) as e:
        build()
    assert message in str(e.value)
    assert WorkerOptions(timeout="2h").timeout == 7200.0 and WorkerOptions(env_file="/e.sh").env_file == Path("/e.sh")


REFUSED = object()


@pytest.mark.pure
@pytest.mark.parametrize("validator, value, parsed", [
    (v.integer(1), 3, 3),
    (v.number(0.0, strict=True, below=1.0), 1, REFUSED),
    (v.number(0.0, strict=True), 0, REFUSED),
    (v.number(1.0), 2, 2.0),
    (v.duration, "90m", 5400.0),
    (v.duration, "2d", 172800.0),
    (v.duration, 0, REFUSED),
    (v.boolean, 1, REFUSED),
    (v.choice(("a", "b"), fold=str.lower), "B", "b"),
    (v.optional(v.number(1.0), unset=(None, False, 0)), 0.0, None),
    (v.optional(v.integer(1)), None, None),
    (v.optional(v.integer(1)), False, REFUSED),
    (v.optional(v.integer(1), unset=(None, False)), False, None),
    (v.either(v.boolean, v.choice(("auto",)), what="x"), "auto", "auto"),
    (v.list_of(v.choice(("a", "b")), what="x", scalar=True, unique=True), "a", ("a",)),
    (v.list_of(v.choice(("a", "b")), what="x", nonempty=True), [], REFUSED),
    (v.regex(group="capturing the host"), r"/net/(n\d+)", r"/net/(n\d+)"),
    (v.regex(group="capturing the host"), r"/net/n\d+", REFUSED),
    (v.regex(), "(", REFUSED),
    (v.numbers(2, what="x"), [1, True], REFUSED),
])
def test_each_validator_takes_what_it_says_and_refuses_the_rest(validator, value, parsed):
    if parsed is REFUSED:
        with pytest.raises(v.Invalid):
            validator(value)
    else:
        assert validator(value) == parsed
        assert validator(validator(value)) == parsed  # idempotent: an option class may re-check its values


@pytest.mark.pure
def test_path_validators_resolve_only_with_a_base():
    p = v.path(keep=v.ABSOLUTE_TOKENS)
    assert p("a/b", Path("/cfg")) == "/cfg/a/b" and p("a/b") == "a/b" and p("$ms_dir$/x", Path("/cfg")) == "$ms_dir$/x"
    assert v.path(as_path=True)("/x", Path("/cfg")) == Path("/x")
    with pytest.raises(v.Invalid, match="an absolute path"):
        v.path(absolute=True)("rel")
    with pytest.raises(v.Invalid, match=r"environment variable \$NO_SUCH_VAR_Q is not set"):
        p("$NO_SUCH_VAR_Q/x", Path("/cfg"))


# --------------------------------------------------------------------------------------------- command lines


def _args(command: str, *argv: str):
    return build_parser(command).parse_args([*argv, "--out", "/tmp/out", "x.fits"])


@pytest.mark.pure
def test_reduce_flags_become_the_options_a_config_table_would_and_unset_flags_keep_the_defaults():
    assert reduce_options(_args("reduce")) == ReduceOptions()
    o = reduce_options(_args("reduce", "--resolution", "natural", "--cubes", "restored,residual", "--psf-outlier",
                             "0", "--ref-chan", "2", "--beam", "30", "20", "0", "--min-weight", "0.01"))
    assert o == ReduceOptions.from_mapping({"resolution": "natural", "cubes": ["restored", "residual"],
                                            "psf_outlier": 0, "ref_chan": 2, "beam": [30, 20, 0],
                                            "min_weight": 0.01})


@pytest.mark.pure
def test_bad_reduce_flags_are_all_named_in_one_error():
    with pytest.raises(ConfigError) as e:
        reduce_options(_args("reduce", "--min-weight", "2", "--threads", "0", "--cubes", "restord"))
    text = str(e.value)
    assert text.startswith("mpimager reduce: cubes: expected a list of 'restored', 'residual', 'unconvolved', "
                           "got ['restord'] (did you mean 'restored'?)")
    assert "min_weight: expected a number between 0 and 1, got 2.0" in text and "threads: expected a positive" in text


@pytest.mark.pure
def test_mosaic_flags_go_through_the_mosaic_section():
    assert mosaic_options(_args("mosaic")) == MosaicOptions()
    assert mosaic_options(_args("mosaic", "--telescope", "VLA", "--planes", "4")).dish_and_factor == (25.0, 1.02)
    with pytest.raises(ConfigError, match=re.escape("mpimager mosaic: cutoff: expected a number between 0 and 1, "
                                                    "got 1.5 (and 1 more: mpimager mosaic: planes: expected")):
        mosaic_options(_args("mosaic", "--cutoff", "1.5", "--planes", "0"))


def test_a_bad_flag_is_one_line_and_exit_2(tmp_path):
    r = run_cli("reduce", "--out", tmp_path / "out", "--round-up", "-1", "--psf-cutoff", "0", tmp_path / "x.fits")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "round_up: expected a number >= 0, got -1.0" in lines[0] and "psf_cutoff: expected a number > 0" in lines[0]
    assert not (tmp_path / "out").exists()
