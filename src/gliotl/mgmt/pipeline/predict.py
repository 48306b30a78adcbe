"""Apply a finished MGMT run to a new cohort: its fold models, preprocessing, fusion, thresholds.

Every fold model (``jobs/<method>-<unit>-f<k>/model.pt``, weights only) predicts each new
patient; probabilities are averaged over folds, then over the modalities of each group, exactly
as for the run's hold-out set, and the group's validation-chosen threshold from
``metrics.json`` turns them into calls. The new cohort table has the usual columns
(``patient_id``, modality paths, ``segmentation``); ``label`` is optional. A patient that
cannot be scored (a missing modality, a corrupt file, a non-finite or constant volume) gets a
row with its reason in ``not_scored``; none scored is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.core.io import load_torch, read_table, require_columns
from gliotl.core.runs.rundir import RunDir
from gliotl.errors import GliotlError, input_error


def read_new_cohort(path: str | Path):
    """A cohort table whose ``label`` column may be absent (patients of unknown status)."""
    from gliotl.mgmt.data.cohort import TABLE_COLUMNS, Cohort, read_cohort_table

    path = Path(path)
    frame = read_table(path, dtype=str, keep_default_na=False)
    require_columns(frame, ["patient_id"], path)
    if "label" in frame.columns:
        return read_cohort_table(path), True
    unknown = [c for c in frame.columns if c not in TABLE_COLUMNS]
    if unknown:
        raise input_error(path, unknown[0], f"unknown column; expected among {TABLE_COLUMNS}")
    if frame["patient_id"].duplicated().any():
        raise input_error(path, "patient_id", "unique patient ids expected")
    for column in TABLE_COLUMNS[2:]:
        if column in frame.columns:
            frame[column] = frame[column].map(
                lambda v: str((path.parent / v).resolve()) if isinstance(v, str) and v
                else pd.NA)
    frame["label"] = 0  # placeholder: MRIDataset yields a label; it is not reported
    return Cohort(frame, {}, str(path)), False


def _finished_config(run: RunDir, method: str | None):
    """The run's config and the method to apply; a run that cannot predict is an error."""
    from pydantic import ValidationError

    from gliotl.mgmt.config import MGMTExperimentConfig

    if not run.manifest_path.is_file():
        raise GliotlError(f"{run.path}: not a gliotl run directory (no manifest.json)")
    if run.manifest().get("status") != "finished":
        raise GliotlError(f"{run.path}: run is not finished; resume it before predicting")
    try:
        config = MGMTExperimentConfig.model_validate(run.config())
    except ValidationError:
        raise GliotlError(f"{run.config_path}: not an MGMT experiment's config; give a run "
                          "made by 'gliotl mgmt run'") from None
    method = method or config.reference
    trained = [m.name for m in config.methods]
    if method not in trained:
        raise GliotlError(f"{run.path}: field 'method': '{method}' was not trained in this run "
                          f"(available: {trained})")
    return config, method


def _fold_model(run: RunDir, config, method: str, unit: str, fold: int, device):
    from gliotl.mgmt.pipeline.jobs import build_network, job_id

    weights = run.job_dir(job_id(method, unit, fold)) / "model.pt"
    model = build_network(config, method, unit, None)
    try:
        model.load_state_dict(load_torch(weights))
    except RuntimeError as exc:
        raise input_error(weights, None, f"does not fit the run's {method} network "
                          f"({str(exc).splitlines()[0]})") from None
    return model.to(device)


def _fold_predictions(run: RunDir, config, method: str, cohort, cache, device) -> pd.DataFrame:
    """Every fold model's probabilities for the new patients, in the predictions layout."""
    import torch

    from gliotl.mgmt.data.dataset import MRIDataset
    from gliotl.mgmt.pipeline.jobs import unit_modalities
    from gliotl.mgmt.pipeline.training import predict_proba

    folds = sorted(int(f) for f in pd.read_csv(run.splits_path)["fold"].unique())
    rows = []
    for unit in config.units():
        ids = cohort.patients_with(unit_modalities(config, unit))
        if not ids:
            continue
        dataset = MRIDataset(cohort, unit_modalities(config, unit), cache, ids)
        for fold in folds:
            model = _fold_model(run, config, method, unit, fold, device)
            with torch.no_grad():
                prob = predict_proba(model, dataset, device, config.training.eval_batch_size)
            rows.append(pd.DataFrame({"method": method, "modality": unit, "role": "test",
                                      "sample_id": ids, "repeat": 0, "fold": fold,
                                      "y_true": dataset.labels, "y_pred": prob}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def predict_cohort(run_dir: str | Path, cohort_path: str | Path, method: str | None = None,
                   device: str = "auto", progress: bool = False) -> pd.DataFrame:
    """Per patient and modality group: fused probability, threshold and call."""
    from gliotl.core.device import resolve_device
    from gliotl.core.evaluation.evaluate import fold_ensemble
    from gliotl.mgmt.data.cache import VolumeCache
    from gliotl.mgmt.pipeline.experiment import cache_dir
    from gliotl.mgmt.pipeline.fusion import fuse_groups

    run = RunDir(run_dir)
    config, method = _finished_config(run, method)
    cohort, has_labels = read_new_cohort(cohort_path)
    cache = VolumeCache(cache_dir(config, run.path), config.preprocessing)
    filled = cache.fill(cohort, config.modalities, progress=progress, on_error="exclude")
    usable = filled.apply(cohort)
    raw = _fold_predictions(run, config, method, usable, cache, resolve_device(device))
    scored = set(raw["sample_id"]) if not raw.empty else set()
    unscored = {p: filled.failed.get(p) or _missing_modalities(cohort, p, config)
                for p in cohort.patient_ids if p not in scored}
    if not scored:
        shown = "; ".join(f"{p}: {why}" for p, why in list(unscored.items())[:3])
        raise input_error(cohort_path, None, f"no patient could be scored ({shown}"
                          f"{'; ...' if len(unscored) > 3 else ''})")
    fused = fuse_groups(fold_ensemble(raw, ["method", "modality"]), config.fusion_units(),
                        config.fusion.missing)
    metrics = json.loads(run.metrics_path.read_text())
    thresholds = {row["group"]: row["threshold"] for row in metrics.get("holdout", [])
                  if row["method"] == method}
    fused["threshold"] = fused["group"].map(thresholds).astype(float)
    fused["methylated"] = np.where(fused["threshold"].notna(),
                                   fused["y_pred"] >= fused["threshold"], pd.NA)
    out = fused.rename(columns={"sample_id": "patient_id", "y_pred": "probability"})
    columns = ["patient_id", "method", "group", "n_modalities", "probability", "threshold",
               "methylated"]
    if has_labels:
        out["label"] = out["y_true"].astype(int)
        columns.append("label")
    out = out[columns].sort_values(["group", "patient_id"]).assign(not_scored="")
    missing = pd.DataFrame({"patient_id": list(unscored), "method": method,
                            "not_scored": list(unscored.values())})
    return pd.concat([out, missing], ignore_index=True) if len(missing) else \
        out.reset_index(drop=True)


def _missing_modalities(cohort, patient_id: str, config) -> str:
    """Why a patient that preprocessed without error still has no prediction."""
    from gliotl.mgmt.pipeline.jobs import unit_modalities

    row = cohort.row(patient_id)
    absent = [m for m in config.modalities if not isinstance(row.get(m), str) or not row.get(m)]
    needed = [" + ".join(unit_modalities(config, unit)) for unit in config.units()]
    return (f"missing modality {', '.join(absent) or 'none'}; the run's models need "
            f"{' or '.join(needed)}")


__all__ = ["predict_cohort", "read_new_cohort"]
