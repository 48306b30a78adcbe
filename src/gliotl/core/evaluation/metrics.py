"""Regression and classification metrics, decision thresholds and bootstrap intervals.

Inputs are validated here (empty, NaN, length mismatch, a single class) so that a bad predictions
table gives one clear line instead of a NaN buried in a report. Thresholds are chosen by
:func:`choose_threshold` on validation predictions and passed unchanged to
:func:`classification_metrics` on test predictions: nothing here looks at test labels to pick one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats
from sklearn.metrics import (
    average_precision_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    roc_curve,
)

from gliotl.errors import GliotlError, input_error

REGRESSION_METRICS = ("spearman", "pearson", "rmse", "mae", "r2")
CLASSIFICATION_METRICS = (
    "roc_auc", "average_precision", "sensitivity", "specificity", "accuracy",
    "balanced_accuracy", "f1",
)
HIGHER_IS_BETTER = {
    "spearman": True, "pearson": True, "rmse": False, "mae": False, "r2": True,
    **{name: True for name in CLASSIFICATION_METRICS},
}


def check_arrays(
    y_true: Sequence[float] | np.ndarray,
    y_pred: Sequence[float] | np.ndarray,
    source: str = "predictions",
    true_field: str = "y_true",
    pred_field: str = "y_pred",
) -> tuple[np.ndarray, np.ndarray]:
    """Return both as finite float arrays or raise a one-line GliotlError."""
    arrays = []
    for values, field in ((y_true, true_field), (y_pred, pred_field)):
        try:
            arr = np.asarray(values, dtype=float).ravel()
        except (TypeError, ValueError):
            raise input_error(source, field, "non-numeric values; expected numbers") from None
        if arr.size == 0:
            raise input_error(source, field, "no values; expected at least one prediction")
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            raise input_error(source, field, f"{n_nan} NaN values; expected finite numbers")
        n_inf = int(np.isinf(arr).sum())
        if n_inf:
            raise input_error(source, field, f"{n_inf} infinite values; expected finite numbers")
        arrays.append(arr)
    if arrays[0].shape != arrays[1].shape:
        raise input_error(source, pred_field, f"{arrays[1].size} values for {arrays[0].size} "
                          f"in '{true_field}'; expected equal lengths")
    return arrays[0], arrays[1]


def check_binary(y_true: np.ndarray, source: str = "predictions", field: str = "y_true",
                 require_both: bool = True) -> np.ndarray:
    """Labels must be 0/1 (1 = positive class); both classes present when ``require_both``."""
    labels = set(np.unique(y_true).tolist())
    if not labels <= {0.0, 1.0}:
        shown = ", ".join(f"{v:g}" for v in sorted(labels - {0.0, 1.0})[:3])
        raise input_error(source, field, f"labels {shown}; expected 0 or 1 (1 = positive class)")
    if require_both and len(labels) < 2:
        only = "positive" if labels == {1.0} else "negative"
        raise input_error(source, field, f"only the {only} class present; expected both classes "
                          "(0 and 1) to compute ROC AUC / thresholds")
    return y_true.astype(int)


# --------------------------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------------------------


def _correlation(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    """Spearman / Pearson, NaN (not a crash or a warning) when either side is constant."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    if kind == "spearman":
        return float(stats.spearmanr(a, b).statistic)
    return float(stats.pearsonr(a, b).statistic)


def midrank(x: np.ndarray) -> np.ndarray:
    """1-based midranks (ties share their average rank) from one sort, as in Sun & Xu (2014);
    several times faster than scipy's rankdata on small arrays, which matters in bootstraps."""
    x = np.asarray(x)
    order = np.argsort(x)
    ordered = x[order]
    new_run = np.empty(x.size, dtype=bool)
    new_run[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_run[1:])
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], x.size)
    ranks = np.empty(x.size, dtype=float)
    ranks[order] = ((run_start + run_end + 1) / 2.0)[np.cumsum(new_run) - 1]
    return ranks


def fast_spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman as Pearson of midranks (no input checks): the inner loop of the bootstrap."""
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return float("nan")
    return float(np.corrcoef(midrank(y_true), midrank(y_pred))[0, 1])


def regression_metrics(
    y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray,
    source: str = "predictions",
) -> dict[str, float]:
    """Spearman, Pearson, RMSE, MAE and R^2 (R^2 is NaN when y_true is constant: undefined)."""
    t, p = check_arrays(y_true, y_pred, source)
    r2 = float("nan") if t.size < 2 or np.ptp(t) == 0 else float(r2_score(t, p))
    return {
        "spearman": _correlation("spearman", t, p),
        "pearson": _correlation("pearson", t, p),
        "rmse": float(np.sqrt(np.mean((t - p) ** 2))),
        "mae": float(mean_absolute_error(t, p)),
        "r2": r2,
    }


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def choose_threshold(
    y_true: Sequence[float] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    method: str = "youden",
    value: float = 0.5,
    source: str = "predictions",
) -> float:
    """Decision threshold from validation predictions; a sample is positive when score >= it.

    ``youden`` maximises sensitivity + specificity - 1 over the ROC curve (ties: the highest
    threshold, i.e. the most conservative call); ``fixed`` returns ``value``.
    """
    if method == "fixed":
        return float(value)
    if method != "youden":
        raise input_error(source, "threshold", f"method '{method}'; expected youden or fixed")
    t, s = check_arrays(y_true, y_score, source)
    t = check_binary(t, source)
    fpr, tpr, thresholds = roc_curve(t, s, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    threshold = float(thresholds[best])
    if not np.isfinite(threshold):  # J <= 0 everywhere: call nothing positive
        threshold = float(np.nextafter(s.max(), np.inf))
    return threshold


def fast_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC from midranks (Mann-Whitney), NaN for one class: the bootstrap's inner loop."""
    positive = y_true == 1
    m = int(positive.sum())
    n = y_true.size - m
    if m == 0 or n == 0:
        return float("nan")
    ranks = midrank(y_score)
    return float((ranks[positive].sum() - m * (m + 1) / 2) / (m * n))


def _safe_ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def classification_metrics(
    y_true: Sequence[float] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    threshold: float | Sequence[float] | np.ndarray = 0.5,
    source: str = "predictions",
    allow_single_class: bool = False,
) -> dict[str, float]:
    """ROC AUC and AP from scores; threshold metrics from ``score >= threshold``.

    ``threshold`` may be one value or one per sample (pooled out-of-fold predictions keep the
    threshold chosen in their own fold). A single class raises, unless ``allow_single_class``,
    which gives NaN for the rank metrics (a small test fold can legitimately lack a class).
    """
    t, s = check_arrays(y_true, y_score, source)
    t = check_binary(t, source, require_both=not allow_single_class)
    thr = np.broadcast_to(np.asarray(threshold, dtype=float), s.shape)
    if np.isnan(thr).any():
        raise input_error(source, "threshold", "NaN threshold; expected a number")
    y_hat = (s >= thr).astype(int)
    tp = int(np.sum((y_hat == 1) & (t == 1)))
    tn = int(np.sum((y_hat == 0) & (t == 0)))
    fp = int(np.sum((y_hat == 1) & (t == 0)))
    fn = int(np.sum((y_hat == 0) & (t == 1)))
    both = tp + fn > 0 and tn + fp > 0
    sensitivity = _safe_ratio(tp, tp + fn)
    specificity = _safe_ratio(tn, tn + fp)
    unique_thr = np.unique(thr)
    return {
        "roc_auc": float(roc_auc_score(t, s)) if both else float("nan"),
        "average_precision": float(average_precision_score(t, s)) if both else float("nan"),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "accuracy": float((tp + tn) / t.size),
        "balanced_accuracy": float(np.nanmean([sensitivity, specificity])),
        "f1": _safe_ratio(2 * tp, 2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0,
        "threshold": float(unique_thr[0]) if unique_thr.size == 1 else float("nan"),
    }


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------


class _Clusters(NamedTuple):
    """Rows grouped by cluster: ``order`` sorts rows by cluster, ``starts``/``sizes`` slice it."""

    order: np.ndarray
    sizes: np.ndarray
    starts: np.ndarray

    def rows(self, chosen: np.ndarray) -> np.ndarray:
        """All rows of each chosen cluster, as one index vector."""
        lengths = self.sizes[chosen]
        shift = np.repeat(self.starts[chosen] - (np.cumsum(lengths) - lengths), lengths)
        return self.order[shift + np.arange(lengths.sum())]


def _cluster_layout(clusters: Sequence[Any] | np.ndarray, n: int) -> _Clusters | None:
    """The cluster layout, or None when every row is its own cluster (plain resampling)."""
    codes = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)[1].ravel()
    if codes.size != n:
        raise GliotlError("bootstrap: field 'clusters': expected one cluster per value")
    if codes.max() + 1 == codes.size:
        return None
    sizes = np.bincount(codes)
    return _Clusters(np.argsort(codes, kind="stable"), sizes, np.cumsum(sizes) - sizes)


def _metric_or_none(metric_fn: Callable[[np.ndarray, np.ndarray], float], t: np.ndarray,
                    p: np.ndarray) -> float | None:
    """The metric on one resample, None where it is undefined (raises or is not finite)."""
    try:
        value = float(metric_fn(t, p))
    except (GliotlError, ValueError, ZeroDivisionError):
        return None
    return value if np.isfinite(value) else None


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: Sequence[float] | np.ndarray,
    y_pred: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify: bool = False,
    clusters: Sequence[Any] | np.ndarray | None = None,
    min_valid: float = 0.5,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``metric_fn(y_true, y_pred)``.

    Resamples where the metric is undefined (NaN, or it raises, e.g. one class) are skipped; if
    fewer than ``min_valid`` of them are usable the CI is (nan, nan) rather than a biased one.
    ``stratify`` resamples within each class of y_true (keeps both classes present);
    ``clusters`` resamples whole clusters (e.g. a sample that appears once per repeat), so that
    repeated rows of one sample are not treated as independent evidence.
    """
    t, p = check_arrays(y_true, y_pred)
    if n_boot < 1:
        raise GliotlError(f"bootstrap: field 'n_boot': {n_boot}; expected at least 1")
    if not 0 < alpha < 1:
        raise GliotlError(f"bootstrap: field 'alpha': {alpha}; expected 0 < alpha < 1")
    rng = np.random.default_rng(seed)
    layout = _cluster_layout(clusters, t.size) if clusters is not None else None
    unit_label = t if layout is None else t[layout.order[layout.starts]]
    if stratify:
        strata = [np.flatnonzero(unit_label == v) for v in np.unique(unit_label)]
    else:
        strata = [np.arange(unit_label.size)]
    values = []
    for _ in range(n_boot):
        chosen = np.concatenate([rng.choice(s, size=s.size, replace=True) for s in strata])
        idx = chosen if layout is None else layout.rows(chosen)
        value = _metric_or_none(metric_fn, t[idx], p[idx])
        if value is not None:
            values.append(value)
    if len(values) < max(1, min_valid * n_boot):
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


__all__ = [
    "CLASSIFICATION_METRICS",
    "HIGHER_IS_BETTER",
    "REGRESSION_METRICS",
    "bootstrap_ci",
    "check_arrays",
    "check_binary",
    "choose_threshold",
    "classification_metrics",
    "fast_auc",
    "fast_spearman",
    "midrank",
    "regression_metrics",
]
