"""Fold ensemble, late fusion over modality groups, and hold-out evaluation.

For each method:

1. **fold ensemble** (per modality): a hold-out patient's probability is the mean of the K fold
   models' sigmoid outputs. A validation patient was predicted by exactly one fold model (the
   one it was held out of), so the validation rows are out-of-fold predictions.
2. **late fusion** (per group of modalities): the mean of the group's modality probabilities.
   ``missing="complete"`` scores a group only on patients that have all its modalities;
   ``"available"`` averages the modalities a patient has (>= 1).
3. **threshold**: chosen by Youden's J on the fused out-of-fold VALIDATION probabilities and
   applied unchanged to the fused hold-out probabilities (no hold-out label is ever used to
   pick it). Caveat, documented: validation scores come from single fold models while hold-out
   scores are fold means, which are slightly less dispersed; the threshold transfers because
   both are averages of the same calibrated sigmoid outputs.
4. **metrics** on the hold-out: ROC AUC with DeLong's 95% CI, average precision, sensitivity,
   specificity, accuracy, F1 (with stratified bootstrap CIs when ``n_boot`` > 0) and the
   threshold; each method is compared with the reference by DeLong's paired test on the same
   hold-out patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gliotl.core.evaluation.metrics import bootstrap_ci, choose_threshold, classification_metrics
from gliotl.core.evaluation.stats import delong_auc_ci, delong_test

FOLD_COLUMNS = ["method", "modality", "sample_id", "repeat", "fold", "role", "y_true", "y_pred"]
METRIC_COLUMNS = ["roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "average_precision",
                  "sensitivity", "specificity", "accuracy", "f1", "threshold"]


def fold_ensemble(raw: pd.DataFrame) -> pd.DataFrame:
    """Per (method, modality, role, patient): the mean prediction over the fold models."""
    grouped = raw.groupby(["method", "modality", "role", "sample_id"], sort=True)
    out = grouped.agg(y_true=("y_true", "first"), y_pred=("y_pred", "mean"),
                      n_models=("fold", "size")).reset_index()
    return out


def fuse_groups(ensembled: pd.DataFrame, groups: dict[str, list[str]],
                missing: str = "complete") -> pd.DataFrame:
    """Per (method, group, role, patient): the mean probability over the group's modalities."""
    rows = []
    for name, members in groups.items():
        part = ensembled[ensembled["modality"].isin(members)]
        if part.empty:
            continue
        grouped = part.groupby(["method", "role", "sample_id"], sort=True)
        fused = grouped.agg(y_true=("y_true", "first"), y_pred=("y_pred", "mean"),
                            n_modalities=("modality", "nunique")).reset_index()
        if missing == "complete":
            fused = fused[fused["n_modalities"] == len(set(members))]
        rows.append(fused.assign(group=name))
    if not rows:
        return pd.DataFrame(columns=["method", "group", "role", "sample_id", "y_true", "y_pred",
                                     "n_modalities"])
    return pd.concat(rows, ignore_index=True)


def _threshold(val: pd.DataFrame, method: str) -> tuple[float, str]:
    if method == "youden" and val["y_true"].nunique() == 2:
        return choose_threshold(val["y_true"], val["y_pred"], "youden"), "youden on validation"
    return 0.5, "fixed 0.5" if method == "fixed" else "fixed 0.5 (validation has one class)"


def _boot(fn, y, p, n_boot, seed):
    if n_boot <= 0:
        return float("nan"), float("nan")
    return bootstrap_ci(fn, y, p, n_boot=n_boot, seed=seed, stratify=True)


def holdout_metrics(val: pd.DataFrame, test: pd.DataFrame, threshold_method: str = "youden",
                    n_boot: int = 0, seed: int = 0) -> dict[str, float | str | int]:
    """Hold-out metrics of one score with the threshold chosen on ``val`` only."""
    from sklearn.metrics import average_precision_score

    threshold, how = _threshold(val, threshold_method)
    y = test["y_true"].to_numpy(float)
    p = test["y_pred"].to_numpy(float)
    row: dict[str, float | str | int] = {
        "n_test": len(test), "n_test_pos": int(y.sum()), "n_val": len(val),
        "threshold_source": how,
    }
    metrics = classification_metrics(y, p, threshold, source="hold-out",
                                      allow_single_class=True)
    row.update({k: metrics[k] for k in ("average_precision", "sensitivity", "specificity",
                                        "accuracy", "f1")})
    row["threshold"] = threshold
    if len(np.unique(y)) == 2:
        auc, low, high = delong_auc_ci(y, p)
    else:
        auc = low = high = float("nan")
    row.update({"roc_auc": auc, "roc_auc_ci_low": low, "roc_auc_ci_high": high})
    if n_boot > 0 and len(np.unique(y)) == 2:
        shifted = p - threshold

        def sens(t, s):
            return float(np.mean(s[t == 1] >= 0))

        def spec(t, s):
            return float(np.mean(s[t == 0] < 0))

        row["average_precision_ci_low"], row["average_precision_ci_high"] = _boot(
            average_precision_score, y, p, n_boot, seed)
        row["sensitivity_ci_low"], row["sensitivity_ci_high"] = _boot(sens, y, shifted,
                                                                      n_boot, seed)
        row["specificity_ci_low"], row["specificity_ci_high"] = _boot(spec, y, shifted,
                                                                      n_boot, seed)
    return row


def evaluate_scores(scores: pd.DataFrame, key: str, threshold_method: str = "youden",
                    n_boot: int = 0, seed: int = 0) -> pd.DataFrame:
    """Metrics per (method, ``key``) from a frame with role val / test rows."""
    rows = []
    for (method, unit), part in scores.groupby(["method", key], sort=True):
        val = part[part["role"] == "val"]
        test = part[part["role"] == "test"]
        if test.empty:
            continue
        rows.append({"method": method, key: unit,
                     **holdout_metrics(val, test, threshold_method, n_boot, seed)})
    return pd.DataFrame(rows)


def per_fold_metrics(raw: pd.DataFrame, threshold_method: str = "youden") -> pd.DataFrame:
    """Each fold model alone on the hold-out, with its own validation fold's threshold."""
    rows = []
    for (method, modality, fold), part in raw.groupby(["method", "modality", "fold"]):
        val = part[part["role"] == "val"]
        test = part[part["role"] == "test"]
        if test.empty:
            continue
        row = holdout_metrics(val, test, threshold_method)
        rows.append({"method": method, "modality": modality, "fold": fold,
                     **{k: row[k] for k in ("roc_auc", "sensitivity", "specificity",
                                            "threshold", "n_val", "n_test")}})
    return pd.DataFrame(rows)


def compare_with_reference(scores: pd.DataFrame, key: str, reference: str) -> pd.DataFrame:
    """DeLong's paired test of each method against ``reference`` on shared hold-out patients."""
    rows = []
    test = scores[scores["role"] == "test"]
    for unit, part in test.groupby(key, sort=True):
        ref = part[part["method"] == reference].set_index("sample_id")
        if ref.empty:
            continue
        for method in sorted(set(part["method"]) - {reference}):
            other = part[part["method"] == method].set_index("sample_id")
            common = ref.index.intersection(other.index)
            y = ref.loc[common, "y_true"].to_numpy(float)
            if len(common) < 3 or len(np.unique(y)) < 2:
                continue
            result = delong_test(y, other.loc[common, "y_pred"], ref.loc[common, "y_pred"])
            rows.append({key: unit, "method": method, "reference": reference,
                         "n": len(common), "auc": result["auc_a"],
                         "reference_auc": result["auc_b"],
                         "difference": result["auc_a"] - result["auc_b"], "z": result["z"],
                         "p_value": result["p_value"], "test": result["test"]})
    return pd.DataFrame(rows)


def predictions_table(raw: pd.DataFrame, ensembled: pd.DataFrame, fused: pd.DataFrame
                      ) -> pd.DataFrame:
    """All three levels in one table (``level``: fold / modality / group; ``group`` names the
    modality or group; aggregated rows have ``fold`` = -1 and ``n_models`` fold models)."""
    fold_rows = raw.assign(level="fold", group=raw["modality"], n_models=1, n_modalities=1)
    ens = ensembled.assign(level="modality", group=ensembled["modality"], repeat=0, fold=-1,
                           n_modalities=1)
    fus = fused.assign(level="group", modality="", repeat=0, fold=-1, n_models=np.nan)
    columns = ["level", "method", "group", "modality", "sample_id", "repeat", "fold", "role",
               "y_true", "y_pred", "n_models", "n_modalities"]
    return pd.concat([fold_rows[columns], ens[columns], fus[columns]], ignore_index=True)


__all__ = [
    "FOLD_COLUMNS",
    "METRIC_COLUMNS",
    "compare_with_reference",
    "evaluate_scores",
    "fold_ensemble",
    "fuse_groups",
    "holdout_metrics",
    "per_fold_metrics",
    "predictions_table",
]
