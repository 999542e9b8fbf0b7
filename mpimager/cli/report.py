"""Write the HTML report of a run (also written at the end of every run): `mpimager report RUN_DIR`.

RUN_DIR/report.html holds the summary, a per-rank timeline of the jobs, the job table with links to
their logs, a quick-look PNG of each MFS image and, for each cube, its per-channel beams against the
common beam, its noise per channel and the spectrum at its brightest pixel (PNGs in RUN_DIR/report/),
and the provenance the run recorded (versions, config as resolved, argv of every job). Works on a run
going on or killed too. Quick-looks need matplotlib: `pip install mpimager[report]`.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def add_arguments(parser):
    """Add the `mpimager report` arguments to `parser` (main.build_parser adds the output options)."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --run-dir of a run")
    parser.add_argument("--max-px", type=int, default=None, metavar="N",
                        help="largest side of a drawn image, in pixels (default 1024): larger ones are block-averaged")


def run(args) -> int:
    """Write the report of `args.run_dir` and log what it drew; exit code 0 (InputError for --max-px < 16)."""
    from mpimager.errors import InputError
    from mpimager.report import write_report

    if args.max_px is not None and args.max_px < 16:
        raise InputError(f"--max-px: expected an integer >= 16, got {args.max_px}")
    r = write_report(args.run_dir, max_px=args.max_px)
    made = f"{r.images} MFS image{'s' * (r.images != 1)}, {r.cubes} cube{'s' * (r.cubes != 1)}"
    if r.missing:
        log.info(f"report: {r.path} ({made}; no quick-looks: {r.missing})")
    else:
        log.info(f"report: {r.path} ({made}: {r.drawn} drawn, {r.reused} unchanged"
                 f"{f', {r.failed} could not be drawn' if r.failed else ''}; {r.seconds:.1f} s)")
    return 0
