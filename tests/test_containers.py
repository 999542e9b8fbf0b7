"""mpimager.runtime.containers: the [container] options, bind lists, image pulls, and WSClean run natively and
in a Singularity sandbox image through spython.

The container runs are real: the WSClean rootfs built by scripts/build-wsclean-rootfs.sh is entered
by spython through tests/bin/singularity, a bubblewrap stand-in (not Singularity) inside which only
the bound host paths exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from mpimager.errors import ConfigError, InputError, JobError
from mpimager.runtime.containers import (
    ContainerOptions,
    NativeRuntime,
    collapse_binds,
    ensure_pulled,
    make_runtime,
    pulled_image_path,
)
from mpimager.runtime.process import run
from mpimager.wsclean.watcher import IOFailure, wsclean_watcher

WHERE = "run.toml: [container]"
PRODUCTS = ("dirty", "image", "model", "psf", "residual")


# --- [container] options ------------------------------------------------------------------------------


@pytest.mark.pure
def test_options_default_to_native_wsclean():
    assert ContainerOptions.from_mapping({}, WHERE) == ContainerOptions()
    assert ContainerOptions.from_mapping({"runtime": "native", "wsclean": "wsclean"}, WHERE).runtime == "native"


@pytest.mark.pure
def test_options_for_a_container():
    opts = ContainerOptions.from_mapping(
        {"runtime": "apptainer", "image": "/images/wsclean.sif", "binds": ["/data", "/scratch:/s:ro"],
         "binary": "/opt/apptainer/bin/apptainer", "wsclean": "/usr/local/bin/wsclean", "cache_dir": "/cache"},
        WHERE)
    assert opts == ContainerOptions(runtime="apptainer", image="/images/wsclean.sif", binds=("/data", "/scratch:/s:ro"),
                                    binary="/opt/apptainer/bin/apptainer", wsclean="/usr/local/bin/wsclean",
                                    cache_dir="/cache")
    assert ContainerOptions.from_mapping({"runtime": "singularity", "image": "docker://alecthomson/wsclean:latest"},
                                         WHERE).image == "docker://alecthomson/wsclean:latest"


@pytest.mark.pure
@pytest.mark.parametrize("table, message", [
    ({"runtim": "native"}, "run.toml: [container] runtim: unknown key"),
    ({"runtime": "docker"}, "[container] runtime: expected one of 'native', 'singularity', 'apptainer', got 'docker'"),
    ({"runtime": "singularity"}, "[container] image: required when runtime = 'singularity'"),
    ({"runtime": "apptainer", "image": "wsclean.sif"},
     "[container] image: expected an absolute path or a docker:// URI"),
    ({"runtime": "apptainer", "image": "ftp://x/y.sif"}, "[container] image: unsupported URI 'ftp://x/y.sif'"),
    ({"binds": "/data"}, "[container] binds: expected a list"),
    ({"binds": ["data"]}, "[container] binds: bind 'data': 'data' is not an absolute path"),
    ({"binds": ["/data:/d:rx"]}, "mount option must be ro or rw"),
    ({"binds": ["/scratch:/usr"]}, "would hide the image's /usr"),
    ({"wsclean": ""}, "[container] wsclean: expected the executable's name or path"),
    ({"wsclean_mp": 3}, "[container] wsclean_mp: expected the executable's name or path"),
    ({"cache_dir": 3}, "[container] cache_dir: expected a non-empty string, got 3"),
])
def test_option_errors_name_the_key(table, message):
    with pytest.raises(ConfigError) as exc:
        ContainerOptions.from_mapping(table, WHERE)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.pure
def test_all_option_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        ContainerOptions.from_mapping({"runtime": "singularity", "colour": "red", "binds": ["x"]}, WHERE)
    text = str(exc.value)
    assert "colour: unknown key" in text and "binds: bind 'x'" in text and "image: required" in text


# --- bind lists (pure) -------------------------------------------------------------------------------------


@pytest.mark.pure
@pytest.mark.parametrize("job, defaults, extra, expected", [
    (["/data/a.ms", "/data/a.ms", "/data/out"], [], [], ("/data/a.ms", "/data/out")),
    (["/data/a.ms", "/data", "/data/b.ms/"], [], [], ("/data",)),
    (["/data/x/a.ms"], ["/root", "/tmp", "/tmp"], [], ("/root", "/tmp", "/data/x/a.ms")),
    (["/tmp/run/out", "/tmp/run/tmp"], ["/tmp"], [], ("/tmp",)),
    (["/scratch/job/out"], [], ["/scratch:/scratch:ro"], ("/scratch:/scratch:ro", "/scratch/job/out")),
    (["/scratch/job/out"], [], ["/scratch"], ("/scratch",)),
    (["/data/a.ms"], [], ["/mnt/models:/models"], ("/mnt/models:/models", "/data/a.ms")),
    ([None, "", "/"], ["/usr/local/src", "/", "/etc"], [], ()),
    (["a.ms"], [], [], (os.path.join(os.getcwd(), "a.ms"),)),
])
def test_bind_list_dedupes_and_collapses(job, defaults, extra, expected):
    assert collapse_binds(job, defaults, extra) == expected


@pytest.mark.pure
def test_a_path_that_cannot_be_bound_is_an_input_error():
    with pytest.raises(InputError, match="/data/a:b.ms contains ':'"):
        collapse_binds(["/data/a:b.ms"], [])


@pytest.mark.pure
def test_container_command_runs_the_argv_through_the_spython_child(tmp_path):
    rt = make_runtime(ContainerOptions(runtime="apptainer", image="/images/w.sif", binds=("/models:/m:ro",)))
    cmd = rt.command(["wsclean", "-name", "/data/out/img", "/data/a.ms"], ["/data/a.ms", "/data/out"])
    sep = cmd.index("--")
    assert cmd[:6] == [sys.executable, "-m", "mpimager.runtime.containers", "exec", "--runtime-binary", "apptainer"]
    binds = cmd[7:sep:2]
    assert cmd[6:sep:2] == ["--bind"] * len(binds)
    assert {"/models:/m:ro", "/data/a.ms", "/data/out", "/tmp"} <= set(binds)
    assert cmd[sep + 1:] == ["/images/w.sif", "wsclean", "-name", "/data/out/img", "/data/a.ms"]
    assert NativeRuntime(ContainerOptions()).command(["wsclean", "-name", "x", "a.ms"], ["/data"]) == \
        ["wsclean", "-name", "x", "a.ms"]


@pytest.mark.pure
def test_env_always_has_home():
    for rt in (make_runtime(ContainerOptions()), make_runtime(ContainerOptions(runtime="singularity", image="/i"))):
        assert rt.env({"PATH": "/bin"})["HOME"] == os.path.expanduser("~")
        assert rt.env({"HOME": "/home/u", "X": "1"}) == {"HOME": "/home/u", "X": "1"}


# --- pulling URI images once, under a lock -------------------------------------------------------------------

PULLER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from mpimager.runtime.containers import ensure_pulled
    cache, counter = sys.argv[1], Path(sys.argv[2])
    def stub_pull(uri, dest):  # stands in for `singularity pull`: no registry is reachable here
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(1.0)
        Path(dest).write_text("image of " + uri)
    print(ensure_pulled("docker://alecthomson/wsclean:latest", cache, stub_pull), flush=True)
""")


def test_concurrent_processes_pull_a_uri_image_once(tmp_path):
    script = tmp_path / "pull.py"
    script.write_text(PULLER)
    cache, counter = tmp_path / "cache", tmp_path / "pulls"
    procs = [subprocess.Popen([sys.executable, str(script), str(cache), str(counter)], stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    expected = pulled_image_path("docker://alecthomson/wsclean:latest", cache)
    assert outs == [str(expected)] * 3
    assert len(counter.read_text().splitlines()) == 1
    assert expected.read_text() == "image of docker://alecthomson/wsclean:latest"
    assert sorted(p.name for p in cache.iterdir()) == sorted([expected.name, expected.with_suffix(".lock").name])


@pytest.mark.pure
def test_a_failed_pull_leaves_nothing_and_the_next_call_pulls_again(tmp_path):
    uri = "docker://example/wsclean:3.4"

    def failing(uri, dest):
        Path(dest).write_text("half")
        raise JobError("registry unreachable")

    with pytest.raises(JobError, match="registry unreachable"):
        ensure_pulled(uri, tmp_path, failing)
    assert [p.name for p in tmp_path.iterdir()] == [pulled_image_path(uri, tmp_path).with_suffix(".lock").name]
    path = ensure_pulled(uri, tmp_path, lambda u, d: Path(d).write_text("ok"))
    assert path.read_text() == "ok"
    assert ensure_pulled(uri, tmp_path, lambda u, d: pytest.fail("pulled twice")) == path


@pytest.mark.pure
def test_pulled_image_names_are_stable_and_distinct(tmp_path):
    a = pulled_image_path("docker://alecthomson/wsclean:latest", tmp_path)
    assert a == pulled_image_path("docker://alecthomson/wsclean:latest", tmp_path)
    assert a.name.startswith("alecthomson_wsclean_latest-") and a.suffix == ".sif"
    assert a != pulled_image_path("docker://alecthomson/wsclean:3.4", tmp_path)


# --- prepare: everything checked before any job ---------------------------------------------------------------


@pytest.mark.pure
def test_missing_native_wsclean_is_named(monkeypatch):
    rt = make_runtime(ContainerOptions(wsclean="wsclean-9.9"))
    with pytest.raises(InputError, match="WSClean executable 'wsclean-9.9' not found"):
        rt.prepare()


@pytest.mark.pure
def test_missing_runtime_binary_is_named(tmp_path):
    rt = make_runtime(ContainerOptions(runtime="apptainer", image=str(tmp_path), binary="/opt/nowhere/apptainer"))
    with pytest.raises(InputError, match="container runtime '/opt/nowhere/apptainer' not found"):
        rt.prepare()
    rt = make_runtime(ContainerOptions(runtime="apptainer", image=str(tmp_path)))
    with pytest.raises(InputError, match="container runtime 'apptainer' not found"):
        rt.prepare(env={"PATH": str(tmp_path)})


def test_missing_image_is_named(singularity_standin, tmp_path):
    rt = make_runtime(ContainerOptions(runtime="singularity", image=str(tmp_path / "wsclean.sif"),
                                       binary=singularity_standin))
    with pytest.raises(InputError, match=f"image: {tmp_path}/wsclean.sif does not exist"):
        rt.prepare()


def test_a_failing_pull_through_the_runtime_is_an_input_error(singularity_standin, tmp_path):
    # The stand-in implements no `pull`: this exercises the spython pull child and its error report.
    rt = make_runtime(ContainerOptions(runtime="singularity", image="docker://alecthomson/wsclean:latest",
                                       binary=singularity_standin, cache_dir=str(tmp_path)))
    with pytest.raises(InputError, match="could not pull docker://alecthomson/wsclean:latest") as exc:
        rt.prepare()
    log = Path(str(exc.value).rsplit("log: ", 1)[1].rstrip(")"))
    assert "only 'exec' and '--version' are implemented" in log.read_text()
    assert not pulled_image_path("docker://alecthomson/wsclean:latest", tmp_path).exists()


# --- the real thing: WSClean in the sandbox image, through spython and the stand-in -------------------------------


@pytest.fixture(scope="module")
def outside_dir():
    """A directory outside $HOME, /tmp and the cwd: not bound into a container unless asked."""
    for base in ("/srv", "/mnt", "/opt"):
        if os.access(base, os.W_OK):
            d = Path(tempfile.mkdtemp(prefix="mpimager-test-", dir=base))
            yield d
            shutil.rmtree(d, ignore_errors=True)
            return
    pytest.skip("no writable directory outside $HOME and /tmp to prove the binds with")


@pytest.fixture(scope="module")
def tiny_ms(outside_dir):
    from mpimager.testing.synth import make_ms

    return make_ms(outside_dir / "data" / "tiny.ms")


def wsclean_argv(ms, prefix, temp):
    # -j 1: with several threads WSClean 3.1 sums w-layers in a varying order, so even two native runs
    # differ in the last bits after a major cycle; single-threaded reruns are bit-identical.
    return ["wsclean", "-j", "1", "-size", "128", "128", "-scale", "3asec", "-niter", "500", "-mgain", "0.8",
            "-no-update-model-required", "-temp-dir", str(temp), "-name", str(prefix), str(ms)]


def image_run(runtime, ms, out_dir, binds=None):
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = wsclean_argv(ms, out_dir / "img", out_dir)
    cmd = runtime.command(argv, [ms, out_dir] if binds is None else binds)
    return run(cmd, log=out_dir / "wsclean.log", env=runtime.env(os.environ), timeout=300,
               on_line=wsclean_watcher())


@pytest.mark.container
def test_wsclean_in_the_container_makes_the_same_images_as_native(container_options, tiny_ms, outside_dir):
    native = image_run(make_runtime(ContainerOptions()), tiny_ms, outside_dir / "native")
    runtime = make_runtime(container_options)
    runtime.prepare()
    contained = image_run(runtime, tiny_ms, outside_dir / "container")
    assert native.ok, native.summary()
    assert contained.ok, contained.summary()
    assert contained.argv[:4] == (sys.executable, "-m", "mpimager.runtime.containers", "exec")
    for product in PRODUCTS:
        a = fits.getdata(outside_dir / "native" / f"img-{product}.fits")
        b = fits.getdata(outside_dir / "container" / f"img-{product}.fits")
        assert a.shape == (1, 1, 128, 128) and np.array_equal(a, b), product
    assert "Writing restored image... DONE" in (outside_dir / "container" / "wsclean.log").read_text()


@pytest.mark.container
def test_without_its_binds_the_container_cannot_see_the_data(container_options, tiny_ms, outside_dir):
    # Only $HOME, /tmp and the cwd are bound: the MS under /srv (or /mnt) does not exist inside.
    out = Path(tempfile.mkdtemp(prefix="mpimager-nobind-"))
    try:
        result = image_run(make_runtime(container_options), tiny_ms, out, binds=[])
        assert isinstance(result.error, IOFailure), result.summary()
        assert f"Table {tiny_ms} does not exist" in result.error.line
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.container
def test_help_and_version_from_the_container_equal_native(container_options):
    native, contained = make_runtime(ContainerOptions()), make_runtime(container_options)
    help_text = contained.help_text()
    assert help_text == native.help_text()
    assert len(help_text.splitlines()) > 400 and "-niter" in help_text
    assert contained.version() == native.version() == "WSClean version 3.1.0 (2022-04-01)"


@pytest.mark.container
def test_identity_names_the_binary_or_the_image(container_options, wsclean_rootfs):
    native, contained = make_runtime(ContainerOptions()), make_runtime(container_options)
    assert native.identity() == native.identity() and os.path.realpath(shutil.which("wsclean")) in native.identity()
    assert contained.identity() == make_runtime(container_options).identity()
    assert str(wsclean_rootfs) in contained.identity() and contained.identity() != native.identity()


@pytest.mark.container
def test_apptainer_binary_under_another_name_is_driven_through_spython(container_options, singularity_standin,
                                                                       tmp_path, monkeypatch):
    # spython only ever calls `singularity` on PATH: an "apptainer" binary must still be the one that runs.
    bindir = tmp_path / "apptainer-bin"
    bindir.mkdir()
    (bindir / "apptainer").symlink_to(singularity_standin)
    by_path = ContainerOptions(runtime="apptainer", image=container_options.image, binary=str(bindir / "apptainer"))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    by_name = ContainerOptions(runtime="apptainer", image=container_options.image)
    for opts in (by_path, by_name):
        rt = make_runtime(opts)
        rt.prepare()
        assert rt.version() == "WSClean version 3.1.0 (2022-04-01)"


@pytest.mark.container
def test_exit_code_and_missing_bind_source_come_back(container_options, tmp_path, outside_dir):
    rt = make_runtime(container_options)
    result = run(rt.command(["sh", "-c", "echo inside; exit 7"], []), log=tmp_path / "rc.log", env=rt.env(os.environ))
    assert (result.returncode, result.tail) == (7, ("inside",))
    gone = outside_dir / "gone"  # outside the default binds, so not collapsed into one
    result = run(rt.command(["true"], [gone]), log=tmp_path / "bind.log", env=rt.env(os.environ))
    assert result.returncode == 255 and result.tail == (f"mpimager: bind source {gone} does not exist",)


@pytest.mark.container
def test_a_timeout_kills_runtime_and_contained_process(container_options, tmp_path):
    rt = make_runtime(container_options)
    marker = "987.654321"  # a unique sleep argument to find the contained process by
    start = time.monotonic()
    result = run(rt.command(["sh", "-c", f"echo started; sleep {marker}"], []), log=tmp_path / "t.log",
                 env=rt.env(os.environ), timeout=3, kill_grace=2)
    assert result.timed_out and time.monotonic() - start < 30
    assert "started" in result.tail
    leftovers = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != b"Z":
            leftovers.append(pid)
    assert leftovers == []


@pytest.mark.container
def test_the_standin_says_what_it_is(singularity_standin):
    out = subprocess.run([singularity_standin, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "stand-in" in out.stdout and "NOT Singularity" in out.stdout
    assert "NOT Singularity" in Path(singularity_standin).read_text().splitlines()[2]
