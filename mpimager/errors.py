"""The one exception hierarchy of mpimager and the exit codes it maps to.

Everything a user can fix (config, inputs, options, paths) is an `InputError` and ends the
run with exit code 2 before any job starts. A job that fails at run time is not an exception
at the top level: it is a result, and the run ends with exit code 1.
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BUG = 3  # an unexpected exception: a bug to report (under MPI every rank is ended with it)
EXIT_INTERRUPTED = 4  # stopped early (a signal, the Slurm allocation's end): re-run the same command to resume


class MpimagerError(Exception):
    """Base class: the message is a single line a user can act on."""

    exit_code = EXIT_JOB_FAILED


class InputError(MpimagerError):
    """Bad input found before any job started (config, MS, paths, options)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A config file is malformed or holds an invalid value."""


class WSCleanOptionError(ConfigError):
    """A [wsclean] key is not an option of the WSClean that will run, or its value is invalid."""


class MSError(InputError):
    """A path given as a MeasurementSet is missing, unreadable or not an MS."""


class JobError(MpimagerError):
    """A job failed at run time; carries the log path when there is one, and what the job's runner knows of
    the failed attempts (`result`: a `runtime.runner.JobResult`) for the journal."""

    def __init__(self, message: str, log: str | os.PathLike[str] | None = None, result: object | None = None):
        super().__init__(message)
        self.log = log
        self.result = result


class EnvFileTimeout(JobError):
    """Sourcing [worker] env_file took longer than the time a job has."""


class ReportedElsewhere(MpimagerError):
    """An error another rank reports (rank 0 prints the line); this rank only leaves with the same code."""

    def __init__(self, exit_code: int):
        super().__init__(f"exit {exit_code} (reported by rank 0)")
        self.exit_code = exit_code


class Interrupted(MpimagerError):
    """The run was told to stop (SIGTERM, SIGINT, ...): what ran is ended and journaled as interrupted."""

    exit_code = EXIT_INTERRUPTED


class WatchAbort(JobError):
    """Raised by a line watcher to stop the process it watches; `reason` names why, `line` is the trigger."""

    reason = "aborted by watcher"

    def __init__(self, line: str = "", reason: str | None = None):
        self.line = line
        if reason is not None:
            self.reason = reason
        super().__init__(f"{self.reason}: {line.strip()}" if line else self.reason)
