"""Make PSF-matched spectral cubes from channel images and cubes, over MPI ranks if launched so.

`mpimager reduce [options] --out OUT IMAGES...`: the gather step of a run, standalone. Channel images
are grouped by imaging prefix, Stokes and product from WSClean's names (P-0000-I-image.fits,
P-0000-image.fits, P-0001-Q-residual.fits; MFS, psf, model and dirty files are skipped); other names
form one group. A cube (FREQ and STOKES axes in either order, or no STOKES axis) is read plane by plane,
each Stokes its own product, named by the cube (PREFIX-S-KIND.cube.fits and Arrakis names are read
back), its beams from its BEAMS table, else its header beam, else a beam log beside it (--use-beamlogs:
the log before the header beam). Cubes and channel images of one prefix merge where their grids agree.
OUT ending in .fits names the one cube; otherwise it is a directory and cubes are named
PREFIX-S-KIND.cube.fits (KIND restored, residual or unconvolved) with PREFIX-S-KIND.cube.beamlog.ecsv and
.weights.txt beside them, or with --names arrakis image.restored.s.REST.conv.fits,
beamlog.image.restored.s.REST.conv.ecsv and weights.restored.s.REST.conv.txt for a prefix
image.REST. Under mpirun every rank runs this command and the planes are spread over the ranks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mpimager.config.reduce import AXIS_ORDERS, NAME_STYLES, RESOLUTIONS, ReduceOptions
from mpimager.errors import InputError, JobError, MpimagerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `mpimager reduce` arguments to `parser` (main.build_parser adds the output options)."""
    parser.epilog = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("images", nargs="+", metavar="IMAGES", type=Path,
                        help="channel images (FITS, one plane each) and/or cubes")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT",
                        help="OUT.fits for a single cube, else an output directory (made if missing)")
    parser.add_argument("--psf-cutoff", type=float, metavar="ARCSEC",
                        help="blank channels whose BMAJ exceeds this and leave them out of the common beam")
    parser.add_argument("--resolution", choices=RESOLUTIONS, default="total",
                        help="total: one beam for the band; natural: one common beam per channel (default total)")
    parser.add_argument("--scope", choices=("prefix", "observation"), default="prefix",
                        help="channels sharing a common beam: each imaging prefix (or cube), or all inputs, "
                             "e.g. a field's beams (default prefix)")
    parser.add_argument("--circularise", action="store_true", help="make the target beam circular")
    parser.add_argument("--psf-outlier", type=float, default=3.0, metavar="F",
                        help="without --psf-cutoff: blank channels whose BMAJ exceeds F x the median or a quarter "
                             "of the image (0: keep them; default 3)")
    ref = parser.add_mutually_exclusive_group()
    ref.add_argument("--ref-chan", metavar="first|last|mid|N",
                     help="natural mode: the plane whose beam is written in the header")
    ref.add_argument("--ref-freq", type=float, metavar="HZ",
                     help="natural mode: the plane nearest this frequency gives the header beam")
    parser.add_argument("--use-beamlogs", action="store_true",
                        help="input cubes: a beam log beside the cube before its header beam")
    parser.add_argument("--cubes", default="restored", metavar="KINDS",
                        help="comma-separated: restored, residual, unconvolved (default restored)")
    parser.add_argument("--purge", action="store_true",
                        help="delete the channel images of each cube once it is written and verified")
    parser.add_argument("--axis-order", choices=AXIS_ORDERS, default="freq-stokes",
                        help="axes after RA, DEC (stokes-freq is what yandasoft linmos wants)")
    parser.add_argument("--names", choices=NAME_STYLES, default="mpimager", help="cube file names")
    parser.add_argument("--round-up", type=float, default=0.1, metavar="ARCSEC",
                        help="round the common beam's axes up to a multiple of this (0: off; default 0.1)")
    parser.add_argument("--beam", type=float, nargs=3, metavar=("BMAJ", "BMIN", "BPA"),
                        help="target beam (arcsec, arcsec, deg) instead of the common beam")
    parser.add_argument("--threads", type=int, metavar="N", help="threads per rank (default: cores / ranks)")
    parser.add_argument("--min-weight", type=float, default=1e-3, metavar="F",
                        help="blank pixels with less than this fraction of valid kernel weight (default 1e-3)")
    angle = parser.add_mutually_exclusive_group()
    angle.add_argument("--ms", type=Path, metavar="MS",
                       help="FixMS'd MeasurementSet whose receptor angle is written as INSTRUMENT_RECEPTOR_ANGLE")
    angle.add_argument("--receptor-angle", type=float, metavar="DEG",
                       help="INSTRUMENT_RECEPTOR_ANGLE to write (degrees)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--options", metavar="JSON",
                        help="every [reduce] option as one JSON table (what a run's gather job passes); "
                             "replaces the option flags above")


def options_from_args(args) -> ReduceOptions:
    """The `ReduceOptions` of `--options` (one JSON table) when given, else of the option flags; InputError
    for --options that are not a JSON object, ConfigError for a bad value."""
    if args.options is not None:
        import json

        try:
            table = json.loads(args.options)
        except ValueError as exc:
            raise InputError(f"mpimager reduce: --options: not JSON ({exc})") from None
        if not isinstance(table, dict):
            raise InputError("mpimager reduce: --options: expected a JSON object")
        return ReduceOptions.from_mapping(table, where="mpimager reduce --options:")
    table = {"psf_cutoff": args.psf_cutoff, "resolution": args.resolution, "scope": args.scope,
             "cubes": [c.strip() for c in args.cubes.split(",") if c.strip()], "purge": args.purge,
             "axis_order": args.axis_order, "names": args.names, "round_up": args.round_up,
             "beam": list(args.beam) if args.beam else None, "threads": args.threads,
             "min_weight": args.min_weight, "circularise": args.circularise, "psf_outlier": args.psf_outlier,
             "ref_chan": int(args.ref_chan) if (args.ref_chan or "").isdigit() else args.ref_chan,
             "ref_freq": args.ref_freq, "use_beamlogs": args.use_beamlogs}
    return ReduceOptions.from_mapping(table, where="mpimager reduce:")


def parallel_comm():
    """COMM_WORLD under an MPI launcher with several ranks, else None: the communicator of the collective
    commands (`reduce`, `mosaic`; a process no launcher started skips MPI_Init)."""
    from mpimager import queue as mpiqueue

    comm = mpiqueue.world()
    return comm if comm.Get_size() > 1 else None


def run(args) -> int:
    """Make the cubes of `args.images` in `args.out` (over the ranks when launched so); rank 0 prints each
    cube made. Exit code 0; the first failed product raises (InputError or JobError) on rank 0, its exit code
    is returned on the others."""
    import gc
    import os

    # a short-lived process: no cyclic GC passes over astropy's objects, and no BLAS thread pool spinning
    # beside our own threads for the common-beam solver's tiny matrices
    gc.disable()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from mpimager.reduce.run import reduce_images

    comm = parallel_comm()
    rank = comm.Get_rank() if comm is not None else 0
    try:
        options = options_from_args(args)
        out = args.out.absolute()
        out_file = out if out.name.endswith(".fits") else None
        out_dir = out.parent if out_file is not None else out
        angles = None
        if args.receptor_angle is not None:
            angles = {"*": args.receptor_angle}
        elif args.ms is not None:
            from mpimager.reduce.receptor import pol_axis_from_ms
            angle = pol_axis_from_ms(args.ms)
            if angle is None:
                raise InputError(f"{args.ms}: FEED has no INSTRUMENT_RECEPTOR_ANGLE (FixMS has not run on it)")
            angles = {"*": angle}
        products = reduce_images(args.images, options, out_dir, comm=comm,
                                 log=None if args.quiet else print, out_file=out_file, receptor_angles=angles)
        failed = [p for p in products if not p.ok]
        if rank == 0 and not args.quiet:
            for p in products:
                if p.ok:
                    print(f"{p.path}  ({len(p.frequencies)} planes, {len(p.blanked)} blank)")
        if failed:
            more = f" (and {len(failed) - 1} more product(s) failed)" if len(failed) > 1 else ""
            cls = InputError if failed[0].error_kind == "input" else JobError
            raise cls(f"{failed[0].error}{more}")
        return 0
    except MpimagerError as exc:
        if rank != 0:  # rank 0 prints the one line
            return exc.exit_code
        raise
