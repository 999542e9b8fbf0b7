"""`mpimager sbatch` and the slurm/ templates: rendering (exact #SBATCH lines, safely quoted arguments),
sizing from the plan, one-line refusals, and scripts the real local Slurm accepts and runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ONE_PASS_NO_GATHER, ROOT, TINY_IMAGING, run_cli, snapshot, write_config
from fixtures.slurm import slurm_cluster  # noqa: F401  (session fixture)

from mpimager.planner import sbatch as slurm
from mpimager.planner.jobs import Job

TEMPLATE = ROOT / "slurm" / "mpimager.sbatch"
NODE = ["--cpus-per-node", "8", "--mem-per-node", "32G"]  # the node size, where sinfo has no cluster to ask
TEMPLATE_MP = ROOT / "slurm" / "mpimager-nodes-mpi.sbatch"

CONFIG = """
[fixms]
enabled = false
[worker]
max_concurrent = {mc}
""" + TINY_IMAGING + """channels-out = 4
join-channels = true
j = 1
""" + ONE_PASS_NO_GATHER


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def default_args(text: str) -> list[str]:
    """The arguments the script runs with when given none: its `set --` line run by bash."""
    line = next(x for x in text.splitlines() if x.startswith('[ "$#" -gt 0 ] || set --'))
    out = subprocess.run(["bash", "-c", line + '\nprintf "%s\\0" "$@"'], capture_output=True, text=True, check=True)
    return out.stdout.split("\0")[:-1]


def shell_value(text: str, name: str) -> str:
    """The value of a shell variable after the script's line that sets it, run by bash (env cleared)."""
    line = next(x for x in text.splitlines() if x.startswith(f"{name}=${{{name}:-"))
    out = subprocess.run(["bash", "-c", line + f'\nprintf "%s" "${name}"'], capture_output=True, text=True,
                         check=True, env={"PATH": os.environ["PATH"]})
    return out.stdout


# ---------------------------------------------------------------------------------------------------------
# rendering (pure)


@pytest.mark.pure
def test_render_fills_and_switches_on_exactly_the_directives_given():
    values = {"nodes": "3", "ntasks-per-node": "4", "cpus-per-task": "8", "mem": "40G", "time": "1-02:00:00",
              "partition": "work", "account": "ja3", "job-name": "mpimager-askap"}

    text = slurm.render(TEMPLATE.read_text(), values)

    assert directives(text) == [
        "#SBATCH --job-name=mpimager-askap",
        "#SBATCH --nodes=3",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=40G",
        "#SBATCH --time=1-02:00:00",
        "#SBATCH --output=mpimager-%j.out",
        "#SBATCH --partition=work",
        "#SBATCH --account=ja3",
    ]
    assert "##SBATCH --chdir=DIR" in text and "##SBATCH --nodelist=NODES" in text  # not given: still off


@pytest.mark.pure
def test_render_changes_nothing_but_the_placeholders():
    template = TEMPLATE.read_text()
    text = slurm.render(template, {"time": "00:45:00"})

    changed = [(a, b) for a, b in zip(template.splitlines(), text.splitlines()) if a != b]
    assert changed == [("#SBATCH --time=04:00:00", "#SBATCH --time=00:45:00")]
    assert len(text.splitlines()) == len(template.splitlines()) and text.endswith("\n")


def test_the_nodes_mpi_template_takes_one_task_per_whole_node_and_passes_nodes_mpi():
    text = slurm.render(TEMPLATE_MP.read_text(), {"nodes": "4", "time": "10:00:00", "NODES_MPI": "2"})

    assert directives(text) == [
        "#SBATCH --job-name=mpimager-mp",
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --exclusive",
        "#SBATCH --mem=0",
        "#SBATCH --time=10:00:00",
        "#SBATCH --output=mpimager-%j.out",
    ]
    assert shell_value(text, "NODES_MPI") == "2"
    assert '-m mpimager "$CONFIG" "$@" --nodes-mpi "$NODES_MPI"' in text


def test_arguments_and_shell_defaults_reach_the_script_verbatim_whatever_they_hold():
    tricky = ["/data/my config's.toml", "/data/a b/*.ms", "$(touch /tmp/pwned)", 'x"y\\z', "--run-dir", "/r d"]
    python = "/opt/py thon/{bin}/python3 'x' $HOME"

    text = slurm.render(TEMPLATE.read_text(), {"MPIMAGER_PYTHON": python}, args=tricky)

    assert default_args(text) == tricky
    assert shell_value(text, "MPIMAGER_PYTHON") == python
    assert not os.path.exists("/tmp/pwned")


def test_the_templates_refuse_to_run_without_a_config(tmp_path):
    for template in (TEMPLATE, TEMPLATE_MP):
        r = subprocess.run(["bash", str(template)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
        assert r.returncode == 2
        assert r.stderr.startswith("usage: sbatch mpimager")


@pytest.mark.pure
@pytest.mark.parametrize("values, message", [
    ({"qos": "high"}, "no place for '#SBATCH --qos'"),
    ({"WHATEVER": "x"}, "no place for 'WHATEVER=${WHATEVER:-...}'"),
    ({"job-name": "my job"}, "cannot go in a directive"),
    ({"partition": "a#b"}, "cannot go in a directive"),
    ({"MPIMAGER_PYTHON": "a\nb"}, "newline"),
])
def test_render_refuses_values_without_a_safe_place(values, message):
    with pytest.raises(slurm.TemplateError, match=re.escape(message)):
        slurm.render(TEMPLATE.read_text(), values)


@pytest.mark.pure
def test_render_refuses_arguments_for_a_template_without_their_line():
    with pytest.raises(slurm.TemplateError, match="default arguments"):
        slurm.render("#!/bin/bash\n#SBATCH --time=1\nsrun x\n", {"time": "2"}, args=["c.toml"])


# ---------------------------------------------------------------------------------------------------------
# sizing (pure)


@pytest.mark.pure
@pytest.mark.parametrize("seconds, text", [
    (0, "00:00:00"), (59.2, "00:01:00"), (1800, "00:30:00"), (36000, "10:00:00"), (86399, "23:59:59"),
    (86400, "1-00:00:00"), (3 * 86400 + 3661, "3-01:01:01"),
])
def test_format_time_is_slurms(seconds, text):
    assert slurm.format_time(seconds) == text
    assert slurm.valid_time(text)


@pytest.mark.pure
@pytest.mark.parametrize("text, ok", [("90", True), ("1:30:00", True), ("2-12", True), ("2-12:30", True),
                                      ("1h", False), ("12:00:00:00", False), ("", False), ("-1", False)])
def test_valid_time_accepts_sbatchs_forms_only(text, ok):
    assert slurm.valid_time(text) is ok


def wsclean_job(i, cost, host=None, depends=(), size=1024, n_out=4, pols=("I",)):
    argv = ("wsclean", "-size", str(size), str(size), "-channels-out", str(n_out), "-name", f"/o/b{i}", "x.ms")
    return Job(id=f"wsclean:b{i}", kind="wsclean", ms=("x.ms",), argv=argv, cost=cost, host=host,
               depends_on=tuple(depends), pols=pols)


@pytest.mark.pure
def test_a_small_plan_gets_the_minimum_time_and_the_config_s_layout():
    jobs = [wsclean_job(i, cost=10) for i in range(6)]

    values = slurm.size_from_plan(jobs, max_concurrent=3, cpus_per_task=4)

    # memory: (1 GiB + 16 B x 1024^2 pixels x 4 channels x 1 pol) x 3 jobs + 1 GiB = 4.2 GiB -> 5G
    assert values == {"nodes": "1", "ntasks-per-node": "3", "cpus-per-task": "4", "mem": "5G", "time": "00:30:00"}


@pytest.mark.pure
def test_the_time_limit_grows_with_the_work_and_shrinks_with_workers():
    # 40 jobs of cost 20000 at 0.12 s/unit (+5 s each) = 96200 s of work
    jobs = [wsclean_job(i, cost=20000) for i in range(40)]

    one = slurm.estimate_seconds(jobs, slots=1)
    eight = slurm.estimate_seconds(jobs, slots=8)

    assert one == pytest.approx(96200 + 2405)  # the work, plus the longest chain (one job)
    assert eight == pytest.approx(96200 / 8 + 2405)
    # 1.5 x 14430 s + 300 s = 21945 s, rounded up to the quarter hour: 06:15:00
    assert slurm.size_from_plan(jobs, 4, 8, nodes=2)["time"] == "06:15:00"
    assert slurm.size_from_plan(jobs, 1, 8)["time"] == "1-17:15:00"  # 1.5 x 98605 s + 300 s, rounded up


@pytest.mark.pure
def test_dependency_chains_bound_the_estimate_from_below():
    chain = [wsclean_job(0, cost=50000)] + [wsclean_job(i, cost=50000, depends=[f"wsclean:b{i - 1}"])
                                            for i in range(1, 4)]

    assert slurm.estimate_seconds(chain, slots=100) == pytest.approx(4 * 6005 + 4 * 6005 / 100)


@pytest.mark.pure
def test_jobs_pinned_to_hosts_give_the_node_count_and_list():
    jobs = [wsclean_job(i, cost=10, host=f"node00{i % 2 + 1}") for i in range(4)]

    values = slurm.size_from_plan(jobs, max_concurrent=2, cpus_per_task=8)

    assert values["nodes"] == "2" and values["nodelist"] == "node001,node002"
    assert "nodelist" not in slurm.size_from_plan(jobs, 2, 8, nodes=3)  # told how many: Slurm chooses


@pytest.mark.pure
def test_nodes_mpi_sizing_takes_whole_nodes():
    jobs = [wsclean_job(i, cost=10000) for i in range(4)]

    values = slurm.size_from_plan(jobs, max_concurrent=2, cpus_per_task=8, nodes_mpi=2)

    # each job holds both workers: 4 jobs x 1205 s x 2 ranks / 2 workers + 1205 s = 6025 s; x 1.5 + 300 s
    assert values == {"nodes": "2", "time": "02:45:00", "NODES_MPI": "2"}
    assert slurm.size_from_plan(jobs, 2, 8, nodes=4, nodes_mpi=2)["nodes"] == "4"


# ---------------------------------------------------------------------------------------------------------
# the command, without Slurm


@pytest.fixture
def setup(tmp_path, tiny_ms_dir):
    config = write_config(tmp_path / "c.toml", CONFIG.format(mc=2))
    return tmp_path, config, tiny_ms_dir


def test_mpimager_sbatch_prints_a_script_sized_from_the_plan_and_writes_nothing(setup):
    tmp, config, data = setup
    before = snapshot(tmp, data)

    r = run_cli("sbatch", config, data, "--run-dir", "run", "--cpus-per-task", "3", "--partition", "work", cwd=tmp)

    assert r.returncode == 0, r.stderr
    assert directives(r.stdout) == [
        "#SBATCH --job-name=mpimager-c",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --mem=4G",  # 2 jobs x (1 GiB + 64 x 64 x 4 channels x 16 B) + 1 GiB, rounded up
        "#SBATCH --time=00:30:00",
        "#SBATCH --output=mpimager-%j.out",
        "#SBATCH --partition=work",
        f"#SBATCH --chdir={tmp}",
    ]
    assert default_args(r.stdout) == [str(config), str(data), "--run-dir", str(tmp / "run")]
    assert shell_value(r.stdout, "MPIMAGER_PYTHON") == sys.executable
    assert re.search(r"3 jobs, estimated \d+ min on 2 workers; --time=00:30:00", r.stderr)
    assert snapshot(tmp, data) == before


def test_mpimager_sbatch_output_writes_an_executable_script_and_passes_run_options(setup):
    tmp, config, data = setup
    out = tmp / "jobs" / "image.sbatch"

    r = run_cli("sbatch", config, data / "obs0.ms", data / "obs1.ms", "--force", "--run-dir", tmp / "r", *NODE,
                "--output", out, "--time", "2-00:00:00", "--mem", "100G", cwd=tmp)

    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and os.access(out, os.X_OK)
    text = out.read_text()
    assert "#SBATCH --time=2-00:00:00" in text and "#SBATCH --mem=100G" in text
    assert default_args(text) == [str(config), str(data / "obs0.ms"), str(data / "obs1.ms"),
                                  "--run-dir", str(tmp / "r"), "--force"]


def test_mpimager_sbatch_nodes_mpi_renders_the_nodes_mpi_template(setup):
    tmp, config, data = setup

    r = run_cli("sbatch", config, data, "--nodes-mpi", "3", cwd=tmp)

    assert r.returncode == 0, r.stderr
    assert "#SBATCH --nodes=3" in directives(r.stdout) and "#SBATCH --exclusive" in directives(r.stdout)
    assert shell_value(r.stdout, "NODES_MPI") == "3"


@pytest.mark.parametrize("extra, message", [
    (["--time", "1h"], "mpimager: error: --time '1h': expected minutes, HH:MM:SS or D-HH:MM:SS"),
    (["--mem", "lots"], "mpimager: error: --mem 'lots': expected a size such as 64G, 512M or 0 (all of a node)"),
    (["--nodes", "0"], "mpimager: error: --nodes: expected an integer >= 1, got 0"),
    (["--nodes-mpi", "3", "--nodes", "2"], "mpimager: error: --nodes 2: fewer than --nodes-mpi 3 (each WSClean "
                                           "job runs over 3 nodes)"),
    (["--partition", "a b"], "c.toml"),  # replaced below: the template is named
    (["--template", "/nonexistent/t.sbatch"], "mpimager: error: /nonexistent/t.sbatch: cannot read the template "
                                             "(No such file or directory)"),
])
def test_bad_options_are_one_line_refusals_with_exit_2_and_nothing_written(setup, extra, message):
    tmp, config, data = setup
    before = snapshot(tmp, data)
    if extra[0] == "--partition":
        from mpimager.cli.sbatch import TEMPLATE as rendered  # the packaged template (slurm/ in a checkout)

        message = (f"mpimager: error: {rendered}: #SBATCH --partition: the value 'a b' cannot go in a directive "
                   "(whitespace, quotes, '#' or '\\')")

    r = run_cli("sbatch", config, data, "--submit", *NODE, *extra, cwd=tmp)

    assert r.returncode == 2
    assert r.stderr.strip() == message and r.stdout == ""
    assert snapshot(tmp, data) == before


def test_mpimager_sbatch_checks_the_inputs_as_a_run_does(setup):
    tmp, config, _ = setup

    r = run_cli("sbatch", config, tmp / "missing.ms", "--submit", cwd=tmp)

    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("mpimager: error: ") and "missing.ms" in r.stderr and len(r.stderr.splitlines()) == 1


def test_a_template_without_a_placeholder_is_named_in_the_refusal(setup):
    tmp, config, data = setup
    template = tmp / "site.sbatch"
    template.write_text('#!/bin/bash\n#SBATCH --time=1:00:00\n[ "$#" -gt 0 ] || set --\nsrun python -m mpimager "$@"\n')

    r = run_cli("sbatch", config, data, "--template", template, *NODE, cwd=tmp)

    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"mpimager: error: {template}: the template has no place for '#SBATCH --nodes'")


def test_a_failing_sbatch_is_a_job_error_with_its_command_and_output(setup):
    tmp, config, data = setup
    (tmp / "empty-slurm.conf").write_text("")
    env = {"SLURM_CONF": str(tmp / "empty-slurm.conf")}  # the real sbatch, with no cluster to talk to

    r = run_cli("sbatch", config, data, "--run-dir", tmp / "run", "--submit", *NODE, cwd=tmp, env=env)

    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"mpimager: error: sbatch --parsable {tmp / 'run' / 'mpimager.sbatch'} exited 1: ")
    assert "empty-slurm.conf" in line and "Unable to process configuration file" in line
    assert (tmp / "run" / "mpimager.sbatch").is_file()  # written before it was submitted: there to inspect


# ---------------------------------------------------------------------------------------------------------
# on the real local Slurm


@pytest.mark.slurm
@pytest.mark.parametrize("extra", [[], ["--nodes-mpi", "1"], ["--partition", "debug", "--time", "90"]],
                         ids=["default", "nodes-mpi", "partition-time"])
def test_mpimager_sbatch_output_passes_sbatch_test_only(slurm_cluster, setup, extra):
    tmp, config, data = setup
    script = tmp / "job.sbatch"
    r = run_cli("sbatch", config, data, "--output", script, *extra, cwd=tmp, env=slurm_cluster.env)
    assert r.returncode == 0, r.stderr

    test = slurm_cluster.run(["sbatch", "--test-only", str(script)], cwd=tmp)

    assert test.returncode == 0, test.stderr
    assert f"on nodes {slurm_cluster.node} in partition {slurm_cluster.partition}" in test.stderr


@pytest.mark.slurm
def test_a_submission_slurm_refuses_is_a_job_error_with_slurms_reason(slurm_cluster, setup):
    tmp, config, data = setup

    r = run_cli("sbatch", config, data, "--run-dir", tmp / "run", "--partition", "nosuch", "--submit",
                "--cpus-per-task", "1", "--mem", "1G", cwd=tmp,
                env=slurm_cluster.env)

    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1] == (
        f"mpimager: error: sbatch --parsable {tmp / 'run' / 'mpimager.sbatch'} exited 1: "
        "sbatch: error: invalid partition specified: nosuch "
        "sbatch: error: Batch job submission failed: Invalid partition name specified")


@pytest.mark.slurm
def test_mpimager_sbatch_submit_runs_the_plan_on_slurm(slurm_cluster, setup):
    tmp, config, data = setup

    r = run_cli("sbatch", config, data / "obs0.ms", "--run-dir", tmp / "run", "--cpus-per-task", "1", "--submit",
                cwd=tmp, env=slurm_cluster.env)

    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert job_id.isdigit() and f"submitted batch job {job_id}" in r.stderr
    assert slurm_cluster.wait(job_id, timeout=240) == "COMPLETED", (tmp / f"mpimager-{job_id}.out").read_text()
    out = (tmp / f"mpimager-{job_id}.out").read_text()
    assert "3 ranks (1 coordinator + 2 workers)" in out
    assert "1 done, 0 already done, 0 failed" in out
    assert (tmp / "run" / "images" / "obs0.I-MFS-image.fits").is_file()
