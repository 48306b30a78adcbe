"""Late fusion over modality groups; every metric through :mod:`gliotl.core.evaluation.evaluate`.

For each method:

1. **fold ensemble** (per modality, :func:`gliotl.core.evaluation.evaluate.fold_ensemble`): a
   hold-out patient's probability is the mean of the K fold models' sigmoid outputs. A
   validation patient was predicted by exactly one fold model (the one it was held out of), so
   the validation rows are out-of-fold predictions.
2. **late fusion** (per group of modalities, :func:`fuse_groups`): the mean of the group's
   modality probabilities, as a FUSED PREDICTIONS TABLE (the standard predictions-table
   columns + ``group``). ``missing="complete"`` scores a group only on patients that have all
   its modalities; ``"available"`` averages the modalities a patient has (>= 1).
3. **evaluation** (:func:`evaluate_scores`, by ``evaluate_predictions``): the threshold is
   chosen by Youden's J on the fused out-of-fold VALIDATION probabilities and applied unchanged
   to the fused hold-out probabilities (no hold-out label is ever used to pick it). Caveat,
   documented: validation scores come from single fold models while hold-out scores are fold
   means, which are slightly less dispersed; the threshold transfers because both are averages
   of the same calibrated sigmoid outputs. On the hold-out: ROC AUC with DeLong's 95% CI,
   average precision, sensitivity, specificity, accuracy, F1 (stratified bootstrap CIs when
   ``n_boot`` > 0); each method is compared with the reference by DeLong's paired test on the
   same hold-out patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gliotl.core.evaluation.evaluate import ENSEMBLE_FOLD, Evaluation, evaluate_predictions
from gliotl.core.evaluation.stats import DELONG

FUSED_COLUMNS = ["method", "group", "sample_id", "repeat", "fold", "role", "y_true", "y_pred",
                 "n_modalities"]
HOLDOUT_COLUMNS = ["n_test", "n_test_pos", "n_val", "threshold_source", "average_precision",
                   "sensitivity", "specificity", "accuracy", "f1", "threshold", "roc_auc",
                   "roc_auc_ci_low", "roc_auc_ci_high"]
BOOTSTRAPPED = ["average_precision", "sensitivity", "specificity"]
"""Hold-out metrics with a stratified bootstrap CI (the AUC has DeLong's)."""


def fuse_groups(ensembled: pd.DataFrame, groups: dict[str, list[str]],
                missing: str = "complete") -> pd.DataFrame:
    """The fused predictions table: per (method, group, repeat, role, patient) the mean
    fold-ensemble probability over the group's modalities."""
    rows = []
    for name, members in groups.items():
        part = ensembled[ensembled["modality"].isin(members)]
        if part.empty:
            continue
        grouped = part.groupby(["method", "repeat", "role", "sample_id"], sort=True)
        fused = grouped.agg(y_true=("y_true", "first"), y_pred=("y_pred", "mean"),
                            n_modalities=("modality", "nunique")).reset_index()
        if missing == "complete":
            fused = fused[fused["n_modalities"] == len(set(members))]
        rows.append(fused.assign(group=name, fold=ENSEMBLE_FOLD))
    if not rows:
        return pd.DataFrame(columns=FUSED_COLUMNS)
    return pd.concat(rows, ignore_index=True)[FUSED_COLUMNS]


def evaluate_table(scores: pd.DataFrame, key: str, threshold: str = "youden", n_boot: int = 0,
                   seed: int = 0, reference: str | None = None) -> Evaluation:
    """``evaluate_predictions`` of a predictions table split by ``key`` (modality or group):
    Youden thresholds on its val rows, DeLong AUC intervals, bootstrap CIs when ``n_boot``."""
    return evaluate_predictions(
        scores, "classification", reference=reference, threshold=threshold, n_boot=n_boot,
        seed=seed, by=[key], ci_metrics=BOOTSTRAPPED if n_boot > 0 else [], auc_ci="delong",
        source=f"{key} predictions",
    )


def _counts(scores: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per (method, key): hold-out positives and validation rows (patients)."""
    test = scores[scores["role"] == "test"].drop_duplicates(["method", key, "sample_id"])
    val = scores[scores["role"] == "val"]
    n_pos = test.groupby(["method", key])["y_true"].sum().astype(int).rename("n_test_pos")
    n_val = val.groupby(["method", key]).size().rename("n_val")
    return pd.concat([n_pos, n_val], axis=1).fillna(0).astype(int).reset_index()


def holdout_metrics(scores: pd.DataFrame, evaluation: Evaluation, key: str) -> pd.DataFrame:
    """The pooled (fold-ensemble) hold-out metrics per (method, ``key``)."""
    pooled = evaluation.pooled.rename(columns={"n_rows": "n_test"})
    source = evaluation.per_fold.drop_duplicates(["method", key])
    table = pooled.merge(_counts(scores, key), on=["method", key], how="left").merge(
        source[["method", key, "threshold_source"]], on=["method", key], how="left")
    cis = [f"{m}_{end}" for m in evaluation_cis(evaluation) for end in ("ci_low", "ci_high")]
    return table[["method", key, *HOLDOUT_COLUMNS, *cis]]


def evaluation_cis(evaluation: Evaluation) -> list[str]:
    """The metrics that got a bootstrap interval in ``evaluation``."""
    return [m for m in BOOTSTRAPPED if f"{m}_ci_low" in evaluation.pooled.columns]


def per_fold_metrics(raw: pd.DataFrame, threshold: str = "youden") -> pd.DataFrame:
    """Each fold model alone on the hold-out, with its own validation fold's threshold."""
    per_fold = evaluate_table(raw, "modality", threshold).per_fold
    n_val = raw[raw["role"] == "val"].groupby(["method", "modality", "fold"]).size()
    per_fold["n_val"] = [int(n_val.get(tuple(k), 0)) for k in
                         per_fold[["method", "modality", "fold"]].to_numpy()]
    per_fold = per_fold.rename(columns={"n": "n_test"})
    return per_fold[["method", "modality", "fold", "roc_auc", "sensitivity", "specificity",
                     "threshold", "n_val", "n_test"]]


def delong_comparisons(evaluation: Evaluation, key: str) -> pd.DataFrame:
    """DeLong's paired tests of each method against the reference (shared hold-out patients)."""
    rows = evaluation.comparisons[evaluation.comparisons["test"] == DELONG]
    return pd.DataFrame({
        key: rows[key], "method": rows["method"], "reference": rows["reference"],
        "n": rows["n"], "auc": rows["value"], "reference_auc": rows["reference_value"],
        "difference": rows["difference"], "z": rows["statistic"],
        "p_value": rows["p_value"], "test": rows["test"],
    }).reset_index(drop=True)


def predictions_table(raw: pd.DataFrame, ensembled: pd.DataFrame, fused: pd.DataFrame
                      ) -> pd.DataFrame:
    """All three levels in one table (``level``: fold / modality / group; ``group`` names the
    modality or group; aggregated rows have ``fold`` = -1 and ``n_models`` fold models)."""
    fold_rows = raw.assign(level="fold", group=raw["modality"], n_models=1, n_modalities=1)
    ens = ensembled.assign(level="modality", group=ensembled["modality"], n_modalities=1)
    fus = fused.assign(level="group", modality="", n_models=np.nan)
    columns = ["level", "method", "group", "modality", "sample_id", "repeat", "fold", "role",
               "y_true", "y_pred", "n_models", "n_modalities"]
    return pd.concat([fold_rows[columns], ens[columns], fus[columns]], ignore_index=True)


__all__ = [
    "FUSED_COLUMNS",
    "HOLDOUT_COLUMNS",
    "delong_comparisons",
    "evaluate_table",
    "fuse_groups",
    "holdout_metrics",
    "per_fold_metrics",
    "predictions_table",
]
