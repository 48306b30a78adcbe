"""Calibration of the new tests on simulated data: false-positive rate on null targets, power on
a target with signal.

Synthetic expression (n samples x 2 * half genes, standard normal) and a response that is
either independent of it (null) or linear in the first half of the genes plus noise (signal).
Cheap methods fitted fold by fold in closed form: ridge regression on the first half of the
genes ("a") and on the second half ("b"). On a null target "a" and "b" are exchangeable, so
a calibrated method-vs-method test rejects at 0.05 in about 5% of datasets; the label-permutation
test of "a" against chance likewise. The acceptance band is 2-8% over at least 200 datasets.
The corrected t and the permutation test pass it; the paired bootstrap over samples does not
(it keeps the fitted models fixed, about 14%), which is why it is only a secondary column.

Run as a script for more datasets (numbers recorded in benchmarks/RESULTS.md):
``PYTHONPATH=src:tests python tests/core/evaluation/test_calibration.py 1000``.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from gliotl.core.evaluation.stats import (
    corrected_resampled_ttest,
    paired_bootstrap_spearman,
    permutation_p_value,
)

N, HALF, K, RIDGE = 30, 5, 3, 1.0


def ridge_predict(X_train: np.ndarray, Y_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Ridge with intercept (centred) for every column of Y_train at once."""
    mx, my = X_train.mean(0), Y_train.mean(0)
    Xc = X_train - mx
    beta = np.linalg.solve(Xc.T @ Xc + RIDGE * np.eye(X_train.shape[1]), Xc.T @ (Y_train - my))
    return (X_test - mx) @ beta + my


def test_closed_form_ridge_matches_scikit_learn():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(20, 4)), rng.normal(size=20)
    ours = ridge_predict(X[:15], y[:15, None], X[15:])[:, 0]
    np.testing.assert_allclose(ours, Ridge(alpha=RIDGE).fit(X[:15], y[:15]).predict(X[15:]),
                               atol=1e-10)


def splits(n_repeats: int, seed: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [list(KFold(K, shuffle=True, random_state=seed * 100 + r).split(np.arange(N)))
            for r in range(n_repeats)]


def cross_validate(X: np.ndarray, Y: np.ndarray, folds) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions (repeats, N, columns of Y) and per-fold Spearman (repeats * K,
    columns of Y); Y may hold many permuted targets."""
    oof = np.empty((len(folds), N, Y.shape[1]))
    per_fold = []
    for r, repeat in enumerate(folds):
        for train, test in repeat:
            pred = ridge_predict(X[train], Y[train], X[test])
            oof[r, test] = pred
            per_fold.append([stats.spearmanr(Y[test, j], pred[:, j]).statistic
                             for j in range(Y.shape[1])] if Y.shape[1] == 1 else [np.nan])
    return oof, np.asarray(per_fold)


def simulate(rng: np.random.Generator, signal: float) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(N, 2 * HALF))
    y = signal * X[:, :HALF].sum(1) / np.sqrt(HALF) + rng.normal(size=N)
    return X, y


def method_p_values(seed: int, signal: float, n_repeats: int = 10, n_boot: int = 500
                    ) -> tuple[float, float]:
    """(corrected t, paired bootstrap) p of "a" vs "b" on one simulated dataset."""
    rng = np.random.default_rng(seed)
    X, y = simulate(rng, signal)
    folds = splits(n_repeats, seed)
    oof_a, fold_a = cross_validate(X[:, :HALF], y[:, None], folds)
    oof_b, fold_b = cross_validate(X[:, HALF:], y[:, None], folds)
    t = corrected_resampled_ttest(fold_a[:, 0], fold_b[:, 0], K, n_repeats, 1 / (K - 1))
    yy = np.tile(y, (n_repeats, 1))
    boot = paired_bootstrap_spearman(yy, oof_a[..., 0], oof_b[..., 0], n_boot=n_boot,
                                     seed=seed)
    return t["p_value"], boot["p_value"]


def mean_pooled_spearman(y: np.ndarray, oof: np.ndarray) -> np.ndarray:
    """Mean over repeats of each repeat's pooled Spearman, per column (permutation)."""
    ranks_y = stats.rankdata(y, axis=0)
    values = []
    for r in range(oof.shape[0]):
        ranks_p = stats.rankdata(oof[r], axis=0)
        values.append([np.corrcoef(ranks_y[:, j], ranks_p[:, j])[0, 1]
                       for j in range(y.shape[1])])
    return np.mean(values, axis=0)


def permutation_p(seed: int, signal: float, n_perm: int = 19, n_repeats: int = 2) -> float:
    """Label permutation of "a": the whole fit refitted on each permuted target, same splits."""
    rng = np.random.default_rng(seed)
    X, y = simulate(rng, signal)
    folds = splits(n_repeats, seed)
    Y = np.column_stack([y] + [rng.permutation(y) for _ in range(n_perm)])
    oof = np.empty((n_repeats, N, Y.shape[1]))
    for r, repeat in enumerate(folds):
        for train, test in repeat:
            oof[r, test] = ridge_predict(X[train, :HALF], Y[train], X[test, :HALF])
    scores = mean_pooled_spearman(Y, oof)
    return permutation_p_value(scores[0], scores[1:])["p_value"]


def rejection_rates(n_datasets: int, signal: float) -> dict[str, float]:
    methods = np.array([method_p_values(seed, signal) for seed in range(n_datasets)])
    perm = np.array([permutation_p(seed, signal) for seed in range(n_datasets)])
    return {"corrected_t": float(np.mean(methods[:, 0] <= 0.05)),
            "paired_bootstrap": float(np.mean(methods[:, 1] <= 0.05)),
            "permutation": float(np.mean(perm <= 0.05))}


@pytest.fixture(scope="module")
def null_rates() -> dict[str, float]:
    return rejection_rates(200, signal=0.0)


@pytest.mark.parametrize("test", ["corrected_t", "permutation"])
def test_false_positive_rate_on_null_targets(null_rates, test):
    assert 0.02 <= null_rates[test] <= 0.08, null_rates


def test_paired_bootstrap_is_liberal_on_null_targets(null_rates):
    """The measured reason the bootstrap is never a headline p-value (see its docstring)."""
    assert null_rates["paired_bootstrap"] > 0.08, null_rates


def test_power_on_a_target_with_signal():
    """Far above the 5% null rate (1000 datasets at signal 1.0: corrected t 0.55, permutation
    0.83; see benchmarks/RESULTS.md); signal 1.5 here so that 40 datasets suffice."""
    rates = rejection_rates(40, signal=1.5)
    assert all(rate >= 0.5 for rate in rates.values()), rates


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print("null", n, rejection_rates(n, 0.0))
    print("signal 1.0", n, rejection_rates(n, 1.0))
