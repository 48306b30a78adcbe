"""Classical baselines: correct predictions, fold-only learning, sklearn conventions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.linear_model import ElasticNet
from sklearn.preprocessing import StandardScaler

from gliotl.drug.methods.baselines import (
    MGMTStatusRegressor,
    RandomForestBaseline,
    TrainingMeanRegressor,
    TunedElasticNet,
    inner_kfold,
)


def sparse_linear_data(n: int = 60, p: int = 200, seed: int = 0):
    """p >> n-ish expression with a response driven by 5 genes, as in drug-response data."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 3.0, size=p) + rng.normal(size=p)
    beta = np.zeros(p)
    beta[:5] = [1.5, -1.0, 0.8, 0.6, -0.5]
    y = X @ beta + 0.1 * rng.normal(size=n)
    return X, y, beta


def test_training_mean_predicts_training_fold_mean_only():
    X, y, _ = sparse_linear_data(20, 5)
    model = TrainingMeanRegressor().fit(X[:10], y[:10])
    np.testing.assert_allclose(model.predict(X[10:]), np.full(10, y[:10].mean()))


def test_tuned_elastic_net_recovers_sparse_signal_out_of_sample():
    X, y, beta = sparse_linear_data()
    model = TunedElasticNet(n_alphas=20, seed=1).fit(X[:45], y[:45])
    rho = spearmanr(model.predict(X[45:]), y[45:]).statistic
    assert rho > 0.8
    assert set(np.argsort(-np.abs(model.coef_))[:3]) <= set(range(5))
    assert model.l1_ratio_ in (0.1, 0.5, 0.9, 1.0)


def test_tuned_elastic_net_is_deterministic_and_uses_only_fit_data():
    X, y, _ = sparse_linear_data()
    a = TunedElasticNet(n_alphas=10, seed=3).fit(X[:40], y[:40])
    y_poisoned = y.copy()
    y_poisoned[40:] = np.random.default_rng(9).normal(size=20) * 100
    b = TunedElasticNet(n_alphas=10, seed=3).fit(X[:40], y_poisoned[:40])
    np.testing.assert_array_equal(a.predict(X[40:]), b.predict(X[40:]))
    assert a.alpha_ == b.alpha_


def test_tuned_elastic_net_standardises_inside_the_model():
    """Scaling a gene by 1000 must not change predictions: the scaler is part of the model."""
    X, y, _ = sparse_linear_data()
    X_scaled = X.copy()
    X_scaled[:, 0] *= 1000.0
    a = TunedElasticNet(n_alphas=10, seed=0).fit(X[:40], y[:40]).predict(X[40:])
    b = TunedElasticNet(n_alphas=10, seed=0).fit(X_scaled[:40], y[:40]).predict(X_scaled[40:])
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # and it equals a plain ElasticNet on training-standardised data at the chosen alpha
    model = TunedElasticNet(n_alphas=10, seed=0).fit(X[:40], y[:40])
    scaler = StandardScaler().fit(X[:40])
    plain = ElasticNet(alpha=model.alpha_, l1_ratio=model.l1_ratio_, max_iter=5000)
    plain.fit(scaler.transform(X[:40]), y[:40])
    np.testing.assert_allclose(model.predict(X[40:]), plain.predict(scaler.transform(X[40:])),
                               atol=1e-3)


def test_inner_kfold_shrinks_for_tiny_training_sets():
    assert inner_kfold(2, 3, 0).get_n_splits() == 2
    assert inner_kfold(14, 3, 0).get_n_splits() == 3
    with pytest.raises(ValueError, match="n_samples = 1"):
        inner_kfold(1, 3, 0)


def test_random_forest_learns_nonlinear_signal_and_is_seeded():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 30))
    y = np.where(X[:, 0] > 0, 2.0, -1.0) + 0.1 * rng.normal(size=80)
    model = RandomForestBaseline(n_estimators=50, max_features=0.5, seed=4).fit(X[:60], y[:60])
    assert spearmanr(model.predict(X[60:]), y[60:]).statistic > 0.6
    again = RandomForestBaseline(n_estimators=50, max_features=0.5, seed=4).fit(X[:60], y[:60])
    np.testing.assert_array_equal(model.predict(X[60:]), again.predict(X[60:]))
    assert int(np.argmax(model.feature_importances_)) == 0


def test_mgmt_status_maps_training_means_and_unknowns_to_overall_mean():
    rng = np.random.default_rng(1)
    expression = rng.normal(size=(8, 3))
    status = np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=float)
    X = np.column_stack([expression, status])
    y = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 0.0, 0.0])
    model = MGMTStatusRegressor().fit(X[:6], y[:6])
    X_new = np.column_stack([rng.normal(size=(4, 3)), [0.0, 1.0, np.nan, 2.0]])
    np.testing.assert_allclose(model.predict(X_new), [11.0, 2.0, 6.5, 6.5])
    # status as the only column, unknown status in training is ignored for the status means
    only = MGMTStatusRegressor(status_column=0).fit(
        np.array([[1.0], [0.0], [np.nan]]), np.array([4.0, 2.0, 9.0])
    )
    np.testing.assert_allclose(only.predict(np.array([[1.0], [0.0], [np.nan]])), [4.0, 2.0, 5.0])


def test_mgmt_status_accepts_labels_as_an_annotation_column():
    train = np.array(["Methylated", "methylated", "unmethylated", None, "unmethylated"],
                     dtype=object).reshape(-1, 1)
    y = np.array([1.0, 3.0, 8.0, 100.0, 10.0])
    model = MGMTStatusRegressor().fit(train, y)
    test = np.array(["METHYLATED", "unmethylated", np.nan, "unknown-code"],
                    dtype=object).reshape(-1, 1)
    np.testing.assert_allclose(model.predict(test), [2.0, 9.0, y.mean(), y.mean()])


def test_mgmt_status_rejects_bad_column():
    with pytest.raises(ValueError, match="status_column=5"):
        MGMTStatusRegressor(status_column=5).fit(np.zeros((3, 2)), np.arange(3.0))


@pytest.mark.parametrize(
    "model",
    [TrainingMeanRegressor(), TunedElasticNet(n_alphas=5), RandomForestBaseline(n_estimators=5),
     MGMTStatusRegressor()],
    ids=lambda m: type(m).__name__,
)
def test_input_validation_and_clone(model):
    X, y, _ = sparse_linear_data(12, 6)
    with pytest.raises(ValueError):
        clone(model).fit(X[:, 0], y)  # 1-D X
    with pytest.raises(ValueError):
        clone(model).fit(X, y[:-1])  # length mismatch
    y_bad = y.copy()
    y_bad[0] = np.nan
    with pytest.raises(ValueError):
        clone(model).fit(X, y_bad)
    X_bad = X.copy()
    X_bad[0, -1] = np.inf
    with pytest.raises(ValueError):
        clone(model).fit(X_bad, y)
    fitted = clone(model).fit(X, y)
    with pytest.raises(ValueError):
        fitted.predict(X[:, :2])  # wrong number of genes
    assert fitted.predict(X).shape == (12,)
    assert clone(model).get_params() == model.get_params()


def test_elastic_net_without_standardisation_is_scikit_learns_on_the_raw_features():
    from sklearn.linear_model import ElasticNetCV

    from gliotl.drug.methods.baselines import inner_kfold

    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 12)) * rng.uniform(0.1, 3, size=12) + rng.normal(size=12)
    y = X[:, 0] - 2 * X[:, 3] + rng.normal(size=40)
    ours = TunedElasticNet(l1_ratios=[0.5], n_alphas=10, standardise=False, seed=3).fit(X, y)
    ref = ElasticNetCV(l1_ratio=[0.5], alphas=10, cv=inner_kfold(40, 3, 3), max_iter=5000,
                       random_state=3).fit(X, y)
    assert ours.alpha_ == pytest.approx(ref.alpha_)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), atol=1e-10)
    scaled = TunedElasticNet(l1_ratios=[0.5], n_alphas=10, seed=3).fit(X, y)
    assert not np.allclose(scaled.predict(X), ours.predict(X))  # the choice matters


def test_fixed_alpha_is_a_plain_elastic_net_and_says_so():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(30, 8)), rng.normal(size=30)
    fixed = TunedElasticNet(l1_ratios=[0.7], alpha=0.1, standardise=False, seed=0).fit(X, y)
    ref = ElasticNet(alpha=0.1, l1_ratio=0.7, max_iter=5000).fit(X, y)
    np.testing.assert_allclose(fixed.predict(X), ref.predict(X), atol=1e-10)
    assert fixed.tuning_["fixed_alpha"] and not fixed.tuning_["at_top"]
    assert fixed.tuning_["grid_min"] == fixed.tuning_["grid_max"] == 0.1
    tuned_l1 = TunedElasticNet(l1_ratios=[0.2, 1.0], alpha=0.1, seed=0).fit(X, y)
    assert tuned_l1.alpha_ == 0.1 and tuned_l1.l1_ratio_ in (0.2, 1.0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        TunedElasticNet(alpha=0.0).fit(X, y)


def test_tuning_reports_the_top_of_the_path_as_a_constant_model():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(24, 30))
    signal = TunedElasticNet(l1_ratios=[1.0], n_alphas=20, seed=0).fit(X, 3 * X[:, 0])
    assert not signal.tuning_["at_top"] and signal.tuning_["n_nonzero"] >= 1
    grid = signal.pipeline_[-1].alphas_
    assert signal.tuning_["grid_max"] == pytest.approx(np.max(grid))
    assert signal.tuning_["grid_min"] == pytest.approx(np.min(grid))
    tops = [TunedElasticNet(l1_ratios=[1.0], n_alphas=20, seed=s).fit(
        X, rng.normal(size=24)).tuning_ for s in range(10)]
    assert any(t["at_top"] for t in tops)  # pure noise: the inner CV often keeps no gene
    for t in tops:  # at alpha_max (the top of the path) every coefficient is zero
        assert not t["at_top"] or (t["constant"] and t["n_nonzero"] == 0)
