"""Paired Wilcoxon vs scipy; DeLong vs a hand-worked example and a brute-force computation."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from gliotl.core.evaluation.stats import (
    delong_auc_ci,
    delong_components,
    delong_covariance,
    delong_test,
    paired_wilcoxon,
)
from gliotl.errors import GliotlError


def test_delong_hand_worked_example():
    """Three positives, two negatives, worked by hand with psi(X, Y) = 1 / 0.5 / 0.

    A: positives .8 .6 .4, negatives .5 .2 -> AUC 5/6, V10 = (1, 1, 1/2), V01 = (2/3, 1),
       S10 = 1/12, S01 = 1/18, var = S10/3 + S01/2 = 1/18.
    B: positives .7 .3 .9, negatives .5 .6 -> AUC 2/3, V10 = (1, 0, 1), V01 = (2/3, 2/3),
       S10 = 1/3, S01 = 0, var = 1/9; cov(A, B) = (-1/12)/3 = -1/36.
    var(A - B) = 1/18 + 1/9 + 1/18 = 2/9; z = (1/6) / sqrt(2/9) = 1 / (2 sqrt 2).
    """
    y = np.array([1, 1, 1, 0, 0])
    a = np.array([0.8, 0.6, 0.4, 0.5, 0.2])
    b = np.array([0.7, 0.3, 0.9, 0.5, 0.6])
    auc, v10, v01 = delong_components(y, np.vstack([a, b]))
    np.testing.assert_allclose(auc, [5 / 6, 2 / 3])
    np.testing.assert_allclose(v10, [[1, 1, 0.5], [1, 0, 1]])
    np.testing.assert_allclose(v01, [[2 / 3, 1], [2 / 3, 2 / 3]])
    _, cov = delong_covariance(y, np.vstack([a, b]))
    np.testing.assert_allclose(cov, [[1 / 18, -1 / 36], [-1 / 36, 1 / 9]])
    result = delong_test(y, a, b)
    assert result["test"] == "DeLong"
    assert result["z"] == pytest.approx(1 / (2 * np.sqrt(2)))
    assert result["p_value"] == pytest.approx(2 * stats.norm.sf(1 / (2 * np.sqrt(2))))
    assert result["p_value"] == pytest.approx(0.72367, abs=1e-5)


def _brute_force(y, scores):
    """Structural components straight from the definition, O(m n) per classifier."""
    pos, neg = y == 1, y == 0
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        aucs.append(psi.mean())
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
    v10, v01 = np.array(v10s), np.array(v01s)
    cov = np.cov(v10) / pos.sum() + np.cov(v01) / neg.sum()
    return np.array(aucs), cov


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_midrank_delong_equals_brute_force_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 70)
    a = np.round(rng.normal(size=70) + y, 1)  # rounded: many ties
    b = np.round(rng.normal(size=70) + 0.5 * y + 0.3 * a, 1)
    auc, cov = delong_covariance(y, np.vstack([a, b]))
    ref_auc, ref_cov = _brute_force(y, [a, b])
    np.testing.assert_allclose(auc, ref_auc, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)
    assert auc[0] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    result = delong_test(y, a, b)
    z = (ref_auc[0] - ref_auc[1]) / np.sqrt(ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1])
    assert result["z"] == pytest.approx(z)
    value, low, high = delong_auc_ci(y, a)
    half = stats.norm.ppf(0.975) * np.sqrt(ref_cov[0, 0])
    assert (low, high) == pytest.approx((max(0, value - half), min(1, value + half)))


def test_delong_identical_scores_and_bad_input():
    y = [0, 1, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.2]
    same = delong_test(y, s, s)
    assert same["z"] == 0 and same["p_value"] == 1
    with pytest.raises(GliotlError, match="only the negative class"):
        delong_test([0, 0, 0], s[:3], s[:3])
    with pytest.raises(GliotlError, match="field 'score_b': 2 NaN values"):
        delong_test(y, s, [0.1, np.nan, np.nan, 0.3, 0.2])


def test_paired_wilcoxon_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.05, 11)
    b = a - rng.normal(0.03, 0.03, 11)
    got = paired_wilcoxon(a, b)
    ref = stats.wilcoxon(a, b)
    assert got["test"] == "paired Wilcoxon signed-rank"
    assert got["statistic"] == ref.statistic and got["p_value"] == pytest.approx(ref.pvalue)
    assert got["n"] == 11 and got["mean_difference"] == pytest.approx(np.mean(a - b))
    greater = paired_wilcoxon(a, b, alternative="greater")
    assert greater["p_value"] == pytest.approx(stats.wilcoxon(a, b, alternative="greater").pvalue)


def test_paired_wilcoxon_all_zero_differences_and_bad_input():
    same = paired_wilcoxon([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert same["p_value"] == 1.0 and same["mean_difference"] == 0.0
    with pytest.raises(GliotlError, match="expected equal lengths"):
        paired_wilcoxon([1, 2, 3], [1, 2])
    with pytest.raises(GliotlError, match="alternative"):
        paired_wilcoxon([1, 2], [2, 1], alternative="bigger")


def test_midranks_equal_scipy_rankdata_with_ties():
    from gliotl.core.evaluation.metrics import midrank

    rng = np.random.default_rng(9)
    for size in (1, 2, 7, 64):
        x = np.round(rng.normal(size=size), 1)
        np.testing.assert_allclose(midrank(x), stats.rankdata(x))
