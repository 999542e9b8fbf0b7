"""Every path of a run directory, written once: what a run, `mpimager status` and the report read and write.

    RUN_DIR/journal.jsonl     the append-only record of every job (rundir.journal)
    RUN_DIR/lock              held for a run's whole life (rundir.journal.RunLock)
    RUN_DIR/logs/ID.log       each job's output (ID.attemptN.log for retries); ID made file-safe
    RUN_DIR/tmp/              each WSClean job's own -temp-dir (the default of [worker] temp_dir)
    RUN_DIR/manifest.json     jobs, products and provenance at the end of a run
    RUN_DIR/report.html       the run's report, and RUN_DIR/report/ its images
    RUN_DIR/mpimager.sbatch   the batch script `mpimager sbatch --submit` wrote
Pure: nothing here touches the disk.
"""

from __future__ import annotations

import os
import re

JOURNAL = "journal.jsonl"
LOCK = "lock"
LOGS = "logs"
TMP = "tmp"
MANIFEST = "manifest.json"
REPORT_HTML = "report.html"
REPORT_DIR = "report"
SBATCH_SCRIPT = "mpimager.sbatch"

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def log_path(run_dir: str | os.PathLike, job_id: str, attempt: int = 1) -> str:
    """The log of attempt `attempt` (1, 2, ...) of job `job_id` in `run_dir`."""
    safe = _UNSAFE.sub("_", job_id)
    return os.path.join(run_dir, LOGS, f"{safe}.log" if attempt == 1 else f"{safe}.attempt{attempt}.log")
