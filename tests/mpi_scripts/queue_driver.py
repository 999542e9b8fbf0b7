"""Runs a task list through mpimager.queue.run_tasks on every rank; rank 0 prints one JSON document.

Usage: mpirun -n N python queue_driver.py TASKS.json [--max-per-host K]

TASKS.json is a list of objects with the Task fields (id, deps, cost, host, nranks, slot_bound) and a
payload that says what the task does: {"sleep": seconds, "fail": "message", "spin": seconds,
"result": "unpicklable"}. Each task returns where it ran (rank, host, its group) and its pid.
The JSON printed by rank 0: {"size", "outcomes" (completion order), "events", "cpu" (CPU seconds each rank
spent inside run_tasks, by rank)}.
"""

import argparse
import dataclasses
import json
import os
import resource
import sys
import time

from mpimager import queue as mpiqueue
from mpimager.queue import Task


def execute(task, placement):
    payload = task.payload
    if payload.get("spin"):
        end = time.time() + payload["spin"]
        while time.time() < end:
            pass
    time.sleep(payload.get("sleep", 0.0))
    if payload.get("fail"):
        raise ValueError(payload["fail"])
    if payload.get("result") == "unpicklable":
        return lambda: None
    return {"rank": mpiqueue.rank(), "host": mpiqueue.host_name(), "pid": os.getpid(),
            "ranks": list(placement.ranks), "hosts": list(placement.hosts)}


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tasks")
    parser.add_argument("--max-per-host", type=int, default=None)
    args = parser.parse_args()
    tasks = []
    if mpiqueue.rank() == 0:
        with open(args.tasks) as f:
            tasks = [Task(id=t["id"], payload=t.get("payload", {}), deps=tuple(t.get("deps", ())),
                          cost=t.get("cost", 1.0), host=t.get("host"), nranks=t.get("nranks", 1),
                          slot_bound=t.get("slot_bound", True)) for t in json.load(f)]
    events = []
    before = cpu_seconds()
    outcomes = mpiqueue.run_tasks(tasks, execute, max_per_host=args.max_per_host, on_event=events.append)
    cpu = mpiqueue.world().gather(cpu_seconds() - before, root=0)
    if mpiqueue.rank() == 0:
        json.dump({"size": mpiqueue.size(),
                   "outcomes": [dataclasses.asdict(o) for o in outcomes],
                   "events": [{k: v for k, v in dataclasses.asdict(e).items() if k != "outcome"} for e in events],
                   "cpu": cpu}, sys.stdout, default=repr)
        print()


if __name__ == "__main__":
    main()
