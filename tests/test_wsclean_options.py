"""How [wsclean] values become argv, how tokens and channels-out resolve, and which files WSClean writes."""

import glob
import os
import subprocess

import pytest

from mpimager.errors import WSCleanOptionError
from mpimager.wsclean import names
from mpimager.wsclean import options as wsclean


@pytest.mark.parametrize("key, value, argv", [
    ("multiscale", True, ["-multiscale"]),
    ("multiscale", False, []),
    ("niter", 1000, ["-niter", "1000"]),
    ("minuv-l", 0, ["-minuv-l", "0"]),  # a falsy number is still passed (Arrakis drops it)
    ("mgain", 0.8, ["-mgain", "0.8"]),
    ("auto-threshold", 3.0, ["-auto-threshold", "3.0"]),
    ("threshold", 1e-5, ["-threshold", "1e-05"]),
    ("pol", "I", ["-pol", "I"]),
    ("size", "1024 1024", ["-size", "1024", "1024"]),  # imgpipe style: one item per word
    ("weight", "briggs -0.5", ["-weight", "briggs", "-0.5"]),
    ("size", [6144, 6144], ["-size", "6144", "6144"]),
    ("multiscale-scales", "0,2,4,8,16,32,64,128", ["-multiscale-scales", "0,2,4,8,16,32,64,128"]),
    ("shift", ["13h47m00s", "-37d00m00s"], ["-shift", "13h47m00s", "-37d00m00s"]),
])
def test_each_value_type_maps_to_flags(key, value, argv):
    assert wsclean.option_argv(key, value) == argv


@pytest.mark.pure
def test_command_puts_options_in_order_then_name_then_the_measurement_sets():
    argv = wsclean.command("wsclean", [("niter", 10), ("join-channels", True)], "/out/img", ["/d/a.ms", "/d/b.ms"])
    assert argv == ["wsclean", "-niter", "10", "-join-channels", "-name", "/out/img", "/d/a.ms", "/d/b.ms"]


TOKENS = {"ms_in": "/data/SB1/beam00.ms", "ms_basename": "beam00.ms", "ms_stem": "beam00", "name": "img",
          "obs_id": None, "sw": None, "beam": "00", "field": "RACS_1347-37A", "run_dir": "/runs/r1"}


@pytest.mark.pure
def test_tokens_are_substituted():
    got = wsclean.substitute("/img/$field$/beam$beam$/$ms_stem$-$name$", TOKENS, "[wsclean] out-dir")
    assert got == "/img/RACS_1347-37A/beam00/beam00-img"


@pytest.mark.pure
def test_an_unknown_token_is_an_error_never_a_literal_path():
    with pytest.raises(WSCleanOptionError, match=r"unknown token \$ms_bsename\$.*did you mean 'ms_basename'"):
        wsclean.substitute("$ms_bsename$/images", TOKENS, "[wsclean] out-dir")


@pytest.mark.pure
def test_a_token_without_a_value_for_this_job_is_an_error():
    with pytest.raises(WSCleanOptionError, match=r"\$obs_id\$.*only known for inputs resolved through"):
        wsclean.substitute("/img/$obs_id$", TOKENS, "[wsclean] out-dir")


@pytest.mark.pure
@pytest.mark.parametrize("value, total, expected", [(4, 288, 4), ("all", 288, 288), ("every4", 288, 72),
                                                    ("every1", 7, 7), ("every3", 7, 2)])
def test_channels_out_specials(value, total, expected):
    assert wsclean.resolve_channels_out(value, total, "x") == expected


@pytest.mark.pure
def test_channels_out_every_n_giving_zero_is_an_error():
    with pytest.raises(WSCleanOptionError, match=r"'every8' gives 0 output channels for an MS with 4 channels"):
        wsclean.resolve_channels_out("every8", 4, "[wsclean] channels-out")


@pytest.mark.pure
@pytest.mark.parametrize("value", ["most", "every0", 0, -2, 1.5, True])
def test_channels_out_rejects_other_values(value):
    with pytest.raises(WSCleanOptionError, match="expected an integer >= 1, 'all' or 'everyN'"):
        wsclean.resolve_channels_out(value, 16, "[wsclean] channels-out")


def test_the_option_list_is_parsed_from_the_real_wsclean_help():
    text = subprocess.run(["wsclean", "--help"], capture_output=True, text=True).stdout
    names = wsclean.parse_help(text)
    assert {"auto-threshold", "auto-mask", "join-polarizations", "squared-channel-joining", "channels-out",
            "no-update-model-required", "update-model-required", "small-inversion", "no-small-inversion",
            "iuwt-snr-test", "no-iuwt-snr-test", "local-rms-window", "multiscale-scale-bias", "j", "v"} <= names
    assert len(names) > 140


@pytest.mark.pure
def test_an_unknown_option_is_refused_with_the_nearest_one():
    known = frozenset({"auto-threshold", "auto-mask", "niter"})
    with pytest.raises(WSCleanOptionError) as e:
        wsclean.check_options([("auto-treshold", "c.toml: [wsclean] auto-treshold")], known)
    assert str(e.value) == ("c.toml: [wsclean] auto-treshold: unknown WSClean option 'auto-treshold' "
                            "(did you mean 'auto-threshold'?)")


@pytest.mark.pure
def test_polarisation_lists():
    assert names.parse_pols("IQU") == ["I", "Q", "U"]
    assert names.parse_pols("iquv") == ["I", "Q", "U", "V"]
    assert names.parse_pols("xx,yy") == ["XX", "YY"]
    assert names.parse_pols("linear") == ["XX", "XY", "YX", "YY"]
    with pytest.raises(WSCleanOptionError):
        names.parse_pols("IQZ")


# The predicted file lists, checked against the real WSClean 3.1 (each case a run of a few tenths of a second).
CASES = [
    {"niter": 0},
    {"niter": 10},
    {"niter": 10, "no-dirty": True},
    {"niter": 0, "make-psf": True},
    {"niter": 10, "channels-out": 2},
    {"niter": 10, "channels-out": 3, "join-channels": True},
    {"niter": 10, "channels-out": 2, "join-channels": True, "fit-spectral-pol": 2},
    {"niter": 10, "pol": "IQU", "join-polarizations": True},
    {"niter": 10, "pol": "IQU"},
    {"niter": 0, "pol": "IQU"},
    {"niter": 10, "pol": "QU", "join-polarizations": True, "channels-out": 2, "join-channels": True,
     "squared-channel-joining": True},
    {"niter": 10, "pol": "xx,xy,yx,yy", "join-polarizations": True},
    {"niter": 10, "pol": "xx,yy"},
    {"niter": 10, "intervals-out": 2},
    {"niter": 10, "intervals-out": 2, "channels-out": 2},
    {"niter": 10, "save-source-list": True},
    {"niter": 10, "save-weights": True, "channels-out": 2},
    {"niter": 10, "make-psf-only": True},
    {"niter": 10, "save-uv": True},
]


@pytest.mark.parametrize("options", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_predicted_outputs_are_exactly_what_wsclean_writes(options, tiny_ms_dir, tmp_path):
    opts = {"size": "64 64", "scale": "20asec", "mgain": 0.8, "no-update-model-required": True, **options,
            "temp-dir": str(tmp_path)}
    prefix = str(tmp_path / "P")
    argv = wsclean.command("wsclean", list(opts.items()), prefix, [str(tiny_ms_dir / "obs0.ms")])
    assert subprocess.run(argv, capture_output=True).returncode == 0
    written = sorted(os.path.basename(f) for f in glob.glob(prefix + "*"))
    predicted = sorted(os.path.basename(f) for f in names.predict_outputs(prefix, opts, opts.get("channels-out", 1)))
    assert written == predicted
