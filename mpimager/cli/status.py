"""Show the jobs of a run, going on or finished: `mpimager status RUN_DIR`.

Reads RUN_DIR/journal.jsonl (safe while the run writes it) and prints the run's state and a table of
its jobs: state (done, failed, skipped, running, interrupted, pending), host, rank, duration, retries,
and the log of each job that ran, then each failure with its error and log (rules: mpimager.rundir.status).
`--json` prints the same as JSON. Exit code 0, or 2 if RUN_DIR is not a run directory.
"""

from __future__ import annotations

import sys


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --run-dir of a run")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def run(args) -> int:
    from mpimager.rundir import status

    st = status.read_status(args.run_dir)
    sys.stdout.write(status.dumps(st) + "\n" if args.json else status.format_table(st))
    sys.stdout.flush()
    return 0
