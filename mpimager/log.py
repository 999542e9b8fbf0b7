"""mpimager's logging: the one `mpimager` logger, the command line's console handler and the run log.

Library use (`import mpimager`): the `mpimager` logger holds only a NullHandler, so mpimager is silent
unless the application configures logging (`logging.getLogger("mpimager")` is the logger to configure).
The command line (`configure_cli`) prints the lines as they always were, `[HH:MM:SS] message` on stdout;
`-v` adds debug lines, `-q` keeps only warnings, errors and the run's summary table (logger
`mpimager.summary`, printed without a time stamp), `--log-file FILE` also writes every line, dated, to FILE.
Each run also writes its rank 0's lines to RUN_DIR/mpimager.log (`run_log`), whatever the console shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LOGGER = "mpimager"
#: the end-of-run summary table: kept by -q
SUMMARY = "mpimager.summary"
#: RUN_DIR/RUN_LOG holds rank 0's lines of every run of that directory
RUN_LOG = "mpimager.log"
LINE_FORMAT, LINE_TIME = "[%(asctime)s] %(message)s", "%H:%M:%S"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def logger(name: str = LOGGER) -> logging.Logger:
    """The `mpimager` logger, or its child `name` (a module's `__name__`)."""
    return logging.getLogger(name)


class _Console(logging.StreamHandler):
    """stdout as it is at each line (tests and notebooks swap sys.stdout); -q lets the summary through."""

    def __init__(self, threshold: int):
        super().__init__()
        self.threshold = threshold
        self.addFilter(lambda r: r.levelno >= self.threshold or r.name == SUMMARY)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


class _LineFormatter(logging.Formatter):
    """`[HH:MM:SS] message`; the summary table as it is."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage() if record.name == SUMMARY else super().format(record)


def configure_cli(verbosity: int = 0, log_file: str | os.PathLike | None = None) -> None:
    """The command line's handlers. `verbosity`: -1 quiet (warnings, errors, summary), 0 normal, 1 debug;
    `log_file`: also write every line (debug included when verbosity is 1) to this file."""
    log = logger()
    for h in [h for h in log.handlers if getattr(h, "_mpimager_cli", False)]:
        log.removeHandler(h)
        h.close()
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    console = _Console(level)
    console.setFormatter(_LineFormatter(LINE_FORMAT, LINE_TIME))
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        file = logging.FileHandler(log_file, delay=True)  # opened by the first line (rank 0's)
        file.setLevel(min(level, logging.INFO))
        file.setFormatter(logging.Formatter(FILE_FORMAT))
        handlers.append(file)
    for h in handlers:
        h._mpimager_cli = True  # type: ignore[attr-defined]
        log.addHandler(h)
    log.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)


class _ToRoot(logging.Handler):
    """Hands records to the root logger's handlers at the root's level (used while `run_log` raises ours)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


@contextlib.contextmanager
def run_log(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Append every INFO (and higher) line of the `mpimager` logger to RUN_DIR/mpimager.log while it runs.

    `run_dir`: an existing run directory. In library use an unconfigured `mpimager` logger is raised to
    INFO for the run, and the application's own (root) handlers still see only what its root level lets
    through: the run log never makes a silent library talk."""
    log = logger()
    path = Path(run_dir) / RUN_LOG
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    saved = log.level, log.propagate
    forward = None
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
        if log.propagate:
            log.propagate = False
            forward = _ToRoot(logging.getLogger().getEffectiveLevel())
            log.addHandler(forward)
    log.addHandler(handler)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()
        if forward is not None:
            log.removeHandler(forward)
        log.setLevel(saved[0])
        log.propagate = saved[1]
