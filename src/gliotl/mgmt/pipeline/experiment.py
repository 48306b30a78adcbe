"""The MGMT-from-MRI experiment (Schmitz et al. 2024 protocol, without the authors' defects).

It runs on the shared skeleton :func:`gliotl.core.runs.experiment.run_experiment`; stages are
lists of independent jobs (:mod:`gliotl.mgmt.pipeline.jobs`), so ``--resume`` reuses every
finished one:

0. cohort: read (UPenn-GBM / RSNA / cohort table) or generate (phantom, into ``<run>/cohort``),
   preprocess every patient's modalities into the volume cache, record ``cohort.csv`` (once);
1. pretraining (only when ``model.pretrain`` is set and ``model.weights`` is null): a backbone
   pretrained on tumour segmentation of a SEPARATE cohort, saved in MedicalNet format as
   ``checkpoints/pretrained_medicalnet.pth`` and used as the weights of every transfer method;
2. folds: one job per (method, modality or "stacked", fold): train on the fold's training
   patients, checkpoint on validation 0.6 * sensitivity + 0.4 * specificity, save the best
   state (``jobs/<id>/model.pt``, weights only), predict the validation fold and the hold-out;
3. aggregation (:mod:`gliotl.mgmt.pipeline.fusion`, :mod:`gliotl.mgmt.pipeline.report`):
   late fusion over modality groups, then fold ensembles, validation-chosen thresholds,
   hold-out metrics and DeLong tests by :mod:`gliotl.core.evaluation.evaluate`;
   ``predictions.csv``, ``metrics.json``, ``report.html``.

The splits (30% stratified hold-out + stratified K-fold on the rest) are drawn once over all
eligible patients and shared by every method and modality; a modality's jobs use the patients
of each role that have that modality.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gliotl.core.config import resolve_config_paths
from gliotl.core.io import copy_file, read_json, write_json
from gliotl.core.runs.experiment import Experiment, run_experiment
from gliotl.core.runs.jobs import Executor, Job
from gliotl.core.runs.rundir import RunDir
from gliotl.core.seeding import derive_seed
from gliotl.errors import GliotlError
from gliotl.mgmt.config import MGMTExperimentConfig
from gliotl.mgmt.data.source import check_not_empty, load_cohort
from gliotl.mgmt.pipeline.jobs import (
    PRETRAINED_FILE,
    FoldRequest,
    PretrainRequest,
    fold_job,
    job_id,
    pretrain_job,
)

COHORT_FILE = "cohort.csv"
SUMMARY_FILE = "cohort_summary.json"


# -- cohort ------------------------------------------------------------------------------------


def eligible_patients(cohort, modalities: list[str], input_mode: str) -> list[str]:
    """Stacked input needs every modality; per-modality networks need at least one."""
    if input_mode == "stacked":
        return cohort.patients_with(modalities)
    have = set()
    for modality in modalities:
        have.update(cohort.patients_with([modality]))
    return [p for p in cohort.patient_ids if p in have]


def cache_dir(config: MGMTExperimentConfig, run_path: Path) -> Path:
    return Path(config.cache_dir) if config.cache_dir else run_path / "cache"


def _prepare_cohort(config: MGMTExperimentConfig, run: RunDir, progress: bool) -> dict[str, Any]:
    """Cohort -> cache -> ``cohort.csv`` and its summary."""
    from gliotl.mgmt.data.cache import VolumeCache
    from gliotl.mgmt.data.cohort import write_cohort_table

    cohort = load_cohort(config.cohort, run.path / "cohort", config.modalities)
    n_read = len(cohort.patient_ids)
    keep = eligible_patients(cohort, config.modalities, config.input_mode)
    cohort = cohort.subset(keep)
    if not keep:
        raise GliotlError(f"{config.cohort.kind} cohort: no patient has the modalities "
                          f"{config.modalities}")
    cache = VolumeCache(cache_dir(config, run.path), config.preprocessing)
    report = cache.fill(cohort, config.modalities, workers=config.cache_workers,
                        progress=progress, on_error="exclude")
    cohort = report.apply(cohort)
    check_not_empty(cohort, None)
    write_cohort_table(cohort, run.path / COHORT_FILE)
    labels = cohort.labels
    summary = {
        "source": cohort.source, "patients_read": n_read, "patients": len(labels),
        "methylated": int(labels.sum()), "unmethylated": int((labels == 0).sum()),
        "exclusions": cohort.exclusions, "preprocessing_failed": report.failed,
        "per_modality": {m: len(cohort.patients_with([m])) for m in config.modalities},
    }
    write_json(run.path / SUMMARY_FILE, summary)
    return summary


def read_run_cohort(run_path: str | Path):
    from gliotl.mgmt.data.cohort import read_cohort_table

    return read_cohort_table(Path(run_path) / COHORT_FILE)


# -- stages ------------------------------------------------------------------------------------


def job_gpus(config: MGMTExperimentConfig) -> float:
    """A GPU's share per job (``1 / training.trainings_per_gpu``) for ``device: cuda``, and for
    ``auto`` where this machine has CUDA; none otherwise (a Ray cluster without GPUs could never
    host a job that asks for one)."""
    share = 1.0 / config.training.trainings_per_gpu
    if config.training.device == "auto":
        import torch

        return share if torch.cuda.is_available() else 0.0
    return share if config.training.device == "cuda" else 0.0


def _splits(config: MGMTExperimentConfig, experiment: Experiment) -> pd.DataFrame:
    from gliotl.core.evaluation.splits import holdout_kfold_splits

    cohort = read_run_cohort(experiment.run.path)
    ids = cohort.patient_ids

    def draw() -> pd.DataFrame:
        labels = cohort.labels.loc[ids].to_numpy()
        return holdout_kfold_splits(ids, labels, test_size=config.split.test_size,
                                    n_splits=config.split.n_splits, seed=config.seed,
                                    task="classification")

    splits = experiment.splits(experiment.run.splits_path.name, ids, draw,
                               config.split.splits_file)
    check_fold_classes(splits, cohort.labels, config.split.splits_file or "split.n_splits")
    return splits


def check_fold_classes(splits: pd.DataFrame, labels: pd.Series, where: str) -> None:
    """Every training fold must hold both classes, or no network can learn (or be balanced):
    more folds than a class has patients outside the hold-out is refused before any training."""
    role = splits.assign(label=splits["sample_id"].astype(str).map(labels.rename(str)))
    rest = role[(role["role"] != "test")].drop_duplicates(["repeat", "sample_id"])
    n_splits = int(splits["fold"].nunique())
    counts = rest.groupby(["repeat", "label"]).size()
    for (repeat, label), count in counts.items():
        if count < n_splits:
            kind = "methylated" if int(label) == 1 else "unmethylated"
            raise GliotlError(f"{where}: {n_splits} folds but only {count} {kind} patients "
                              f"remain outside the hold-out (repeat {repeat}); expected at most "
                              f"{count} folds, a smaller test_size or more patients")
    train = role[role["role"] == "train"].groupby(["repeat", "fold"])["label"].nunique()
    if (train < 2).any():
        repeat, fold = train.index[(train < 2).to_numpy()][0]
        raise GliotlError(f"{where}: the training patients of repeat {repeat}, fold {fold} are "
                          "all of one class; expected both methylated and unmethylated")


def _check_weights_file(config: MGMTExperimentConfig) -> None:
    if config.model.weights and not Path(config.model.weights).is_file():
        raise GliotlError(f"{config.model.weights}: field 'model.weights': MedicalNet "
                          "checkpoint not found (see README: MedicalNet weights)")


def _weights(config: MGMTExperimentConfig, experiment: Experiment
             ) -> tuple[str | None, dict[str, Any] | None]:
    """The pretrained weights every transfer method starts from (and the pretraining summary)."""
    if config.model.weights:
        _check_weights_file(config)
        return config.model.weights, None
    if config.model.pretrain is None:
        return None, None
    run = experiment.run
    request = PretrainRequest(config, str(run.path / "pretrain_cohort"),
                              derive_seed(config.seed, "pretrain"))
    job = Job("pretrain", pretrain_job, dict(request=request),
              cpus=config.training.cpus_per_job, gpus=job_gpus(config),
              outputs=(PRETRAINED_FILE,))
    outcome = experiment.stage([job], "segmentation pretraining")
    target = run.checkpoints / PRETRAINED_FILE
    if not target.is_file():
        copy_file(run.job_dir("pretrain") / PRETRAINED_FILE, target)
    result = dict(outcome.results["pretrain"])
    history = result.pop("history", None)
    if isinstance(history, pd.DataFrame):
        result["history"] = history.to_dict(orient="records")
    return str(target), result


def fold_jobs(config: MGMTExperimentConfig, run: RunDir, splits: pd.DataFrame,
              weights: str | None, epoch_lines: bool = False) -> list[Job]:
    """One job per (method, unit, fold), each with its typed request; ``epoch_lines``: the
    folds print per-epoch progress when output is not a terminal."""
    from gliotl.core.evaluation.splits import iter_folds

    shared: dict[str, Any] = dict(config=config, cohort_table=str(run.path / COHORT_FILE),
                  cache_dir=str(cache_dir(config, run.path)), weights=weights,
                  epoch_lines=epoch_lines)
    jobs = []
    for method in (m.name for m in config.methods):
        for unit in config.units():
            for fold in iter_folds(splits):
                request = FoldRequest(
                    **shared, method=method, unit=unit, fold=fold.fold,
                    train_ids=[str(i) for i in fold.train], val_ids=[str(i) for i in fold.val],
                    test_ids=[str(i) for i in fold.test],
                    seed=derive_seed(config.seed, method, unit, fold.fold))
                jobs.append(Job(job_id(method, unit, fold.fold), fold_job,
                                dict(request=request), cpus=config.training.cpus_per_job,
                                gpus=job_gpus(config), outputs=("model.pt",)))
    return jobs


def _body(config: MGMTExperimentConfig, experiment: Experiment, start: float) -> dict[str, Any]:
    """Cohort, weights, splits, fold models, then the run's outputs."""
    from gliotl.core.reporting.model_card import write_model_card
    from gliotl.mgmt.pipeline.model_card import mgmt_model_card
    from gliotl.mgmt.pipeline.report import write_mgmt_outputs

    run = experiment.run
    summary_path = run.path / SUMMARY_FILE
    cohort_summary = experiment.prepare_once(
        summary_path, lambda: _prepare_cohort(config, run, experiment.progress),
        lambda: read_json(summary_path))
    _check_weights_file(config)
    splits = _splits(config, experiment)
    experiment.inputs_checked()  # cohort and splits are read and valid: a replaced run may go
    weights, pretrain_summary = _weights(config, experiment)
    jobs = fold_jobs(config, run, splits, weights, epoch_lines=experiment.progress)
    outcome = experiment.stage(jobs, "fold models")
    results = [outcome.results[job.job_id] for job in jobs]
    extra = {
        "cohort": cohort_summary,
        "pretrain": pretrain_summary,
        "weights": weights,
        "compute": {
            "train_seconds": float(sum(r.get("train_seconds", 0.0) for r in results)),
            "devices": sorted({str(r.get("device")) for r in results}),
            "wall_seconds_this_session": time.perf_counter() - start,
        },
    }
    write_mgmt_outputs(run, config, results, extra)
    write_model_card(run, mgmt_model_card(run))
    return {}


def run_mgmt_experiment(
    config: MGMTExperimentConfig,
    base_dir: Path | str = ".",
    out: Path | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Executor | None = None,
    retries: int = 0,
    progress: bool = True,
    overrides: Sequence[str] = (),
) -> RunDir:
    """Run the whole experiment and write its run directory; returns it. Relative paths of
    ``config`` are taken against ``base_dir`` (the config file's folder); ``overrides``: the
    ``--set`` values already applied to ``config``, recorded in the manifest."""
    start = time.perf_counter()
    config = resolve_config_paths(config, base_dir)
    return run_experiment(
        config, lambda experiment: _body(config, experiment, start), name=config.name,
        seed=config.seed, out=out, resume=resume, overwrite=overwrite, executor=executor,
        retries=retries, progress=progress,
        **({"overrides": list(overrides)} if overrides else {}),
    )


__all__ = [
    "COHORT_FILE",
    "PRETRAINED_FILE",
    "eligible_patients",
    "fold_jobs",
    "read_run_cohort",
    "run_mgmt_experiment",
]
