"""The MGMT experiment's job functions and the typed requests they receive.

Job functions live at module level (importable by worker processes and Ray) and get everything
they need in one request object: the validated config, the cohort table and the cache folder,
the method, the unit (a modality or "stacked"), the fold and its patients. They never read the
run's config back, and their results carry method, modality and fold as fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.io import save_torch
from gliotl.core.seeding import seed_everything
from gliotl.mgmt.config import MGMTExperimentConfig, TrainingConfig
from gliotl.mgmt.data.source import load_cohort

PRETRAINED_FILE = "pretrained_medicalnet.pth"


def unit_modalities(config: MGMTExperimentConfig, unit: str) -> list[str]:
    """The modalities one network sees: one, or all of them stacked."""
    return list(config.modalities) if unit == "stacked" else [unit]


def build_network(config: MGMTExperimentConfig, method: str, unit: str, weights: str | None,
                  steps_per_epoch: int = 1):
    from gliotl.mgmt.pipeline.training import build_model

    return build_model(method, config.model.depth, weights, len(unit_modalities(config, unit)),
                       config.model.dropout, config.training_for(method), steps_per_epoch,
                       config.model.shortcut_type)


def job_id(method: str, unit: str, fold: int) -> str:
    return f"{method}-{unit}-f{fold}"


@dataclass(frozen=True)
class PretrainRequest:
    """Segmentation pretraining of the backbone on the separate pretraining cohort."""

    config: MGMTExperimentConfig
    cohort_dir: str
    """Where a phantom pretraining cohort is generated."""
    seed: int


def pretrain_job(job_dir: Path, request: PretrainRequest) -> dict[str, Any]:
    """Segmentation pretraining on the separate pretraining cohort (MedicalNet format)."""
    from gliotl.mgmt.pipeline.pretrain import pretrain_segmentation

    config = request.config
    spec = config.model.pretrain
    assert spec is not None
    cohort = load_cohort(spec.cohort, Path(request.cohort_dir))
    return pretrain_segmentation(
        cohort, job_dir / PRETRAINED_FILE, depth=config.model.depth,
        modalities=spec.modalities or config.modalities, shape=spec.shape, epochs=spec.epochs,
        batch_size=spec.batch_size, lr=spec.lr, seed=request.seed, device=config.training.device,
        shortcut_type=config.model.shortcut_type, max_patients=spec.max_patients,
    )


@dataclass(frozen=True)
class FoldRequest:
    """One method on one unit and one fold: its patients, weights and seed."""

    config: MGMTExperimentConfig
    cohort_table: str
    cache_dir: str
    method: str
    unit: str
    fold: int
    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    weights: str | None
    seed: int
    epoch_lines: bool = False  # per-epoch progress lines (plain output only)

    @property
    def training(self) -> TrainingConfig:
        return self.config.training_for(self.method)


def _datasets(request: FoldRequest) -> dict[str, Any]:
    """The train / val / hold-out datasets of the fold's patients that have the unit's
    modalities (only the training set augments)."""
    from gliotl.core.device import resolve_device
    from gliotl.mgmt.data.cache import VolumeCache
    from gliotl.mgmt.data.cohort import read_cohort_table
    from gliotl.mgmt.data.dataset import MRIDataset

    config = request.config
    cohort = read_cohort_table(request.cohort_table)
    modalities = unit_modalities(config, request.unit)
    have = set(cohort.patients_with(modalities))
    cache = VolumeCache(request.cache_dir, config.preprocessing)
    chosen = {"train": request.train_ids, "val": request.val_ids, "test": request.test_ids}
    ids = {role: [p for p in patients if p in have] for role, patients in chosen.items()}
    training = request.training
    resident = resolve_device(training.device) if training.resident_cohort else None
    seed_everything(request.seed)
    return {
        "train": MRIDataset(cohort, modalities, cache, ids["train"], training.augment,
                            request.seed, resident=resident),
        "val": MRIDataset(cohort, modalities, cache, ids["val"], resident=resident),
        "test": MRIDataset(cohort, modalities, cache, ids["test"], resident=resident),
    }


def _steps_per_epoch(train_set: Any, training: TrainingConfig) -> int:
    labels = train_set.labels
    n_train = len(train_set) if training.balancing != "undersample" else \
        2 * int(min(labels.sum(), (1 - labels).sum()))
    return int(np.ceil(n_train / training.batch_size))


def _predictions(request: FoldRequest, model: Any, datasets: dict[str, Any], device: Any
                 ) -> pd.DataFrame:
    """Validation and hold-out probabilities in the predictions-table layout."""
    from gliotl.mgmt.models.spottune import SpotTune
    from gliotl.mgmt.pipeline.training import predict_proba

    training = request.training
    frames = []
    for role in ("val", "test"):
        dataset = datasets[role]
        if isinstance(model, SpotTune):
            model.reset_policy_usage()
        prob = predict_proba(model, dataset, device, training.eval_batch_size,
                             num_workers=training.num_workers, training=training)
        frames.append(pd.DataFrame({
            "method": request.method, "modality": request.unit,
            "sample_id": dataset.patient_ids, "repeat": 0, "fold": request.fold, "role": role,
            "y_true": dataset.labels, "y_pred": prob,
        }))
    return pd.concat(frames, ignore_index=True)


def fold_job(job_dir: Path, request: FoldRequest) -> dict[str, Any]:
    """Train one method on one modality (or the stack) and one fold; predict val and hold-out."""
    from gliotl.core.device import resolve_device
    from gliotl.core.reporting.progress import EpochReporter, plain_output
    from gliotl.mgmt.models.spottune import SpotTune
    from gliotl.mgmt.pipeline.training import fit

    training = request.training
    datasets = _datasets(request)
    steps = _steps_per_epoch(datasets["train"], training)
    model = build_network(request.config, request.method, request.unit, request.weights, steps)
    device = resolve_device(training.device)
    epochs = EpochReporter(f"{request.method} {request.unit} fold {request.fold}",
                           training.epochs, enabled=request.epoch_lines and plain_output())
    result = fit(model, datasets["train"], datasets["val"], training, device, request.seed,
                 progress=epochs)
    save_torch(job_dir / "model.pt", result.state_dict)
    tags = {"method": request.method, "modality": request.unit, "fold": request.fold}
    out: dict[str, Any] = {
        **tags,
        "predictions": _predictions(request, model, datasets, device),
        "history": result.history.assign(**tags),
        "best_epoch": result.best_epoch, "best_val_score": result.best_score,
        "val_threshold": result.threshold, "train_seconds": result.seconds,
        "n_train": len(datasets["train"]), "n_val": len(datasets["val"]),
        "n_test": len(datasets["test"]), "device": str(device),
    }
    if isinstance(model, SpotTune):  # usage recorded on the last (hold-out) pass
        out["policy_usage"] = model.policy_usage().assign(**tags)
        out["routing"] = routing_table(model, datasets["test"]).assign(**tags)
    return out


def routing_table(model: Any, dataset: Any) -> pd.DataFrame:
    """Per hold-out patient and block: the routing of the last evaluation pass (1 = tuned copy)
    with the patient's label, so the policy can be read per MGMT class."""
    decisions = model.routing_decisions()
    if len(decisions) != len(dataset):
        return pd.DataFrame(columns=["sample_id", "y_true", "block", "tuned"])
    return pd.DataFrame({
        "sample_id": np.repeat(np.asarray(dataset.patient_ids, dtype=object), model.n_blocks),
        "y_true": np.repeat(np.asarray(dataset.labels), model.n_blocks),
        "block": np.tile(np.asarray(model.block_names, dtype=object), len(dataset)),
        "tuned": decisions.reshape(-1).astype(int),
    })


__all__ = [
    "PRETRAINED_FILE",
    "FoldRequest",
    "PretrainRequest",
    "build_network",
    "fold_job",
    "job_id",
    "pretrain_job",
    "unit_modalities",
]
