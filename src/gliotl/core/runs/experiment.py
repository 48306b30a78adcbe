"""The one experiment skeleton both systems run on: open the run, run stages, finish or fail.

A system's experiment is a function ``body(experiment) -> dict`` that calls
:meth:`Experiment.stage` for each list of independent jobs, :meth:`Experiment.splits` for every
split table (drawn once, saved with the run, read back on ``--resume``) and
:meth:`Experiment.prepare_once` for work whose output the run keeps (step matrices, the cohort
table). :func:`run_experiment` opens the run directory, calls the body and marks the run
``finished`` with the body's manifest fields, or ``failed`` with the error, so a run that stops
never stays ``running``. A run that replaces another (``--overwrite``) keeps the old one until
the body calls :meth:`Experiment.inputs_checked` (its data are read and valid); if it fails
before, the old run is put back untouched. The run's lock is released however it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from gliotl.core.config import StrictModel, config_to_dict
from gliotl.core.reporting.progress import RunHeartbeat
from gliotl.core.runs.jobs import Executor, Job, JobsOutcome, run_stage
from gliotl.core.runs.rundir import RunDir
from gliotl.core.runs.runlog import append_warnings, recorded_warnings, warning_summary
from gliotl.errors import GliotlError, input_error

T = TypeVar("T")


@dataclass
class Experiment:
    """An open run and how its jobs are executed; handed to a system's experiment body."""

    run: RunDir
    executor: Executor | None = None
    retries: int = 0
    progress: bool = True
    heartbeat: RunHeartbeat | None = None

    def doing(self, activity: str) -> None:
        """What the run is on now, for the heartbeat lines between stages."""
        if self.heartbeat is not None:
            self.heartbeat.activity = activity

    def stage(self, jobs: Iterable[Job], description: str) -> JobsOutcome:
        """Run one stage's jobs (finished ones are reused); any failure stops the experiment."""
        self.doing(f"stage '{description}'")
        outcome = run_stage(jobs, self.run, self.executor, self.retries, self.progress,
                            description)
        self.doing(f"after stage '{description}'")
        return outcome

    def splits(self, filename: str, sample_ids: Sequence[str],
               draw: Callable[[], pd.DataFrame], splits_file: str | Path | None = None
               ) -> pd.DataFrame:
        """The split table saved as ``filename`` in the run: read back when it is there, else
        taken from ``splits_file`` (the user's) or drawn by ``draw`` and saved."""
        from gliotl.core.evaluation.splits import load_splits, save_splits

        path = self.run.path / filename
        ids = list(sample_ids)
        if path.is_file():
            return load_splits(path, sample_ids=ids)
        splits = load_splits(splits_file, sample_ids=ids) if splits_file else draw()
        save_splits(splits, path)
        return splits

    def prepare_once(self, marker: Path, prepare: Callable[[], T], load: Callable[[], T]) -> T:
        """``prepare()`` writes files ending with ``marker``; a resumed run calls ``load()``."""
        if marker.is_file():
            return load()
        self.doing(f"preparing {marker.name}")
        return prepare()

    def inputs_checked(self) -> None:
        """The config's data were read and passed every check: from here on this run is worth
        keeping, so the run it replaces (``--overwrite``) is deleted."""
        self.run.commit()


def _failure_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _fail(run: RunDir, exc: BaseException) -> GliotlError | None:
    """Record how the run stopped; returns the one-line error to raise instead, if any."""
    restored = run.replacing
    if restored:  # stopped before its inputs were checked: the old run comes back
        run.abandon()
    else:
        try:
            run.finish("failed", error=_failure_message(exc))
        except (OSError, GliotlError):
            pass  # the disk that failed the run may fail this write too; the error says why
    if not isinstance(exc, OSError):
        return None
    advice = ("the run it was to replace is back as it was" if restored else
              f"the run in {run.path} is marked failed; fix the cause and rerun with --resume")
    return input_error(exc.filename or run.path, None,
                       f"{exc.strerror or type(exc).__name__}; {advice}")


def run_experiment(
    config: StrictModel,
    body: Callable[[Experiment], dict[str, Any]],
    *,
    name: str,
    seed: int,
    out: Path | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Executor | None = None,
    retries: int = 0,
    progress: bool = True,
    **manifest_fields: Any,
) -> RunDir:
    """Open the run for ``config``, run ``body`` in it and record how it ended.
    ``manifest_fields`` (e.g. the ``--set`` overrides) are recorded in the manifest at once."""
    if retries < 0:
        raise GliotlError(f"--retries: expected a non-negative integer, got {retries}")
    run = RunDir.open(name, config_to_dict(config), seed, out=out, resume=resume,
                      overwrite=overwrite)
    if manifest_fields:
        run.update_manifest(**manifest_fields)
    experiment = Experiment(run, executor, retries, progress)
    try:
        fields = _run_body(experiment, body)
        run.finish("finished", **fields)
    except BaseException as exc:
        replacement = _fail(run, exc)
        if replacement is not None:
            raise replacement from None
        raise
    finally:
        run.close()
    return run


def _run_body(experiment: Experiment, body: Callable[[Experiment], dict[str, Any]]
              ) -> dict[str, Any]:
    """Run ``body`` with the driver's library warnings sent to the run's log; the run's
    warnings (driver and jobs) are then counted once, in one line."""
    run = experiment.run
    records: list[dict[str, Any]] = []
    try:
        with recorded_warnings() as records, RunHeartbeat(run.path.name,
                                                          experiment.progress) as heartbeat:
            experiment.heartbeat = heartbeat
            fields = body(experiment) or {}
            experiment.inputs_checked()
    finally:
        append_warnings(run.path, "driver", records)
        summary = warning_summary(run.path)
        if summary is not None:
            print(summary, flush=True)
    return fields
