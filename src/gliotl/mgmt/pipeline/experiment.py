"""The MGMT-from-MRI experiment (Schmitz et al. 2024 protocol, without the authors' defects).

Stages (each a list of independent jobs run by :func:`gliotl.core.runs.jobs.run_jobs`, so
``--resume`` reuses every finished one):

0. cohort: read (UPenn-GBM / RSNA / cohort table) or generate (phantom, into ``<run>/cohort``),
   preprocess every patient's modalities into the volume cache, record ``cohort.csv``;
1. pretraining (only when ``model.pretrain`` is set and ``model.weights`` is null): a backbone
   pretrained on tumour segmentation of a SEPARATE cohort, saved in MedicalNet format as
   ``checkpoints/pretrained_medicalnet.pth`` and used as the weights of every transfer method;
2. folds: one job per (method, modality or "stacked", fold): train on the fold's training
   patients, checkpoint on validation 0.6 * sensitivity + 0.4 * specificity, save the best
   state (``jobs/<id>/model.pt``, weights only), predict the validation fold and the hold-out;
3. aggregation (:mod:`gliotl.mgmt.pipeline.fusion`, :mod:`gliotl.mgmt.pipeline.report`):
   fold ensemble, late fusion over modality groups, validation-chosen thresholds, hold-out
   metrics, DeLong tests,
   ``predictions.csv``, ``metrics.json``, ``report.html``.

The splits (30% stratified hold-out + stratified K-fold on the rest) are drawn once over all
eligible patients and shared by every method and modality; a modality's jobs use the patients
of each role that have that modality.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.config import config_to_dict
from gliotl.core.io import copy_file, read_json, save_torch, write_json
from gliotl.core.runs.jobs import Executor, Job, run_stage
from gliotl.core.runs.rundir import RunDir
from gliotl.core.seeding import derive_seed, seed_everything
from gliotl.errors import GliotlError
from gliotl.mgmt.config import CohortConfig, MGMTExperimentConfig, resolve_paths

COHORT_FILE = "cohort.csv"
PRETRAINED_FILE = "pretrained_medicalnet.pth"


# -- cohorts ----------------------------------------------------------------------------------


def load_cohort(spec: CohortConfig, phantom_dir: Path, progress: bool = False):
    """Read the configured cohort; a phantom one is generated into ``phantom_dir`` first
    (once: an existing phantom with its clinical table is reused)."""
    from gliotl.mgmt.data.cohort import read_cohort_table, read_rsna, read_upenn

    if spec.kind == "upenn":
        return read_upenn(spec.root, spec.clinical, spec.segmentation)
    if spec.kind == "rsna":
        return read_rsna(spec.root, spec.labels_csv)
    if spec.kind == "table":
        return read_cohort_table(spec.table)
    from gliotl.mgmt.data.phantom import CLINICAL_NAME, make_phantom_cohort

    if not (phantom_dir / CLINICAL_NAME).is_file():
        make_phantom_cohort(phantom_dir, spec.n_patients, spec.shape, spec.signal, spec.seed,
                            progress=False, **spec.phantom_options)
    return read_upenn(phantom_dir, segmentation=spec.segmentation)


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
    """Cohort -> cache -> ``cohort.csv`` (done once; a resumed run reuses the file)."""
    from gliotl.mgmt.data.cache import VolumeCache
    from gliotl.mgmt.data.cohort import write_cohort_table

    path = run.path / COHORT_FILE
    summary_path = run.path / "cohort_summary.json"
    if path.is_file() and summary_path.is_file():
        return read_json(summary_path)
    cohort = load_cohort(config.cohort, run.path / "cohort", progress)
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
    write_cohort_table(cohort, path)
    labels = cohort.labels
    summary = {
        "source": cohort.source, "patients_read": n_read, "patients": len(labels),
        "methylated": int(labels.sum()), "unmethylated": int((labels == 0).sum()),
        "exclusions": cohort.exclusions, "preprocessing_failed": report.failed,
        "per_modality": {m: len(cohort.patients_with([m])) for m in config.modalities},
    }
    write_json(summary_path, summary)
    return summary


def read_run_cohort(run_path: str | Path):
    from gliotl.mgmt.data.cohort import read_cohort_table

    return read_cohort_table(Path(run_path) / COHORT_FILE)


# -- job functions (module level: importable by worker processes and Ray) --------------------


def _load_config(run_path: str | Path) -> MGMTExperimentConfig:
    return MGMTExperimentConfig.model_validate(RunDir(run_path).config())


def pretrain_job(job_dir: Path, run_path: str, seed: int) -> dict[str, Any]:
    """Segmentation pretraining on the separate pretraining cohort (MedicalNet format)."""
    from gliotl.mgmt.pipeline.pretrain import pretrain_segmentation

    config = _load_config(run_path)
    spec = config.model.pretrain
    assert spec is not None
    cohort = load_cohort(spec.cohort, Path(run_path) / "pretrain_cohort")
    summary = pretrain_segmentation(
        cohort, job_dir / PRETRAINED_FILE, depth=config.model.depth,
        modalities=spec.modalities or config.modalities, shape=spec.shape, epochs=spec.epochs,
        batch_size=spec.batch_size, lr=spec.lr, seed=seed, device=config.training.device,
        shortcut_type=config.model.shortcut_type, max_patients=spec.max_patients,
    )
    return summary


def unit_modalities(config: MGMTExperimentConfig, unit: str) -> list[str]:
    return list(config.modalities) if unit == "stacked" else [unit]


def build_network(config: MGMTExperimentConfig, method: str, unit: str, weights: str | None,
                  steps_per_epoch: int = 1):
    from gliotl.mgmt.pipeline.training import build_model

    return build_model(method, config.model.depth, weights, len(unit_modalities(config, unit)),
                       config.model.dropout, config.training_for(method), steps_per_epoch,
                       config.model.shortcut_type)


def fold_job(job_dir: Path, run_path: str, method: str, unit: str, fold: int,
             train_ids: list[str], val_ids: list[str], test_ids: list[str],
             weights: str | None, seed: int) -> dict[str, Any]:
    """Train one method on one modality (or the stack) and one fold; predict val and hold-out."""
    from gliotl.mgmt.data.cache import VolumeCache
    from gliotl.mgmt.data.dataset import MRIDataset
    from gliotl.mgmt.models.spottune import SpotTune
    from gliotl.mgmt.pipeline.training import fit, predict_proba, resolve_device

    config = _load_config(run_path)
    training = config.training_for(method)
    cohort = read_run_cohort(run_path)
    modalities = unit_modalities(config, unit)
    have = set(cohort.patients_with(modalities))
    ids = {role: [p for p in chosen if p in have]
           for role, chosen in (("train", train_ids), ("val", val_ids), ("test", test_ids))}
    cache = VolumeCache(cache_dir(config, Path(run_path)), config.preprocessing)
    seed_everything(seed)
    train_set = MRIDataset(cohort, modalities, cache, ids["train"], training.augment, seed)
    val_set = MRIDataset(cohort, modalities, cache, ids["val"])
    test_set = MRIDataset(cohort, modalities, cache, ids["test"])
    n_train = len(train_set) if training.balancing != "undersample" else \
        2 * int(min(train_set.labels.sum(), (1 - train_set.labels).sum()))
    steps = int(np.ceil(n_train / training.batch_size))
    model = build_network(config, method, unit, weights, steps)
    device = resolve_device(training.device)
    result = fit(model, train_set, val_set, training, device, seed)
    save_torch(job_dir / "model.pt", result.state_dict)

    amp = training.amp and device.type == "cuda"
    frames = []
    for role, dataset in (("val", val_set), ("test", test_set)):
        if isinstance(model, SpotTune):
            model.reset_policy_usage()
        prob = predict_proba(model, dataset, device, training.eval_batch_size, amp,
                             training.num_workers)
        frames.append(pd.DataFrame({
            "method": method, "modality": unit, "sample_id": dataset.patient_ids, "repeat": 0,
            "fold": fold, "role": role, "y_true": dataset.labels, "y_pred": prob,
        }))
    out: dict[str, Any] = {
        "predictions": pd.concat(frames, ignore_index=True),
        "history": result.history.assign(method=method, modality=unit, fold=fold),
        "best_epoch": result.best_epoch, "best_val_score": result.best_score,
        "val_threshold": result.threshold, "train_seconds": result.seconds,
        "n_train": len(train_set), "n_val": len(val_set), "n_test": len(test_set),
        "device": str(device),
    }
    if isinstance(model, SpotTune):  # usage recorded on the last (hold-out) pass
        out["policy_usage"] = model.policy_usage().assign(method=method, modality=unit,
                                                          fold=fold)
    return out


# -- orchestration ----------------------------------------------------------------------------


def job_gpus(config: MGMTExperimentConfig) -> float:
    """One GPU per job for ``device: cuda``, and for ``auto`` where this machine has CUDA; none
    otherwise (a Ray cluster without GPUs could never host a job that asks for one)."""
    if config.training.device == "auto":
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    return 1.0 if config.training.device == "cuda" else 0.0


def job_id(method: str, unit: str, fold: int) -> str:
    return f"{method}-{unit}-f{fold}"


def _splits(config: MGMTExperimentConfig, run: RunDir) -> pd.DataFrame:
    from gliotl.core.evaluation.splits import holdout_kfold_splits, load_splits, save_splits

    cohort = read_run_cohort(run.path)
    ids = cohort.patient_ids
    if run.splits_path.is_file():
        return load_splits(run.splits_path, sample_ids=ids)
    if config.split.splits_file:
        splits = load_splits(config.split.splits_file, sample_ids=ids)
    else:
        labels = cohort.labels.loc[ids].to_numpy()
        splits = holdout_kfold_splits(ids, labels, test_size=config.split.test_size,
                                      n_splits=config.split.n_splits, seed=config.seed,
                                      task="classification")
    save_splits(splits, run.splits_path)
    return splits



def _weights(config: MGMTExperimentConfig, run: RunDir, executor, retries, progress
             ) -> tuple[str | None, dict[str, Any] | None]:
    """The pretrained weights every transfer method starts from (and the pretraining summary)."""
    if config.model.weights:
        if not Path(config.model.weights).is_file():
            raise GliotlError(f"{config.model.weights}: field 'model.weights': MedicalNet "
                              "checkpoint not found (see README: MedicalNet weights)")
        return config.model.weights, None
    if config.model.pretrain is None:
        return None, None
    job = Job("pretrain", pretrain_job, dict(run_path=str(run.path),
                                             seed=derive_seed(config.seed, "pretrain")),
              cpus=config.training.cpus_per_job,
              gpus=job_gpus(config))
    outcome = run_stage([job], run, executor, retries, progress, "segmentation pretraining")
    target = run.checkpoints / PRETRAINED_FILE
    if not target.is_file():
        copy_file(run.job_dir("pretrain") / PRETRAINED_FILE, target)
    result = dict(outcome.results["pretrain"])
    history = result.pop("history", None)
    if isinstance(history, pd.DataFrame):
        result["history"] = history.to_dict(orient="records")
    return str(target), result


def fold_jobs(config: MGMTExperimentConfig, run: RunDir, splits: pd.DataFrame,
              weights: str | None) -> list[Job]:
    from gliotl.core.evaluation.splits import iter_folds

    jobs = []
    for method in config.methods:
        for unit in config.units():
            for fold in iter_folds(splits):
                jobs.append(Job(job_id(method.name, unit, fold.fold), fold_job, dict(
                    run_path=str(run.path), method=method.name, unit=unit, fold=fold.fold,
                    train_ids=[str(i) for i in fold.train], val_ids=[str(i) for i in fold.val],
                    test_ids=[str(i) for i in fold.test], weights=weights,
                    seed=derive_seed(config.seed, method.name, unit, fold.fold),
                ), cpus=config.training.cpus_per_job,
                    gpus=job_gpus(config)))
    return jobs


def run_mgmt_experiment(
    config: MGMTExperimentConfig,
    base_dir: Path | str = ".",
    out: Path | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Executor | None = None,
    retries: int = 0,
    progress: bool = True,
) -> RunDir:
    """Run the whole experiment and write its run directory; returns it."""
    from gliotl.mgmt.pipeline.report import write_mgmt_outputs

    start = time.perf_counter()
    config = resolve_paths(config, Path(base_dir))
    run = RunDir.open(config.name, config_to_dict(config), config.seed, out=out, resume=resume,
                      overwrite=overwrite)
    cohort_summary = _prepare_cohort(config, run, progress)
    weights, pretrain_summary = _weights(config, run, executor, retries, progress)
    splits = _splits(config, run)
    jobs = fold_jobs(config, run, splits, weights)
    outcome = run_stage(jobs, run, executor, retries, progress, "fold models")
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
    run.finish("finished")
    return run


__all__ = [
    "COHORT_FILE",
    "PRETRAINED_FILE",
    "build_network",
    "eligible_patients",
    "fold_job",
    "fold_jobs",
    "job_id",
    "load_cohort",
    "pretrain_job",
    "read_run_cohort",
    "run_mgmt_experiment",
]
