"""Start-up the way the mpimager command does it: rank 0 plans inside root_first, then every rank runs the queue.

Usage: mpirun -n N python root_first_driver.py MODE OUTDIR, MODE one of
  ok      the plan succeeds: rank 0 gets it, the workers get None, then three tasks run;
  bad     the plan raises ConfigError (bad user input);
  bug     the plan raises KeyError (a bug, not an MpimagerError);
  dupes   the plan succeeds but the task list has a duplicate id (run_tasks refuses it on every rank).
Like mpimager/cli.py, an MpimagerError becomes the exit code and "mpimager: error: MESSAGE" on stderr, but
printed by rank 0 only (every rank raises the same error, so the user reads it once); any other exception
exits 3 after "crash: TYPE: MESSAGE" (rank 0). Before exiting, every rank writes OUTDIR/rank<R>.json:
{"rank", "exit", "plan", "ran", "error"} where error is "TYPE: MESSAGE" or null (files, because mpirun may
splice the stdout lines of different ranks together).
"""

import json
import sys
import time
from pathlib import Path

from mpimager import queue as mpiqueue
from mpimager.errors import ConfigError, MpimagerError
from mpimager.queue import Task


def make_plan(mode):
    time.sleep(1.0)  # reading the config and the MSs takes a while; the workers wait meanwhile
    if mode == "bad":
        raise ConfigError("/data/run.toml: [wsclean] niter must be an integer, not 'many'")
    if mode == "bug":
        raise KeyError("spw")
    ids = ["a", "b", "a"] if mode == "dupes" else ["a", "b", "c"]
    return {"tasks": ids}


def main(mode, outdir):
    plan, ran, code, error = None, None, 0, None
    try:
        plan = mpiqueue.root_first(lambda: make_plan(mode))
        tasks = [Task(i, None) for i in plan["tasks"]] if plan else []
        outcomes = mpiqueue.run_tasks(tasks, lambda task, placement: mpiqueue.rank())
        if outcomes is not None:
            ran = {o.task_id: o.status for o in outcomes}
    except MpimagerError as exc:
        error, code = f"{type(exc).__name__}: {exc}", exc.exit_code
        if mpiqueue.rank() == 0:
            print(f"mpimager: error: {exc}", file=sys.stderr)
    except Exception as exc:
        error, code = f"{type(exc).__name__}: {exc}", 3
        if mpiqueue.rank() == 0:
            print(f"crash: {error}", file=sys.stderr)
    report = {"rank": mpiqueue.rank(), "exit": code, "plan": plan, "ran": ran, "error": error}
    (Path(outdir) / f"rank{mpiqueue.rank()}.json").write_text(json.dumps(report))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
