"""Command line: parses arguments, dispatches to a command, and turns errors into exit codes.

`mpimager CONFIG [INPUTS...]` runs (or, with --dry-run, plans) an imaging run; it has the shape of
NenuFAR's `imgpipe` (underscore spellings of its flags are accepted). The other commands are
`mpimager COMMAND ...` with COMMAND one of `SUBCOMMANDS` (listed by `mpimager --help`). Every command takes
-v/-q/--log-file (mpimager.log). This is the only place where an exception becomes an exit code; missing
arguments print the command's usage line, then the one-line error (any other bad argument: the line only).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys
from pathlib import Path

from mpimager import __version__
from mpimager.errors import EXIT_BUG, InputError, MpimagerError, ReportedElsewhere
from mpimager.log import configure_cli

# command name -> module providing add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "run": "mpimager.cli.run",
    "reduce": "mpimager.cli.reduce",
    "mosaic": "mpimager.cli.mosaic",
    "status": "mpimager.cli.status",
    "report": "mpimager.cli.report",
    "sbatch": "mpimager.cli.sbatch",
    "demo": "mpimager.cli.demo",
    "synth": "mpimager.cli.synth",
    "init": "mpimager.cli.init",
    "config": "mpimager.cli.config",
}

_UNDERSCORE_FLAGS = {"--combine_obs_ids": "--combine-obs-ids", "--nodes_mpi": "--nodes-mpi",
                     "--dry_run": "--dry-run", "--run_dir": "--run-dir"}


class UsageError(InputError):
    """A command line argparse refused: its usage line goes before the error."""

    def __init__(self, message: str, usage: str):
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ours: usage, one line, exit code 2, through `main`."""

    def error(self, message):
        # missing arguments get the usage line first; a bad value stays a one-line error
        usage = self.format_usage() if message.startswith("the following arguments are required") else ""
        raise UsageError(message if self.prog == "mpimager" else f"{self.prog}: {message}", usage)


def _commands_epilog() -> str:
    lines = ["commands (mpimager COMMAND --help for each):"]
    for name, module in SUBCOMMANDS.items():
        if name != "run":  # each module's docstring read from its source: --help imports none of them
            spec = importlib.util.find_spec(module)
            source = Path(spec.origin).read_text() if spec and spec.origin else ""
            doc = (ast.get_docstring(ast.parse(source)) or "").strip().splitlines()[0]
            lines.append(f"  {name:<8} {doc.split(': `')[0].rstrip('.')}")
    return "\n".join(lines)


def _normalise(argv):
    out = []
    for a in argv:
        name, eq, value = a.partition("=")
        out.append(_UNDERSCORE_FLAGS.get(name, name) + eq + value)
    return out


def build_parser(command: str) -> argparse.ArgumentParser:
    """The argument parser of `command` (a key of SUBCOMMANDS): the output options, the command's own
    arguments, and the command's `run` as the `_run` default."""
    module = importlib.import_module(SUBCOMMANDS[command])
    prog = "mpimager" if command == "run" else f"mpimager {command}"
    parser = _Parser(prog=prog, description=(module.__doc__ or "").strip().splitlines()[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter, conflict_handler="resolve")
    parser.add_argument("--version", action="version", version=f"mpimager {__version__}")
    logs = parser.add_argument_group("output")
    logs.add_argument("-v", "--verbose", action="count", default=0, help="also print debug lines")
    logs.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the summary")
    logs.add_argument("--log-file", metavar="FILE", help="also write every line, dated, to FILE")
    module.add_arguments(parser)
    if command == "run":
        parser.epilog = _commands_epilog()
    parser.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    """`mpimager [COMMAND] ...` with `argv` (None: sys.argv[1:]): parse, run the command, return its exit
    code. The one place where an exception becomes an exit code: an MpimagerError gives its own (the error
    printed in one line), a bug gives EXIT_BUG (its traceback printed, every rank ended under MPI)."""
    argv = _normalise(list(sys.argv[1:] if argv is None else argv))
    command = "run"
    if argv and argv[0] in SUBCOMMANDS:
        command, argv = argv[0], argv[1:]
    try:
        args = build_parser(command).parse_args(argv)
        configure_cli(-1 if args.quiet else min(args.verbose, 1), args.log_file)
        return int(args._run(args) or 0)
    except ReportedElsewhere as exc:  # under MPI only rank 0 speaks
        return exc.exit_code
    except MpimagerError as exc:
        print(f"{getattr(exc, 'usage', '')}mpimager: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `mpimager ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("mpimager: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: say it, and under MPI end all ranks rather than leave them waiting
        import traceback

        from mpimager import queue as mpiqueue

        traceback.print_exc()
        sys.stderr.flush()
        mpiqueue.abort_if_parallel(EXIT_BUG)
        return EXIT_BUG
