"""What a job whose ranks span several nodes (`--nodes-mpi N`) needs from every node, checked on each node
before its rank starts.

wsclean-mp's ranks share the job's temp dir: its first rank reorders the MSs into it and the other ranks read
those parts. Measured on the two-node test cluster: with `[worker] temp_dir = "/dev/shm"` (node-local) the rank
on the other node fails with "Error opening temporary data file '/dev/shm/...-part0000-I-b0.tmp'" while the
first rank waits for it forever. Making the directory on every node would only change the error: it must be one
directory that every node sees. So the leader writes a marker with a token into the job's temp dir (`mark`),
and each rank starts through this module (`wrap`): it checks that it sees that marker, the job's MSs and its
output directory, then execs the real command. When it does not, it prints one line (starting with `PREFIX`)
naming the node, the path and its file system, and exits `EXIT_NODE_CHECK`: the launcher ends the whole step
(srun --kill-on-bad-exit, mpirun's default) and the job fails with that line as its reason.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence

MARKER = ".mpimager-leader"          # in the job's temp dir: the token the leader wrote
PREFIX = "mpimager node check: "     # the first words of a failed check's line
EXIT_NODE_CHECK = 2
MEMORY_FILE_SYSTEMS = ("tmpfs", "ramfs")  # local to each node by nature


def node_name() -> str:
    """Slurm's name of this node inside a job step, else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def mark(temp_dir: str) -> str:
    """Write the marker into `temp_dir` (made by the leader for this attempt); return its token."""
    token = f"{node_name()}:{os.getpid()}:{time.time_ns()}"
    with open(os.path.join(temp_dir, MARKER), "w") as f:
        f.write(token)
    return token


def wrap(command: Sequence[str], temp_dir: str, token: str, paths: Sequence[str]) -> list[str]:
    """`command` run on each rank after the check of `temp_dir` (its marker holds `token`) and of `paths`.

    Parameters: the rank's argv; the job's temp dir; the token `mark` returned; paths every rank reads or
    writes (MSs, the output directory)."""
    return [sys.executable, "-m", "mpimager.runtime.multinode", "--temp-dir", temp_dir, "--token", token,
            *(f"--path={p}" for p in paths), "--", *command]


def file_system(path: str) -> str:
    """The type of the file system `path` (or its nearest existing parent) is on, from /proc/self/mounts."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


def problem(temp_dir: str, token: str, paths: Sequence[str]) -> str | None:
    """Why this node cannot run its rank of the job (one line), or None: `temp_dir` must hold the marker with
    `token`, and every one of `paths` must exist here."""
    marker = os.path.join(temp_dir, MARKER)
    try:
        with open(marker) as f:
            seen = f.read()
    except OSError as exc:
        seen = None
        why = "it does not exist here" if isinstance(exc, FileNotFoundError) else exc.strerror
    else:
        why = "here it is another directory of the same path"
    if seen != token:
        leader = token.split(":")[0]
        local = file_system(temp_dir)
        kind = f" ({local}, local to each node)" if local in MEMORY_FILE_SYSTEMS else f" ({local})"
        return (f"{PREFIX}on {node_name()}, the job's temp dir {temp_dir}{kind} is not the one its first rank made "
                f"on {leader}: {why}. A job over several nodes needs a temp dir every node sees: set [worker] "
                f"temp_dir to a shared file system (the default is RUN_DIR/tmp)")
    for path in paths:
        if not os.path.exists(path):
            return f"{PREFIX}on {node_name()}, {path} does not exist: every node of a job must see its paths"
    return None


def refuse_node_local_temp_dirs(jobs: Sequence, nodes: int) -> None:
    """Before any job: an InputError when jobs over several ranks would keep their temp dir on a memory file
    system (local to each node) while the ranks are on several nodes.

    Parameters: the planned jobs (`nranks`, `temp_dir`, `id`); how many nodes the run's ranks are on (Slurm's
    SLURM_JOB_NUM_NODES; 1 outside Slurm, where the launch's check on each node still stops such a job)."""
    from mpimager.errors import InputError

    if nodes < 2:
        return
    for job in jobs:
        if job.nranks > 1 and job.temp_dir:
            kind = file_system(os.path.dirname(job.temp_dir))
            if kind in MEMORY_FILE_SYSTEMS:
                raise InputError(
                    f"temp dir {os.path.dirname(job.temp_dir)} (of job {job.id}) is on {kind}, local to each node, "
                    f"but the {job.nranks} ranks of a --nodes-mpi job on {nodes} nodes share it: set [worker] "
                    "temp_dir to a file system every node sees (the default is RUN_DIR/tmp)")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mpimager.runtime.multinode --temp-dir DIR --token T [--path P ...] -- COMMAND...` with
    `argv` (None: sys.argv): exec COMMAND when this node passes the check, else print why and return
    EXIT_NODE_CHECK."""
    parser = argparse.ArgumentParser(prog="python -m mpimager.runtime.multinode")
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    found = problem(args.temp_dir, args.token, args.path)
    if found:
        print(found, file=sys.stderr, flush=True)
        return EXIT_NODE_CHECK
    sys.stdout.flush()
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
