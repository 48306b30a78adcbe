"""Metrics against scikit-learn / scipy on random data; thresholds; bootstrap; bad input."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from gliotl.core.evaluation.metrics import (
    bootstrap_ci,
    choose_threshold,
    classification_metrics,
    fast_auc,
    fast_spearman,
    regression_metrics,
)
from gliotl.errors import GliotlError


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_match_scipy_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=57)
    pred = 0.6 * y + rng.normal(scale=0.8, size=57)
    pred[:5] = pred[5]  # ties
    got = regression_metrics(y, pred)
    assert got["spearman"] == pytest.approx(stats.spearmanr(y, pred).statistic, abs=1e-12)
    assert got["pearson"] == pytest.approx(stats.pearsonr(y, pred).statistic, abs=1e-12)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), abs=1e-12)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), abs=1e-12)
    assert fast_spearman(y, pred) == pytest.approx(got["spearman"], abs=1e-12)


def test_correlations_are_nan_for_constant_input_not_a_crash():
    got = regression_metrics([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert np.isnan(got["spearman"]) and np.isnan(got["pearson"])
    assert got["rmse"] > 0
    assert np.isnan(regression_metrics([2.0, 2.0], [1.0, 3.0])["r2"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    score = np.round(rng.uniform(size=80) * 0.6 + 0.4 * y, 2)  # rounded: ties
    threshold = 0.55
    got = classification_metrics(y, score, threshold)
    hard = (score >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, hard).ravel()
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert got["average_precision"] == pytest.approx(skm.average_precision_score(y, score))
    assert got["sensitivity"] == pytest.approx(skm.recall_score(y, hard))
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, hard))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, hard))
    assert got["f1"] == pytest.approx(skm.f1_score(y, hard))
    assert got["threshold"] == threshold
    assert fast_auc(y, score) == pytest.approx(got["roc_auc"], abs=1e-12)


def test_per_sample_thresholds_apply_each_row_its_own():
    y = np.array([1, 0, 1, 0])
    score = np.array([0.6, 0.6, 0.3, 0.3])
    got = classification_metrics(y, score, threshold=[0.5, 0.7, 0.2, 0.4])
    assert got["sensitivity"] == 1.0 and got["specificity"] == 1.0
    assert np.isnan(got["threshold"])  # no single threshold to report


@pytest.mark.parametrize("seed", [0, 3])
def test_youden_threshold_maximises_j_over_all_cutoffs(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    score = rng.normal(size=60) + y
    chosen = choose_threshold(y, score)

    def youden(t):
        hard = score >= t
        return hard[y == 1].mean() - hard[y == 0].mean()

    best = max(youden(t) for t in score)
    assert youden(chosen) == pytest.approx(best)
    assert chosen in score
    assert choose_threshold(y, score, "fixed", 0.3) == 0.3


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(5)
    y = rng.normal(size=200)
    pred = y + rng.normal(size=200)
    point = fast_spearman(y, pred)
    low, high = bootstrap_ci(fast_spearman, y, pred, n_boot=200, seed=1)
    assert low < point < high and high - low < 0.3
    assert (low, high) == bootstrap_ci(fast_spearman, y, pred, n_boot=200, seed=1)
    # The standard percentile CI: a check by hand with the same resamples.
    rng2 = np.random.default_rng(1)
    values = []
    for _ in range(200):
        idx = rng2.choice(200, size=200, replace=True)
        values.append(fast_spearman(y[idx], pred[idx]))
    assert (low, high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))


@pytest.mark.filterwarnings("ignore:Only one class is present")
def test_bootstrap_skips_undefined_resamples_and_clusters_repeated_rows():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    score = np.linspace(0, 1, 10)
    calls = []

    def auc(t, p):
        calls.append(len(np.unique(t)))
        return skm.roc_auc_score(t, p)  # NaN (or ValueError) for a single class

    low, high = bootstrap_ci(auc, y, score, n_boot=60, seed=0)
    assert 1 in calls  # some resamples had one class and were skipped, not fatal
    assert 0 <= low <= high <= 1
    strat_calls = []
    bootstrap_ci(lambda t, p: strat_calls.append(len(np.unique(t))) or fast_auc(t, p),
                 y, score, n_boot=50, stratify=True)
    assert set(strat_calls) == {2}
    # Each sample repeated 5 times: clustered CI ~ CI of the unique data, row-wise is too narrow.
    rng = np.random.default_rng(2)
    base_y = rng.normal(size=40)
    base_p = base_y + rng.normal(size=40)
    rep_y, rep_p, ids = np.repeat(base_y, 5), np.repeat(base_p, 5), np.repeat(np.arange(40), 5)
    unique_width = np.diff(bootstrap_ci(fast_spearman, base_y, base_p, n_boot=200))[0]
    cluster_width = np.diff(bootstrap_ci(fast_spearman, rep_y, rep_p, n_boot=200,
                                         clusters=ids))[0]
    row_width = np.diff(bootstrap_ci(fast_spearman, rep_y, rep_p, n_boot=200))[0]
    assert cluster_width == pytest.approx(unique_width, rel=0.35)
    assert row_width < 0.7 * cluster_width


def test_bad_input_gives_one_line_errors():
    with pytest.raises(GliotlError, match="field 'y_pred': 3 NaN values; expected finite"):
        regression_metrics([1, 2, 3, 4], [1, np.nan, np.nan, np.nan])
    with pytest.raises(GliotlError, match="no values"):
        regression_metrics([], [])
    with pytest.raises(GliotlError, match="expected equal lengths"):
        regression_metrics([1, 2, 3], [1, 2])
    with pytest.raises(GliotlError, match="only the positive class present"):
        classification_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(GliotlError, match="only the negative class"):
        choose_threshold([0, 0], [0.2, 0.5])
    with pytest.raises(GliotlError, match="expected 0 or 1"):
        classification_metrics([0, 2, 1], [0.2, 0.5, 0.9])
    with pytest.raises(GliotlError, match="non-numeric"):
        regression_metrics(["a", "b"], [1, 2])
    single = classification_metrics([1, 1], [0.2, 0.9], allow_single_class=True)
    assert np.isnan(single["roc_auc"]) and single["sensitivity"] == 0.5
