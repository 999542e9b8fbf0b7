"""The embedded demo: synthesise raw ASKAP-like beams and image them under mpirun, end to end.

`mpimager demo [--dir DIR] [--ranks 3] [--beams 6]`: writes the beams to DIR/data (once), runs
`mpirun -n RANKS python -m mpimager configs/demo.toml DIR/data --run-dir DIR/run` (FixMS, WSClean
Stokes I and QU passes, cubes) and lists the products. Re-running it resumes: finished jobs are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mpimager.errors import InputError
from mpimager.resources import example_config
from mpimager.rundir import layout

DEMO_CONFIG = example_config("demo.toml")
log = logging.getLogger(__name__)


def add_arguments(parser):
    """Add the `mpimager demo` arguments to `parser` (main.build_parser adds the output options)."""
    parser.add_argument("--dir", default="mpimager-demo",
                        help="where the data and the run go (default ./mpimager-demo)")
    parser.add_argument("--ranks", type=int, default=3, help="MPI ranks: 1 coordinator + workers (default 3)")
    parser.add_argument("--beams", type=int, default=6, help="raw ASKAP beams to synthesise (default 6)")
    parser.add_argument("--config", default=str(DEMO_CONFIG),
                        help="the demo config (default: the packaged configs/demo.toml)")


def run(args) -> int:
    """Synthesise the beams (unless DIR/data already holds as many), run the demo under mpirun and list
    its MFS images and cubes; the run's exit code. InputError without the config or mpirun."""
    from mpimager.cli.synth import synthesise

    root = Path(args.dir).absolute()
    data = root / "data"
    if not Path(args.config).is_file():
        raise InputError(f"{args.config}: no such demo config")
    if shutil.which("mpirun") is None:
        raise InputError("mpirun not found: install Open MPI (scripts/install.sh does)")
    t0 = time.time()
    existing = sorted(data.glob("*.ms")) if data.is_dir() else []
    if len(existing) != args.beams:
        shutil.rmtree(data, ignore_errors=True)
        log.info(f"synthesising {args.beams} raw ASKAP-like beams in {data} ...")
        synthesise(data, beams=args.beams)
        log.info(f"  done in {time.time() - t0:.1f} s")
    cmd = ["mpirun", "-n", str(args.ranks), sys.executable, "-m", "mpimager", args.config, str(data),
           "--run-dir", str(root / "run")]
    log.info("running: " + " ".join(cmd))
    env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", **os.environ}
    code = subprocess.run(cmd, env=env).returncode
    manifest = root / "run" / layout.MANIFEST
    if manifest.is_file():
        products = json.loads(manifest.read_text())["products"]
        cubes = [p for p in products if ".contcube" in p and p.endswith(".fits") and "-0" not in p
                 and "-MFS-" not in p]
        mfs = [p for p in products if "-MFS-" in p and p.endswith("image.fits")]
        log.info(f"{len(products)} products in {root / 'run'} ({time.time() - t0:.0f} s in all); "
                 f"MFS images and cubes:")
        for p in mfs + cubes:
            print("  ", os.path.relpath(p, root))  # the command's output
    return code
