"""`[worker] env_file`: sourced by bash before each job, `~` and `$VAR` expanded, its path passed as an argument
(never pasted into shell code), and a failing source is that job's error naming the file. Proved with a
`wsclean` wrapper that only an env file puts on PATH: it records each call, then runs the real WSClean."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ONE_PASS_NO_GATHER, ROOT, TINY_IMAGING, run_cli, write_config
from fixtures.slurm import slurm_cluster  # noqa: F401  (session fixture)

from mpimager.errors import JobError
from mpimager.runtime.runner import job_env

TEMPLATE = ROOT / "slurm" / "mpimager.sbatch"

CONFIG = """
[fixms]
enabled = false
[worker]
env_file = "{env_file}"
max_concurrent = 2
retries = 0
""" + TINY_IMAGING + ONE_PASS_NO_GATHER


def wrapper_env_file(directory: Path, calls: Path, name="env.sh") -> Path:
    """An env file putting a `wsclean` on PATH that appends its arguments to `calls` and execs the real one."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    wsclean = bin_dir / "wsclean"
    wsclean.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        printf '%s\\n' "$*" >> {calls}
        exec /usr/bin/wsclean "$@"
        """))
    wsclean.chmod(0o755)
    env_file = directory / name
    env_file.write_text(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"\n')
    return env_file


def run(tmp: Path, env_file_setting: str, inputs, env=None, mpi=None):
    config = write_config(tmp / "c.toml", CONFIG.format(env_file=env_file_setting))
    return run_cli(config, *inputs, "--run-dir", tmp / "run", cwd=tmp, env=env, mpi=mpi, timeout=300)


def manifest_statuses(run_dir: Path) -> dict[str, str]:
    return {j["id"]: j["status"] for j in json.loads((run_dir / "manifest.json").read_text())["jobs"]}


# ---------------------------------------------------------------------------------------------------------
# job_env: the environment a job gets


def test_job_env_holds_what_the_file_exports_and_drops_nothing_else(tmp_path):
    env_file = tmp_path / "env.sh"
    env_file.write_text("FROM_FILE='a b'\nexport PATH=/opt/x/bin:$PATH\n")  # set -a: plain assignments export too

    env = job_env(str(env_file), base={"PATH": "/usr/bin:/bin", "KEEP": "1"})

    assert env["FROM_FILE"] == "a b" and env["PATH"] == "/opt/x/bin:/usr/bin:/bin" and env["KEEP"] == "1"


@pytest.mark.parametrize("body, reason", [
    ("export A=1\nexit 3\n", "(exit 3)"),
    ("export A=1\nfalse\n", "(exit 1)"),
    ("export A=1\nsource /nonexistent/site-setup.sh\n",
     "({env_file}: line 2: /nonexistent/site-setup.sh: No such file or directory)"),
])
def test_job_env_refuses_an_env_file_that_fails_naming_it(tmp_path, body, reason):
    env_file = tmp_path / "env.sh"
    env_file.write_text(body)

    with pytest.raises(JobError) as err:
        job_env(str(env_file), base={"PATH": "/usr/bin:/bin"})

    assert str(err.value) == f"env_file {env_file}: sourcing it failed {reason.format(env_file=env_file)}"


def test_job_env_refuses_a_missing_env_file_naming_it(tmp_path):
    with pytest.raises(JobError) as err:
        job_env(str(tmp_path / "absent.sh"), base={"PATH": "/usr/bin:/bin"})
    assert str(err.value) == (f"env_file {tmp_path}/absent.sh: sourcing it failed "
                              f"(mpimager-env-file: line 1: {tmp_path}/absent.sh: No such file or directory)")


# ---------------------------------------------------------------------------------------------------------
# whole runs


@pytest.mark.parametrize("setting", ["~/.mpimager-test-env.sh", "$MPIMAGER_TEST_HOME/.mpimager-test-env.sh"])
def test_an_env_file_given_with_tilde_or_a_variable_is_sourced_before_each_job(tmp_path, tiny_ms_dir, setting):
    home = tmp_path / "home"
    calls = tmp_path / "calls.txt"
    wrapper_env_file(home, calls, name=".mpimager-test-env.sh")
    inputs = [tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms"]

    r = run(tmp_path, setting, inputs, env={"HOME": str(home), "MPIMAGER_TEST_HOME": str(home)})

    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 2  # one call per job, each through the wrapper the env file put first on PATH
    names = sorted(Path(line.split(" -name ")[1].split()[0]) for line in lines)  # each job's staging prefix
    assert [n.name for n in names] == ["obs0.I", "obs1.I"]
    assert all(n.parent.name == "stage" and tmp_path / "run" / "tmp" in n.parents for n in names)
    assert (tmp_path / "run" / "images" / "obs0.I-image.fits").is_file()


def test_an_env_file_path_with_quotes_spaces_and_dollars_is_sourced_not_run_as_code(tmp_path, tiny_ms_dir):
    odd = tmp_path / "it's a \"dir\" $(touch INJECTED) `touch INJECTED2`"
    calls = tmp_path / "calls.txt"
    env_file = wrapper_env_file(odd, calls)
    setting = str(env_file).replace("\\", "\\\\").replace('"', '\\"')  # a TOML basic string

    r = run(tmp_path, setting, [tiny_ms_dir / "obs0.ms"])

    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert len(calls.read_text().splitlines()) == 1
    assert not list(tmp_path.rglob("INJECTED*")) and not list(Path.cwd().glob("INJECTED*"))


@pytest.mark.parametrize("body", ["export A=1\nexit 3\n", "source /nonexistent/site-setup.sh\n"],
                         ids=["exit-3", "missing-source"])
def test_a_failing_env_file_is_refused_before_any_job_naming_the_file(tmp_path, tiny_ms_dir, body):
    env_file = tmp_path / "site env.sh"
    env_file.write_text(body)
    inputs = [tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms"]

    r = run(tmp_path, str(env_file), inputs, mpi=3)

    assert r.returncode == 2, r.stdout[-2000:] + r.stderr
    assert f"[worker] env_file: env_file {env_file}: sourcing it failed" in r.stderr
    assert "FAILED" not in r.stdout and not (tmp_path / "run").exists()  # no job started, nothing written


# ---------------------------------------------------------------------------------------------------------
# under the real local Slurm (sbatch slurm/mpimager.sbatch)


def sbatch_run(cluster, tmp: Path, env_file_setting: str, inputs, exports=()):
    config = write_config(tmp / "c.toml", CONFIG.format(env_file=env_file_setting))
    export = ",".join(["ALL", f"MPIMAGER_PYTHON={sys.executable}", *exports])
    job = cluster.sbatch(TEMPLATE, str(config), *map(str, inputs), "--run-dir", str(tmp / "run"), cwd=tmp,
                         options=["--mem=2G", "--cpus-per-task=1", f"--export={export}"])
    state = cluster.wait(job, timeout=300)
    return job, state, (tmp / f"mpimager-{job}.out").read_text()


@pytest.mark.slurm
def test_under_slurm_a_failing_env_file_fails_the_slurm_job_before_any_job(slurm_cluster, tmp_path, tiny_ms_dir):
    env_file = tmp_path / "site.sh"
    env_file.write_text("module_that_does_not_exist_here 2>/dev/null\nexit 3\n")

    job, state, out = sbatch_run(slurm_cluster, tmp_path, str(env_file), [tiny_ms_dir / "obs0.ms"])

    assert state == "FAILED", out[-2000:]
    assert slurm_cluster.job(job)["ExitCode"] == "2:0"  # mpimager's exit code 2 (bad input), through srun
    assert f"[worker] env_file: env_file {env_file}: sourcing it failed (exit 3)" in out
    assert "FAILED wsclean" not in out


@pytest.mark.slurm
def test_under_slurm_an_env_file_under_home_is_sourced(slurm_cluster, tmp_path, tiny_ms_dir):
    home = tmp_path / "home"
    calls = tmp_path / "calls.txt"
    wrapper_env_file(home, calls, name="mpimager-env.sh")

    _job, state, out = sbatch_run(slurm_cluster, tmp_path, "~/mpimager-env.sh",
                                 [tiny_ms_dir / "obs0.ms", tiny_ms_dir / "obs1.ms"], exports=[f"HOME={home}"])

    assert state == "COMPLETED", out[-2000:]
    assert len(calls.read_text().splitlines()) == 2
    assert "2 done, 0 already done, 0 failed" in out
