"""Show the jobs of a run, going on or finished: `mpimager status RUN_DIR`.

Reads RUN_DIR/journal.jsonl (safe while the run writes it) and prints the run's state and a table of
its jobs: state (done, failed, skipped, running, interrupted, pending), host, rank, duration, retries,
and the log of each job that ran, then each failure with its error and log (rules: mpimager.rundir.status).
`--json` prints the same as JSON. Exit code 0, or 2 if RUN_DIR is not a run directory; with `--check`, 1 when
the run is not running and some job is not done (failed, interrupted, pending: a resume is needed).
"""

from __future__ import annotations

import sys

from mpimager.errors import EXIT_JOB_FAILED


def add_arguments(parser):
    """Add the `mpimager status` arguments to `parser` (main.build_parser adds the output options)."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --run-dir of a run")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the run has ended with a job failed or not run (for scripts)")


def run(args) -> int:
    """Print the status of `args.run_dir` (table, or JSON with --json); exit code 0, or with --check 1 when
    the run is not running and some job is not done or skipped."""
    from mpimager.rundir import status

    st = status.read_status(args.run_dir)
    sys.stdout.write(status.dumps(st) + "\n" if args.json else status.format_table(st))
    sys.stdout.flush()
    if args.check and st.state != status.RUN_RUNNING and any(j.state not in ("done", "skipped") for j in st.jobs):
        return EXIT_JOB_FAILED
    return 0
