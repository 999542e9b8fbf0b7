"""Faults during runs and bad input around them: nothing lost, nothing left running, one clear line.

Every case runs the real CLI (mostly under `mpirun -n 3`) with the real WSClean on tiny synthetic MSs, and
checks the exit code, the one line it prints, that no process of the run is left (`_faults.run_processes`:
by the environment tag every process of the run inherits, by process group and by parent) and that the
products and MSs are what they were before (conftest.snapshot) or what a finished run makes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, snapshot, write_config
from fixtures.faults import error_lines, products, run_processes, tagged_env
from fixtures.report import kill_session

from mpimager.rundir.journal import read_records

CONFIG = """
[fixms]
enabled = false
[worker]
retries = 0
{worker}
[wsclean]
name = "{name}"
out-dir = "{out_dir}"
size = "{size}"
scale = "{scale}"
niter = {niter}
{wsclean}
[reduce]
enabled = false
"""


def config(tmp_path, *, name="$ms_stem$", out_dir="$run_dir$/images", niter=10, worker="", extra="",
           size="64 64", scale="20asec", wsclean="", file="c.toml") -> Path:
    return write_config(tmp_path / file, CONFIG.format(name=name, out_dir=out_dir, niter=niter, worker=worker,
                                                       size=size, scale=scale, wsclean=wsclean) + extra)


def refusing_wsclean(tmp_path) -> Path:
    """A wsclean that answers --help/--version like the real one and refuses every imaging run (exit 255)."""
    fake = tmp_path / "refusing-wsclean"
    fake.write_text('#!/bin/sh\ncase "$1" in --help|--version) exec wsclean "$@";; esac\n'
                    'echo "Error: invalid option"; exit 255\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


# ------------------------------------------------------------------------------------------------ products


def test_a_failed_attempt_leaves_the_products_it_would_replace_untouched(tmp_path, tiny_ms_dir):
    ms = [tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms"]
    first = run_cli(config(tmp_path), *ms, "--run-dir", tmp_path / "run", mpi=3)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr
    before, ms_before = snapshot(tmp_path / "run" / "images"), snapshot(tiny_ms_dir)
    assert len(before) == 2 * 5

    # the option changed (so both jobs run again) and WSClean refuses it
    c = config(tmp_path, niter=20, extra=f'[container]\nwsclean = "{refusing_wsclean(tmp_path)}"\n')
    t0 = time.time()
    again = run_cli(c, *ms, "--run-dir", tmp_path / "run", mpi=3, env=tagged_env(tmp_path))
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr
    assert snapshot(tmp_path / "run" / "images") == before  # every image as it was: size and mtime
    assert snapshot(tiny_ms_dir) == ms_before
    assert not os.listdir(tmp_path / "run" / "tmp")  # only the attempt's own staging went
    assert run_processes(tmp_path) == []

    # a re-run with the WSClean that works replaces them with verified products
    fixed = run_cli(config(tmp_path, niter=20), *ms, "--run-dir", tmp_path / "run", mpi=3)
    assert fixed.returncode == 0 and "2 done" in fixed.stdout, fixed.stdout[-2000:]
    assert products(tmp_path / "run").keys() == {os.path.basename(p) for p in before}
    print(f"re-run after the refused attempt: {time.time() - t0:.1f} s")


def test_images_another_run_directory_made_are_not_replaced_without_force(tmp_path, tiny_ms_dir):
    out = tmp_path / "shared images"
    c = config(tmp_path, out_dir=str(out))
    assert run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run1", mpi=3).returncode == 0
    before = snapshot(out)

    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run2", mpi=3)

    assert r.returncode == 2
    (line,) = error_lines(r)
    assert f"{out}/obs0-" in line and "5 files in the out-dir that this run directory did not make" in line
    assert "--force" in line and not (tmp_path / "run2").exists() and snapshot(out) == before
    forced = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run2", "--force", mpi=3)
    assert forced.returncode == 0, forced.stderr
    assert snapshot(out).keys() == before.keys()


def test_staging_on_another_file_system_is_copied_then_renamed(tmp_path, tiny_ms_dir):
    scratch = Path("/dev/shm") / f"mpimager-test-{os.getpid()}-{tmp_path.name}"
    try:
        c = config(tmp_path, worker=f'temp_dir = "{scratch}"')
        r = run_cli(c, tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms", "--run-dir", tmp_path / "run", mpi=3)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        assert os.stat(scratch).st_dev != os.stat(tmp_path).st_dev
        assert not os.listdir(scratch)  # staging removed
        images = tmp_path / "run" / "images"
        assert sorted(os.listdir(images)) == sorted(products(tmp_path / "run"))  # no partial copy left
        ends = [r for r in read_records(tmp_path / "run") if r["event"] == "end"]
        assert all(o["size"] == os.path.getsize(o["path"]) for e in ends for o in e["outputs"])
        again = run_cli(c, tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms", "--run-dir", tmp_path / "run", mpi=3)
        assert again.returncode == 0 and "0 to run, 2 already done" in again.stdout
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", ["..", "."])
def test_a_name_that_escapes_the_out_dir_is_refused(tmp_path, tiny_ms_dir, name):
    victim = tmp_path / "run" / "-image.fits"
    victim.parent.mkdir()
    victim.write_text("a user's file")
    c = config(tmp_path, name=name)
    before = snapshot(tmp_path)
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run", mpi=3)
    assert r.returncode == 2
    (line,) = error_lines(r)
    assert f"[wsclean] name: {name!r} is not a file name" in line
    assert snapshot(tmp_path) == before


def test_an_empty_config_is_refused_before_any_job(tmp_path, tiny_ms_dir):
    c = write_config(tmp_path / "empty.toml", "")
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run", mpi=3)
    assert r.returncode == 2
    (line,) = error_lines(r)
    assert f"{c}: [wsclean] size is not set" in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("which", ["run-dir", "out-dir"])
def test_a_dangling_symlink_as_run_dir_or_out_dir_is_refused(tmp_path, tiny_ms_dir, which):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    c = config(tmp_path, out_dir=str(link) if which == "out-dir" else "$run_dir$/images")
    run_dir = link if which == "run-dir" else tmp_path / "run"
    before = snapshot(tmp_path)
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", run_dir, mpi=3)
    assert r.returncode == 2
    (line,) = error_lines(r)
    assert f"{link} is a dangling symbolic link (to {tmp_path / 'gone'})" in line
    assert snapshot(tmp_path) == before


def valid_json(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------ signals

# WSClean jobs of several seconds each on the tiny MSs that converge (40000 iterations at mgain 0.95 cleaned the
# 8-antenna PSF's sidelobes until the peak grew 13x: the divergence watcher rightly stops that)
SLOW = dict(niter=3000, size="1024 1024", scale="3asec", wsclean="mgain = 0.8", worker="max_concurrent = 2")


def launch(config_path, inputs, run_dir, tag_dir, ranks: int | None = 3) -> subprocess.Popen:
    """mpimager (under `mpirun -n RANKS`, or serially for None) in its own session, tagged."""
    cmd = [sys.executable, "-m", "mpimager", str(config_path), *map(str, inputs), "--run-dir", str(run_dir)]
    cmd = ["mpirun", "-n", str(ranks), *cmd] if ranks else cmd
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **tagged_env(tag_dir)})


def wait_for_wsclean(run_dir: Path, tag_dir: Path, proc, n=1, timeout=120) -> None:
    """Until `n` WSClean jobs have started and their WSClean processes run."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        starts = [r for r in read_records(run_dir) if r["event"] == "start" and r["job"].startswith("wsclean:")]
        running = [p for p in run_processes(tag_dir, 0) if " wsclean " in f" {p} " or "/wsclean " in p]
        if len(starts) >= n and len(running) >= n:
            time.sleep(1.0)  # well inside the jobs
            return
        time.sleep(0.05)
    raise AssertionError(f"{n} WSClean jobs never ran: {proc.poll()} {read_records(run_dir)[-3:]}")


def rank_pid(tag_dir: Path, rank: int) -> int:
    """The pid of MPI rank `rank` of the tagged run (its OMPI_COMM_WORLD_RANK)."""
    for entry in run_processes(tag_dir, 0):
        pid = int(entry.split()[0])
        if "-m mpimager" not in entry:
            continue
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return pid
    raise AssertionError(f"no rank {rank} in {run_processes(tag_dir, 0)}")


@pytest.mark.parametrize("target, code, sig", [
    ("mpirun", 1, signal.SIGTERM),  # Open MPI's mpirun, once signalled, exits 1 whatever its ranks return
    ("rank 0", 4, signal.SIGTERM), ("rank 1", 4, signal.SIGTERM), ("serial", 4, signal.SIGTERM),
    ("mpirun", 1, signal.SIGINT), ("serial", 4, signal.SIGINT), ("rank 2", 4, signal.SIGINT),
])
def test_a_signal_ends_the_run_cleanly_and_a_rerun_resumes(tmp_path, tiny_ms_dir, target, code, sig):
    ms = sorted(tiny_ms_dir.glob("obs*.ms"))
    c = config(tmp_path, **SLOW)
    run_dir, tag = tmp_path / "run", tmp_path
    ms_before = snapshot(tiny_ms_dir)
    proc = launch(c, ms, run_dir, tag, ranks=None if target == "serial" else 3)
    try:
        wait_for_wsclean(run_dir, tag, proc, n=1 if target == "serial" else 2)
        pid = {"mpirun": proc.pid, "serial": proc.pid}.get(target) or rank_pid(tag, int(target.split()[1]))
        os.kill(pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            kill_session(proc)
    assert proc.returncode == code, out[-2000:] + err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("mpimager:")]
    seen = "SIGTERM" if target == "mpirun" else sig.name  # Open MPI's mpirun ends its ranks with SIGTERM
    assert len(lines) == 1 and lines[0].startswith(f"mpimager: interrupted ({seen}"), err[-3000:]
    assert "Traceback" not in err
    assert run_processes(tag) == []
    records = read_records(run_dir)
    ends = {r["job"]: r["status"] for r in records if r["event"] == "end"}
    started = {r["job"] for r in records if r["event"] == "start"}
    assert started and all(ends[j] in ("ok", "interrupted") for j in started) and "interrupted" in ends.values()
    assert records[-1]["event"] == "run" and records[-1]["state"] == "interrupted"
    made = {os.path.basename(o["path"]) for r in records if r["event"] == "end" for o in r.get("outputs", ())}
    assert set(os.listdir(run_dir / "images")) == made if (run_dir / "images").exists() else not made
    assert not os.listdir(run_dir / "tmp")  # every staging removed
    assert snapshot(tiny_ms_dir) == ms_before
    status = run_cli("status", run_dir)
    assert "stopped early" in status.stdout and "interrupted" in status.stdout, status.stdout

    rerun_finishes(c, ms, run_dir, f"{sig.name} to {target}")


def rerun_finishes(c, ms, run_dir, after: str) -> None:
    """The same command again under `mpirun -n 3` finishes the run: exit 0 and all 15 products (timed, `after`
    naming the fault it follows)."""
    t0 = time.time()
    again = run_cli(c, *ms, "--run-dir", run_dir, mpi=3)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    print(f"re-run after {after}: {time.time() - t0:.1f} s")
    assert len(products(run_dir)) == 3 * 5


# ------------------------------------------------------------------------------------------------ journal


def test_a_damaged_journal_is_read_as_far_as_valid_with_a_warning_naming_each_line(tmp_path, tiny_ms_dir):
    ms = [tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms"]
    c = config(tmp_path)
    assert run_cli(c, *ms, "--run-dir", tmp_path / "run", mpi=3).returncode == 0
    journal = tmp_path / "run" / "journal.jsonl"
    n = len(journal.read_text().splitlines())
    with open(journal, "a") as f:  # a number, a record without its job, then a torn last line
        f.write('42\n{"event":"end","status":"ok","outputs":[]}\n{"event":"start","job":"wsc')
    before = snapshot(tmp_path / "run" / "images")

    status = run_cli("status", tmp_path / "run")
    assert status.returncode == 0, status.stderr
    said = status.stdout + status.stderr  # warnings go where the CLI's logging puts them
    assert f"{journal} line {n + 1} skipped: not a journal record" in said
    assert f"{journal} line {n + 2} skipped: a 'end' record without its 'job'" in said
    assert "Traceback" not in said and "finished" in status.stdout

    t0 = time.time()
    again = run_cli(c, *ms, "--run-dir", tmp_path / "run", mpi=3, env=tagged_env(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "0 to run, 2 already done" in again.stdout
    print(f"re-run after journal damage: {time.time() - t0:.1f} s")
    assert snapshot(tmp_path / "run" / "images") == before and run_processes(tmp_path) == []
    records = read_records(tmp_path / "run")  # the new run's records were not glued onto the fragment
    assert [r["state"] for r in records if r["event"] == "run"] == ["start", "end", "start", "end"]
    assert "finished" in run_cli("status", tmp_path / "run").stdout


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs mounted for the test (unmounted after it)."""
    mount = tmp_path / "small disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; the filler file's path."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0")
                f.flush()
        except OSError:
            pass
    return filler


@pytest.mark.root
def test_a_full_disk_under_the_run_directory_ends_the_run_with_one_line(tmp_path, tiny_ms_dir, small_tmpfs):
    ms = sorted(tiny_ms_dir.glob("obs*.ms"))
    run_dir = small_tmpfs / "run"
    c = config(tmp_path, out_dir=str(tmp_path / "images"), worker=f'temp_dir = "{tmp_path / "scratch"}"\n'
               + SLOW["worker"], **{k: v for k, v in SLOW.items() if k != "worker"})
    proc = launch(c, ms, run_dir, tmp_path)
    try:
        wait_for_wsclean(run_dir, tmp_path, proc, n=2)
        filler = fill(small_tmpfs)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            kill_session(proc)
    assert proc.returncode == 1, out[-2000:] + err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("mpimager:")]
    assert lines == [f"mpimager: error: cannot write the journal {run_dir}/journal.jsonl: No space left on device"], \
        err[-3000:]
    assert "Traceback" not in err and "MPI_ABORT" not in err
    assert run_processes(tmp_path) == []
    raw = (run_dir / "journal.jsonl").read_bytes()
    assert raw.endswith(b"\n") and not [line for line in raw.splitlines() if not valid_json(line)], raw[-600:]
    images = [p for p in snapshot(tmp_path / "images")] if (tmp_path / "images").exists() else []
    started = {r["job"].split(":")[1] for r in read_records(run_dir) if r["event"] == "start"}
    assert {os.path.basename(p).split("-")[0] for p in images} <= started  # only what the jobs that ran made
    assert not [p for p in images if ".mpimager-partial" in p]

    filler.unlink()
    rerun_finishes(c, ms, run_dir, "the full disk")


def test_a_file_system_without_locks_is_one_clear_error(tmp_path, tiny_ms_dir):
    site = tmp_path / "site"  # flock fails as on a Lustre mount without -o flock
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import errno, fcntl, os\n"
        "def flock(fd, op):\n"
        "    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))\n"
        "fcntl.flock = flock\n")
    before = snapshot(tiny_ms_dir)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    r = run_cli(config(tmp_path), tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run", mpi=3,
                env={"PYTHONPATH": path, **tagged_env(tmp_path)})
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    (line,) = error_lines(r)
    assert line == (f"mpimager: error: {tmp_path}/run/lock: the file system cannot lock files (flock: No locks "
                    f"available); put the run directory (--run-dir) on a file system that can, such as a local "
                    f"disk or a Lustre mount with -o flock")
    assert run_processes(tmp_path) == [] and snapshot(tiny_ms_dir) == before
    assert not (tmp_path / "run" / "journal.jsonl").exists()


# ------------------------------------------------------------------------------------------------ env_file, paths


def test_the_timeout_covers_env_file_and_its_background_processes_do_not_block(tmp_path, tiny_ms_dir):
    slow = tmp_path / "slow.sh"
    slow.write_text("sleep 30\n")
    c = config(tmp_path, worker=f'timeout = 5\nenv_file = "{slow}"')
    t0 = time.time()
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run", mpi=3, env=tagged_env(tmp_path))
    assert r.returncode == 1 and time.time() - t0 < 25, r.stdout[-2000:]
    end = [x for x in read_records(tmp_path / "run") if x["event"] == "end"][-1]
    assert f"env_file {slow}: sourcing it took more than 5 s" in end["error"]
    assert end["end"] - end["start"] < 8
    assert run_processes(tmp_path) == []

    daemon = tmp_path / "daemon.sh"
    daemon.write_text("sleep 300 &\nexport FROM_ENV_FILE=1\n")
    c = config(tmp_path, worker=f'env_file = "{daemon}"', file="d.toml")
    t0 = time.time()
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run2", mpi=3, env=tagged_env(tmp_path))
    assert r.returncode == 0 and time.time() - t0 < 60, r.stdout[-2000:] + r.stderr[-2000:]
    assert run_processes(tmp_path) == []


def test_spaces_in_the_run_directory_and_temp_dir_work(tmp_path, tiny_ms_dir):
    c = config(tmp_path, worker=f'temp_dir = "{tmp_path / "scratch dir"}"', file="c1.toml")
    r = run_cli(c, tiny_ms_dir / "obs0.ms", "--run-dir", tmp_path / "run dir", mpi=3)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(products(tmp_path / "run dir")) == 5
    r = run_cli(config(tmp_path, file="c2.toml"), tiny_ms_dir / "obs1.ms", "--run-dir", tmp_path / "other run", mpi=3)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(products(tmp_path / "other run")) == 5


# ------------------------------------------------------------------------------------------------ Slurm

TEMPLATE = Path(__file__).resolve().parents[1] / "slurm" / "mpimager.sbatch"


def slurm_out(tmp: Path, job_id: str) -> str:
    path = tmp / f"mpimager-{job_id}.out"
    return path.read_text() if path.exists() else ""


def sbatch_env(slurm_cluster, tag_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "PMIX_"))}
    return {**env, **slurm_cluster.env, "SRUN_MPI": "pmix", "MPIMAGER_PYTHON": sys.executable,
            **tagged_env(tag_dir), **extra}


@pytest.mark.slurm
def test_scancel_ends_the_run_cleanly_and_does_not_resubmit(slurm_cluster, tmp_path, tiny_ms_dir):
    ms = sorted(tiny_ms_dir.glob("obs*.ms"))
    c = config(tmp_path, **SLOW)
    run_dir = tmp_path / "run"
    job = slurm_cluster.run(["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem=0",
                             "--time=10", str(TEMPLATE), str(c), *map(str, ms), "--run-dir", str(run_dir)],
                            cwd=tmp_path, env=sbatch_env(slurm_cluster, tmp_path))
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    deadline = time.time() + 180
    while time.time() < deadline and not [r for r in read_records(run_dir) if r["event"] == "start"]:
        time.sleep(0.2)
    time.sleep(3)
    assert slurm_cluster.run(["scancel", job_id]).returncode == 0
    assert slurm_cluster.wait(job_id, timeout=120) == "CANCELLED"
    time.sleep(2)
    out = slurm_out(tmp_path, job_id)
    assert run_processes(tmp_path, settle=10) == [], out
    records = read_records(run_dir)
    assert records[-1]["event"] == "run" and records[-1]["state"] == "interrupted", (out, records[-1])
    assert "interrupted" in {r["status"] for r in records if r["event"] == "end"}
    assert "follow-on job" not in out and "mpimager: interrupted (SIGTERM" in out, out
    assert slurm_cluster.run(["squeue", "-h"]).stdout.strip() == ""  # nothing resubmitted
    t0 = time.time()
    again = run_cli(c, *ms, "--run-dir", run_dir, mpi=3)
    assert again.returncode == 0, again.stdout[-2000:]
    print(f"re-run after scancel: {time.time() - t0:.1f} s")


@pytest.mark.slurm
def test_near_the_time_limit_no_job_that_cannot_finish_starts_and_a_follow_on_job_resumes(slurm_cluster, tmp_path,
                                                                                       tiny_ms_dir):
    ms = sorted(tiny_ms_dir.glob("obs*.ms"))
    c = config(tmp_path, **{**SLOW, "size": "2048 2048", "scale": "1.5asec", "worker": ""},
               extra='[passes.a]\n[passes.b]\n[passes.c]\n')  # 9 x ~8 s
    run_dir = tmp_path / "run"
    t0 = time.time()
    job = slurm_cluster.run(["sbatch", "--parsable", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=0",
                             "--time=1", str(TEMPLATE), str(c), *map(str, ms), "--run-dir", str(run_dir)],
                            cwd=tmp_path, env=sbatch_env(slurm_cluster, tmp_path, MPIMAGER_RESUBMIT="8"))
    assert job.returncode == 0, job.stderr
    first = job.stdout.strip().split(";")[0]
    state = slurm_cluster.wait(first, timeout=180)
    out = slurm_out(tmp_path, first)
    assert state == "FAILED", out  # exit code 4: stopped early
    assert "mpimager: stopped early (the Slurm allocation ends at" in out and "run the same command" in out, out
    assert "follow-on job" in out, out
    records = read_records(run_dir)
    assert records[-1]["state"] == "stopped" and not [r for r in records if r.get("status") == "interrupted"]
    ends = [r for r in records if r["event"] == "end"]
    assert ends and max(r["end"] for r in ends) < records[0]["time"] + 60  # nothing ran past the limit
    chain = [first]
    while "follow-on job " in out and len(chain) < 9:  # each job resumes the run, until one finishes it
        chain.append(out.split("follow-on job ")[1].split()[0])
        state = slurm_cluster.wait(chain[-1], timeout=300)
        out = slurm_out(tmp_path, chain[-1])
    assert state == "COMPLETED" and len(chain) >= 2, (chain, out)
    print(f"{len(chain) - 1} follow-on job(s) finished the run {time.time() - t0:.1f} s after the first was submitted")
    assert len(products(run_dir)) == 9 * 5 and run_processes(tmp_path) == []


@pytest.mark.pure
def test_an_image_pull_on_a_file_system_without_locks_goes_on_unlocked(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    from mpimager.runtime import containers

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    pulled = containers.ensure_pulled("docker://example/wsclean:3.1", tmp_path / "cache",
                                      lambda uri, dest: dest.write_bytes(b"image"))
    assert pulled.read_bytes() == b"image" and "pulling without the lock" in caplog.text
    assert sorted(p.name for p in pulled.parent.iterdir()) == sorted([pulled.name, pulled.with_suffix(".lock").name])


def test_sigterm_to_mpirun_during_fixms_leaves_no_fixms_running_and_a_rerun_fixes_the_ms(tmp_path):
    from mpimager.testing import synth

    (ms,) = synth.make_askap_observation(tmp_path / "data", n_beams=1, n_ant=36, n_times=60, n_chan=16,
                                         chan_width_hz=4e6)  # ~1 s of FixMS
    c = write_config(tmp_path / "c.toml", CONFIG.format(name="beam$beam$", out_dir="$run_dir$/images", niter=10,
                                                        worker="", size="64 64", scale="20asec", wsclean="")
                     .replace("enabled = false", "enabled = true", 1))
    proc = launch(c, [ms], tmp_path / "run", tmp_path)
    from mpimager.inputs.msstate import work_dir

    marker = work_dir(ms)  # the working copy FixMS fixes before swapping it in
    try:
        deadline = time.time() + 120
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.005)
        assert marker.exists(), "FixMS never started"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            kill_session(proc)
    assert proc.returncode == 1, err[-3000:]  # mpirun's own code once signalled
    first = next(line for line in err.splitlines() if line.startswith("mpimager:"))
    assert first.startswith("mpimager: interrupted (SIGTERM"), err[-3000:]
    assert run_processes(tmp_path) == []
    ends = {r["job"]: r["status"] for r in read_records(tmp_path / "run") if r["event"] == "end"}
    assert ends.get(f"fixms:{ms.name}") in ("interrupted", "ok"), ends
    t0 = time.time()
    again = run_cli(c, ms, "--run-dir", tmp_path / "run", mpi=3)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    print(f"re-run after SIGTERM during FixMS: {time.time() - t0:.1f} s")
    assert (ms / "MPIMAGER_FIXMS.json").exists() and not marker.exists()
