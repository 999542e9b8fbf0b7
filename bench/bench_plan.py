"""Planning cost: `mpimager CONFIG DIR --dry-run --json` over 10, 100 and 1,000 synthesised MSs x 2 passes.

One command: `python bench/bench_plan.py [--repeat 3]`. Prints a table: whole-process wall and CPU time per
size, per MS, and the growth from 10 to 1,000. Side by side in the same run: the floor any tool pays to
look at the same MSs the way Arrakis' spice_image does before imaging (a Python process that imports
python-casacore and opens each MS's FIELD and FEED tables; spice_image itself has no dry run and needs a
Prefect server). The MSs are copies of one raw ASKAP beam, kept in $MPIMAGER_BENCH_DIR (default
/var/tmp/mpimager-bench) between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (10, 100, 1000)
CONFIG = """
[wsclean]
name = "$ms_stem$"
size = "4096 4096"
scale = "2.5asec"
niter = 50000
channels-out = 4
join-channels = true
[passes.I]
pol = "I"
[passes.QU]
pol = "QU"
join-polarizations = true
[reduce]
enabled = false
"""

FLOOR = """
import sys
from pathlib import Path
from casacore.tables import table
for ms in sorted(Path(sys.argv[1]).glob("*.ms")):
    with table(str(ms / "FIELD"), ack=False) as t:
        t.getcol("PHASE_DIR"); t.getcol("NAME")
    with table(str(ms), ack=False) as t:
        t.getcell("FEED1", 0)
"""


def data(root: Path) -> dict[int, Path]:
    """Directories of 10, 100 and 1,000 MSs (the smaller ones link into the largest)."""
    from mpimager.testing.synth import make_askap_observation

    full = root / "ms1000"
    if len(list(full.glob("*.ms"))) != 1000:
        shutil.rmtree(root, ignore_errors=True)
        src = make_askap_observation(root / "src", n_beams=1)[0]
        full.mkdir(parents=True)
        for i in range(1000):
            shutil.copytree(src, full / f"scienceData_SB1_BENCH.beam{i:04d}_averaged_cal.leakage.ms")
    dirs = {1000: full}
    for n in SIZES[:-1]:
        d = root / f"ms{n}"
        if len(list(d.glob("*.ms"))) != n:
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            for ms in sorted(full.glob("*.ms"))[:n]:
                (d / ms.name).symlink_to(ms)
        dirs[n] = d
    return dirs


def timed(argv) -> tuple[float, float, bytes]:
    """(wall, CPU of the child, its stdout) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(os.environ.get("MPIMAGER_BENCH_DIR", "/var/tmp/mpimager-bench"))
    dirs = data(root)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.toml"
        config.write_text(CONFIG)
        rows = []
        for n in SIZES:
            ours = [timed([sys.executable, "-m", "mpimager", str(config), str(dirs[n]), "--dry-run", "--json",
                           "--run-dir", f"{tmp}/run"]) for _ in range(args.repeat)]
            floor = [timed([sys.executable, "-c", FLOOR, str(dirs[n])]) for _ in range(args.repeat)]
            jobs = len(json.loads(ours[0][2])["jobs"])
            rows.append((n, jobs, statistics.median(w for w, _, _ in ours), statistics.median(c for _, c, _ in ours),
                         statistics.median(w for w, _, _ in floor)))
    print(f"planning raw ASKAP beams (FixMS + WSClean I and QU jobs each), median of {args.repeat} "
          f"(machine: {os.cpu_count()} cores)")
    print(f"{'MSs':>6} {'jobs':>6} {'mpimager wall s':>16} {'CPU s':>7} {'ms per MS':>10} "
          f"{'floor: casacore open s':>23}")
    for n, jobs, wall, cpu, floor in rows:
        print(f"{n:>6} {jobs:>6} {wall:>16.2f} {cpu:>7.2f} {1000 * wall / n:>10.2f} {floor:>23.2f}")
    (n0, _, w0, _, _), (n1, _, w1, _, _) = rows[0], rows[-1]
    print(f"growth 10 -> 1000 MSs: x{w1 / w0:.1f} wall for x{n1 / n0:.0f} MSs; "
          f"marginal {1000 * (w1 - w0) / (n1 - n0):.2f} ms per MS; target < 3 s for 1,000: "
          f"{'met' if w1 < 3 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
