"""The plan's shape: jobs per MS and pass, combined groups, FixMS dependencies, argv and outputs."""

import os
from pathlib import Path

import pytest
from conftest import write_config

from mpimager.config.load import load_config
from mpimager.errors import ConfigError, InputError
from mpimager.inputs.discover import InputMS
from mpimager.inputs.msinfo import MSInfo, SpectralWindow
from mpimager.planner.jobs import PlanSettings, plan_jobs

RUN = Path("/runs/r1")


def ms(path, *, telescope="ASKAP", beam=0, nchan=8, field="RACS_1347-37A", columns=("DATA",), obs=None, sw=None,
       fixed=False):
    info = MSInfo(path=path, spws=(SpectralWindow(0, nchan, 8e8, 9e8, 8.5e8),), field=field, beam=beam,
                  telescope=telescope, mount="equatorial",
                  columns=frozenset({"UVW", "ANTENNA1", "DATA_DESC_ID", *columns}), n_rows=100,
                  size_bytes=10_000_000 * (beam + 1), fixms_record=fixed, fixms_markers=fixed)
    return InputMS(info, obs, sw)


def cfg(tmp_path, text):
    return load_config(write_config(tmp_path / "c.toml", text))


def plan(config, inputs, mode="single"):
    return plan_jobs(config, inputs, PlanSettings(run_dir=RUN, mode=mode, threads=2, python="/usr/bin/python3"))


ASKAP = """
[wsclean]
name = "image.$field$.contcube.beam$beam$"
out-dir = "/img/$field$"
size = "256 256"
niter = 100
channels-out = "every4"
join-channels = true
[passes.I]
pol = "I"
[passes.QU]
pol = "QU"
join-polarizations = true
"""


@pytest.mark.pure
def test_askap_beams_get_fixms_then_one_job_per_beam_and_pass(tmp_path):
    beams = [ms(f"/d/beam{b:02d}.ms", beam=b) for b in range(2)]
    jobs = [j for j in plan(cfg(tmp_path, ASKAP), beams) if j.kind != "reduce"]
    assert [(j.id, j.kind, j.depends_on) for j in jobs] == [
        ("fixms:beam00.ms", "fixms", ()),
        ("fixms:beam01.ms", "fixms", ()),
        ("wsclean:image.RACS_1347-37A.contcube.beam00.I", "wsclean", ("fixms:beam00.ms",)),
        ("wsclean:image.RACS_1347-37A.contcube.beam00.QU", "wsclean", ("fixms:beam00.ms",)),
        ("wsclean:image.RACS_1347-37A.contcube.beam01.I", "wsclean", ("fixms:beam01.ms",)),
        ("wsclean:image.RACS_1347-37A.contcube.beam01.QU", "wsclean", ("fixms:beam01.ms",)),
    ]
    qu = jobs[3]
    assert qu.prefix == "/img/RACS_1347-37A/image.RACS_1347-37A.contcube.beam00.QU"
    assert qu.argv[:3] == ("wsclean", "-j", "2")
    assert qu.argv[-4:] == ("-name", qu.prefix, "/d/beam00.ms") or qu.argv[-3:] == ("-name", qu.prefix, "/d/beam00.ms")
    argv = list(qu.argv)
    assert argv[argv.index("-channels-out") + 1] == "2"  # every4 of 8 channels
    assert argv[argv.index("-data-column") + 1] == "CORRECTED_DATA"  # what FixMS writes
    assert argv[argv.index("-temp-dir") + 1].startswith("/runs/r1/tmp/")
    assert "-no-update-model-required" in argv
    assert qu.prefix + "-MFS-Q-image.fits" in qu.outputs and qu.prefix + "-0001-psf.fits" in qu.outputs
    assert all(Path(a).is_absolute() for a in qu.argv if a.startswith("/") or a.endswith(".ms"))


@pytest.mark.pure
def test_every_job_has_its_own_temp_dir(tmp_path):
    jobs = [j for j in plan(cfg(tmp_path, ASKAP), [ms("/d/a.ms"), ms("/d/b.ms", beam=1)]) if j.kind == "wsclean"]
    assert len({j.temp_dir for j in jobs}) == len(jobs) == 4


@pytest.mark.pure
def test_an_ms_fixed_before_still_gets_its_fixms_job_which_checks_the_record(tmp_path):
    jobs = plan(cfg(tmp_path, ASKAP), [ms("/d/a.ms", fixed=True, columns=("DATA", "CORRECTED_DATA"))])
    assert [j.kind for j in jobs] == ["fixms", "wsclean", "wsclean", "reduce", "reduce"]
    assert jobs[1].depends_on == ("fixms:a.ms",)


@pytest.mark.pure
def test_other_telescopes_skip_fixms_on_auto(tmp_path):
    jobs = plan(cfg(tmp_path, "[wsclean]\nniter = 1\n"), [ms("/d/sw01.MS", telescope="NenuFAR")])
    assert [j.kind for j in jobs] == ["wsclean"]
    assert "-data-column" not in jobs[0].argv  # WSClean's own choice
    assert jobs[0].prefix == "/runs/r1/images/sw01"


@pytest.mark.pure
def test_combine_groups_by_obs_id_and_spectral_window(tmp_path):
    inputs = [ms(f"/d/{o}/SW{s}_T{t}.MS", telescope="NenuFAR", obs=o, sw=f"SW{s}")
              for o in ("obsA", "obsB") for s in (1, 2) for t in (1, 2)]
    config = cfg(tmp_path, "[wsclean]\nname = 'img'\nout-dir = '/img/$obs_id$/$sw$'\n")
    combined = plan(config, inputs, "combine")
    assert [(j.prefix, len(j.ms)) for j in combined] == [
        ("/img/obsA/SW1/img", 2), ("/img/obsA/SW2/img", 2), ("/img/obsB/SW1/img", 2), ("/img/obsB/SW2/img", 2)]
    with pytest.raises(InputError, match=r"\$obs_id\$.*differ"):
        plan(config, inputs, "combine-obs-ids")
    across = plan(cfg(tmp_path, "[wsclean]\nname = 'deep'\nout-dir = '/img/$sw$'\n"), inputs, "combine-obs-ids")
    assert [(j.prefix, len(j.ms)) for j in across] == [("/img/SW1/deep", 4), ("/img/SW2/deep", 4)]


@pytest.mark.pure
def test_channels_out_all_counts_every_channel(tmp_path):
    job, _ = plan(cfg(tmp_path, "[wsclean]\nchannels-out = 'all'\n"), [ms("/d/a.ms", telescope="X", nchan=12)])
    assert job.argv[job.argv.index("-channels-out") + 1] == "12" and len(job.outputs) == 13 * 2


@pytest.mark.pure
def test_two_jobs_writing_the_same_images_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="two jobs would write the same images /img/same"):
        plan(cfg(tmp_path, "[wsclean]\nname = 'same'\nout-dir = '/img'\n"),
             [ms("/d/a.ms", telescope="X"), ms("/d/b.ms", telescope="X")])


@pytest.mark.pure
def test_a_missing_data_column_is_named_before_any_job(tmp_path):
    with pytest.raises(InputError, match=r"/d/a\.ms: has no column MODEL_DATA to image"):
        plan(cfg(tmp_path, "[inputs]\ndata_column = 'MODEL_DATA'\n"), [ms("/d/a.ms", telescope="X")])


@pytest.mark.pure
def test_host_affinity_comes_from_the_ms_path(tmp_path):
    config = cfg(tmp_path, "[worker]\nrun_on_file_host = true\nrun_on_file_host_pattern = '/net/(node\\d{3})'\n")
    jobs = plan(config, [ms("/net/node001/a.ms", telescope="X"), ms("/net/node002/b.ms", telescope="X")])
    assert [j.host for j in jobs] == ["node001", "node002"]


@pytest.mark.pure
def test_larger_data_costs_more(tmp_path):
    jobs = plan(cfg(tmp_path, "[wsclean]\nniter = 1\n"), [ms("/d/a.ms", telescope="X", beam=0),
                                                         ms("/d/b.ms", telescope="X", beam=5)])
    assert jobs[1].cost > jobs[0].cost > 0


@pytest.mark.pure
def test_the_json_form_has_the_documented_fields(tmp_path):
    (job,) = plan(cfg(tmp_path, "[wsclean]\nniter = 1\n"), [ms("/d/a.ms", telescope="X")])
    d = job.to_json()
    assert {"id", "kind", "ms", "argv", "outputs", "depends_on", "host"} <= set(d)
    assert d["ms"] == ["/d/a.ms"] and d["argv"][0] == "wsclean"


def test_each_prefix_gets_a_reduce_job_after_its_imaging(tmp_path):
    jobs = plan(cfg(tmp_path, ASKAP), [ms("/d/beam00.ms")])
    reduce = [j for j in jobs if j.kind == "reduce"]
    assert [(j.id, j.depends_on) for j in reduce] == [
        ("reduce:image.RACS_1347-37A.contcube.beam00.I", ("wsclean:image.RACS_1347-37A.contcube.beam00.I",)),
        ("reduce:image.RACS_1347-37A.contcube.beam00.QU", ("wsclean:image.RACS_1347-37A.contcube.beam00.QU",))]
    qu = reduce[1]
    channel_images = [a for a in qu.argv if a.endswith(".fits")]
    assert channel_images == [f"/img/RACS_1347-37A/image.RACS_1347-37A.contcube.beam00.QU-000{c}-{s}-image.fits"
                              for c in (0, 1) for s in "QU"]
    assert qu.argv[qu.argv.index("--ms") + 1] == "/d/beam00.ms"  # FixMS'd: its receptor angle goes in the header
    assert sorted(os.path.basename(o) for o in qu.outputs if o.endswith(".fits")) == [
        "image.RACS_1347-37A.contcube.beam00.QU-Q-restored.cube.fits",
        "image.RACS_1347-37A.contcube.beam00.QU-U-restored.cube.fits"]


@pytest.mark.pure
def test_beam_scope_gathers_all_passes_of_a_beam_in_one_job(tmp_path):
    jobs = plan(cfg(tmp_path, ASKAP + "[reduce]\nscope = 'beam'\ncubes = ['restored', 'residual']\n"),
                [ms("/d/beam00.ms"), ms("/d/beam01.ms", beam=1)])
    reduce = [j for j in jobs if j.kind == "reduce"]
    assert [len(j.depends_on) for j in reduce] == [2, 2]
    assert sum(o.endswith(".fits") for o in reduce[0].outputs) == 6  # I, Q, U x restored, residual
    assert gather_options(reduce[0]).scope == "observation"


@pytest.mark.pure
def test_no_reduce_job_without_channels_or_when_disabled(tmp_path):
    assert [j.kind for j in plan(cfg(tmp_path, "[wsclean]\nniter = 1\n"), [ms("/d/a.ms", telescope="X")])] == \
        ["wsclean"]
    off = plan(cfg(tmp_path, ASKAP + "[reduce]\nenabled = false\n"), [ms("/d/a.ms")])
    assert "reduce" not in {j.kind for j in off}


# every [reduce] key, each away from its default (beam needs resolution "total")
REDUCE_ALL = {"psf_cutoff": 30.0, "resolution": "total", "scope": "beam", "cubes": ["restored", "residual"],
              "purge": True, "axis_order": "stokes-freq", "names": "arrakis", "round_up": 0.5,
              "beam": [40.0, 30.0, 10.0], "threads": 3, "min_weight": 0.01, "circularise": True,
              "psf_outlier": 5.0, "ref_chan": "mid", "ref_freq": 8.5e8, "use_beamlogs": True}


def gather_options(job):
    """The ReduceOptions a gather job's process will run with: its argv parsed by the real `mpimager reduce`."""
    from mpimager.cli.main import build_parser
    from mpimager.cli.reduce import options_from_args

    assert job.argv[1:4] == ("-m", "mpimager", "reduce")
    return options_from_args(build_parser("reduce").parse_args(list(job.argv[4:])))


@pytest.mark.pure
def test_every_reduce_key_reaches_the_gather_job_whole(tmp_path):
    from dataclasses import fields, replace

    from mpimager.config.reduce import ReduceOptions

    assert set(REDUCE_ALL) == {f.name for f in fields(ReduceOptions)} - {"enabled"}, "a [reduce] key is untested"
    table = "\n".join(f"{k} = {v!r}".replace("True", "true").replace("'", '"') for k, v in REDUCE_ALL.items())
    config = cfg(tmp_path, ASKAP + "\n[reduce]\n" + table + "\n")
    [job] = [j for j in plan(config, [ms("/d/beam00.ms", beam=0)]) if j.kind == "reduce"]
    received = gather_options(job)
    # the job's unit is the scope's group already (one beam's passes), so it stacks that group as one scope
    assert received == replace(config.reduce, scope="observation")
    assert received.threads == 3 and received.min_weight == 0.01
