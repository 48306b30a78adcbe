"""Independent jobs and the executors that run them.

An experiment is a list of :class:`Job` (one training + evaluation each) plus an aggregation step.
A job's function is a module-level callable ``fn(job_dir: Path, **kwargs) -> dict``; it may write
artifacts (checkpoints) into ``job_dir`` and returns JSON-able values and pandas DataFrames. The
driver persists the result as ``jobs/<id>/result.json`` (+ one CSV per DataFrame); that file is the
"done" marker, so ``--resume`` reruns exactly the jobs without it.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from gliotl.core.io import write_csv, write_json, write_text
from gliotl.core.reporting.progress import job_progress
from gliotl.core.runs.rundir import RunDir
from gliotl.core.runs.runlog import (
    append_warnings,
    load_job_warnings,
    recorded_warnings,
    save_job_warnings,
)
from gliotl.errors import GliotlError

JobFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Job:
    """One independent unit of work. ``fn`` must be importable (picklable) by worker processes.

    ``outputs``: files the job leaves in its folder for later steps to read (a model). A job
    whose ``result.json`` exists but one of them is gone counts as unfinished and is rerun on
    resume, rather than failing the step that reads it.
    """

    job_id: str
    fn: JobFn
    kwargs: dict[str, Any] = field(default_factory=dict)
    cpus: float = 1.0
    gpus: float = 0.0
    outputs: tuple[str, ...] = ()


@dataclass
class JobFailure:
    job_id: str
    error: str
    attempts: int


@dataclass
class JobsOutcome:
    results: dict[str, dict[str, Any]]
    failures: list[JobFailure]

    def raise_on_failure(self, run: RunDir) -> None:
        if self.failures:
            first = self.failures[0]
            raise GliotlError(
                f"{run.path}: {len(self.failures)} job(s) failed (first: {first.job_id}: "
                f"{first.error}); {failure_advice(first.error)}"
            )


def failure_advice(error: str) -> str:
    """What helps after a failed job: a resumed run keeps its config, prepared data and
    splits, so a fault in those needs a new run; anything else may pass on --resume."""
    if error.startswith(f"{GliotlError.__name__}:"):
        return ("the run's config or data are at fault, and a resumed run keeps both: fix them "
                "and start again with --overwrite (or another --out)")
    return ("fix the cause and rerun with --resume (a resumed run keeps its config and "
            "prepared data; to change them start again with --overwrite)")


def call_job(job: Job, job_dir: Path) -> dict[str, Any]:
    """Run one job's function in whatever process the executor chose.

    The job computes with as many torch threads as CPUs it reserved (``job.cpus``, default 1):
    more threads than reserved cores make OpenMP workers spin against each other, which slowed
    small networks ~10x on a busy 2-core machine.
    """
    import torch

    job_dir.mkdir(parents=True, exist_ok=True)
    previous = torch.get_num_threads()
    threads = max(1, int(job.cpus))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        with recorded_warnings() as records:
            result = job.fn(job_dir=job_dir, **job.kwargs)
    finally:
        torch.set_num_threads(previous)
        save_job_warnings(job_dir, records)
    if not isinstance(result, dict):
        raise TypeError(f"job {job.job_id} returned {type(result).__name__}, expected dict")
    # Beside the result, not in it: results must not depend on the machine's speed.
    write_json(job_dir / "timing.json",
               {"seconds": time.perf_counter() - start, "threads": threads})
    return result


def save_job_result(job_dir: Path, result: dict[str, Any]) -> None:
    """Persist a result: DataFrames as CSV first, then result.json last (the done marker)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    plain: dict[str, Any] = {}
    frames = []
    for key, value in result.items():
        if isinstance(value, pd.DataFrame):
            write_csv(job_dir / f"{key}.csv", value)
            frames.append(key)
        else:
            plain[key] = value
    plain["__frames__"] = frames
    write_json(job_dir / "result.json", plain)


def load_job_result(job_dir: Path) -> dict[str, Any]:
    """A finished job's result; a damaged result file is a one-line error naming it."""
    path = job_dir / "result.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("__frames__", []), list):
            raise ValueError("not a job result object")
        for key in data.pop("__frames__", []):
            path = job_dir / f"{key}.csv"
            data[key] = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GliotlError(f"{path}: damaged job result ({first}); delete the folder {job_dir} "
                          "and rerun with --resume to redo that job") from None
    return data


class Executor(Protocol):
    """Runs jobs and yields ``(job, result_or_exception, attempts)`` as each one ends."""

    def run(
        self, jobs: list[Job], run: RunDir, retries: int
    ) -> Iterator[tuple[Job, dict[str, Any] | BaseException, int]]: ...


def _format_exception(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _attempt(job: Job, job_dir: Path, retries: int) -> tuple[dict[str, Any] | BaseException, int]:
    last: BaseException | None = None
    for attempt in range(1, retries + 2):
        try:
            return call_job(job, job_dir), attempt
        except GliotlError:
            raise
        except Exception as exc:  # a job failure is recorded, not fatal to the others
            last = exc
            write_text(job_dir / "error.txt", traceback.format_exc())
    assert last is not None
    return last, retries + 1


def _attempt_in_worker(job: Job, job_dir: str, retries: int, threads: int):
    import torch

    torch.set_num_threads(max(1, threads))
    result, attempts = _attempt(job, Path(job_dir), retries)
    if isinstance(result, BaseException):
        return RuntimeError(_format_exception(result)), attempts
    return result, attempts


class _Scheduler:
    """Which job runs next in a process pool, and how its attempts are counted.

    A killed worker breaks the whole pool, failing every job then in flight. Only a crash with
    one job in flight is charged to that job; the others become *suspects*, rerun one at a time
    (alone in the pool) to find the culprit.
    """

    def __init__(self, jobs: list[Job], workers: int, retries: int):
        self.todo = list(jobs)
        self.suspects: list[Job] = []
        self.workers = workers
        self.retries = retries
        self.charged = {job.job_id: 0 for job in jobs}  # attempts counted against `retries`
        self.started = dict(self.charged)  # attempts actually run, as reported

    def pending(self) -> bool:
        return bool(self.todo or self.suspects)

    def next_job(self, n_running: int, alone: bool) -> Job | None:
        """The job to submit now, or None while the pool must be waited on first."""
        if alone:
            return None
        if self.suspects:
            return self.suspects[0] if n_running == 0 else None
        if self.todo and n_running < self.workers:
            return self.todo[0]
        return None

    def retries_left(self, job: Job) -> int:
        return self.retries - self.charged[job.job_id]

    def submitted(self, job: Job) -> bool:
        """Take ``job`` (the one ``next_job`` gave) off its queue; True when it runs alone."""
        queue = self.suspects if self.suspects else self.todo
        queue.pop(0)
        self.charged[job.job_id] += 1
        self.started[job.job_id] += 1
        return queue is self.suspects

    def crashed(self, job: Job, in_flight: int) -> bool:
        """A worker died while ``job`` ran with ``in_flight`` jobs; True if it is requeued."""
        if in_flight > 1:
            self.charged[job.job_id] -= 1  # not known to be the culprit
        if in_flight > 1 or self.charged[job.job_id] <= self.retries:
            self.suspects.append(job)
            return True
        return False

    def attempts(self, job: Job, in_last_run: int = 1) -> int:
        """Attempts to report: those of earlier (crashed) runs plus ``in_last_run``."""
        return in_last_run + self.started[job.job_id] - 1


Outcome = tuple[Job, dict[str, Any] | BaseException, int]


class _PoolRound:
    """The life of one process pool: submit, wait, collect, until the work is done or a dead
    worker broke the pool (then :class:`LocalExecutor` starts another)."""

    def __init__(self, pool: ProcessPoolExecutor, scheduler: _Scheduler, run: RunDir,
                 threads: int):
        self.pool, self.scheduler, self.run_dir, self.threads = pool, scheduler, run, threads
        self.futures: dict[Future, Job] = {}
        self.alone = False  # a suspect is running; nothing joins it
        self.broken = False
        self.in_flight = 0  # jobs in the pool right after the latest submission

    def outcomes(self) -> Iterator[Outcome]:
        while self.futures or (not self.broken and self.scheduler.pending()):
            self._submit_ready()
            done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
            for future in done:
                outcome = self._collect(future)
                if outcome is not None:
                    yield outcome

    def _submit_ready(self) -> None:
        while not self.broken:
            job = self.scheduler.next_job(len(self.futures), self.alone)
            if job is None:
                return
            args = (job, str(self.run_dir.job_dir(job.job_id)), self.scheduler.retries_left(job),
                    self.threads)
            try:
                future = self.pool.submit(_attempt_in_worker, *args)
            except BrokenProcessPool:  # a worker died since the last wait()
                self.broken = True  # `job` stays queued; it never started
                return
            self.alone = self.scheduler.submitted(job)
            self.futures[future] = job
            self.in_flight = len(self.futures)

    def _collect(self, future: Future) -> Outcome | None:
        """The finished job's outcome; None when a crash requeued it."""
        job = self.futures.pop(future)
        self.alone = False
        try:
            result, tries = future.result()
        except BrokenProcessPool as exc:  # a worker process died
            self.broken = True
            if self.scheduler.crashed(job, self.in_flight):
                return None
            return job, exc, self.scheduler.attempts(job)
        except GliotlError:
            raise
        except Exception as exc:  # e.g. a result that cannot be pickled
            return job, exc, self.scheduler.attempts(job)
        return job, result, self.scheduler.attempts(job, tries)


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """Pool-worker initializer: end this worker once ``parent`` is gone (a parent killed with
    SIGKILL cannot stop its pool, and orphaned workers would keep computing for nobody)."""
    import os
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="gliotl-parent-watch", daemon=True).start()


class LocalExecutor:
    """Sequential in this process (workers=1) or a spawn-based process pool."""

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise GliotlError(f"--workers: expected a positive integer, got {workers}")
        self.workers = workers

    def run(self, jobs: list[Job], run: RunDir, retries: int) -> Iterator[Outcome]:
        if self.workers == 1:
            for job in jobs:
                result, attempts = _attempt(job, run.job_dir(job.job_id), retries)
                yield job, result, attempts
            return
        import os

        threads = max(1, (os.cpu_count() or 1) // self.workers)
        scheduler = _Scheduler(list(jobs), self.workers, retries)
        while scheduler.pending():
            with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                     initializer=_exit_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                yield from _PoolRound(pool, scheduler, run, threads).outcomes()


def make_executor(name: str = "local", workers: int = 1, **options: Any) -> Executor:
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        from gliotl.core.runs.ray_executor import RayExecutor

        if workers > 1:  # CPUs of a Ray instance started here ('local'); ignored otherwise
            options.setdefault("num_cpus", workers)
        return RayExecutor(**options)
    raise GliotlError(f"--executor: expected 'local' or 'ray', got '{name}'")


def run_jobs(
    jobs: Iterable[Job],
    run: RunDir,
    executor: Executor | None = None,
    retries: int = 0,
    progress: bool = True,
    description: str = "jobs",
) -> JobsOutcome:
    """Run every unfinished job; finished ones (from an earlier, interrupted run) are reused.
    Each job's library warnings go to the run's log, not to the screen."""
    jobs = list(jobs)
    ids = [job.job_id for job in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("job ids must be unique")
    executor = executor or LocalExecutor()
    results = {
        j.job_id: load_job_result(run.job_dir(j.job_id))
        for j in jobs if run.job_done(j.job_id, j.outputs)
    }
    todo = [job for job in jobs if job.job_id not in results]
    failures: list[JobFailure] = []
    with job_progress(description, len(jobs), len(results), progress) as bar:
        for job, result, attempts in executor.run(todo, run, retries):
            append_warnings(run.path, job.job_id, load_job_warnings(run.job_dir(job.job_id)))
            if isinstance(result, BaseException):
                failures.append(JobFailure(job.job_id, _format_exception(result), attempts))
            else:
                save_job_result(run.job_dir(job.job_id), result)
                results[job.job_id] = load_job_result(run.job_dir(job.job_id))
            bar.advance()
    if failures:
        run.update_manifest(failed_jobs=[f.__dict__ for f in failures])
    return JobsOutcome(results={k: results[k] for k in ids if k in results}, failures=failures)


def run_stage(jobs: Iterable[Job], run: RunDir, executor: Executor | None, retries: int,
              progress: bool, description: str) -> JobsOutcome:
    """One stage of an experiment: run its jobs; if any failed, stop with a resumable error
    (the stages after it depend on all of its results)."""
    outcome = run_jobs(jobs, run, executor=executor, retries=retries, progress=progress,
                       description=description)
    outcome.raise_on_failure(run)
    return outcome
