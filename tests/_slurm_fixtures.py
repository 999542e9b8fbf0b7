"""Real Slurm clusters on this one machine, for the tests: one node (session fixture `slurm_cluster`) and
two nodes in their own namespaces (session fixture `slurm_multinode`, tests marked `multinode`).

Owns: installing Slurm/munge if missing (scripts/install-slurm.sh), a private munged on its own socket,
a slurm.conf generated in a scratch directory (free ports, state/spool/pid/log paths all inside it),
slurmctld + slurmd started as root, and stopping every daemon by its pid file at the end.

Never touches a system munged or slurm (own socket, own SLURM_CONF, own ports), so a cluster started by a
concurrent test run does not get in the way; the daemons of a run that was killed before its teardown are
stopped (by their pid files) when the next cluster starts.

Use in a test module:

    from _slurm_fixtures import slurm_cluster  # noqa: F401  (the fixture)

    @pytest.mark.slurm
    def test_x(slurm_cluster, tmp_path):
        job = slurm_cluster.sbatch(script_path, cwd=tmp_path)
        assert slurm_cluster.wait(job, timeout=60) == "COMPLETED"

`slurm_cluster.env` is the environment for any Slurm command (SLURM_CONF set, inherited SLURM_* removed).

The multi-node cluster (../shared/notes/slurm-multinode.md): nodes n1 and n2, each a `slurmd -N NAME` in its
own UTS and mount namespace, so each has its own host name and private /tmp and /dev/shm, while the rest of the
file system is shared (as a cluster shares its parallel file system). Its directory is under /var/tmp (each
node's /tmp is its own); `multinode_tmp` is a per-test directory every node sees; `local_disk` is one path that
shows each node its own directory (a node-local disk on ext4, as /scratch on many clusters). It coexists with a one-node
cluster (its own munged socket, free ports) and skips when unshare is not permitted:

    @pytest.mark.multinode
    def test_y(slurm_multinode, multinode_tmp):
        job = slurm_multinode.sbatch(script, cwd=multinode_tmp, options=["--nodes=2"])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO / "scripts" / "install-slurm.sh"

PARTITION = "debug"
NODE_CPUS = 8  # more than the machine has, on purpose: SlurmdParameters=config_overrides accepts it
MULTINODE_NAMES = ("n1", "n2")
MULTINODE_CPUS = 2  # per node of the multi-node cluster (--exclusive jobs there run WSClean on all of them)
MULTINODE_ROOT = Path("/var/tmp")  # not /tmp: each node of the multi-node cluster has a private /tmp
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


class SlurmStartError(RuntimeError):
    """The local cluster could not be started; the message names the log to read."""


@dataclass(frozen=True)
class SlurmCluster:
    """A running local cluster: the env to use for Slurm commands, its scratch dir and job helpers."""

    scratch: Path
    conf: Path
    node: str
    partition: str
    cpus: int                      # CPUs of each node
    env: Mapping[str, str]
    nodes: tuple[str, ...] = ()    # every node's name, in order (the one-node cluster: (node,))
    local_disk: Path | None = None  # multi-node: a path each node has its own directory at (ext4, like /scratch)

    def run(self, argv: Sequence[str], cwd: Path | None = None, timeout: float = 60,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command (e.g. a Slurm client) with the cluster env (plus `env`), capturing text output."""
        full_env = dict(self.env)
        full_env.update(env or {})
        return subprocess.run(list(argv), cwd=cwd, env=full_env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def on_node(self, node: str, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command inside a node's namespaces (multi-node cluster: what that node sees, e.g. its /dev/shm)."""
        pid = _pid_from_file(self.scratch / "run" / f"slurmd.{node}.pid")
        if pid is None:
            raise RuntimeError(f"no slurmd runs for node {node} (pid file {self.scratch / 'run'})")
        return self.run(["nsenter", "-t", str(pid), "-m", "-u", *argv], timeout=timeout)

    def sbatch(self, script: Path, *args: str, cwd: Path, options: Sequence[str] = ()) -> str:
        """Submit `script` (with script arguments `args`) from `cwd`; return the job id.

        `options` are sbatch options placed before the script (e.g. ["-n", "3"]). The job's
        default output file is `cwd/slurm-<id>.out`.
        """
        argv = ["sbatch", "--parsable", *options, str(script), *args]
        result = self.run(argv, cwd=cwd)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed (exit {result.returncode}): {result.stderr.strip()}")
        return result.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict:
        """The fields of `scontrol show job -o <id>` as a dict ({} when Slurm no longer knows the job)."""
        result = self.run(["scontrol", "show", "job", "-o", str(job_id)])
        if result.returncode != 0:
            return {}
        return _parse_fields(result.stdout)

    def wait(self, job_id: str, timeout: float = 120) -> str:
        """Wait until the job ends; return its final state (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...).

        Reads `scontrol show job`, and the job-completion log once the job is purged.
        Raises TimeoutError naming the last state seen.
        """
        deadline = time.monotonic() + timeout
        state = "UNKNOWN"
        while True:
            info = self.job(job_id)
            if info:
                state = info.get("JobState", "UNKNOWN")
            else:
                state = self._completed_state(job_id) or state
            if state in TERMINAL_STATES:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Slurm job {job_id} still {state} after {timeout:.0f} s "
                    f"(slurmctld log: {self.scratch / 'log' / 'slurmctld.log'})"
                )
            time.sleep(0.3)

    def _completed_state(self, job_id: str) -> str | None:
        jobcomp = self.scratch / "log" / "jobcomp.txt"
        if not jobcomp.exists():
            return None
        for line in jobcomp.read_text().splitlines():
            fields = _parse_fields(line)
            if fields.get("JobId") == str(job_id):
                return fields.get("JobState")
        return None


def _parse_fields(text: str) -> dict:
    """`Key=Value Key=Value` (one line, as scontrol -o and jobcomp/filetxt write) into a dict."""
    fields = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True,
                            check=False)
    return "install ok installed" in result.stdout


def ensure_slurm_installed() -> str | None:
    """Install Slurm + munge when missing; return None when usable, else the reason it is not."""
    if all(_installed(p) for p in ("slurmctld", "slurmd", "slurm-client", "munge")) \
            and Path("/etc/munge/munge.key").exists():
        return None
    if os.geteuid() != 0:
        return "Slurm/munge are not installed and installing them needs root"
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False,
                            timeout=900)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return f"Slurm could not be installed by {INSTALL_SCRIPT}: " + " | ".join(tail)
    return None


def slurm_conf_text(scratch: Path, node: str, ctld_port: int, slurmd_port: int,
                    munge_socket: Path, nodes: Sequence[tuple[str, int]] = ()) -> str:
    """The slurm.conf of a cluster whose every path is under `scratch`.

    With `nodes` empty: one node, `node` itself, on `slurmd_port`. Else one `slurmd -N NAME` per (NAME, port)
    of `nodes`, all on this machine (`node` is its host name): spool, pid and log paths per node (%n)."""
    if nodes:
        daemon_paths = f"""\
SlurmdSpoolDir={scratch}/spool/%n
SlurmdPidFile={scratch}/run/slurmd.%n.pid
SlurmdLogFile={scratch}/log/slurmd.%n.log
"""
        node_lines = "".join(f"NodeName={name} NodeHostname={node} NodeAddr=127.0.0.1 Port={port} "
                             f"CPUs={MULTINODE_CPUS} RealMemory=4000 State=UNKNOWN\n" for name, port in nodes)
        names = ",".join(name for name, _ in nodes)
    else:
        daemon_paths = f"""\
SlurmdPort={slurmd_port}
SlurmdSpoolDir={scratch}/spool
SlurmdPidFile={scratch}/run/slurmd.pid
SlurmdLogFile={scratch}/log/slurmd.log
"""
        node_lines = f"NodeName={node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory=8000 State=UNKNOWN\n"
        names = node
    return f"""\
ClusterName=mpimager-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={scratch}/state
SlurmctldPidFile={scratch}/run/slurmctld.pid
SlurmctldLogFile={scratch}/log/slurmctld.log
{daemon_paths}\
JobCompType=jobcomp/filetxt
JobCompLoc={scratch}/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
PlugStackConfig={scratch}/plugstack.conf
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
{node_lines}\
PartitionName={PARTITION} Nodes={names} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


DAEMON_NAMES = ("slurmd", "slurmctld", "munged")


def _pid_from_file(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is alive and is the daemon the file is named after
    (`slurmd.pid`, `slurmd.n1.pid`, `slurmctld.pid`, `munged.pid`)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    daemon = pid_file.name.split(".")[0]
    return pid if daemon not in DAEMON_NAMES or comm == daemon else None


def _stop_by_pid_file(pid_file: Path, timeout: float = 15) -> None:
    """SIGTERM the daemon named in `pid_file`, wait for it to go, SIGKILL it if it will not."""
    pid = _pid_from_file(pid_file)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if _pid_from_file(pid_file) != pid:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _daemon_pid_files(scratch: Path) -> list[Path]:
    """A cluster's pid files in stopping order: every slurmd, then slurmctld, then munged."""
    run = scratch / "run"
    return [*sorted(run.glob("slurmd*.pid")), run / "slurmctld.pid", scratch / "munge" / "munged.pid"]


def stop_orphaned_clusters(roots: Sequence[Path] = (Path(tempfile.gettempdir()), MULTINODE_ROOT)) -> None:
    """Stop the daemons of clusters whose test process died without tearing them down (killed run).

    A cluster's scratch dir records its owner's pid; while the owner lives (a concurrent run) it is left alone.
    """
    for owner_file in (f for root in roots for f in root.glob("mpimager-slurm-*/owner.pid")):
        scratch = owner_file.parent
        try:
            owner = int(owner_file.read_text().split()[0])
            os.kill(owner, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except (OSError, ValueError, IndexError):
            continue
        for pid_file in _daemon_pid_files(scratch):
            _stop_by_pid_file(pid_file)
        shutil.rmtree(scratch, ignore_errors=True)


def _reap(pid: int) -> None:
    """Collect `pid` if it is our child (slurmctld/slurmd run under Popen), so it does not stay a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_for(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = ""
            if log.exists():
                tail = " | ".join(log.read_text(errors="replace").splitlines()[-5:])
            raise SlurmStartError(f"{what} not ready after {timeout:.0f} s (log {log}): {tail}")
        time.sleep(0.2)


class _LocalCluster:
    """Starts and stops the daemons; `cluster` is the value the fixture yields.

    `nodes` empty: one slurmd for this machine itself. Else one `slurmd -N NAME` per name, each in its own UTS
    and mount namespace (host name NAME, private tmpfs /tmp and /dev/shm), the cluster's directory under
    MULTINODE_ROOT so that every node sees it."""

    def __init__(self, nodes: Sequence[str] = ()) -> None:
        # Not under pytest's tmp dirs: those are 0700 root, and munged runs as the munge user.
        root = MULTINODE_ROOT if nodes else None
        self.scratch = Path(tempfile.mkdtemp(prefix="mpimager-slurm-mn-" if nodes else "mpimager-slurm-", dir=root))
        self.scratch.chmod(0o755)
        (self.scratch / "owner.pid").write_text(f"{os.getpid()}\n")
        self.host = socket.gethostname().split(".")[0]
        self.nodes = tuple(nodes)
        self.munge_dir = self.scratch / "munge"
        self.munge_socket = self.munge_dir / "munge.socket.2"
        self.conf = self.scratch / "slurm.conf"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        env["SLURM_CONF"] = str(self.conf)
        self.env = env
        self.cluster: SlurmCluster | None = None

    def start(self) -> SlurmCluster:
        for sub in ("state", "spool", "run", "log", "work"):
            (self.scratch / sub).mkdir()
        for name in self.nodes:
            (self.scratch / "spool" / name).mkdir()
            (self.scratch / "disks" / name).mkdir(parents=True)
        if self.nodes:
            (self.scratch / "local").mkdir()
        (self.scratch / "plugstack.conf").write_text("")
        self._start_munge()
        ports = [(name, _free_port()) for name in self.nodes]
        self.conf.write_text(
            slurm_conf_text(self.scratch, self.host, _free_port(), _free_port(), self.munge_socket, ports)
        )
        log = self.scratch / "log"
        # -D keeps them in the foreground as our children; they still write their pid files.
        self._daemon(["slurmctld", "-D", "-i", "-f", str(self.conf)], log / "slurmctld.stderr")
        _wait_for(lambda: self._ctld_up(), 30, "slurmctld", log / "slurmctld.log")
        if not self.nodes:
            self._daemon(["slurmd", "-D", "-f", str(self.conf)], log / "slurmd.stderr")
        for name in self.nodes:  # unshare execs bash, bash execs slurmd: the child we start is the slurmd
            self._daemon(["unshare", "--uts", "--mount", "--propagation", "private", "bash", "-c", NODE_SCRIPT,
                          "mpimager-node", name, str(self.conf), str(self.scratch / "disks" / name),
                          str(self.scratch / "local")], log / f"slurmd.{name}.stderr")
        names = self.nodes or (self.host,)
        _wait_for(lambda: self._node_states(names) == ["idle"] * len(names), 60, "slurmd (nodes idle in sinfo)",
                  log / (f"slurmd.{names[-1]}.log" if self.nodes else "slurmd.log"))
        self.cluster = SlurmCluster(scratch=self.scratch, conf=self.conf, node=names[0], partition=PARTITION,
                                    cpus=MULTINODE_CPUS if self.nodes else NODE_CPUS, env=dict(self.env),
                                    nodes=names, local_disk=self.scratch / "local" if self.nodes else None)
        return self.cluster

    def _daemon(self, argv: Sequence[str], stderr: Path) -> None:
        with open(stderr, "w") as err:
            subprocess.Popen(list(argv), env=self.env, stdout=err, stderr=subprocess.STDOUT, start_new_session=True)

    def _start_munge(self) -> None:
        self.munge_dir.mkdir()
        shutil.chown(self.munge_dir, "munge", "munge")
        self.munge_dir.chmod(0o755)
        result = subprocess.run(
            ["runuser", "-u", "munge", "--", "munged",
             f"--socket={self.munge_socket}",
             f"--pid-file={self.munge_dir / 'munged.pid'}",
             f"--log-file={self.munge_dir / 'munged.log'}",
             f"--seed-file={self.munge_dir / 'munged.seed'}"],
            capture_output=True, text=True, check=False, timeout=30,
        )
        if result.returncode != 0:
            raise SlurmStartError(f"munged failed to start (exit {result.returncode}): {result.stderr.strip()}")
        _wait_for(self.munge_socket.exists, 10, "munged socket", self.munge_dir / "munged.log")

    def _ctld_up(self) -> bool:
        return subprocess.run(["scontrol", "ping"], env=self.env, capture_output=True, text=True,
                              check=False).stdout.find("UP") >= 0

    def _node_states(self, names: Sequence[str]) -> list[str]:
        result = subprocess.run(["sinfo", "-h", "-N", "-n", ",".join(names), "-o", "%T"], env=self.env,
                                capture_output=True, text=True, check=False)
        return result.stdout.split()

    def stop(self, keep_scratch: bool = False) -> None:
        if (self.scratch / "run" / "slurmctld.pid").exists():
            # End what is still running, so no slurmstepd outlives the cluster.
            subprocess.run(["scancel", "--full", "--partition", PARTITION], env=self.env,
                           capture_output=True, check=False, timeout=30)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True,
                                     text=True, check=False).stdout.strip()
                if not out:
                    break
                time.sleep(0.3)
        for pid_file in _daemon_pid_files(self.scratch):
            _stop_by_pid_file(pid_file)
        if not keep_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


# A node of the multi-node cluster, run by bash inside `unshare --uts --mount`: $1 the node name, $2 slurm.conf,
# $3 the node's own directory, bound at $4 (a node-local disk: the same path shows each node its own directory).
NODE_SCRIPT = """set -e
hostname "$1"
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount --bind "$3" "$4"
exec slurmd -D -N "$1" -f "$2"
"""


def _cluster_fixture(nodes: Sequence[str] = ()):
    """Start a cluster (one node, or `nodes`), yield it, stop every daemon by its pid file."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster runs slurmd/slurmctld as root and munged as munge: needs root")
    reason = ensure_slurm_installed()
    if reason:
        pytest.skip(reason)
    stop_orphaned_clusters()
    local = _LocalCluster(nodes)
    try:
        cluster = local.start()
    except BaseException:
        local.stop(keep_scratch=True)  # keep the logs the error names
        raise
    try:
        yield cluster
    finally:
        local.stop()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-node Slurm cluster (SlurmCluster); skips when Slurm cannot be installed."""
    yield from _cluster_fixture()


def unshare_refused() -> str | None:
    """None when this process may make UTS and mount namespaces (and mount tmpfs in them), else why not."""
    try:
        result = subprocess.run(["unshare", "--uts", "--mount", "--propagation", "private", "bash", "-c",
                                 "hostname mpimager-probe && mount -t tmpfs tmpfs /tmp"],
                                capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare cannot run: {exc}"
    if result.returncode != 0:
        return f"unshare --uts --mount is not permitted here: {result.stderr.strip() or result.returncode}"
    return None


@pytest.fixture(scope="session")
def slurm_multinode():
    """A running two-node Slurm cluster (nodes n1, n2: distinct host names, private /tmp and /dev/shm each,
    everything else shared); skips when Slurm cannot be installed or namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("the multi-node Slurm cluster makes namespaces and runs slurmd as root: needs root")
    reason = unshare_refused()
    if reason:
        pytest.skip(f"the multi-node Slurm cluster needs its own namespace per node: {reason}")
    yield from _cluster_fixture(MULTINODE_NAMES)


@pytest.fixture
def multinode_tmp(slurm_multinode, request) -> Path:
    """A fresh directory for one test that every node of the multi-node cluster sees (not under /tmp)."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)[:80]
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=slurm_multinode.scratch / "work"))
    path.chmod(0o755)
    return path
