"""Run benchmarks: load balance of the MPI queue, and mpimager end to end against serial WSClean.

One command: `python bench/bench_run.py [--beams 6] [--workers 2] [--skip-balance] [--skip-e2e]`. Two tables:

1. Load balance: 24 real WSClean jobs of mixed sizes (12 MSs of 4 sizes x I and QU passes, -j 1) under
   `mpirun -n 4` (3 workers). The makespan is compared with the lower bound max(sum of job times / workers,
   longest job) and with a static round-robin split of the same jobs (job i on worker i mod 3, each worker
   running its list in order), computed from the same measured job times.
2. End to end: mpimager on N synthesised raw ASKAP beams (FixMS, I and QU passes; the gather step off) with
   k workers, against the same FixMS + WSClean commands run one after another with all cores (what spice_image
   does), in the same run on copies of the same data. Reports the speed-up and mpimager's overhead per job
   (its wall x workers - the sum of the jobs' process times, per job).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the mpimager of this tree, whatever else is installed (the rows run `python -m mpimager`)
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1"}

BALANCE_CONFIG = """
[worker]
max_concurrent = 3
[wsclean]
name = "$ms_stem$"
size = "{size}"
scale = "4asec"
niter = 2000
mgain = 0.8
channels-out = 4
join-channels = true
j = 1
[passes.I]
pol = "I"
[passes.QU]
pol = "QU"
join-polarizations = true
[reduce]
enabled = false
"""

E2E_CONFIG = """
[fixms]
enabled = true
[worker]
max_concurrent = {workers}
[wsclean]
name = "beam$beam$"
size = "512 512"
scale = "3asec"
niter = 5000
mgain = 0.8
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


def mpimager(config: Path, inputs, run_dir: Path, ranks: int) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(["mpirun", "-n", str(ranks), sys.executable, "-m", "mpimager", str(config), *map(str, inputs),
                        "--run-dir", str(run_dir)], env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"mpimager failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def job_times(run_dir: Path) -> dict[str, float]:
    from mpimager.rundir.journal import read_records

    return {r["job"]: r["end"] - r["start"] for r in read_records(run_dir) if r["event"] == "end"}


def makespan(run_dir: Path) -> float:
    """First job start to last job end, from the journal (without process start-up, planning, report)."""
    from mpimager.rundir.journal import read_records

    ends = [r for r in read_records(run_dir) if r["event"] == "end"]
    return max(r["end"] for r in ends) - min(r["start"] for r in ends)


def round_robin(durations: list[float], workers: int) -> float:
    return max(sum(durations[w::workers]) for w in range(workers))


def balance(tmp: Path) -> None:
    from mpimager.testing.synth import make_ms

    data = tmp / "mixed"
    for i in range(12):
        n_ant, n_times = ((12, 16), (24, 24), (36, 32), (36, 60))[i % 4]
        make_ms(data / f"ms{i:02d}.ms", n_ant=n_ant, n_times=n_times, n_chan=8, telescope="BENCH", seed=i)
    config = tmp / "balance.toml"
    config.write_text(BALANCE_CONFIG.format(size="384 384"))
    wall = mpimager(config, [data], tmp / "balance-run", ranks=4)
    span = makespan(tmp / "balance-run")
    times = job_times(tmp / "balance-run")
    durations = [times[j] for j in sorted(times)]  # planning order: the order a static split would use
    workers = 3
    bound = max(sum(durations) / workers, max(durations))
    rr = round_robin(durations, workers)
    print(f"\nload balance: {len(durations)} WSClean jobs (job times {min(durations):.1f}-{max(durations):.1f} s, "
          f"sum {sum(durations):.1f} s) on {workers} workers, {os.cpu_count()} cores")
    print(f"{'schedule':<34} {'makespan s':>10} {'vs bound':>9}")
    print(f"{'lower bound max(sum/3, longest)':<34} {bound:>10.1f} {1:>9.2f}")
    print(f"{'mpimager queue (journal makespan)':<34} {span:>10.1f} {span / bound:>9.2f}")
    print(f"{'static round-robin (same job times)':<34} {rr:>10.1f} {rr / bound:>9.2f}")
    print(f"(the whole mpimager process took {wall:.1f} s: {wall - span:.1f} s of start-up, planning, summary, "
          f"manifest and report around the jobs)")


def serial_baseline(config: Path, data: Path, tmp: Path) -> tuple[float, float]:
    """The plan's FixMS and WSClean commands one after another with all cores, as spice_image runs them."""
    plan = json.loads(subprocess.run([sys.executable, "-m", "mpimager", str(config), str(data), "--dry-run", "--json",
                                      "--run-dir", str(tmp / "serial-run")], capture_output=True, text=True,
                                     check=True).stdout)["jobs"]
    t0 = time.perf_counter()
    for job in plan:
        argv = list(job["argv"])
        if job["kind"] == "wsclean":
            argv[argv.index("-j") + 1] = str(os.cpu_count())
            os.makedirs(os.path.dirname(argv[argv.index("-name") + 1]), exist_ok=True)
            os.makedirs(argv[argv.index("-temp-dir") + 1], exist_ok=True)
        subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0, len(plan)


def e2e(tmp: Path, beams: int, workers: int) -> None:
    from mpimager.testing.synth import make_askap_observation

    src = make_askap_observation(tmp / "beams", n_beams=beams, n_ant=36, n_times=30, n_chan=8)
    for name in ("ours", "serial"):
        shutil.copytree(src[0].parent, tmp / name)
    config = tmp / "e2e.toml"
    config.write_text(E2E_CONFIG.format(workers=workers))
    serial, njobs = serial_baseline(config, tmp / "serial", tmp)
    wall = mpimager(config, [tmp / "ours"], tmp / "e2e-run", ranks=workers + 1)
    busy = sum(job_times(tmp / "e2e-run").values())
    print(f"\nend to end: {beams} raw beams, {njobs} jobs (FixMS + WSClean I and QU, 512 px, 4 channels), "
          f"{os.cpu_count()} cores")
    print(f"{'runner':<46} {'wall s':>7} {'speed-up':>9}")
    print(f"{'serial: the same commands one after another':<46} {serial:>7.1f} {1:>9.2f}")
    print(f"{f'mpimager, mpirun -n {workers + 1} ({workers} workers, -j {os.cpu_count() // workers})':<46} "
          f"{wall:>7.1f} {serial / wall:>9.2f}")
    print(f"mpimager overhead per job (wall x workers - sum of job times) / jobs: "
          f"{(wall * workers - busy) / njobs:.2f} s (includes start-up, planning, journal, output checks)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-balance", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpimager-bench-") as tmp:
        if not args.skip_balance:
            balance(Path(tmp))
        if not args.skip_e2e:
            e2e(Path(tmp), args.beams, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
