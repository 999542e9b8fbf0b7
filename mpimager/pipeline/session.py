"""One run across all ranks: rank 0 prepares and coordinates, the other ranks execute jobs.

Rank 0: checks every input (config, options, MSs, writable directories) before anything is written,
takes the run directory's lock, skips what the journal says is done, hands the rest to the MPI queue,
journals each start and end and prints it (mpimager.pipeline.progress: start/end lines, a periodic summary
with an ETA), and ends with a summary table, `manifest.json` (with the run's provenance: versions,
config as resolved, argv), `report.html` (mpimager.report; a report that fails is a logged line, never
a different exit code) and the exit code. A bad input ends every rank with the same one-line error
(printed once, by rank 0) and exit 2.

Stopping (mpimager.runtime.interrupt): SIGTERM, SIGINT or SIGHUP on any rank (mpirun and srun forward
them to every rank; Slurm sends SIGTERM at the time limit and on scancel) stops the dispatching, ends every
running job's process group (its WSClean, FixMS or reduce child and whatever they started), journals those
jobs as `interrupted`, prints one line and ends every rank with exit code 4 (EXIT_INTERRUPTED; under mpirun
the launcher itself, once signalled, reports its own code). SIGUSR1 (Slurm's `--signal` warning) starts no
new job; inside a Slurm allocation, a job whose estimate (mpimager.pipeline.allocation) does not fit in the
time left is not started either. Then the run ends with exit 4 once the running jobs are done, saying how to
resume: the same command again (finished jobs are skipped; slurm/mpimager.sbatch resubmits itself).
A journal that cannot be written (a full disk) stops the run the same way, with one line naming it (exit 1).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TypedDict

from mpimager import __version__
from mpimager import queue as mpiqueue
from mpimager.atomic import write_text_atomic
from mpimager.errors import EXIT_INTERRUPTED, EXIT_JOB_FAILED, EXIT_OK, InputError, MpimagerError, ReportedElsewhere
from mpimager.log import SUMMARY, run_log
from mpimager.pipeline.allocation import Deadline, Estimates, allocation_end
from mpimager.pipeline.prepare import Prepared, RunRequest, prepare, print_plan
from mpimager.pipeline.progress import Progress
from mpimager.rundir import layout
from mpimager.rundir.journal import Journal, RunLock, jobs_to_skip, read_records
from mpimager.rundir.layout import log_path
from mpimager.runtime import interrupt
from mpimager.runtime.runner import JobResult, RunContext, run_job

log = logging.getLogger(__name__)


def main(request: RunRequest, comm=None) -> int:
    """Run `request` over the ranks of `comm` (default: COMM_WORLD under a launcher, else serially): the exit code."""
    comm = comm if comm is not None else mpiqueue.world()
    interrupt.install()
    interrupt.add_poller(lambda: mpiqueue.stop_message(comm))
    try:
        return _main(request, comm)
    finally:
        interrupt.uninstall()


def _main(request: RunRequest, comm) -> int:
    is_root = comm.Get_rank() == 0
    try:
        started = mpiqueue.root_first(lambda: _prepare(request), comm)
    except MpimagerError as exc:
        if not is_root:  # rank 0 says it; the others leave with the same code
            raise ReportedElsewhere(exc.exit_code) from exc
        raise
    if not is_root:
        try:
            mpiqueue.run_tasks([], _execute, comm=comm, stop=interrupt.signalled)
        except MpimagerError as exc:  # rank 0 says it
            raise ReportedElsewhere(exc.exit_code) from exc
        return mpiqueue.bcast(EXIT_OK, comm)  # rank 0's exit code; waits asleep while rank 0 reports
    assert started is not None  # rank 0 gets _prepare's result
    prepared, lock = started
    if lock is None:  # a dry run
        print_plan(prepared, request.json, force=request.force)
        mpiqueue.run_tasks([], _execute, comm=comm)
        return mpiqueue.bcast(EXIT_OK, comm)
    coordinator = Coordinator(prepared, request.force, comm)
    try:
        with run_log(prepared.run_dir):
            code = coordinator.run()
    except MpimagerError as exc:  # e.g. the journal cannot be written: release the workers, same exit code
        if coordinator.queue != "failed":  # the workers did not leave with the error: they wait for rank 0
            if coordinator.queue == "not started":
                mpiqueue.run_tasks([], _execute, comm=comm)
            mpiqueue.bcast(exc.exit_code, comm)
        raise
    finally:
        lock.release()
    return mpiqueue.bcast(code, comm)


def _prepare(request) -> tuple[Prepared, RunLock | None]:
    """Every check, then (not for a dry run) the run directory made and locked: the last step that can fail."""
    prepared = prepare(request)
    if request.dry_run or prepared.config.worker.dry_run:
        return prepared, None
    check_writable([prepared.run_dir] + sorted({os.path.dirname(j.prefix) for j in prepared.jobs if j.prefix})
                   + sorted({os.path.dirname(j.temp_dir) for j in prepared.jobs if j.temp_dir}))
    check_image_size(prepared.config)
    if not request.force:
        check_no_foreign_outputs(prepared.jobs, read_records(prepared.run_dir))
    prepared.run_dir.mkdir(parents=True, exist_ok=True)
    return prepared, RunLock(prepared.run_dir)


def check_image_size(config) -> None:
    """Refuse a run whose imaging passes do not set [wsclean] size (an empty config): every job would fail."""
    for p in config.passes:
        if p.option("size") is None:
            where = f"[passes.{p.suffix}]" if p.suffix else "[wsclean]"
            raise InputError(f"{config.path}: {where} size is not set: WSClean needs the image size in pixels "
                             f"(for example size = \"1024 1024\" under [wsclean])")


def check_writable(paths) -> None:
    """Each of `paths` is a directory we can write, or can be created: checked without writing anything;
    else InputError naming it."""
    for path in paths:
        p = Path(path)
        while not p.exists():
            if p.is_symlink():
                raise InputError(f"{path}: {p} is a dangling symbolic link (to {os.readlink(p)})")
            p = p.parent
        if not p.is_dir():
            raise InputError(f"{path}: cannot be created ({p} is not a directory)")
        if not os.access(p, os.W_OK | os.X_OK) or os.statvfs(p).f_flag & os.ST_RDONLY:
            raise InputError(f"{path}: cannot be written (no write permission on {p})")


def check_no_foreign_outputs(jobs, records) -> None:
    """Refuse (InputError) when a job would replace a file that this run directory's journal did not make.

    `jobs`: the plan; `records`: the run directory's journal. A file may be replaced when the journal recorded
    it as an output of a successful job, or when it was written after a job that predicts it started here
    (its end could not be journaled: a full disk, a kill at that moment). Any other file (another run
    directory's images, a user's file) only with --force."""
    made = {o["path"] for r in records if r.get("event") == "end" and r.get("status") == "ok"
            for o in r.get("outputs", ()) if isinstance(o, dict)}
    started: dict[str, float] = {}
    for r in records:
        if r.get("event") == "start" and isinstance(r.get("time"), (int, float)):
            started[r["job"]] = min(started.get(r["job"], r["time"]), r["time"])

    def foreign(job, path) -> bool:
        if path in made or not os.path.lexists(path):
            return False
        return job.id not in started or os.lstat(path).st_mtime < started[job.id] - 1.0  # clocks of two hosts

    found = [o for j in jobs for o in j.outputs if foreign(j, o)]
    if found:
        raise InputError(f"{found[0]}: {len(found)} file{'s' * (len(found) > 1)} in the out-dir that this "
                         f"run directory did not make would be replaced; move them, choose another out-dir or "
                         f"name, or use --force to replace them")


def _execute(task: mpiqueue.Task, placement: mpiqueue.Placement):
    job, ctx = task.payload
    return run_job(job, ctx, placement)


class _Output(TypedDict):
    path: str
    size: int


class _ManifestJobBase(TypedDict):
    id: str
    kind: str
    status: str
    ms: list[str]
    argv: list[str]
    outputs: list[_Output]


class _ManifestJob(_ManifestJobBase, total=False):
    """One job's entry in the manifest; argv_run only when a retry changed the argv."""

    argv_run: list[str]


REPORT_TIME_S = 60.0  # the report is not started this close to the end of a Slurm allocation


class Coordinator:
    """Rank 0's side of a run: journal, progress lines, the queue, summary and manifest."""

    def __init__(self, prepared: Prepared, force: bool, comm):
        self.p, self.force, self.comm = prepared, force, comm
        self.run_dir = prepared.run_dir
        self.jobs = {j.id: j for j in prepared.jobs}
        self.t0 = time.time()
        self.progress: Progress | None = None  # while the queue runs
        self.queue = "not started"  # -> "running" -> "done" | "failed" (the workers left with its error)
        self.deadline = Deadline(None, Estimates())  # the Slurm allocation's end, read when the run starts
        self.provenance: dict | None = None

    def run(self) -> int:
        """Run the prepared jobs with the journal open (see the module docstring); the run's exit code."""
        self.journal = Journal(self.run_dir)
        try:
            return self._run()
        finally:
            self.journal.close()

    def _run(self) -> int:
        cfg = self.p.config
        records = read_records(self.run_dir)
        skip = {} if self.force else jobs_to_skip(self.p.jobs, records)
        self.deadline = Deadline(allocation_end(), Estimates.from_records(records))
        self.journal.write("run", state="start", pid=os.getpid(), ranks=self.comm.Get_size(),
                           config=str(cfg.path), mpimager=__version__, argv=sys.argv)
        self.journal.write("plan", jobs=[j.to_json() for j in self.p.jobs])
        for job_id, why in skip.items():
            self.journal.write("skip", job=job_id, reason=why)
        ctx = RunContext(run_dir=str(self.run_dir), retries=cfg.worker.retries, timeout=cfg.worker.timeout,
                         env_file=str(cfg.worker.env_file) if cfg.worker.env_file else None, container=cfg.container)
        tasks = [mpiqueue.Task(id=j.id, payload=(j, ctx), deps=tuple(d for d in j.depends_on if d not in skip),
                               cost=j.cost, host=j.host, nranks=j.nranks)
                 for j in self.p.jobs if j.id not in skip]
        self.total = len(tasks)
        workers = max(1, self.comm.Get_size() - 1)
        self.record_provenance()
        self.say(f"{len(self.p.jobs)} jobs: {len(tasks)} to run, {len(skip)} already done; "
                 f"{workers} worker rank{'s' * (workers > 1)}; run directory {self.run_dir}")
        self.progress = progress = Progress([self.jobs[t.id] for t in tasks], workers)
        progress.start_timer()
        self.queue = "running"
        from mpimager.report import LiveReport

        live = LiveReport(self.run_dir, self.provenance).start()  # report.html rewritten as the run goes on
        try:
            outcomes = mpiqueue.run_tasks(tasks, _execute, comm=self.comm, max_per_host=cfg.worker.max_concurrent,
                                          on_event=self.on_event, stop=interrupt.requested, admit=self.admit)
            assert outcomes is not None  # rank 0 gets every task's Outcome
        except BaseException:
            self.queue = "failed"
            raise
        finally:
            live.stop()
            progress.stop()
        self.queue = "done"
        ended = {o.task_id for o in outcomes}
        not_started = [t.id for t in tasks if t.id not in ended]
        stopped = [o.task_id for o in outcomes if o.status == mpiqueue.INTERRUPTED]
        reason = interrupt.requested() or next((o.error for o in outcomes if o.status == mpiqueue.INTERRUPTED), None)
        state = "interrupted" if reason else "stopped" if not_started else "end"
        self.journal.write("run", state=state, wall=round(time.time() - self.t0, 3),
                           **({"reason": reason} if reason else {}))
        if reason or not_started:
            return self.stop_early(outcomes, skip, reason, stopped, not_started)
        return self.finish(outcomes, skip)

    def admit(self, task: mpiqueue.Task) -> bool:
        """May `task` start now? Not after SIGUSR1, nor when its estimate ends after the Slurm allocation."""
        if interrupt.draining():
            return False
        job = self.jobs[task.id]
        return self.deadline.fits(job.id, job.kind, job.cost)

    def stop_early(self, outcomes, skip, reason: str | None, stopped: list[str], not_started: list[str]) -> int:
        """The end of a run that was interrupted (`reason`) or could not start everything: the manifest of
        `outcomes` and `skip` (the jobs done before), and one line counting the `stopped` and `not_started` jobs.
        Returns EXIT_INTERRUPTED."""
        wall = time.time() - self.t0
        self.write_manifest(outcomes, skip, wall)
        if reason:
            why = f"interrupted ({reason.removeprefix('Interrupted: ')})"
        elif interrupt.draining():
            why = f"stopped early ({interrupt.draining()}: no new job started)"
        else:
            end = time.strftime("%H:%M:%S", time.localtime(self.deadline.end)) if self.deadline.end else "?"
            why = f"stopped early (the Slurm allocation ends at {end}: the rest would not finish in time)"
        failed = sum(o.status == mpiqueue.FAILED for o in outcomes)
        print(f"mpimager: {why}: {sum(o.status == mpiqueue.OK for o in outcomes)} jobs done, {len(stopped)} "
              f"stopped, {len(not_started)} not started{f', {failed} failed' if failed else ''}; run the same "
              f"command again to resume (finished jobs are skipped)", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED

    # ------------------------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """`message` as a progress line while the queue runs, else as a log line."""
        if self.progress is not None:
            self.progress.say(message)
        else:
            log.info(message)

    def record_provenance(self) -> None:
        """Versions (WSClean's asked once, here), config as resolved and argv: into the journal now (a killed
        run keeps them) and into the manifest at the end."""
        from mpimager.report.provenance import gather

        try:
            self.provenance = gather(self.p.runtime, self.p.config)
        except Exception as exc:  # noqa: BLE001 - provenance must never stop a run
            self.say(f"provenance not recorded: {type(exc).__name__}: {exc}")
            return
        self.journal.write("provenance", **self.provenance)

    def on_event(self, ev: mpiqueue.Event) -> None:
        """Journal and print the queue's event `ev` (a note, a job's start or end); a good end feeds the
        allocation's estimates."""
        if ev.kind == "note":
            self.journal.write("note", message=ev.message)
            self.say(ev.message)
        elif ev.kind == "start":
            assert ev.task_id is not None and self.progress is not None
            self.journal.write("start", job=ev.task_id, rank=ev.rank, host=ev.host,
                               argv=list(self.jobs[ev.task_id].argv))
            self.progress.started(ev.task_id, ev.rank, ev.host, ev.time)
        elif ev.kind == "end":
            assert ev.outcome is not None
            self._end(ev.outcome)
            o = ev.outcome
            if o.status == mpiqueue.OK and o.rank is not None:
                self.deadline.estimates.ended(self.jobs[o.task_id].kind, self.jobs[o.task_id].cost, o.end - o.start)

    def _end(self, o: mpiqueue.Outcome) -> None:
        record: dict[str, object] = dict(job=o.task_id, status=o.status, rank=o.rank, host=o.host, start=o.start,
                                         end=o.end, argv=list(self.jobs[o.task_id].argv))
        r = o.value  # a JobResult, also for a failed job (its attempts, exit code and logs)
        notes: list[str] = list(r.notes) if isinstance(r, JobResult) else []
        if isinstance(r, JobResult) and o.status == mpiqueue.OK and self.jobs[o.task_id].kind == "reduce":
            from mpimager.report.beams import blanked_summary  # blanked channels and why: console and journal

            notes += blanked_summary([p for p, _ in r.outputs])
        if isinstance(r, JobResult):
            record.update(attempts=r.attempts, exit=r.exit_code, argv_run=list(r.argv), logs=list(r.logs),
                          notes=notes, outputs=[{"path": p, "size": s} for p, s in r.outputs])
        if o.status != mpiqueue.OK:
            record.update(error=o.error, log=self.failure_log(o))
        if o.status == mpiqueue.INTERRUPTED:
            record.update(log=log_path(str(self.run_dir), o.task_id))
        self.journal.write("end", **record)
        assert self.progress is not None
        self.progress.ended(o.task_id, o.status, o.end - o.start, error=o.error, notes=tuple(notes))

    def failure_log(self, o: mpiqueue.Outcome) -> str | None:
        """The log of the last attempt of the failed job of outcome `o` (None for a job not run because a
        dependency failed)."""
        if isinstance(o.value, JobResult):
            return o.value.logs[-1]
        return log_path(str(self.run_dir), o.task_id) if o.status == mpiqueue.FAILED else None

    def finish(self, outcomes, skip) -> int:
        """The end of a run that ran everything: the summary table, the manifest and the report, from `outcomes`
        and `skip` (the jobs done before). Returns EXIT_JOB_FAILED when a job did not end well, else EXIT_OK."""
        wall = time.time() - self.t0
        failed = [o for o in outcomes if o.status != mpiqueue.OK]
        self.print_summary(outcomes, skip, wall)
        manifest = self.write_manifest(outcomes, skip, wall)
        self.say(f"manifest: {manifest}")
        self.write_report()
        return EXIT_JOB_FAILED if failed else EXIT_OK

    def write_report(self) -> None:
        """RUN_DIR/report.html; any failure is one line in the log, never a different exit code. Skipped when
        the Slurm allocation ends within REPORT_TIME_S (`mpimager report RUN_DIR` makes it later)."""
        left = None if self.deadline.end is None else self.deadline.end - time.time()
        if left is not None and left < REPORT_TIME_S:
            self.say(f"report not written: the Slurm allocation ends in {max(left, 0):.0f} s "
                     f"(`mpimager report {self.run_dir}` writes it)")
            return
        try:
            from mpimager.report import write_report

            r = write_report(self.run_dir, provenance=self.provenance)
        except Exception as exc:  # noqa: BLE001 - the run's products are made; the report is a view of them
            self.say(f"report not written: {type(exc).__name__}: {exc}")
            return
        looks = f"no quick-looks: {r.missing}" if r.missing else \
            f"{r.images} MFS image{'s' * (r.images != 1)}, {r.cubes} cube{'s' * (r.cubes != 1)}" + \
            (f", {r.failed} not drawn" if r.failed else "")
        self.say(f"report: {r.path} ({looks}; {r.seconds:.1f} s)")

    def print_summary(self, outcomes, skip, wall) -> None:
        """Log the summary table: each job of the plan (`skip`: done before) with its outcome from `outcomes`,
        the counts and `wall` seconds, and each rank's busy fraction."""
        by_id = {o.task_id: o for o in outcomes}
        width = max((len(j) for j in self.jobs), default=4)
        lines = [f"{'job':<{width}}  {'status':<8}  {'wall s':>7}  {'tries':>5}  {'rank':>4}  host / log"]
        for job_id in self.jobs:
            if job_id in skip:
                lines.append(f"{job_id:<{width}}  {'skipped':<8}  {'-':>7}  {'-':>5}  {'-':>4}  {skip[job_id]}")
                continue
            o = by_id.get(job_id)
            if o is None:
                continue
            tries = o.value.attempts if isinstance(o.value, JobResult) else "-"
            where = o.host or "-"
            if o.status != mpiqueue.OK:
                where = f"log {self.failure_log(o)}" if o.status == mpiqueue.FAILED else o.error or ""
            lines.append(f"{job_id:<{width}}  {o.status:<8}  {o.end - o.start:>7.1f}  {tries!s:>5}  "
                         f"{o.rank if o.rank is not None else '-'!s:>4}  {where}")
        busy: dict[int, float] = {}
        for o in outcomes:
            if o.rank is not None:
                busy[o.rank] = busy.get(o.rank, 0.0) + (o.end - o.start)
        counts = {s: sum(o.status == s for o in outcomes) for s in (mpiqueue.OK, "failed", "skipped")}
        lines.append(f"\n{counts['ok']} done, {len(skip)} already done, {counts['failed']} failed, "
                     f"{counts['skipped']} not run (a dependency failed); wall {wall:.1f} s")
        if busy:
            lines.append("busy fraction per rank: " + ", ".join(f"rank {r} {t / max(wall, 1e-9):.0%}"
                                                              for r, t in sorted(busy.items())))
        logging.getLogger(SUMMARY).info("\n".join(lines))

    def write_manifest(self, outcomes, skip, wall) -> Path:
        """Write RUN_DIR/manifest.json (atomically): each job's status from `outcomes` and `skip`, its argv (and
        the argv a retry ran) and the outputs the journal recorded, the products, `wall` seconds and the provenance.
        Returns its path."""
        from mpimager.rundir.journal import finished_jobs

        records = read_records(self.run_dir)
        done = finished_jobs(records)
        ended = {o.task_id: o.status for o in outcomes}
        jobs: list[_ManifestJob] = []
        for job_id, job in self.jobs.items():
            status = "ok" if job_id in skip else ended.get(job_id, "pending")
            outputs = done[job_id].outputs if status == "ok" else ()
            jobs.append({"id": job_id, "kind": job.kind, "status": status, "ms": list(job.ms), "argv": list(job.argv),
                         "outputs": [{"path": p, "size": s} for p, s in outputs]})
        argv_run = {r["job"]: r["argv_run"] for r in records
                    if r.get("event") == "end" and r.get("status") == "ok" and r.get("argv_run")}
        for j in jobs:  # the argv of the attempt that made the outputs, when a retry changed it
            if j["status"] == "ok" and argv_run.get(j["id"], j["argv"]) != j["argv"]:
                j["argv_run"] = argv_run[j["id"]]
        manifest = {"mpimager": __version__, "config": str(self.p.config.path), "run_dir": str(self.run_dir),
                    "wall_s": round(wall, 3), "jobs": jobs,
                    "products": [o["path"] for j in jobs for o in j["outputs"]],
                    "provenance": self.provenance}
        path = self.run_dir / layout.MANIFEST
        return write_text_atomic(path, json.dumps(manifest, indent=1))
