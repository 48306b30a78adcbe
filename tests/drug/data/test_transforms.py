"""In-fold transforms use training statistics only; TMM / filterByExpr follow edgeR's rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gliotl.drug.data.geo import filter_by_expr, log_cpm, tmm_factors
from gliotl.drug.data.transforms import (
    Binarise,
    ExpressionScaler,
    GeneFilter,
    LogTransform,
    ResponseMinMax,
)
from gliotl.errors import GliotlError


def test_response_transforms_use_training_statistics():
    scaler = ResponseMinMax().fit(np.array([2.0, 4.0, 6.0]))
    assert (scaler.min_, scaler.max_) == (2.0, 6.0)
    np.testing.assert_allclose(scaler.transform(np.array([4.0, 8.0])), [5.0, 15.0])
    series = pd.Series([3.0], index=["a"])
    assert scaler.inverse_transform(scaler.transform(series))["a"] == pytest.approx(3.0)
    np.testing.assert_allclose(LogTransform().fit_transform(np.array([1.0, np.e])), [0.0, 1.0])
    with pytest.raises(GliotlError, match="expected positive"):
        LogTransform().fit_transform(np.array([-1.0]))
    binar = Binarise(quantile=0.5).fit(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert binar.threshold_ == 3.0
    np.testing.assert_array_equal(binar.transform(np.array([2.0, 5.0, np.nan])), [0, 1, np.nan])
    low = Binarise(threshold=0.8, positive="below").fit(np.array([0.0]))
    np.testing.assert_array_equal(low.transform(np.array([0.5, 0.9])), [1.0, 0.0])
    with pytest.raises(GliotlError, match="exactly one"):
        Binarise().fit(np.array([1.0]))


def test_expression_scaler_and_gene_filter_apply_training_stats_to_test():
    train = pd.DataFrame({"A": [1.0, 2.0, 3.0], "B": [10.0, 10.0, 10.0], "C": [0.0, 5.0, 10.0]})
    test = pd.DataFrame({"A": [5.0], "B": [10.0], "C": [100.0]}, index=["t"])
    std = ExpressionScaler("standard").fit(train)
    out = std.transform(test)
    assert list(out.columns) == ["A", "B", "C"] and out.index[0] == "t"
    assert out.loc["t", "A"] == pytest.approx((5 - 2) / np.std([1, 2, 3]))
    assert out.loc["t", "B"] == 0.0  # constant training gene: scale 1, not a division by 0
    robust = ExpressionScaler("robust").fit(train)
    assert robust.transform(test).loc["t", "C"] == pytest.approx((100 - 5) / 5)
    refit = ExpressionScaler("standard").fit(pd.concat([train, test]))
    assert refit.transform(test).loc["t", "A"] != pytest.approx(out.loc["t", "A"])
    filt = GeneFilter(top_k_variance=1).fit(train)
    assert filt.genes_ == ["C"] and list(filt.transform(test).columns) == ["C"]
    assert list(GeneFilter(min_variance=0.5).fit(train).genes_) == ["A", "C"]
    with pytest.raises(GliotlError, match="missing"):
        filt.transform(test.drop(columns="C"))


def test_tmm_hand_checked_example():
    # 10 genes, obs = ref x (1.0, 1.1, ..., 1.9): log-ratios are distinct and increase with the
    # gene index. n = 10: loL = floor(3) + 1 = 4, hiL = 7 (log-ratio ranks 4..7 = genes 3..6);
    # loS = floor(0.5) + 1 = 1, hiS = 10 (no abundance trim). f = 2^(precision-weighted mean).
    ref = np.arange(1, 11, dtype=float) * 10
    obs = ref * (1 + np.arange(10) / 10)
    nr, no = ref.sum(), obs.sum()
    log_r = np.log2((obs / no) / (ref / nr))
    var = (no - obs) / no / obs + (nr - ref) / nr / ref
    mid = [3, 4, 5, 6]
    f = 2 ** (np.sum(log_r[mid] / var[mid]) / np.sum(1 / var[mid]))
    got = tmm_factors(np.column_stack([ref, obs]), ref_column=0)
    np.testing.assert_allclose(got, np.array([1.0, f]) / np.sqrt(f), rtol=1e-12)
    assert np.prod(got) == pytest.approx(1.0)
    unweighted = tmm_factors(np.column_stack([ref, obs]), ref_column=0, weighting=False)
    g = 2 ** np.mean(log_r[mid])
    np.testing.assert_allclose(unweighted, np.array([1.0, g]) / np.sqrt(g), rtol=1e-12)
    # proportional libraries -> unit factors, and log-CPM of the two samples agree
    same = np.column_stack([ref, ref * 3])
    np.testing.assert_allclose(tmm_factors(same), [1.0, 1.0])
    logged = log_cpm(same, tmm_factors(same), prior_count=2)
    np.testing.assert_allclose(logged[:, 0], logged[:, 1], rtol=1e-12)
    # an all-zero gene is ignored, as edgeR drops it before computing factors
    padded = np.vstack([np.column_stack([ref, obs]), [0.0, 0.0]])
    np.testing.assert_allclose(tmm_factors(padded, ref_column=0), got, rtol=1e-12)


def test_filter_by_expr_rule():
    # median library 1e6 -> CPM cutoff 10; all 3 samples must reach it (no groups)
    lib = 1e6
    counts = np.array([
        [20, 20, 20],      # kept
        [20, 20, 5],       # one sample below the cutoff -> dropped
        [0, 0, 0],         # dropped
    ], dtype=float)
    filler = lib - counts.sum(axis=0)
    counts = np.vstack([counts, filler])
    keep = filter_by_expr(counts)
    assert list(keep) == [True, False, False, True]
    # with two groups the smallest group (2 samples) sets the needed number of samples
    assert list(filter_by_expr(counts, group=np.array([0, 0, 1])))[:2] == [True, True]
