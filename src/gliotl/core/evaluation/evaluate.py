"""Predictions table -> metrics per fold, per repeat and pooled, a summary and comparisons.

Both pipelines write the same predictions table (``method, sample_id, repeat, fold, role, y_true,
y_pred`` + optional columns) and call :func:`evaluate_predictions` on it, so every method is
scored by one code path.

How the levels are built:

* **per fold**: the test rows of one (method, repeat, fold). For classification the threshold is
  chosen on that fold's ``val`` rows (Youden) and applied unchanged to its test rows; a fold
  without val rows (or with a single class there) uses the fixed threshold.
* **per repeat**: the repeat's test rows pooled. In K-fold each sample is tested once (out-of-fold
  predictions). When one test set is shared by all folds (hold-out + K-fold), each sample's
  scores are averaged over the fold models (the fold ensemble of the MGMT paper), with the mean
  of the folds' thresholds.
* **pooled**: every repeat's pooled rows together, with a bootstrap CI that resamples samples
  (not rows), so a sample seen once per repeat is not counted as independent evidence.

A row with ``fold`` = -1 (:data:`ENSEMBLE_FOLD`) is already a fold ensemble
(:func:`fold_ensemble`): a table of such rows (e.g. MGMT's late fusion of fold-ensembled
modalities) is evaluated as one fold whose threshold comes from all its val rows, the
out-of-fold validation predictions. ``auc_ci="delong"`` reports ROC AUC with DeLong's interval
at every level instead of a bootstrap one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.evaluation.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    bootstrap_ci,
    check_arrays,
    check_binary,
    choose_threshold,
    classification_metrics,
    fast_auc,
    fast_spearman,
    regression_metrics,
)
from gliotl.core.evaluation.stats import (
    WILCOXON,
    corrected_resampled_ttest,
    delong_auc_ci,
    delong_test,
    paired_bootstrap_spearman,
    paired_wilcoxon,
)
from gliotl.core.io import json_safe, require_columns
from gliotl.errors import GliotlError, input_error

PREDICTION_COLUMNS = ["method", "sample_id", "repeat", "fold", "role", "y_true", "y_pred"]
PREDICTION_ROLES = ("test", "val")
TASKS = ("regression", "classification")
DEFAULT_PRIMARY = {"regression": "spearman", "classification": "roc_auc"}
THRESHOLD_METRICS = ("sensitivity", "specificity", "accuracy", "balanced_accuracy", "f1")
ENSEMBLE_FOLD = -1
"""``fold`` of a row that is the mean over a repeat's fold models (a fold ensemble)."""
AUC_CIS = ("bootstrap", "delong")
CORRELATIONS = ("spearman", "pearson")
CONSTANT_NOTE = "n/a: constant per fold"
"""What a rank statistic of a constant-per-fold predictor reads: pooling per-fold constants
gives a correlation that reflects only how the fold means differ (negative on average for the
training mean), not ranking skill."""
WILCOXON_SECONDARY = WILCOXON + " over repeats (secondary: repeats share samples)"


@dataclass
class Evaluation:
    """All evaluation tables of one experiment; ``to_dict()`` is what goes into metrics.json."""

    task: str
    primary_metric: str
    reference: str | None
    pair_on: str
    threshold: str | float
    keys: list[str]
    per_fold: pd.DataFrame
    per_repeat: pd.DataFrame
    pooled: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    metrics: list[str] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return sorted(self.pooled["method"].unique().tolist())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only; NaN becomes null so the file is strict JSON."""
        return {
            "task": self.task,
            "primary_metric": self.primary_metric,
            "reference": self.reference,
            "pair_on": self.pair_on,
            "threshold": self.threshold,
            "keys": list(self.keys),
            "metrics": list(self.metrics),
            "summary": records(self.summary),
            "comparisons": records(self.comparisons),
            "pooled": records(self.pooled),
            "per_repeat": records(self.per_repeat),
            "per_fold": records(self.per_fold),
        }


def records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    """A table as JSON records through the one sanitiser: numpy scalars as Python numbers, NaN
    as null (strict JSON)."""
    if frame is None:
        return []
    return [{str(k): json_safe(v) for k, v in row.items()} for row in frame.to_dict("records")]


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def validate_predictions(
    predictions: pd.DataFrame,
    task: str,
    source: str = "predictions",
    by: Sequence[str] = (),
    score_column: str | None = None,
) -> pd.DataFrame:
    """Check the predictions table and return a clean copy with canonical dtypes.

    For classification the score is ``score_column``, by default ``y_score`` when that column
    exists (then ``y_pred`` may hold hard labels) and ``y_pred`` otherwise; it is copied to
    ``y_pred`` in the returned frame.
    """
    if task not in TASKS:
        raise input_error(source, "task", f"'{task}'; expected regression or classification")
    if not isinstance(predictions, pd.DataFrame) or predictions.shape[0] == 0:
        raise input_error(source, None, "predictions table is empty; expected one row per "
                          "(method, sample, repeat, fold)")
    require_columns(predictions, PREDICTION_COLUMNS + list(by), source)
    frame = predictions.copy()
    if task == "classification":
        score_column = score_column or ("y_score" if "y_score" in frame.columns else "y_pred")
        require_columns(frame, [score_column], source)
        frame["y_pred"] = frame[score_column]
    _canonical_keys(frame, by, source)
    unknown = frame.loc[~frame["role"].isin(PREDICTION_ROLES), "role"]
    if not unknown.empty:
        raise input_error(source, "role", f"unknown role '{unknown.iloc[0]}'; expected test or val")
    y_true, y_pred = check_arrays(
        pd.to_numeric(frame["y_true"], errors="coerce"),
        pd.to_numeric(frame["y_pred"], errors="coerce"),
        source, "y_true", score_column or "y_pred",
    )
    if task == "classification":
        y_true = check_binary(y_true, source, require_both=False).astype(float)
    frame["y_true"], frame["y_pred"] = y_true, y_pred
    _check_rows(frame, by, source)
    return frame.reset_index(drop=True)


def _canonical_keys(frame: pd.DataFrame, by: Sequence[str], source: str) -> None:
    """Key columns in place: names as non-blank strings, repeat and fold as integers."""
    for column in ("method", "sample_id", "role", *by):
        n_missing = int(frame[column].isna().sum())
        if n_missing:
            raise input_error(source, column, f"{n_missing} missing values; expected no blanks")
        frame[column] = frame[column].astype(str)
    for column in ("repeat", "fold"):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        lowest = ENSEMBLE_FOLD if column == "fold" else 0
        bad = numbers.isna() | (numbers != np.floor(numbers)) | (numbers < lowest)
        if bad.any():
            value = frame.loc[bad, column].iloc[0]
            ensemble = f" (or {ENSEMBLE_FOLD}: a fold ensemble)" if column == "fold" else ""
            raise input_error(source, column, f"value '{value}'; expected an integer >= 0"
                              + ensemble)
        frame[column] = numbers.astype("int64")


def _check_rows(frame: pd.DataFrame, by: Sequence[str], source: str) -> None:
    """One row per (method, by, sample, repeat, fold, role), and some test rows."""
    row_key = ["method", *by, "sample_id", "repeat", "fold", "role"]
    dup = frame.duplicated(row_key)
    if dup.any():
        row = frame[dup].iloc[0]
        raise input_error(source, "sample_id", f"sample '{row['sample_id']}' of method "
                          f"'{row['method']}' appears twice in repeat {row['repeat']} fold "
                          f"{row['fold']} ({row['role']}); expected one row each")
    if not (frame["role"] == "test").any():
        raise input_error(source, "role", "no 'test' rows; expected test predictions")


# --------------------------------------------------------------------------------------------
# thresholds and pooling
# --------------------------------------------------------------------------------------------


def _choose_threshold(val: pd.DataFrame, threshold: str | float, fixed_value: float,
                      source: str) -> tuple[float, str]:
    """(threshold, how it was chosen) from validation rows ``val``."""
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        return float(threshold), "fixed"
    if threshold == "youden" and val["y_true"].nunique() == 2:
        return choose_threshold(val["y_true"], val["y_pred"], "youden", source=source), \
            "youden on val"
    if threshold == "fixed":
        return fixed_value, "fixed"
    return fixed_value, "fixed (no val rows)" if val.empty else "fixed (val has one class)"


def fold_thresholds(
    frame: pd.DataFrame, keys: list[str], threshold: str | float, fixed_value: float = 0.5,
    source: str = "predictions",
) -> pd.DataFrame:
    """One threshold per (keys, repeat, fold), chosen on that fold's val rows only."""
    if isinstance(threshold, str) and threshold not in ("youden", "fixed"):
        raise input_error(source, "threshold", f"'{threshold}'; expected youden, fixed or a number")
    rows = []
    for group, part in frame.groupby([*keys, "repeat", "fold"], sort=True):
        value, how = _choose_threshold(part[part["role"] == "val"], threshold, fixed_value,
                                       source)
        rows.append({**dict(zip([*keys, "repeat", "fold"], group, strict=True)),
                     "threshold": value, "threshold_source": how})
    return pd.DataFrame(rows)


def fold_ensemble(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Prediction rows of fold ensembles: per (keys, repeat, role, sample) the mean over the
    fold models that predicted it (a K-fold val row comes from one model and keeps its value),
    with ``fold`` = :data:`ENSEMBLE_FOLD` and ``n_models``."""
    parts = [pool_test_predictions(frame, keys, role=role).drop(columns="threshold")
             .assign(role=role, fold=ENSEMBLE_FOLD)
             for role in PREDICTION_ROLES if (frame["role"] == role).any()]
    return pd.concat(parts, ignore_index=True).sort_values(
        [*keys, "repeat", "role", "sample_id"], kind="stable", ignore_index=True)


def pool_test_predictions(
    frame: pd.DataFrame, keys: list[str], thresholds: pd.DataFrame | None = None,
    role: str = "test",
) -> pd.DataFrame:
    """Per (keys, repeat): one row per test sample (or per sample of ``role``).

    Out-of-fold K-fold rows pass through; a sample tested in several folds (shared hold-out set)
    gets the mean of its fold models' predictions (and of their thresholds).
    """
    test = frame[frame["role"] == role]
    if thresholds is not None:
        test = test.merge(thresholds[[*keys, "repeat", "fold", "threshold"]],
                          on=[*keys, "repeat", "fold"], how="left")
    else:
        test = test.assign(threshold=np.nan)
    grouped = test.groupby([*keys, "repeat", "sample_id"], sort=True)
    pooled = grouped.agg(
        y_true=("y_true", "first"),
        y_true_max=("y_true", "max"),
        y_true_min=("y_true", "min"),
        y_pred=("y_pred", "mean"),
        threshold=("threshold", "mean"),
        n_models=("fold", "size"),
    ).reset_index()
    inconsistent = pooled[pooled["y_true_max"] != pooled["y_true_min"]]
    if not inconsistent.empty:
        raise input_error("predictions", "y_true", f"sample '{inconsistent['sample_id'].iloc[0]}' "
                          "has different y_true in different folds; expected one true value")
    return pooled.drop(columns=["y_true_max", "y_true_min"])


# --------------------------------------------------------------------------------------------
# metrics per level
# --------------------------------------------------------------------------------------------


def _metrics(task: str, part: pd.DataFrame, allow_single_class: bool,
             source: str) -> dict[str, float]:
    if task == "regression":
        return regression_metrics(part["y_true"], part["y_pred"], source)
    return classification_metrics(part["y_true"], part["y_pred"], part["threshold"].to_numpy(),
                                  source, allow_single_class=allow_single_class)


def _ci_function(task: str, metric: str):
    """(metric_fn, uses_threshold_shift): a fast function for the bootstrap's inner loop."""
    if metric == "spearman":
        return fast_spearman, False
    if metric == "roc_auc":
        return fast_auc, False
    if task == "regression":
        return (lambda t, p: regression_metrics(t, p)[metric]), False
    # Threshold metrics resample (score - threshold) against 0, so each row keeps its own
    # fold's threshold inside the resample.
    shift = metric in THRESHOLD_METRICS
    return (lambda t, p: classification_metrics(t, p, 0.0 if shift else 0.5)[metric]), shift


def _pooled_row(task, keys, key_values, part, ci_metrics, n_boot, alpha, seed, source):
    row = dict(zip(keys, key_values, strict=True))
    row.update({"n_rows": int(len(part)), "n_samples": int(part["sample_id"].nunique()),
                "n_repeats": int(part["repeat"].nunique())})
    row.update(_metrics(task, part, allow_single_class=False, source=source))
    for metric in ci_metrics:
        low = high = float("nan")
        if n_boot > 0:
            fn, shift = _ci_function(task, metric)
            scores = part["y_pred"].to_numpy()
            if shift:
                scores = scores - part["threshold"].to_numpy()
            low, high = bootstrap_ci(fn, part["y_true"].to_numpy(), scores, n_boot=n_boot,
                                     alpha=alpha, seed=seed, stratify=task == "classification",
                                     clusters=part["sample_id"].to_numpy())
        row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
    return row


def constant_fold_counts(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per (keys): how many test folds there are and in how many every prediction is equal
    (a constant model in that fold: the training mean, or an ElasticNet with no gene left)."""
    test = frame[frame["role"] == "test"]
    spread = test.groupby([*keys, "repeat", "fold"], sort=True)["y_pred"].agg(np.ptp)
    counts = (spread == 0).groupby(level=list(range(len(keys)))).agg(["size", "sum"])
    counts.columns = ["n_folds", "n_constant_folds"]
    return counts.reset_index()


def _constant_methods(frame: pd.DataFrame, keys: list[str], pooled: pd.DataFrame
                      ) -> tuple[pd.DataFrame, set]:
    """The pooled table with fold counts, and the keys constant in every test fold."""
    counts = constant_fold_counts(frame, keys)
    pooled = pooled.merge(counts, on=keys, how="left")
    all_constant = counts[counts["n_constant_folds"] == counts["n_folds"]]
    return pooled, {tuple(v) for v in all_constant[keys].to_numpy().tolist()}


def _blank_constant(tables: list[pd.DataFrame], constant: set, keys: list[str]) -> None:
    """Correlations of constant-per-fold predictors set to NaN in place (see CONSTANT_NOTE)."""
    for table in tables:
        mask = pd.Series([tuple(v) in constant for v in table[keys].to_numpy().tolist()],
                         index=table.index)
        for column in [c for c in table.columns if c.split("_ci_")[0] in CORRELATIONS]:
            table.loc[mask, column] = np.nan


def _summary(per_fold, per_repeat, pooled, keys, metric_names, ci_metrics):
    rows = []
    for key_values, pooled_part in pooled.groupby(keys, sort=True):
        key_values = key_values if isinstance(key_values, tuple) else (key_values,)
        mask_r = np.logical_and.reduce([per_repeat[k] == v for k, v in zip(keys, key_values,
                                                                             strict=True)])
        mask_f = np.logical_and.reduce([per_fold[k] == v for k, v in zip(keys, key_values,
                                                                           strict=True)])
        units, over = (per_repeat[mask_r], "repeat") if mask_r.sum() > 1 else (per_fold[mask_f],
                                                                                 "fold")
        for metric in metric_names:
            values = units[metric].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            row = dict(zip(keys, key_values, strict=True))
            row.update({
                "metric": metric,
                "mean": float(values.mean()) if values.size else float("nan"),
                "sd": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                "n": int(values.size),
                "over": over,
                "pooled": float(pooled_part[metric].iloc[0]),
                "ci_low": float(pooled_part[f"{metric}_ci_low"].iloc[0])
                if metric in ci_metrics else float("nan"),
                "ci_high": float(pooled_part[f"{metric}_ci_high"].iloc[0])
                if metric in ci_metrics else float("nan"),
            })
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------


def _check_same_tests(frame, by_values, by, method, reference, unit_cols, source):
    test = frame[frame["role"] == "test"]
    for col, value in zip(by, by_values, strict=True):
        test = test[test[col] == value]
    sets = {name: test[test["method"] == name].groupby(unit_cols)["sample_id"].agg(frozenset)
            for name in (method, reference)}
    common = sets[method].index.intersection(sets[reference].index)
    for unit in common:
        if sets[method][unit] != sets[reference][unit]:
            raise input_error(source, "sample_id", f"methods '{method}' and '{reference}' were "
                              f"tested on different samples in {unit_cols} = {unit}; expected "
                              "identical splits for a paired comparison")


def _comparisons(frame, levels, pooled_rows, task, keys, by, reference, metric, pair_on,
                 source):
    """Each method against ``reference``; ``levels`` maps ``fold`` / ``repeat`` to the
    per-fold / per-repeat metric tables the paired test reads, and ``resampling`` (when set)
    to the :class:`ResamplingTests` whose corrected t becomes the headline row (the
    Wilcoxon is then labelled secondary)."""
    resampling = levels.get("resampling")
    columns = [*keys, "reference", "metric", "test", "unit", "n", "value", "reference_value",
               "difference", "statistic", "p_value"]
    if resampling is not None:
        columns.append("headline")
    if reference is None:
        return pd.DataFrame(columns=columns)
    n_repeats = frame["repeat"].nunique()
    unit = "fold" if pair_on == "fold" or n_repeats == 1 else "repeat"
    unit_cols = ["repeat", "fold"] if unit == "fold" else ["repeat"]
    rows = []
    delong = task == "classification" and n_repeats == 1
    by_groups = [((), frame)] if not by else frame.groupby(by, sort=True)
    for by_values, part in by_groups:
        by_values = by_values if isinstance(by_values, tuple) else (by_values,)
        by_filter = dict(zip(by, by_values, strict=True))
        methods = sorted(part["method"].unique())
        if reference not in methods:
            continue
        units = _unit_scores(levels[unit], by_filter, unit_cols, metric, methods)
        for method in (m for m in methods if m != reference):
            _check_same_tests(frame, by_values, by, method, reference, unit_cols, source)
            base = {**{"method": method}, **by_filter, "reference": reference, "metric": metric}
            rows.extend(_pair_rows(units[[method, reference]].dropna(), unit, base, resampling,
                                   source))
            if delong:
                rows.extend(_delong_rows(pooled_rows, by_filter, method, reference, base))
    return pd.DataFrame(rows, columns=columns)


def _pair_rows(pair: pd.DataFrame, unit: str, base: dict[str, Any],
               resampling: ResamplingTests | None, source: Any) -> list[dict[str, Any]]:
    """The rows of one method against the reference: the resampling tests (when asked for)
    and the Wilcoxon over ``unit`` (secondary next to them; none for a constant method)."""
    method, reference = base["method"], base["reference"]
    rows = resampling.rows(method, reference, base) if resampling is not None else []
    if len(pair) and not (resampling and resampling.constant(method, reference)):
        row = _wilcoxon_row(pair, method, reference, unit, base, source)
        if resampling is not None:
            row.update(test=WILCOXON_SECONDARY, headline=False)
        rows.append(row)
    return rows


@dataclass
class ResamplingTests:
    """The headline method-vs-method tests of one regression table evaluated by repeated K-fold
    CV (each sample tested once per repeat): the corrected resampled t on per-fold ``metric``
    differences (headline) and the paired bootstrap over samples of the difference in pooled
    Spearman (secondary: it holds the fitted models fixed and is liberal on null data).

    ``constant_methods`` predict one value per fold: they have no rank statistic, so rank
    tests against them are reported as not applicable instead of computed."""

    per_fold: pd.DataFrame
    pooled_rows: pd.DataFrame
    metric: str
    n_boot: int
    seed: int
    constant_methods: frozenset[str]

    def constant(self, method: str, reference: str) -> bool:
        return self.metric in CORRELATIONS and bool(
            {method, reference} & self.constant_methods)

    def rows(self, method: str, reference: str, base: dict[str, Any]) -> list[dict[str, Any]]:
        if self.constant(method, reference):
            return [{**base, "test": CONSTANT_NOTE, "unit": "fold", "n": 0,
                     "p_value": float("nan"), "headline": True}]
        rows = [self._corrected_t(method, reference, base)]
        if self.metric == "spearman":
            rows.append(self._bootstrap(method, reference, base))
        return [row for row in rows if row is not None]

    def _corrected_t(self, method: str, reference: str, base: dict[str, Any]
                     ) -> dict[str, Any] | None:
        """Folds where either method's metric is undefined (a constant fold) are left out;
        the test then runs on the remaining n folds (1 / n in the correction, n - 1 df)."""
        table = self.per_fold.pivot_table(index=["repeat", "fold"], columns="method",
                                          values=self.metric, aggfunc="first", dropna=False)
        sizes = self.per_fold[self.per_fold["method"] == reference].set_index(
            ["repeat", "fold"])["n"]
        pair = table.reindex(columns=[method, reference]).dropna()
        if len(pair) < 2:
            return None
        per_repeat = self.pooled_rows[self.pooled_rows["method"] == reference].groupby(
            "repeat").size()
        n_test = sizes.to_numpy(float)
        n_all = per_repeat.reindex(sizes.index.get_level_values("repeat")).to_numpy(float)
        ratio = float(np.mean(n_test / (n_all - n_test)))
        result = corrected_resampled_ttest(pair[method], pair[reference], len(pair), 1, ratio)
        return {**base, "test": result["test"], "unit": "fold", "n": result["n"],
                "value": float(pair[method].mean()),
                "reference_value": float(pair[reference].mean()),
                "difference": result["mean_difference"], "statistic": result["statistic"],
                "p_value": result["p_value"], "headline": True}

    def _bootstrap(self, method: str, reference: str, base: dict[str, Any]
                   ) -> dict[str, Any] | None:
        rows = self.pooled_rows[self.pooled_rows["method"].isin([method, reference])]
        wide = rows.pivot_table(index=["repeat", "sample_id"], columns="method",
                                values=["y_pred", "y_true"], aggfunc="first").dropna()
        samples = wide.reset_index().groupby("repeat")["sample_id"].agg(tuple)
        if wide.empty or samples.nunique() != 1 or len(samples.iloc[0]) < 3:
            return None  # the bootstrap pairs repeats sample by sample: same samples needed
        shape = (samples.size, len(samples.iloc[0]))
        y = wide[("y_true", reference)].to_numpy(float).reshape(shape)
        a = wide[("y_pred", method)].to_numpy(float).reshape(shape)
        b = wide[("y_pred", reference)].to_numpy(float).reshape(shape)
        result = paired_bootstrap_spearman(y, a, b, n_boot=self.n_boot, seed=self.seed)
        value, ref_value = (float(np.mean([fast_spearman(y[r], p[r]) for r in range(len(y))]))
                            for p in (a, b))
        return {**base, "metric": "spearman", "test": result["test"], "unit": "sample",
                "n": result["n"], "value": value, "reference_value": ref_value,
                "difference": result["mean_difference"],
                "statistic": result["statistic"], "p_value": result["p_value"],
                "headline": False}


def _unit_scores(table: pd.DataFrame, by_filter: dict[str, Any], unit_cols: list[str],
                 metric: str, methods: list[str]) -> pd.DataFrame:
    """``metric`` per unit (rows) and method (columns) within one ``by`` group."""
    sel = np.logical_and.reduce([table[k] == v for k, v in by_filter.items()]) if by_filter \
        else np.ones(len(table), dtype=bool)
    units = table[sel].pivot_table(index=unit_cols, columns="method", values=metric,
                                   aggfunc="first", dropna=False)
    return units.reindex(columns=methods)


def _wilcoxon_row(pair: pd.DataFrame, method: str, reference: str, unit: str,
                  base: dict[str, Any], source: Any) -> dict[str, Any]:
    """The paired Wilcoxon of ``method`` against ``reference`` over the paired units."""
    result = paired_wilcoxon(pair[method], pair[reference], source=source)
    return {**base, "test": result["test"], "unit": unit, "n": result["n"],
            "value": float(pair[method].mean()),
            "reference_value": float(pair[reference].mean()),
            "difference": result["mean_difference"],
            "statistic": result["statistic"], "p_value": result["p_value"]}


def _delong_rows(pooled_rows, by_filter, method, reference, base):
    """DeLong on the pooled scores (one row) when both methods scored exactly the same test
    samples, else no row."""
    part = pooled_rows
    for col, value in by_filter.items():
        part = part[part[col] == value]
    a = part[part["method"] == method].set_index("sample_id").sort_index()
    b = part[part["method"] == reference].set_index("sample_id").sort_index()
    if len(a) == 0 or not a.index.equals(b.index) or a["y_true"].nunique() < 2:
        return []
    result = delong_test(a["y_true"].to_numpy(), a["y_pred"].to_numpy(), b["y_pred"].to_numpy())
    return [{**base, "metric": "roc_auc", "test": result["test"], "unit": "sample",
            "n": int(len(a)), "value": result["auc_a"], "reference_value": result["auc_b"],
            "difference": result["auc_a"] - result["auc_b"], "statistic": result["z"],
            "p_value": result["p_value"]}]


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def _check_options(task: str, frame: pd.DataFrame, reference: str | None,
                   metrics: Sequence[str | None], options: dict[str, str], source: str) -> None:
    names = list(REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS)
    for metric in metrics:
        if metric not in names:
            raise input_error(source, "primary_metric", f"'{metric}' for {task}; expected one of "
                              + ", ".join(names))
    allowed = {"pair_on": ("repeat", "fold"), "auc_ci": AUC_CIS}
    for name, value in options.items():
        if value not in allowed[name]:
            raise input_error(source, name, f"'{value}'; expected " + " or ".join(allowed[name]))
    if reference is not None and reference not in set(frame["method"]):
        raise input_error(source, "method", f"reference method '{reference}' not in the table "
                          f"(found: {', '.join(sorted(frame['method'].unique())[:8])})")


def _with_delong(row: dict[str, Any], part: pd.DataFrame) -> dict[str, Any]:
    """ROC AUC and its 95% interval from DeLong's variance (NaN with a single class)."""
    auc = low = high = float("nan")
    if part["y_true"].nunique() == 2:
        auc, low, high = delong_auc_ci(part["y_true"].to_numpy(), part["y_pred"].to_numpy())
    row.update({"roc_auc": auc, "roc_auc_ci_low": low, "roc_auc_ci_high": high})
    return row


def _delong_pooled(pooled: pd.DataFrame, pooled_rows: pd.DataFrame, keys: list[str]
                   ) -> pd.DataFrame:
    """The pooled level with DeLong's AUC and interval (rows and groups share their order)."""
    parts = (part for _, part in pooled_rows.groupby(keys, sort=True))
    return pd.DataFrame([_with_delong(row, part) for row, part in zip(
        pooled.to_dict("records"), parts, strict=True)])


def _per_fold(task: str, frame: pd.DataFrame, keys: list[str],
              thresholds: pd.DataFrame | None, delong: bool, source: str) -> pd.DataFrame:
    test = frame[frame["role"] == "test"]
    if thresholds is not None:
        test = test.merge(thresholds, on=[*keys, "repeat", "fold"], how="left")
    rows = []
    for group, part in test.groupby([*keys, "repeat", "fold"], sort=True):
        row = dict(zip([*keys, "repeat", "fold"], group, strict=True))
        row["n"] = int(len(part))
        row.update(_metrics(task, part, allow_single_class=True, source=source))
        if thresholds is not None:
            row["threshold_source"] = part["threshold_source"].iloc[0]
        rows.append(_with_delong(row, part) if delong else row)
    return pd.DataFrame(rows)


def _per_repeat(task: str, pooled_rows: pd.DataFrame, keys: list[str], delong: bool,
                source: str) -> pd.DataFrame:
    rows = []
    for group, part in pooled_rows.groupby([*keys, "repeat"], sort=True):
        row = dict(zip([*keys, "repeat"], group, strict=True))
        row["n"] = int(len(part))
        row["fold_ensemble"] = bool((part["n_models"] > 1).any())
        row.update(_metrics(task, part, allow_single_class=False, source=source))
        rows.append(_with_delong(row, part) if delong else row)
    return pd.DataFrame(rows)


def _pooled(task: str, keys: list[str], pooled_rows: pd.DataFrame, boot: list[str],
            bootstrap: tuple[int, float, int], delong: bool, source: str) -> pd.DataFrame:
    """Metrics on each unit's pooled test predictions, with bootstrap (n_boot, alpha, seed) or
    DeLong intervals."""
    n_boot, alpha, seed = bootstrap
    pooled = pd.DataFrame([
        _pooled_row(task, keys, group, part, boot, n_boot, alpha, seed, source)
        for group, part in pooled_rows.groupby(keys, sort=True)
    ])
    return _delong_pooled(pooled, pooled_rows, keys) if delong else pooled


def _blank_constant_methods(task: str, frame: pd.DataFrame, keys: list[str],
                            per_repeat: pd.DataFrame, pooled: pd.DataFrame
                            ) -> tuple[pd.DataFrame, set]:
    """Regression: the units constant in every test fold, their correlations blanked."""
    if task != "regression":
        return pooled, set()
    pooled, constant = _constant_methods(frame, keys, pooled)
    _blank_constant([per_repeat, pooled], constant, keys)
    return pooled, constant


def _note_constant(summary: pd.DataFrame, keys: list[str], constant: set) -> None:
    """Say why a constant unit's correlations are missing."""
    summary["note"] = [CONSTANT_NOTE if (tuple(k) in constant and m in CORRELATIONS) else ""
                       for k, m in zip(summary[keys].to_numpy().tolist(), summary["metric"],
                                       strict=True)]


def _resampling_tests(task: str, by: list[str], resampling_boot: int | None,
                      per_fold: pd.DataFrame, pooled_rows: pd.DataFrame, primary: str,
                      seed: int, constant: set, source: str) -> ResamplingTests | None:
    """The repeated-CV tests of regression methods (None unless ``resampling_boot`` is set)."""
    if by and resampling_boot is not None:
        raise input_error(source, "by", "resampling tests compare whole methods; expected no "
                          "'by' columns with resampling_boot")
    if task != "regression" or resampling_boot is None:
        return None
    return ResamplingTests(per_fold, pooled_rows, primary, resampling_boot, seed,
                           frozenset(k[0] for k in constant))


def evaluate_predictions(  # noqa: PLR0913  (keyword options of the one public entry point)
    predictions: pd.DataFrame,
    task: str,
    reference: str | None = None,
    primary_metric: str | None = None,
    threshold: str | float = "youden",
    pair_on: str = "repeat",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    by: Sequence[str] = (),
    score_column: str | None = None,
    fixed_threshold: float = 0.5,
    ci_metrics: Sequence[str] | None = None,
    source: str = "predictions",
    auc_ci: str = "bootstrap",
    resampling_boot: int | None = None,
) -> Evaluation:
    """Evaluate every method of a predictions table on identical splits.

    ``reference``: the method every other one is compared with (paired Wilcoxon on the primary
    metric over ``pair_on`` units - repeats, or folds when there is one repeat - and, for
    classification with one repeat and a shared test set, DeLong on the pooled scores).
    ``by``: extra columns (e.g. ``modality``) that split a method into separately evaluated
    units; comparisons are then made within each value. ``ci_metrics``: metrics that get a
    bootstrap CI on the pooled level (default: the primary metric). ``auc_ci="delong"``: ROC
    AUC and its CI at every level from DeLong's method (not bootstrapped).
    ``resampling_boot`` (regression on repeated K-fold): the headline comparison becomes the
    corrected resampled t-test; a paired bootstrap (this many draws) over samples and the
    Wilcoxon over repeats follow as secondary rows (``headline`` False).

    In regression a method whose predictions are constant in every test fold (the training
    mean) gets no correlation (NaN, ``note`` = :data:`CONSTANT_NOTE`) at any level and no rank
    test; ``n_constant_folds`` counts such folds for every method.
    """
    by = list(by)
    frame = validate_predictions(predictions, task, source, by, score_column)
    primary = primary_metric or DEFAULT_PRIMARY[task]
    _check_options(task, frame, reference, [primary, *(ci_metrics or [])],
                   {"pair_on": pair_on, "auc_ci": auc_ci}, source)
    metric_names = list(REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS)
    ci_metrics = list(ci_metrics) if ci_metrics is not None else [primary]
    keys = ["method", *by]
    delong = task == "classification" and auc_ci == "delong"
    thresholds = (fold_thresholds(frame, keys, threshold, fixed_threshold, source)
                  if task == "classification" else None)
    per_fold = _per_fold(task, frame, keys, thresholds, delong, source)
    pooled_rows = pool_test_predictions(frame, keys, thresholds)
    per_repeat = _per_repeat(task, pooled_rows, keys, delong, source)
    boot = [m for m in ci_metrics if not (delong and m == "roc_auc")]
    pooled = _pooled(task, keys, pooled_rows, boot, (n_boot, alpha, seed), delong, source)
    pooled, constant = _blank_constant_methods(task, frame, keys, per_repeat, pooled)
    summary = _summary(per_fold, per_repeat, pooled, keys, metric_names, ci_metrics)
    if task == "regression":
        _note_constant(summary, keys, constant)
    resampling = _resampling_tests(task, by, resampling_boot, per_fold, pooled_rows, primary,
                                   seed, constant, source)
    levels = {"fold": per_fold, "repeat": per_repeat, "resampling": resampling}
    comparisons = _comparisons(frame, levels, pooled_rows, task, keys, by, reference, primary,
                               pair_on, source)
    return Evaluation(
        task=task, primary_metric=primary, reference=reference, pair_on=pair_on,
        threshold=threshold, keys=keys, per_fold=per_fold, per_repeat=per_repeat, pooled=pooled,
        summary=summary, comparisons=comparisons, metrics=metric_names,
    )


__all__ = [
    "ENSEMBLE_FOLD",
    "PREDICTION_COLUMNS",
    "Evaluation",
    "GliotlError",
    "evaluate_predictions",
    "fold_ensemble",
    "fold_thresholds",
    "pool_test_predictions",
    "records",
    "validate_predictions",
]
