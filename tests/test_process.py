"""mpimager.runtime.process: the one runner for external programs, and MPI env cleaning.

Every runner test starts real processes (the WSClean watcher's tests: tests/test_wsclean_watcher.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mpimager.errors import JobError
from mpimager.runtime.process import ProcessResult, mpi_clean_env, run
from mpimager.wsclean.watcher import Divergence

DATA = Path(__file__).parent / "data"
PY = sys.executable


def alive(pid: int) -> bool:
    """A process exists and is not a zombie (an orphan's zombie may wait for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] not in (b"Z", b"X")


def read_pid(path: Path, timeout: float = 10.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"no pid in {path}")


# --- running and logging ------------------------------------------------------------------------


def test_log_holds_the_complete_merged_output_and_the_watcher_sees_every_line(tmp_path):
    script = textwrap.dedent("""
        import sys
        for i in range(5000):
            (sys.stdout if i % 3 else sys.stderr).write(f"line {i} " + "x" * (i % 50) + "\\n")
            sys.stdout.flush(); sys.stderr.flush()
        sys.stdout.write("no newline at the end")
    """)
    seen = []
    result = run([PY, "-c", script], log=tmp_path / "logs" / "out.log", on_line=seen.append)

    expected = [f"line {i} " + "x" * (i % 50) for i in range(5000)] + ["no newline at the end"]
    assert result.ok and result.returncode == 0
    assert (tmp_path / "logs" / "out.log").read_text() == "\n".join(expected)
    assert seen == expected
    assert result.tail == tuple(expected[-20:])
    assert result.argv == (PY, "-c", script) and result.log == tmp_path / "logs" / "out.log"


def test_output_is_in_the_log_while_the_process_still_runs(tmp_path):
    log = tmp_path / "live.log"
    in_log_at_callback = []

    def on_line(line):
        in_log_at_callback.append(line in log.read_text())

    result = run(["sh", "-c", "echo first; sleep 0.3; echo second; sleep 0.3"], log=log, on_line=on_line)
    assert result.ok
    assert in_log_at_callback == [True, True]


def test_a_nonzero_exit_is_returned_not_raised(tmp_path):
    result = run(["sh", "-c", "echo working; echo 'it broke' >&2; exit 3"], log=tmp_path / "x.log")
    assert isinstance(result, ProcessResult)
    assert (result.returncode, result.ok, result.timed_out, result.error) == (3, False, False, None)
    assert result.tail == ("working", "it broke")
    assert "exit code 3: it broke" in result.summary()
    with pytest.raises(JobError, match="exit code 3") as exc:
        result.raise_for_failure()
    assert exc.value.log == tmp_path / "x.log"


def test_env_is_the_complete_child_environment_and_cwd_is_honoured(tmp_path):
    result = run([PY, "-c", "import os; print(sorted(k for k in os.environ if k != 'LC_CTYPE')); print(os.getcwd())"],
                 log=tmp_path / "env.log", env={"ONLY_THIS": "1", "PATH": os.environ["PATH"]}, cwd=tmp_path)
    assert result.ok
    assert result.tail == ("['ONLY_THIS', 'PATH']", str(tmp_path))


def test_log_is_truncated_unless_append(tmp_path):
    log = tmp_path / "a.log"
    run(["echo", "one"], log=log)
    run(["echo", "two"], log=log)
    assert log.read_text() == "two\n"
    run(["echo", "three"], log=log, append=True)
    assert log.read_text() == "two\nthree\n"


# --- could not start ------------------------------------------------------------------------------


def test_a_missing_program_is_a_one_line_joberror_naming_it(tmp_path):
    with pytest.raises(JobError) as exc:
        run(["wsclean-does-not-exist", "-size", "10", "10"], log=tmp_path / "m.log")
    message = str(exc.value)
    assert "wsclean-does-not-exist" in message and "\n" not in message
    assert exc.value.log == tmp_path / "m.log"
    assert (tmp_path / "m.log").read_text() == f"[mpimager] {message}\n"


@pytest.mark.pure
def test_an_unwritable_log_is_a_joberror_naming_it(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(JobError, match="cannot write its log .*file/x.log"):
        run(["true"], log=tmp_path / "file" / "x.log")


def test_a_missing_working_directory_is_named(tmp_path):
    with pytest.raises(JobError, match="working directory .*nowhere does not exist"):
        run(["true"], log=tmp_path / "m.log", cwd=tmp_path / "nowhere")


def test_a_file_that_is_not_executable_is_named(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(JobError, match=r"script\.sh: permission denied"):
        run([str(script)], log=tmp_path / "m.log")


# --- stopping: timeout, watcher abort, leftovers --------------------------------------------------------


def test_timeout_kills_a_child_that_ignores_sigterm(tmp_path):
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    result = run(["sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; echo started; while :; do sleep 0.1; done"],
                 log=tmp_path / "t.log", timeout=1.0, kill_grace=0.5)
    elapsed = time.monotonic() - start
    assert result.timed_out and not result.ok
    assert result.returncode == -9  # SIGTERM was ignored: SIGKILL after the grace period
    assert not alive(read_pid(pidfile))
    assert elapsed < 10
    assert "timed out" in result.summary()
    assert (tmp_path / "t.log").read_text().startswith("started\n")


def test_timeout_kills_grandchildren_too(tmp_path):
    pidfile = tmp_path / "grandchild"
    result = run(["sh", "-c", f"sleep 100 & echo $! > {pidfile}; wait"], log=tmp_path / "g.log", timeout=0.5)
    assert result.timed_out
    grandchild = read_pid(pidfile)
    assert not alive(grandchild), f"grandchild {grandchild} survived"


def test_a_background_leftover_is_killed_when_the_child_exits(tmp_path):
    # The grandchild keeps the output pipe open: run must not wait 100 s, nor leave it running.
    pidfile = tmp_path / "leftover"
    start = time.monotonic()
    result = run(["sh", "-c", f"sleep 100 & echo $! > {pidfile}; echo done; exit 0"], log=tmp_path / "l.log")
    assert result.ok and result.tail == ("done",)
    assert time.monotonic() - start < 10
    assert not alive(read_pid(pidfile))


def test_watcher_abort_kills_the_process_group_and_is_reported(tmp_path):
    pidfile = tmp_path / "pid"
    script = f"import os,time\nopen({str(pidfile)!r},'w').write(str(os.getpid()))\n" \
             "i = 0\nwhile True:\n    print('step', i, flush=True); i += 1; time.sleep(0.01)"
    calls = []

    def watcher(line):
        calls.append(line)
        if line == "step 5":
            raise Divergence(line)

    result = run(["sh", "-c", f"{PY} -c \"$0\"; echo never", script], log=tmp_path / "w.log", on_line=watcher)
    assert isinstance(result.error, Divergence) and result.error.line == "step 5"
    assert not result.ok and not result.timed_out and result.returncode != 0
    assert calls[-1] == "step 5"  # the watcher is not called again once it aborted
    assert not alive(read_pid(pidfile))
    text = (tmp_path / "w.log").read_text()
    assert "step 5\n" in text and "[mpimager] stopped: WSClean deconvolution diverged: step 5" in text
    assert "diverged: step 5" in result.summary()


def test_a_failing_watcher_propagates_after_the_process_is_dead(tmp_path):
    pidfile = tmp_path / "pid"

    def broken(line):
        raise ValueError("bug in watcher")

    with pytest.raises(ValueError, match="bug in watcher"):
        run(["sh", "-c", f"echo $$ > {pidfile}; echo hello; sleep 100"], log=tmp_path / "b.log", on_line=broken)
    assert not alive(read_pid(pidfile))


# --- MPI launch environment ------------------------------------------------------------------------------

# Captured from `mpirun -n 1 env` (Open MPI 4.1.4) with scripts/env.sh sourced, abridged.
RANK_ENV = {
    "HOME": "/root", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2",
    "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMPI_MCA_btl": "self,tcp",
    "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMMAND": "env",
    "OMPI_MCA_ess": "^singleton", "OMPI_MCA_ess_base_jobid": "3340632065", "OMPI_MCA_orte_hnp_uri": "33406...",
    "OMPI_MCA_pmix": "^s1,s2,cray,isolated", "OMPI_MCA_initial_wdir": "/tmp", "OMPI_MCA_mpi_oversubscribe": "1",
    "OMPI_MCA_shmem_RUNTIME_QUERY_hint": "mmap", "OMPI_FILE_LOCATION": "/tmp/ompi.x",
    "PMIX_RANK": "0", "PMIX_NAMESPACE": "3340632065", "PMIX_SERVER_URI4": "pmix-server.1;tcp4://127.0.0.1:1",
    "OPAL_PREFIX": "/usr", "PRTE_MCA_x": "1", "PMI_RANK": "0", "HYDRA_CONTROL_FD": "5",
}


@pytest.mark.pure
def test_mpi_clean_env_drops_launch_state_and_keeps_user_settings():
    assert mpi_clean_env(RANK_ENV) == {
        "HOME": "/root", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2",
        "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMPI_MCA_btl": "self,tcp",
    }


NESTED = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from mpi4py import MPI
    from mpimager.runtime.process import run, mpi_clean_env
    comm = MPI.COMM_WORLD
    out = Path(sys.argv[1])
    inner = ["mpirun", "-n", "2", sys.executable, "-c",
             "from mpi4py import MPI; c = MPI.COMM_WORLD; r = c.gather(c.Get_rank()); "
             "c.Get_rank() or print('inner ranks', r, 'of', c.Get_size(), flush=True)"]  # one writer: no interleaving
    env = mpi_clean_env(os.environ) if sys.argv[2] == "clean" else dict(os.environ)
    rc = None
    if comm.Get_rank() == 0:
        rc = run(inner, log=out / "inner.log", env=env, timeout=120).returncode
    comm.Barrier()
    if comm.Get_rank() == 0:
        print("inner rc", rc, flush=True)
""")


@pytest.mark.parametrize("mode", ["clean", "inherited"])
def test_mpirun_from_inside_an_mpi_rank_needs_mpi_clean_env(tmp_path, mode):
    script = tmp_path / "nested.py"
    script.write_text(NESTED)
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}
    outer = subprocess.run(["mpirun", "-n", "2", PY, str(script), str(tmp_path), mode], env=env,
                           capture_output=True, text=True, timeout=180)
    assert outer.returncode == 0, outer.stderr[-2000:]
    inner_log = (tmp_path / "inner.log").read_text()
    if mode == "clean":
        assert "inner rc 0" in outer.stdout
        assert [line for line in inner_log.splitlines() if line.startswith("inner")] == ["inner ranks [0, 1] of 2"]
    else:  # the measured failure that mpi_clean_env exists for (see notes/wsclean-mp.md)
        assert "inner rc 0" not in outer.stdout
