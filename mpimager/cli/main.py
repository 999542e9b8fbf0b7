"""Command line: parses arguments, dispatches to a command, and turns errors into exit codes.

`mpimager CONFIG [INPUTS...]` runs (or, with --dry-run, plans) an imaging run; it has the shape of
NenuFAR's `imgpipe` (underscore spellings of its flags are accepted). The other commands are
`mpimager COMMAND ...` with COMMAND one of `SUBCOMMANDS`. This is the only place where an
exception becomes an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mpimager import __version__
from mpimager.errors import EXIT_BUG, InputError, MpimagerError, ReportedElsewhere

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
}

_UNDERSCORE_FLAGS = {"--combine_obs_ids": "--combine-obs-ids", "--nodes_mpi": "--nodes-mpi",
                     "--dry_run": "--dry-run", "--run_dir": "--run-dir"}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ours: one line, exit code 2, through `main`."""

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")


def _normalise(argv):
    out = []
    for a in argv:
        name, eq, value = a.partition("=")
        out.append(_UNDERSCORE_FLAGS.get(name, name) + eq + value)
    return out


def build_parser(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(SUBCOMMANDS[command])
    prog = "mpimager" if command == "run" else f"mpimager {command}"
    parser = _Parser(prog=prog, description=(module.__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mpimager {__version__}")
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    argv = _normalise(list(sys.argv[1:] if argv is None else argv))
    command = "run"
    if argv and argv[0] in SUBCOMMANDS:
        command, argv = argv[0], argv[1:]
    try:
        args = build_parser(command).parse_args(argv)
        return int(args._run(args) or 0)
    except ReportedElsewhere as exc:  # under MPI only rank 0 speaks
        return exc.exit_code
    except MpimagerError as exc:
        print(f"mpimager: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `mpimager ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("mpimager: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: say it, and under MPI end all ranks rather than leave them waiting
        import traceback

        from mpimager.queue import mpiqueue

        traceback.print_exc()
        sys.stderr.flush()
        mpiqueue.abort_if_parallel(EXIT_BUG)
        return EXIT_BUG
