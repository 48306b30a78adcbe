"""Statistical comparisons between methods evaluated on the same splits.

* :func:`paired_wilcoxon` compares per-repeat (or per-fold) scores of two methods.
* :func:`delong_test` compares two ROC AUCs measured on one shared test set, accounting for the
  correlation between the two scores (DeLong, DeLong & Clarke-Pearson 1988), computed with the
  fast midrank algorithm of Sun & Xu (IEEE Signal Process. Lett. 21:1389, 2014).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from gliotl.core.evaluation.metrics import check_arrays, check_binary, midrank
from gliotl.errors import input_error

WILCOXON = "paired Wilcoxon signed-rank"
DELONG = "DeLong"


def paired_wilcoxon(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    alternative: str = "two-sided",
    source: str = "comparison",
) -> dict[str, float | int | str]:
    """Wilcoxon signed-rank test on the paired differences a - b.

    Zero differences are dropped (Wilcoxon's convention); when every difference is zero the two
    methods are indistinguishable and p = 1 (scipy would raise).
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise input_error(source, "alternative", f"'{alternative}'; expected two-sided, greater "
                          "or less")
    x, y = check_arrays(a, b, source, "a", "b")
    diff = x - y
    result: dict[str, float | int | str] = {
        "test": WILCOXON,
        "statistic": 0.0,
        "p_value": 1.0,
        "n": int(diff.size),
        "mean_difference": float(diff.mean()),
    }
    if np.any(diff != 0):
        res = stats.wilcoxon(x, y, alternative=alternative, zero_method="wilcox")
        result["statistic"] = float(res.statistic)
        result["p_value"] = float(res.pvalue)
    return result


def delong_components(
    y_true: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and the structural components V10 (per positive) and V01 (per negative).

    ``scores`` has shape (k, n_samples). Returns (auc[k], v10[k, m], v01[k, n]) where
    v10[r, i] = mean over negatives j of psi(X_i, Y_j), v01[r, j] = mean over positives i,
    psi = 1 if X > Y, 1/2 if tied, 0 otherwise - computed from midranks in O(N log N).
    """
    positive = y_true == 1
    m = int(positive.sum())
    n = int(y_true.size - m)
    k = scores.shape[0]
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    auc = np.empty(k)
    for r in range(k):
        x, y = scores[r, positive], scores[r, ~positive]
        tz = midrank(np.concatenate([x, y]))
        tx, ty = midrank(x), midrank(y)
        auc[r] = tz[:m].sum() / (m * n) - (m + 1.0) / (2.0 * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    return auc, v10, v01


def delong_covariance(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix S = S10 / m + S01 / n."""
    auc, v10, v01 = delong_components(y_true, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10, ddof=1)) if m > 1 else np.zeros((len(auc), len(auc)))
    s01 = np.atleast_2d(np.cov(v01, ddof=1)) if n > 1 else np.zeros((len(auc), len(auc)))
    return auc, s10 / m + s01 / n


def _prepare(y_true, score_arrays, source):
    t = None
    columns = []
    for i, score in enumerate(score_arrays):
        t_i, s_i = check_arrays(y_true, score, source, "y_true", f"score_{'ab'[i]}")
        t = check_binary(t_i, source)
        columns.append(s_i)
    return t, np.vstack(columns)


def delong_test(
    y_true: Sequence[float] | np.ndarray,
    score_a: Sequence[float] | np.ndarray,
    score_b: Sequence[float] | np.ndarray,
    source: str = "comparison",
) -> dict[str, float | str]:
    """Two-sided DeLong test of AUC(a) = AUC(b) on the same samples (z statistic, normal p)."""
    t, scores = _prepare(y_true, [score_a, score_b], source)
    auc, cov = delong_covariance(t, scores)
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-15 else float(np.sign(diff) * np.inf)
    else:
        z = diff / np.sqrt(var)
    return {
        "test": DELONG,
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "z": float(z),
        "p_value": float(2 * stats.norm.sf(abs(z))),
    }


def delong_auc_ci(
    y_true: Sequence[float] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    alpha: float = 0.05,
    source: str = "predictions",
) -> tuple[float, float, float]:
    """AUC with a Wald interval from DeLong's variance, clipped to [0, 1]."""
    t, scores = _prepare(y_true, [score], source)
    auc, cov = delong_covariance(t, scores)
    half = stats.norm.ppf(1 - alpha / 2) * np.sqrt(max(float(cov[0, 0]), 0.0))
    value = float(auc[0])
    return value, float(max(0.0, value - half)), float(min(1.0, value + half))


__all__ = [
    "DELONG",
    "WILCOXON",
    "delong_auc_ci",
    "delong_components",
    "delong_covariance",
    "delong_test",
    "paired_wilcoxon",
]
