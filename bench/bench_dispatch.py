"""Dispatch overhead: mpimager's MPI queue against mpi4py.futures on the same jobs, in the same mpirun.

    python bench/bench_dispatch.py [--ranks 4] [--jobs 2000] [--repeat 3]

Launches `mpirun -n RANKS` itself (with scripts/env.sh) on this file in --inner mode. There, for each kind of
job (trivial: return at once; 1 ms: sleep 1 ms), every rank runs the same jobs through
`mpimager.queue.run_tasks` and through `mpi4py.futures.MPICommExecutor` (one `submit` per job, rank 0 as
the client in both, so both have RANKS-1 workers), REPEAT times each, alternating. Rank 0 prints rows of
JSON; this script prints the medians as a table:

- wall: from before the call (start-up included) to the last result on rank 0;
- per job: wall / jobs;
- overhead/job: (wall - ideal) / jobs, ideal = jobs * job time / workers (what perfect dispatch would take);
- rank-0 CPU: CPU seconds rank 0 used during the run (a waiting master should use little).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"trivial": 0.0, "1 ms": 0.001}


def job(seconds):
    if seconds:
        time.sleep(seconds)
    return seconds


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ours(comm, jobs, seconds):
    from mpimager.queue import Task, run_tasks

    tasks = [Task(f"j{i}", seconds) for i in range(jobs)] if comm.Get_rank() == 0 else []
    outcomes = run_tasks(tasks, lambda task, placement: job(task.payload), comm=comm)
    if outcomes is not None and (len(outcomes) != jobs or any(o.status != "ok" for o in outcomes)):
        raise RuntimeError("mpimager queue: a job did not succeed")


def run_futures(comm, jobs, seconds):
    from concurrent.futures import wait

    from mpi4py.futures import MPICommExecutor

    with MPICommExecutor(comm, root=0) as executor:
        if executor is not None:
            futures = [executor.submit(job, seconds) for _ in range(jobs)]
            wait(futures)
            if any(f.exception() is not None for f in futures):
                raise RuntimeError("mpi4py.futures: a job did not succeed")


def inner(jobs, repeat):
    from mpi4py import MPI

    from mpimager import queue as mpiqueue

    comm = MPI.COMM_WORLD
    for kind, seconds in KINDS.items():
        for _ in range(repeat):
            for name, run in (("mpimager.queue", run_ours), ("mpi4py.futures MPICommExecutor", run_futures)):
                mpiqueue.barrier(comm)
                began, cpu = time.perf_counter(), cpu_seconds()
                run(comm, jobs, seconds)
                wall, cpu = time.perf_counter() - began, cpu_seconds() - cpu
                if comm.Get_rank() == 0:
                    print(json.dumps({"queue": name, "job": kind, "seconds": seconds, "jobs": jobs,
                                      "ranks": comm.Get_size(), "wall": wall, "cpu0": cpu}), flush=True)


def outer(ranks, jobs, repeat):
    command = ["mpirun", "--oversubscribe", "-n", str(ranks), sys.executable, str(Path(__file__).resolve()),
               "--inner", "--jobs", str(jobs), "--repeat", str(repeat)]
    env = dict(os.environ)
    proc = subprocess.run(["bash", "-c", '. "$0" && exec "$@"', str(ROOT / "scripts" / "env.sh"), *command],
                          capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        sys.exit(f"bench_dispatch: mpirun failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    print(f"{jobs} jobs over {ranks} ranks (1 master + {ranks - 1} workers), {os.cpu_count()} cores, "
          f"median of {repeat}")
    header = f"{'queue':<32} {'job':<8} {'wall s':>8} {'per job ms':>11} {'overhead/job ms':>16} {'rank-0 CPU s':>13}"
    print(header)
    print("-" * len(header))
    for kind, seconds in KINDS.items():
        for name in ("mpimager.queue", "mpi4py.futures MPICommExecutor"):
            mine = [r for r in rows if r["queue"] == name and r["job"] == kind]
            wall = statistics.median(r["wall"] for r in mine)
            cpu = statistics.median(r["cpu0"] for r in mine)
            ideal = jobs * seconds / (ranks - 1)
            print(f"{name:<32} {kind:<8} {wall:>8.3f} {1e3 * wall / jobs:>11.3f} "
                  f"{1e3 * (wall - ideal) / jobs:>16.3f} {cpu:>13.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.jobs, args.repeat)
    else:
        outer(args.ranks, args.jobs, args.repeat)


if __name__ == "__main__":
    main()
