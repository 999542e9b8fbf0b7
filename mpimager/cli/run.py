"""Image MeasurementSets with WSClean over MPI: `mpimager CONFIG [MS | glob | directory | obs-id ...]`.

Rank 0 loads the config, checks the WSClean options against the binary that will run, finds and reads
the MSs, and plans; with --dry-run it prints the plan and stops. Otherwise every rank takes part in
the run (mpimager.pipeline.session). Exit codes: 0 all jobs done, 1 some job failed, 2 bad input (nothing run),
4 stopped early (SIGTERM/SIGINT, SIGUSR1, or the Slurm allocation about to end): run it again to resume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the pipeline (numpy, casacore) loads only for a run, not for --help
    from mpimager.pipeline.prepare import RunRequest


def add_arguments(parser):
    """Add the arguments of a run, `mpimager CONFIG [INPUTS...]`, to `parser` (main.build_parser adds the
    output options)."""
    parser.add_argument("config", help="the TOML config file")
    parser.add_argument("inputs", nargs="*", metavar="MS_OR_OBS_ID",
                        help="MeasurementSets, globs, directories (searched with [inputs] ms_glob_pattern) "
                             "or obs_id patterns 'obsglob[:swglob]' (with [data_handler])")
    parser.add_argument("-c", "--combine", action="store_true",
                        help="one WSClean job per (spectral window, obs_id) group with all its MSs")
    parser.add_argument("-o", "--combine-obs-ids", action="store_true",
                        help="one WSClean job per spectral window across obs_ids (implies --combine)")
    parser.add_argument("-n", "--nodes-mpi", type=int, metavar="N",
                        help="run each WSClean job as wsclean-mp over N hosts ([worker] nodes_mpi)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing, write nothing")
    parser.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON on stdout")
    parser.add_argument("--run-dir", default="mpimager-run", metavar="DIR",
                        help="journal, logs and temporary files of the run (default: ./mpimager-run)")
    parser.add_argument("--force", action="store_true", help="re-run every job, even those recorded done")


def request_from(args) -> RunRequest:
    """The typed request of a run from the parsed command line (also used by `mpimager sbatch`)."""
    from mpimager.pipeline.prepare import Mode, RunRequest

    mode: Mode = "combine-obs-ids" if args.combine_obs_ids else "combine" if args.combine else "single"
    return RunRequest(config=args.config, inputs=tuple(args.inputs), mode=mode, nodes_mpi=args.nodes_mpi,
                      run_dir=args.run_dir, dry_run=getattr(args, "dry_run", False), json=getattr(args, "json", False),
                      force=args.force)


def run(args) -> int:
    """Run (or with --dry-run, plan) the request of the command line (`request_from`); its exit code."""
    request = request_from(args)
    if request.dry_run or request.json:  # rank 0 prints the plan (--json alone: refused in prepare, exit 2)
        from mpimager.pipeline import session

        return session.main(request)
    from mpimager import api

    return api.run(request.config, request.inputs, run_dir=request.run_dir, mode=request.mode,
                   nodes_mpi=request.nodes_mpi, force=request.force).exit_code
