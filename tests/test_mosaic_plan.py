"""Planning mosaic jobs from the [mosaic] section (dry runs: nothing runs, nothing is written)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_cli, write_config

from mpimager.cli.main import build_parser
from mpimager.cli.mosaic import options_from_args
from mpimager.config.load import load_config
from mpimager.config.mosaic import MosaicOptions
from mpimager.errors import ConfigError

PASSES = """
[wsclean]
name = "beam$beam$"
out-dir = "$run_dir$/images"
size = "64 64"
scale = "20asec"
channels-out = 2
niter = 10                 # a dirty-only pass is gathered unconvolved: no restoring beam to mosaic
[passes.I]
pol = "I"
[passes.QU]
pol = "QU"
join-polarizations = true
"""


def plan(tmp_path, inputs, text):
    config = write_config(tmp_path / "c.toml", PASSES + text)
    r = run_cli(config, *inputs, "--run-dir", tmp_path / "run", "--dry-run", "--json")
    return r, (json.loads(r.stdout)["jobs"] if r.returncode == 0 else None)


def test_mosaic_is_off_by_default(tmp_path, raw_observation):
    r, jobs = plan(tmp_path, raw_observation, "[reduce]\nscope = 'observation'\n")
    assert r.returncode == 0 and not [j for j in jobs if j["kind"] == "mosaic"]
    assert load_config(tmp_path / "c.toml").mosaic == MosaicOptions()


def test_one_mosaic_job_per_field_pass_stokes_and_product_after_the_gather(tmp_path, raw_observation):
    r, jobs = plan(tmp_path, raw_observation, """
        [reduce]
        scope = "observation"
        cubes = ["restored", "residual"]
        [mosaic]
        enabled = true
        cutoff = 0.3
        centre = [206.8, -37.1]
        """)
    assert r.returncode == 0, r.stderr
    mosaics = {j["id"]: j for j in jobs if j["kind"] == "mosaic"}
    names = [f"RACS_1347-37A.{p}-{s}-{k}" for p, ss in (("I", "I"), ("QU", "QU")) for s in ss
             for k in ("restored", "residual")]
    assert sorted(mosaics) == sorted(f"mosaic:{n}" for n in names)
    job = mosaics["mosaic:RACS_1347-37A.QU-U-residual"]
    assert job["depends_on"] == ["reduce:beam0"]
    argv = job["argv"]
    # the [mosaic] options travel whole: the job's command line parses back to the config's options
    received = options_from_args(build_parser("mosaic").parse_args(argv[4:]))
    assert argv[argv.index("--beam-ids") + 1] == "0,1,2,3" and received.cutoff == 0.3
    assert received.centre == (206.8, -37.1) and received == load_config(tmp_path / "c.toml").mosaic
    run = str(tmp_path / "run")
    assert argv[-4:] == [f"{run}/images/beam{b:02d}.QU-U-residual.cube.fits" for b in range(4)]
    assert job["outputs"] == [f"{run}/mosaics/RACS_1347-37A.QU-U-residual.mosaic{s}" for s in
                              (".fits", ".mfs.fits", ".weight.fits", ".beamlog.txt")]
    assert [j["kind"] for j in jobs].index("mosaic") > max(i for i, j in enumerate(jobs) if j["kind"] == "reduce")


def test_a_mosaic_needs_one_common_beam_across_the_beams(tmp_path, raw_observation):
    r, _ = plan(tmp_path, raw_observation, "[mosaic]\nenabled = true\n")
    assert r.returncode == 2 and "[mosaic] enabled needs one restoring beam per channel across a field's beams: " \
                                 "set [reduce] scope = \"observation\"" in r.stderr
    r, jobs = plan(tmp_path, raw_observation, "[reduce]\nbeam = [60, 60, 0]\n[mosaic]\nenabled = true\n")
    mosaics = [j for j in jobs if j["kind"] == "mosaic"]
    assert r.returncode == 0 and len(mosaics) == 3  # I, Q and U, each after the 4 gather jobs of its pass
    assert mosaics[1]["depends_on"] == [f"reduce:beam{b:02d}.QU" for b in range(4)]


@pytest.mark.pure
@pytest.mark.parametrize("text, message", [
    ("cutof = 0.2", "unknown key 'cutof' (did you mean 'cutoff'?)"),
    ("cutoff = 1.2", "cutoff: expected a number between 0 and 1, got 1.2"),
    ("telescope = 'GBT'", "telescope: expected one of ASKAP, MEERKAT, VLA, got 'GBT'"),
    ("centre = [10, 95]", "centre: expected [RA deg, Dec deg], got [10, 95]"),
    ("interpolation = 'spline'", "interpolation: expected one of nearest-neighbor, bilinear, biquadratic, bicubic"),
])
def test_a_bad_mosaic_key_is_refused_naming_the_file_and_key(tmp_path, text, message):
    config = write_config(tmp_path / "c.toml", f"[mosaic]\n{text}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'c.toml'}: [mosaic] {message}")):
        load_config(config)


@pytest.mark.pure
def test_paths_in_the_mosaic_section_resolve_against_the_config_file(tmp_path):
    config = write_config(tmp_path / "c.toml", "[mosaic]\nout_dir = 'mos'\nprimary_beams = 'pb/beam$beam$.fits'\n")
    m = load_config(config).mosaic
    assert m.out_dir == str(tmp_path / "mos") and m.primary_beams == str(tmp_path / "pb" / "beam$beam$.fits")
    assert m.dish_and_factor == (12.0, 1.09)


def test_a_missing_primary_beam_file_is_refused_before_any_job(tmp_path, raw_observation):
    (tmp_path / "pb").mkdir()
    for b in (0, 1, 3):
        (tmp_path / "pb" / f"beam{b:02d}.fits").write_bytes(b"")
    r, _ = plan(tmp_path, raw_observation, "[reduce]\nscope = 'observation'\n[mosaic]\nenabled = true\n"
                                           "primary_beams = 'pb/beam$beam$.fits'\n")
    assert r.returncode == 2 and f"primary_beams: {tmp_path / 'pb' / 'beam02.fits'} (beam 02 of RACS_1347-37A) " \
                                 "is not a file" in r.stderr
