"""The Python API: plan and run imaging from a notebook, a workflow (Prefect, Arrakis, flint) or an MPI program.

    import mpimager
    jobs = mpimager.plan("askap.toml", ["/data/SB8593/"])            # what `--dry-run --json` shows
    result = mpimager.run("askap.toml", ["/data/SB8593/"], run_dir="work")
    result.exit_code, result.states, result.products, result.failures

`config` is a TOML file's path, a mapping of its tables (`{"wsclean": {"size": "512 512"}, ...}`, layered on
the defaults like a file) or a loaded `mpimager.config.load.Config`. Bad input raises
`mpimager.errors.InputError` (the command line's exit code 2) before any job starts, with nothing written;
jobs that fail at run time do not raise: they are in the result, with their logs, and `exit_code` is 1.
`run` is serial in a plain process (a notebook), and uses the ranks of `comm` when given (every rank of it
calls `run`; its rank 0 coordinates, the others execute jobs); under an MPI launcher without `comm` it uses
COMM_WORLD. The command line is a thin layer over this module. mpimager logs to the `mpimager` logger, silent
unless configured; every run's lines also go to RUN_DIR/mpimager.log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpimager.pipeline.prepare import Mode, RunRequest

if TYPE_CHECKING:
    from mpimager.config.load import Config
    from mpimager.planner.jobs import Job
    from mpimager.rundir.status import JobStatus


@dataclass(frozen=True)
class RunResult:
    """What a run did: its exit code, every job's state (with host, attempts, log, error) and the products.

    `exit_code`: 0 every job succeeded, 1 some job failed (the others went on); `jobs`: one
    `mpimager.rundir.status.JobStatus` per planned job (state one of done, failed, skipped, pending...);
    `products`: every file the run's jobs made (done jobs, including those an earlier run made)."""

    exit_code: int
    run_dir: Path
    jobs: tuple[JobStatus, ...]
    products: tuple[Path, ...]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def states(self) -> dict[str, str]:
        """Job id -> state."""
        return {j.id: j.state for j in self.jobs}

    @property
    def failures(self) -> tuple[JobStatus, ...]:
        """The failed jobs, each with its `error` and the `log` of its last attempt."""
        return tuple(j for j in self.jobs if j.state == "failed")

    def log(self, job_id: str) -> str:
        """The text of job `job_id`'s log (its last attempt); '' when it has none."""
        job = next((j for j in self.jobs if j.id == job_id), None)
        if job is None:
            raise KeyError(job_id)
        return Path(job.log).read_text(errors="replace") if job.log and os.path.exists(job.log) else ""


def _request(config, inputs, *, mode: Mode, nodes_mpi, run_dir, force=False, dry_run=False) -> RunRequest:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not isinstance(config, Mapping) and not hasattr(config, "passes"):
        config = os.fspath(config)
    return RunRequest(config=config, inputs=tuple(os.fspath(i) for i in inputs), mode=mode, nodes_mpi=nodes_mpi,
                      run_dir=os.fspath(run_dir), force=force, dry_run=dry_run)


def plan(config: str | os.PathLike[str] | Mapping[str, Any] | Config,
         inputs: Iterable[str | os.PathLike[str]] | str = (), *, mode: Mode = "single",
         nodes_mpi: int | None = None, run_dir: str | os.PathLike[str] = "mpimager-run") -> list[Job]:
    """The jobs a run would execute, in order, each with its argv, outputs and dependencies (nothing is run).

    `config`: a file, a mapping of tables or a Config; `inputs`: MSs, globs, directories or obs_id patterns;
    `mode`: "single" (a WSClean job per MS), "combine" or "combine-obs-ids"; `nodes_mpi`: wsclean-mp over N
    hosts; `run_dir`: the run directory the jobs would use. `Job.to_json()` is what `--dry-run --json` shows.
    Raises InputError for bad input."""
    from mpimager.pipeline.prepare import prepare

    request = _request(config, inputs, mode=mode, nodes_mpi=nodes_mpi, run_dir=run_dir, dry_run=True)
    return list(prepare(request).jobs)


def run(config: str | os.PathLike[str] | Mapping[str, Any] | Config,
        inputs: Iterable[str | os.PathLike[str]] | str = (), *,
        run_dir: str | os.PathLike[str] = "mpimager-run", comm: Any = None, mode: Mode = "single",
        nodes_mpi: int | None = None, force: bool = False) -> RunResult:
    """Run every job of the plan (skipping those an earlier run of `run_dir` finished) and return the result.

    `config`, `inputs`, `mode`, `nodes_mpi`: as for `plan`; `run_dir`: journal, logs, manifest, report and,
    by default, the images; `comm`: an mpi4py communicator whose ranks all call `run` (None: serial, or
    COMM_WORLD under an MPI launcher); `force`: re-run jobs recorded done. Every rank gets the result.
    Raises InputError for bad input (on every rank), before anything is written."""
    from mpimager import queue as mpiqueue
    from mpimager.pipeline import session

    comm = comm if comm is not None else mpiqueue.world()
    request = _request(config, inputs, mode=mode, nodes_mpi=nodes_mpi, run_dir=run_dir, force=force)
    code = session.main(request, comm=comm)
    result = _result(code, Path(request.run_dir).absolute()) if comm.Get_rank() == 0 else None
    if comm.Get_size() > 1:
        result = mpiqueue.bcast(result, comm)
    assert result is not None
    return result


def _result(code: int, run_dir: Path) -> RunResult:
    from mpimager.rundir.status import read_status

    status = read_status(run_dir)
    manifest = run_dir / "manifest.json"
    products = json.loads(manifest.read_text()).get("products", []) if manifest.is_file() else []
    return RunResult(exit_code=code, run_dir=run_dir, jobs=status.jobs, products=tuple(Path(p) for p in products))
