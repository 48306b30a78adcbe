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


# -- corrected resampled t, paired bootstrap, permutation p ---------------------------------


def test_corrected_ttest_hand_worked_example():
    """k = 2 folds x r = 2 repeats, differences d = (.1, .3, .2, .4), n_test / n_train = 1.

    mean 0.25; deviations (-.15, .05, -.05, .15), sum of squares .05, s^2 = .05 / 3 = 1/60.
    Corrected variance (1/4 + 1) * 1/60 = 1/48, so t = 0.25 * sqrt(48) = sqrt(3) with 3 df.
    Student's t with 3 df has F(t) = 1/2 + (t / (sqrt3 (1 + t^2/3)) + atan(t / sqrt3)) / pi:
    F(sqrt3) = 1/2 + (1/2 + pi/4) / pi, so p = 2 (1 - F) = 1/2 - 1/pi = 0.18169.
    (The uncorrected t would be 0.25 / sqrt(1/240) = 3.873, p = 0.030.)
    """
    from gliotl.core.evaluation.stats import corrected_resampled_ttest

    a = np.array([0.6, 0.8, 0.7, 0.9])
    b = np.array([0.5, 0.5, 0.5, 0.5])
    result = corrected_resampled_ttest(a, b, n_folds=2, n_repeats=2, test_train_ratio=1.0)
    assert result["mean_difference"] == pytest.approx(0.25)
    assert result["statistic"] == pytest.approx(np.sqrt(3))
    assert result["df"] == 3
    assert result["p_value"] == pytest.approx(0.5 - 1 / np.pi, abs=1e-12)


def test_corrected_ttest_degenerate_and_bad_input():
    from gliotl.core.evaluation.stats import corrected_resampled_ttest

    same = corrected_resampled_ttest([1, 2, 3], [1, 2, 3], 3, 1, 0.5)
    assert same["p_value"] == 1.0 and same["statistic"] == 0.0
    shifted = corrected_resampled_ttest([2, 3, 4], [1, 2, 3], 3, 1, 0.5)
    assert shifted["p_value"] == 0.0
    with pytest.raises(GliotlError, match="k \\* r"):
        corrected_resampled_ttest([1, 2, 3], [1, 2, 3], 2, 2, 0.5)
    with pytest.raises(GliotlError, match="test_train_ratio"):
        corrected_resampled_ttest([1, 2, 3], [0, 2, 3], 3, 1, 0.0)


def test_paired_bootstrap_observed_is_mean_of_scipy_spearman_differences():
    from gliotl.core.evaluation.stats import paired_bootstrap_spearman

    rng = np.random.default_rng(0)
    y = np.tile(rng.normal(size=25), (3, 1))
    a = y + rng.normal(scale=0.5, size=y.shape)
    b = rng.normal(size=y.shape)
    expected = np.mean([stats.spearmanr(y[r], a[r]).statistic
                        - stats.spearmanr(y[r], b[r]).statistic for r in range(3)])
    result = paired_bootstrap_spearman(y, a, b, n_boot=500, seed=1)
    assert result["statistic"] == pytest.approx(expected)
    assert result["p_value"] < 0.01  # a real difference
    again = paired_bootstrap_spearman(y, a, b, n_boot=500, seed=1)
    assert again == result  # seeded
    null = paired_bootstrap_spearman(y, a, a, n_boot=200, seed=1)
    assert null["statistic"] == 0.0 and null["p_value"] == 1.0


def test_paired_bootstrap_rejects_bad_shapes():
    from gliotl.core.evaluation.stats import paired_bootstrap_spearman

    with pytest.raises(GliotlError, match="shapes"):
        paired_bootstrap_spearman(np.zeros((2, 5)), np.zeros((2, 4)), np.zeros((2, 5)))


def test_permutation_p_value_counts_ties_and_the_observed_value():
    from gliotl.core.evaluation.stats import permutation_p_value

    result = permutation_p_value(0.3, [0.1, 0.3, 0.5, -0.2, np.nan])
    # two of the four finite null values are >= 0.3: p = (1 + 2) / (1 + 4)
    assert result["p_value"] == pytest.approx(3 / 5)
    assert result["n"] == 4 and result["resolution"] == pytest.approx(1 / 5)
    assert permutation_p_value(1.0, [0.0] * 99)["p_value"] == pytest.approx(0.01)
    assert np.isnan(permutation_p_value(np.nan, [0.1])["p_value"])
