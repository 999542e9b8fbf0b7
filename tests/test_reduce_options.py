"""[reduce] options and WSClean channel-name parsing (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpimager.config.reduce import ReduceOptions
from mpimager.errors import ConfigError
from mpimager.reduce.plan import parse_name


@pytest.mark.pure
def test_defaults_are_total_resolution_restored_cubes_per_prefix():
    o = ReduceOptions.from_mapping({}, where="c.toml: [reduce]")
    assert (o.enabled, o.resolution, o.scope, o.cubes, o.purge, o.psf_cutoff) == \
        (True, "total", "prefix", ("restored",), False, None)


@pytest.mark.pure
def test_a_full_table_is_accepted():
    o = ReduceOptions.from_mapping({"enabled": False, "psf_cutoff": 30, "resolution": "natural",
                                    "scope": "observation", "cubes": ["restored", "residual", "unconvolved"],
                                    "purge": True, "axis_order": "stokes-freq", "names": "arrakis",
                                    "round_up": 0, "threads": 2, "min_weight": 0.01}, where="[reduce]")
    assert o.psf_cutoff == 30.0 and o.cubes == ("restored", "residual", "unconvolved")
    assert o.axis_order == "stokes-freq" and o.names == "arrakis" and o.threads == 2


@pytest.mark.pure
@pytest.mark.parametrize("table, message", [
    ({"resolution": "foo"}, "c.toml: [reduce] resolution: expected 'total' or 'natural', got 'foo'"),
    ({"scope": "galaxy"}, "c.toml: [reduce] scope: expected one of 'prefix', 'beam', 'observation', got 'galaxy'"),
    ({"psf_cutoff": -1}, "c.toml: [reduce] psf_cutoff: expected a number > 0, got -1"),
    ({"psf_cutoff": "30"}, "c.toml: [reduce] psf_cutoff: expected a number, got '30'"),
    ({"cubes": ["restored", "dirty"]}, "c.toml: [reduce] cubes: expected a list of 'restored', 'residual', "
                                       "'unconvolved', got ['restored', 'dirty']"),
    ({"purge": "yes"}, "c.toml: [reduce] purge: expected true or false, got 'yes'"),
    ({"axis_order": "freq"}, "c.toml: [reduce] axis_order: expected 'freq-stokes' or 'stokes-freq', got 'freq'"),
    ({"threads": 0}, "c.toml: [reduce] threads: expected a positive integer, got 0"),
    ({"psf_cutof": 30}, "c.toml: [reduce] unknown key 'psf_cutof' (did you mean 'psf_cutoff'?)"),
    ({"beam": [20, 30, 0]}, "c.toml: [reduce] beam: expected BMAJ >= BMIN > 0, got [20, 30, 0]"),
    ({"ref_chan": "middle"}, "c.toml: [reduce] ref_chan: expected 'first', 'last', 'mid' or a plane index"),
    ({"psf_outlier": 0.5}, "c.toml: [reduce] psf_outlier: expected a number >= 1, got 0.5"),
    ({"circularise": 1}, "c.toml: [reduce] circularise: expected true or false, got 1"),
])
def test_bad_values_name_the_key_and_what_was_expected(table, message):
    with pytest.raises(ConfigError) as exc:
        ReduceOptions.from_mapping(table, where="c.toml: [reduce]")
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)


@pytest.mark.pure
def test_beamcon_3d_options_have_mpimager_names():
    o = ReduceOptions.from_mapping({"resolution": "natural", "beam": [30, 20, 0], "circularise": True,
                                    "ref_chan": "mid", "use_beamlogs": True, "psf_outlier": 0}, where="[reduce]")
    assert (o.beam, o.circularise, o.ref_chan, o.use_beamlogs, o.psf_outlier) == \
        ((30.0, 20.0, 0.0), True, "mid", True, None)
    assert ReduceOptions().psf_outlier == 3.0
    assert ReduceOptions.from_mapping({"ref_freq": 8e8}).ref_freq == 8e8


@pytest.mark.pure
def test_the_config_file_reduce_section_takes_the_new_keys(tmp_path):
    from mpimager.config.load import load_config

    cfg = tmp_path / "c.toml"
    cfg.write_text("[reduce]\nresolution = 'natural'\ncircularise = true\nref_chan = 'first'\n"
                   "use_beamlogs = true\npsf_outlier = 4\nbeam = [30, 30, 0]\n")
    r = load_config(cfg).reduce
    assert (r.resolution, r.circularise, r.ref_chan, r.use_beamlogs, r.psf_outlier, r.beam) == \
        ("natural", True, "first", True, 4.0, (30.0, 30.0, 0.0))


@pytest.mark.pure
def test_options_are_frozen_and_checked_when_built_in_code():
    o = ReduceOptions(cubes=["residual"])
    assert o.cubes == ("residual",)
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        o.purge = True
    with pytest.raises(ConfigError):
        ReduceOptions(resolution="fine")


@pytest.mark.pure
@pytest.mark.parametrize("name, prefix, chan, pol, kind, ignored", [
    ("P-0000-I-image.fits", "P", 0, "I", "image", False),
    ("P-0003-image.fits", "P", 3, None, "image", False),
    ("P-0001-Q-residual.fits", "P", 1, "Q", "residual", False),
    ("image.RACS_1234.contcube.beam07-0012-U-image.fits", "image.RACS_1234.contcube.beam07", 12, "U", "image", False),
    ("obs-2024-b00-0002-image.fits", "obs-2024-b00", 2, None, "image", False),
    ("P-t0001-0002-image.fits", "P-t0001", 2, None, "image", False),
    ("P-MFS-image.fits", "P", None, None, "image", True),
    ("P-MFS-Q-image.fits", "P", None, "Q", "image", True),
    ("P-0000-psf.fits", "P", 0, None, "psf", True),
    ("P-0000-I-model.fits", "P", 0, "I", "model", True),
    ("P-0000-dirty.fits", "P", 0, None, "dirty", True),
    ("P-0000-image-pb.fits", "P", 0, None, "image", True),
    ("sb003.fits", "", None, None, "image", False),
])
def test_wsclean_names_are_parsed_and_non_channel_images_flagged(name, prefix, chan, pol, kind, ignored):
    n = parse_name(Path("/d") / name)
    assert (n.prefix, n.chan, n.pol, n.kind, n.note is not None) == (prefix, chan, pol, kind, ignored)
