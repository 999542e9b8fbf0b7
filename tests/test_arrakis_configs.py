"""configs/askap.toml is Arrakis' SB8593 imaging and configs/nenufar.toml is imgpipe's documented example.

The expected command lines are written out here from the tools' documented logic (seed 000: the SB8593
`spice_process --imager_only` config and Arrakis' imager; seed 001: imgpipe's one-to-one option mapping), and
compared with ours flag by flag. Ours are rendered by the real planner from the real config files.
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import pytest
from astropy.io import fits
from conftest import ROOT, run_cli, write_config

from mpimager.config.load import load_config, wsclean_keys
from mpimager.errors import ConfigError, WSCleanOptionError
from mpimager.inputs.discover import discover
from mpimager.planner.jobs import PlanSettings, plan_jobs
from mpimager.testing import synth

FIELD = "RACS_1347-37A"
ASKAP_MS = "scienceData_SB8593_RACS_1347-37A.beam{:02d}_averaged_cal.leakage.split.ms"


def flags(argv: list[str], n_ms: int = 1) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """{flag: its values} and the trailing MSs of a WSClean argv (a value may start with '-': '-0.5')."""
    body, ms = argv[1:len(argv) - n_ms], argv[len(argv) - n_ms:]
    out: dict[str, tuple[str, ...]] = {}
    key = None
    for item in body:
        if item.startswith("-") and not _number(item):
            key = item
            assert key not in out, f"{key} given twice"
            out[key] = ()
        else:
            out[key] += (item,)
    return out, ms


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def same_values(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Values equal as WSClean parses them: '4' and '4.0' are the same number."""
    return len(a) == len(b) and all(x == y or (_number(x) and _number(y) and float(x) == float(y))
                                    for x, y in zip(a, b, strict=True))


def arrakis_ceil(x: float) -> float:
    """Arrakis' imager rounds the scaled QU thresholds up to 0.01."""
    return math.ceil(x * 100) / 100


# Arrakis' imager with SB8593.yaml (seed 000): its wsclean() helper passes `-key value` for every set
# str/int/float argument and `-key` for every true bool, in this order, then the MS. The QU run scales
# auto_mask and auto_threshold by 2 (join_polarizations) x sqrt(2) (squared_channel_joining), rounded up
# to 0.01, drops -local-rms and -local-rms-window (disable_pol_local_rms), and multiscale (squared joining).
QU_SCALE = 2.0 * math.sqrt(2.0)
ARRAKIS_I = ["wsclean", "-temp-dir", "/dev/shm", "-name", "PREFIX", "-pol", "I", "-verbose",
             "-channels-out", "36", "-parallel-gridding", "36", "-scale", "2.5asec", "-size", "6144", "6144",
             "-join-channels", "-mgain", "0.7", "-niter", "500000", "-auto-mask", "4", "-force-mask-rounds", "8",
             "-auto-threshold", "1", "-gridder", "wgridder", "-weight", "briggs", "-0.5", "-mem", "90",
             "-abs-mem", "100", "-field", "0", "-minuv-l", "200", "-nmiter", "15", "-local-rms",
             "-local-rms-window", "60", "-multiscale-scale-bias", "0.7", "-multiscale",
             "-multiscale-scales", "0,2,4,8,16,32,64,128", "-data-column", "CORRECTED_DATA",
             "-no-update-model-required", "-beam-fitting-size", "1.25", "MS"]
ARRAKIS_QU = ["wsclean", "-temp-dir", "/dev/shm", "-name", "PREFIX", "-pol", "QU", "-verbose",
              "-channels-out", "36", "-parallel-gridding", "36", "-scale", "2.5asec", "-size", "6144", "6144",
              "-join-polarizations", "-join-channels", "-squared-channel-joining", "-mgain", "0.7",
              "-niter", "500000", "-auto-mask", str(arrakis_ceil(4 * QU_SCALE)), "-force-mask-rounds", "8",
              "-auto-threshold", str(arrakis_ceil(1 * QU_SCALE)), "-gridder", "wgridder",
              "-weight", "briggs", "-0.5", "-mem", "90", "-abs-mem", "100", "-field", "0", "-minuv-l", "200",
              "-nmiter", "15", "-data-column", "CORRECTED_DATA", "-no-update-model-required",
              "-beam-fitting-size", "1.25", "MS"]

# Where ours differs on purpose: -j (concurrent jobs on a node share its cores; Arrakis lets each take all),
# -temp-dir (a folder per job below [worker] temp_dir = /dev/shm, so jobs never share temp files), -name
# (the run directory; Arrakis writes to temp_dir_images and copies back) and the MS (Arrakis images a copy).
OURS_ONLY = {"-j"}
SAME_FLAG_OTHER_VALUE = {"-temp-dir", "-name"}


def askap_beams(directory: Path, n: int = 2, **kw) -> list[Path]:
    """`n` raw ASKAP beam MSs of SB8593 named as the config's glob expects."""
    return [synth.make_ms(directory / ASKAP_MS.format(b), raw_askap=True, beam=b, field_name=FIELD, seed=b, **kw)
            for b in range(n)]


@pytest.fixture(scope="module")
def askap_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sb8593")
    askap_beams(d)
    return d


def plan_askap(tmp_path: Path, askap_dir: Path, extra: str = ""):
    layer = write_config(tmp_path / "sb8593.toml", f'default_settings = "{ROOT / "configs" / "askap.toml"}"\n'
                                                    f"[inputs]\nnum_beams = 2\n{extra}")
    config = load_config(layer)
    jobs = plan_jobs(config, discover([str(askap_dir)], config), PlanSettings(run_dir=tmp_path / "run", threads=2))
    return config, jobs


@pytest.mark.parametrize("pass_name, arrakis", [("I", ARRAKIS_I), ("QU", ARRAKIS_QU)])
def test_askap_toml_renders_arrakis_command_flag_by_flag(tmp_path, askap_dir, pass_name, arrakis):
    assert arrakis_ceil(4 * QU_SCALE) == 11.32 and arrakis_ceil(1 * QU_SCALE) == 2.83  # the seed's numbers
    _, jobs = plan_askap(tmp_path, askap_dir)
    job = next(j for j in jobs if j.kind == "wsclean" and j.pass_name == pass_name and j.tags and
               dict(j.tags)["beam"] == "01")
    ours, ours_ms = flags(list(job.argv))
    theirs, _ = flags(arrakis)
    assert ours_ms == [str(askap_dir / ASKAP_MS.format(1))]
    assert set(ours) - set(theirs) == OURS_ONLY, "flags only mpimager passes"
    assert set(theirs) - set(ours) == set(), "flags Arrakis passes that mpimager does not"
    for flag in theirs:
        if flag not in SAME_FLAG_OTHER_VALUE:
            assert same_values(ours[flag], theirs[flag]), f"{flag}: ours {ours[flag]}, Arrakis {theirs[flag]}"
    assert ours["-name"] == (str(tmp_path / "run" / "images" / pass_name / f"image.{FIELD}.contcube.beam01"),)
    assert ours["-temp-dir"][0].startswith("/dev/shm/")


@pytest.mark.pure
def test_askap_toml_gives_one_gather_job_per_beam_across_stokes(tmp_path, askap_dir):
    _, jobs = plan_askap(tmp_path, askap_dir)
    reduce = [j for j in jobs if j.kind == "reduce"]
    assert len(reduce) == 2  # one per ASKAP beam, not per beam and pass
    for beam, j in enumerate(reduce):
        assert j.ms == (str(askap_dir / ASKAP_MS.format(beam)),)
        assert sorted(os.path.basename(o) for o in j.outputs if o.endswith(".fits")) == [
            f"image.restored.{s}.{FIELD}.contcube.beam{beam:02d}.conv.fits" for s in "iqu"]
        assert {d.split(":")[0] for d in j.depends_on} == {"wsclean"} and len(j.depends_on) == 2


@pytest.mark.pure
def test_false_removes_a_key_the_local_wsclean_does_not_know(tmp_path, askap_dir):
    """Only keys that would be passed are checked against WSClean's --help."""
    known = frozenset({"verbose", "mgain"})  # a WSClean that knows neither force-mask-rounds nor gridder
    config, jobs = plan_askap(tmp_path, askap_dir, "[wsclean]\nforce-mask-rounds = false\ngridder = false\n")
    keys = {k for k, _ in wsclean_keys(config)}
    assert "force-mask-rounds" not in keys and "gridder" not in keys and "mgain" in keys
    assert all("-force-mask-rounds" not in j.argv and "-gridder" not in j.argv for j in jobs)
    from mpimager.wsclean.options import check_options
    with pytest.raises(WSCleanOptionError, match="unknown WSClean option 'nmiter'"):
        check_options(wsclean_keys(config), known)  # the keys still passed are still checked


ARRAKIS_CUBE_GLOB = "image.restored.{stokes}*contcube*beam{beam:02d}.conv.fits"  # Arrakis' cutout/linmos steps


def test_arrakis_globs_find_one_cube_per_beam_and_stokes_after_a_real_run(tmp_path):
    """askap.toml layered for Debian's WSClean 3.1 (two options it lacks removed by `false`), run for real:
    Arrakis' downstream glob finds exactly one cube per beam and Stokes, and I, Q, U of a beam share a beam."""
    data = tmp_path / "ms"
    askap_beams(data, n_ant=8, n_times=8, n_chan=4)
    layer = write_config(tmp_path / "local.toml", f"""
        default_settings = "{ROOT / 'configs' / 'askap.toml'}"
        [inputs]
        num_beams = 2
        [container]
        runtime = "native"
        [worker]
        temp_dir = "{tmp_path / 'tmp'}"
        [wsclean]
        force-mask-rounds = false
        gridder = false
        size = "96 96"
        scale = "4asec"
        niter = 200
        nmiter = 2
        channels-out = 4
        parallel-gridding = 1
        local-rms = false         # WSClean 3.1 crashes (double free) with -local-rms, -multiscale and 4 channels
        local-rms-window = false
        [passes.I]
        multiscale-scales = "0,2,4"
        """)
    r = run_cli(layer, data, "--run-dir", tmp_path / "run", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    images = tmp_path / "run" / "images"
    for beam in range(2):
        cubes = {}
        for stokes in "iqu":
            found = glob.glob(str(images / ARRAKIS_CUBE_GLOB.format(stokes=stokes, beam=beam)))
            assert len(found) == 1, (stokes, beam, found)
            cubes[stokes] = fits.getheader(found[0])
        beams = {(h["BMAJ"], h["BMIN"], h["BPA"]) for h in cubes.values()}
        assert len(beams) == 1, f"beam {beam}: I, Q and U cubes have different beams {beams}"
        assert all(h["INSTRUMENT_RECEPTOR_ANGLE"] is not None for h in cubes.values())


# ------------------------------------------------------------------------------------------------ NenuFAR


def nenufar_ms(directory: Path, name: str = "SW03_T001.MS") -> Path:
    """A NenuFAR MS as calpipe leaves it: calibrated data in CORRECTED_DATA."""
    import casacore.tables as pt

    path = synth.make_ms(directory / name, telescope="NenuFAR", n_chan=4, seed=3)
    with pt.table(str(path), readonly=False, ack=False) as t:
        t.addcols(pt.makecoldesc("CORRECTED_DATA", t.getcoldesc("DATA")))
        t.putcol("CORRECTED_DATA", t.getcol("DATA"))
    return path


def test_nenufar_toml_renders_imgpipe_command_flag_by_flag(tmp_path):
    """imgpipe: every [wsclean] key but name and out-dir as `-key value` (true: `-key`), channels-out 'all' = the
    MS's channels, `-name OUT_DIR/NAME`, the MS last; the `.MS` found by the default directory glob."""
    ms = nenufar_ms(tmp_path / "data")
    config = load_config(ROOT / "configs" / "nenufar.toml")
    inputs = discover([str(tmp_path / "data")], config)
    assert [m.info.path for m in inputs] == [str(ms)]
    jobs = plan_jobs(config, inputs, PlanSettings(run_dir=tmp_path / "run", threads=2))
    out_dir = ROOT / "configs" / "SW03_T001.MS" / "images"  # imgpipe: relative to where it runs; ours: the file
    imgpipe = ["wsclean", "-pol", "I", "-size", "1024", "1024", "-scale", "1arcmin", "-weight", "briggs", "0",
               "-data-column", "CORRECTED_DATA", "-niter", "1000", "-auto-threshold", "3.0", "-channels-out", "4",
               "-name", str(out_dir / "img"), str(ms)]
    ours, ours_ms = flags(list(jobs[0].argv))
    theirs, theirs_ms = flags(imgpipe)
    assert ours_ms == theirs_ms
    # mpimager adds -j (cores shared by concurrent jobs), -temp-dir (per job) and -no-update-model-required
    # (jobs sharing an MS never write it); imgpipe's defaults add none
    assert set(ours) - set(theirs) == {"-j", "-temp-dir", "-no-update-model-required"}
    assert {f: ours[f] for f in theirs} == theirs


@pytest.mark.pure
def test_imgpipe_worker_nodes_is_answered_with_what_mpimager_does_instead(tmp_path):
    config = write_config(tmp_path / "img.toml", "[worker]\nnodes = 'nancep5'\nmax_concurrent = 4\n")
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    message = str(exc.value)
    assert "[worker] nodes: imgpipe's SSH host list has no equivalent" in message
    assert "MPI or Slurm allocation" in message and "nodes_mpi" not in message


def test_beam_token_is_an_error_for_a_non_askap_ms(tmp_path):
    ms = nenufar_ms(tmp_path / "data")
    config = load_config(write_config(tmp_path / "c.toml", "[wsclean]\nname = 'img.beam$beam$'\n"))
    with pytest.raises(WSCleanOptionError, match=r"\$beam\$.*only known for ASKAP MSs"):
        plan_jobs(config, discover([str(ms)], config), PlanSettings(run_dir=tmp_path / "run"))


def test_beam_token_is_the_feed1_beam_of_an_askap_ms(tmp_path):
    (ms,) = [askap_beams(tmp_path / "data", 2)[1]]
    config = load_config(write_config(tmp_path / "c.toml", "[wsclean]\nname = 'img.beam$beam$'\n"))
    (job,) = [j for j in plan_jobs(config, discover([str(ms)], config), PlanSettings(run_dir=tmp_path / "r"))
              if j.kind == "wsclean"]
    assert job.prefix.endswith("/img.beam01")
