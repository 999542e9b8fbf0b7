"""Mosaic a field's PSF-matched beam cubes into one primary-beam-corrected cube, over MPI ranks if launched so.

`mpimager mosaic [options] --out DIR CUBES...`: the mosaic step of a run, standalone. CUBES are one cube (or
image) per beam, as the gather step writes them (one restoring beam per channel shared by all beams:
gather with `--scope observation`), each with its linmos weights beside it (STEM.weights.txt) unless
--weights gives them. Beam numbers come from the names (beamNN) unless --beam-ids gives them. Writes
DIR/NAME.mosaic.fits (cube), NAME.mosaic.mfs.fits (MFS image), NAME.mosaic.weight.fits (sum w P^2: the
noise is 1/sqrt of it) and NAME.mosaic.beamlog.txt; every FITS file holds a BEAMCENTRES table
(BEAM, RA, DEC, WEIGHT). Under mpirun every rank runs this command and the channels are spread over them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mpimager.config.mosaic import INTERPOLATIONS, TELESCOPES, MosaicOptions
from mpimager.errors import MpimagerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `mpimager mosaic` arguments to `parser` (main.build_parser adds the output options).
    Its epilog is the module docstring."""
    parser.epilog = __doc__.split("\n", 2)[2].strip()
    parser.add_argument("cubes", nargs="+", type=Path, metavar="CUBES", help="one PSF-matched cube per beam")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (made if missing)")
    parser.add_argument("--name", metavar="NAME", help="mosaic name (default mosaic-STOKES)")
    parser.add_argument("--weights", type=Path, action="append", metavar="FILE",
                        help="a cube's weights file (repeat it: one per cube, in order)")
    parser.add_argument("--beam-ids", type=_ids, metavar="N,N,...", help="beam numbers, one per cube")
    parser.add_argument("--pb", type=Path, action="append", metavar="FILE",
                        help="a primary-beam image or cube (repeat it: one per cube; default: the Gaussian model)")
    parser.add_argument("--telescope", choices=sorted(TELESCOPES), help="Gaussian primary-beam preset (default ASKAP)")
    parser.add_argument("--dish-diameter", type=float, metavar="M", help="dish diameter (m) of the Gaussian model")
    parser.add_argument("--fwhm-factor", type=float, metavar="F", help="FWHM = F lambda / D (ASKAP 1.09)")
    parser.add_argument("--cutoff", type=float, metavar="P", help="primary-beam cutoff (default 0.2)")
    parser.add_argument("--centre", type=float, nargs=2, metavar=("RA", "DEC"),
                        help="grid centre (deg; default: the mean of the beam centres)")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, help="reproject's order (default bicubic)")
    parser.add_argument("--planes", type=int, metavar="N", help="channels reprojected together (default 2)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated beam numbers, got {text!r}") from None


def options_from_args(args) -> MosaicOptions:
    """The `MosaicOptions` of the flags given (the others keep their defaults); ConfigError for a bad value."""
    flags = {"telescope": args.telescope, "dish_diameter": args.dish_diameter, "fwhm_factor": args.fwhm_factor,
             "cutoff": args.cutoff, "centre": list(args.centre) if args.centre else None,
             "interpolation": args.interpolation, "planes": args.planes}
    return MosaicOptions.from_mapping({k: v for k, v in flags.items() if v is not None}, where="mpimager mosaic:")


def run(args) -> int:
    """Make the mosaic of `args.cubes` in `args.out` (over the ranks when launched so); rank 0 prints its
    files. Exit code 0; an MpimagerError is raised on rank 0, its exit code returned on the others."""
    from mpimager.cli.reduce import parallel_comm
    from mpimager.mosaic.run import mosaic_cubes

    comm = parallel_comm()
    rank = comm.Get_rank() if comm is not None else 0
    try:
        options = options_from_args(args)
        name = args.name
        if name is None:
            from mpimager.mosaic.inputs import read_cube

            name = f"mosaic-{read_cube(args.cubes[0], 0, args.weights[0] if args.weights else None).stokes}"
        made = mosaic_cubes(args.cubes, options, args.out.absolute(), name, comm=comm,
                            log=None if args.quiet else print, beam_ids=args.beam_ids, weights=args.weights,
                            pb_files=args.pb)
        if rank == 0 and not args.quiet:
            for p in made.paths.all():
                print(p)
        return 0
    except MpimagerError as exc:
        if rank != 0:  # rank 0 prints the one line
            return exc.exit_code
        raise
