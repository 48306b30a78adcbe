"""Fold jobs of one network method trained as one stacked model (issue 17), where the
method's ``train.stacking`` chooses it (by default on CUDA, and on CPU for small networks; a
CPU run of the paper network fits its fold jobs one by one, in parallel across workers, which
measured faster).

A stage's fold jobs stay the unit of resume: each keeps its own ``jobs/<id>/`` and result. Before
the stage runs, the pending fold jobs of each network method (whose estimator is a
:class:`~gliotl.drug.methods.registry.SourceNetworkFineTuner`) are grouped into one batch job
that fits their networks together (:func:`gliotl.drug.network.estimators.fit_network_regressors`)
and writes every member's result into the member's own folder, exactly as its fold job would
(within float32 rounding); the stage then finds them done. A batch killed half-way, or a member
deleted later, is redone by the member's own fold job; a resumed batch skips finished members.
Label-permutation jobs stack the folds of their one refit the same way
(:func:`fit_predict_many`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gliotl.core.device import resolve_device
from gliotl.core.io import write_json
from gliotl.core.runs.jobs import Job, JobsOutcome, save_job_result
from gliotl.core.seeding import seed_everything
from gliotl.drug.network.batched import stacking_chosen

if TYPE_CHECKING:
    from gliotl.core.runs.experiment import Experiment
    from gliotl.drug.pipeline.experiment import FoldRequest
    from gliotl.drug.pipeline.steps import StepData


def _fine_tuner(request: FoldRequest) -> Any:
    """The request's estimator when it is a network fine-tuner whose training settings choose
    stacking on this machine's device for its network's size (``train.stacking``), else None."""
    from gliotl.drug.methods.registry import SourceNetworkFineTuner, method_kind
    from gliotl.drug.network.model import parameter_count

    entry = method_kind(request.method.kind)
    if entry.annotation is not None:
        return None
    estimator = entry.build(request.method, request.context)
    if type(estimator) is not SourceNetworkFineTuner:
        return None
    n_genes = request.step.read().X.shape[1]  # read once per step (cached)
    top_k = request.method.preprocessing.top_k_variance
    if top_k is not None:
        n_genes = min(n_genes, top_k)
    n_parameters = parameter_count(n_genes, estimator.network)
    chosen = stacking_chosen(estimator.train, resolve_device("auto"), n_parameters)
    return estimator if chosen else None


def fit_predict_many(requests: list[FoldRequest], data: StepData,
                     job_dir: Path) -> list[tuple[Any, Any]]:
    """``_fit_predict`` for every request, in order; network fine-tuners are stacked."""
    from gliotl.drug.pipeline.experiment import _fit_predict

    tuners = [_fine_tuner(request) for request in requests]
    stacked = [i for i, tuner in enumerate(tuners) if tuner is not None]
    out: list[tuple[Any, Any] | None] = [None] * len(requests)
    if len(stacked) > 1:
        fitted = _fit_tuners([requests[i] for i in stacked], [tuners[i] for i in stacked], data,
                             job_dir)
        for index, pair in zip(stacked, fitted, strict=True):
            out[index] = pair
    for index, request in enumerate(requests):
        if out[index] is None:
            seed_everything(request.context.seed)
            out[index] = _fit_predict(request, data, job_dir)
    return [pair for pair in out if pair is not None]


def _fit_tuners(requests: list[FoldRequest], tuners: list[Any], data: StepData,
                job_dir: Path | list[Path]) -> list[tuple[Any, Any]]:
    """Fit the tuners' networks together on their training folds (preprocessing fitted on
    each fold only) and predict each test fold."""
    from gliotl.drug.network.estimators import NetworkRegressor, fit_network_regressors

    loaded: dict[str, Any] = {}
    models, fold_data, sources, preps = [], [], [], []
    for request, tuner in zip(requests, tuners, strict=True):
        seed_everything(request.context.seed)
        X_train, y_train = data.X.loc[request.train_ids], data.y.loc[request.train_ids]
        prep = request.step.preprocessor(X_train, y_train, request.method.preprocessing)
        path = tuner.source_path
        if path and path not in loaded:
            loaded[path] = NetworkRegressor.load(path)
        source = loaded[path] if path else None
        models.append(NetworkRegressor(network=tuner.network, train=tuner.train,
                                       transfer=tuner.transfer if source is not None else None,
                                       seed=tuner.seed))
        fold_data.append((prep.transform_X(X_train), prep.transform_y(y_train)))
        sources.append(source)
        preps.append(prep)
    fit_network_regressors(models, fold_data, sources)
    out = []
    dirs = job_dir if isinstance(job_dir, list) else [job_dir] * len(requests)
    for request, tuner, model, prep, folder in zip(requests, tuners, models, preps, dirs,
                                                   strict=True):
        tuner.model_, tuner.n_features_in_ = model, model.n_features_in_
        y_pred = prep.inverse_y(tuner.predict(prep.transform_X(data.X.loc[request.test_ids])))
        if request.save_model:
            prep.save(folder / "preprocess.json")
            model.save(folder / "model.pt")
        out.append((tuner, y_pred))
    return out


def fold_batch_job(job_dir: Path, requests: list[FoldRequest],
                   member_ids: list[str]) -> dict[str, Any]:
    """Fit the unfinished members together; write each member's fold result (and a
    ``timing.json`` with its share of the time) into its own job folder."""
    from gliotl.drug.pipeline.experiment import fold_result

    jobs_dir = job_dir.parent
    todo = [(r, m) for r, m in zip(requests, member_ids, strict=True)
            if not (jobs_dir / m / "result.json").is_file()]
    if not todo:
        return {"members": member_ids, "trained": 0}
    data = todo[0][0].step.read()
    start = time.perf_counter()
    folders = [jobs_dir / m for _, m in todo]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    fitted = _fit_tuners([r for r, _ in todo], [_fine_tuner(r) for r, _ in todo], data, folders)
    share = (time.perf_counter() - start) / len(todo)
    for (request, _), folder, (estimator, y_pred) in zip(todo, folders, fitted, strict=True):
        save_job_result(folder, fold_result(request, data, estimator, y_pred, share))
        write_json(folder / "timing.json", {"seconds": share, "threads": 1, "batched": True})
    return {"members": member_ids, "trained": len(todo)}


def batch_jobs(jobs: list[Job], done: Callable[[Job], bool]) -> list[Job]:
    """One batch job per method for the pending, stackable fold jobs among ``jobs``
    (``done(job)`` says whether a job has finished)."""
    from gliotl.drug.pipeline.experiment import fold_job

    groups: dict[str, list[Job]] = {}
    for job in jobs:
        if job.fn is not fold_job or done(job):
            continue
        request = job.kwargs["request"]
        if _fine_tuner(request) is None:
            continue
        groups.setdefault(f"{request.step.key}/{request.method.name}", []).append(job)
    batches = []
    for members in groups.values():
        if len(members) < 2:
            continue
        ids = [job.job_id for job in members]
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:10]
        batches.append(Job(f"batch-{ids[0]}-n{len(ids)}-{digest}", fold_batch_job, {
            "requests": [job.kwargs["request"] for job in members], "member_ids": ids,
        }, cpus=members[0].cpus, gpus=members[0].gpus))
    return batches


def run_fold_stage(exp: Experiment, jobs: list[Job], description: str) -> JobsOutcome:
    """Run a stage of fold jobs, its network methods' pending folds first as batch jobs."""
    batches = batch_jobs(jobs, lambda job: exp.run.job_done(job.job_id, job.outputs))
    if batches:
        exp.stage(batches, f"{description} (stacked networks)")
    return exp.stage(jobs, description)


__all__ = ["batch_jobs", "fit_predict_many", "fold_batch_job", "run_fold_stage"]
