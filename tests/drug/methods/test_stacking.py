"""Prediction-level transfer: offset and stacking models on a fitted source predictor."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.linear_model import Ridge

from gliotl.drug.methods.baselines import TunedElasticNet
from gliotl.drug.methods.stacking import SourcePredictionOffset, SourcePredictionStacker

P = 40


def fitted_source(seed: int = 0):
    """A real fitted source model: ridge regression on a large synthetic source dataset."""
    rng = np.random.default_rng(seed)
    beta = np.zeros(P)
    beta[:8] = rng.normal(size=8)
    X_src = rng.normal(size=(300, P))
    y_src = X_src @ beta + 0.2 * rng.normal(size=300)
    return Ridge(alpha=1.0).fit(X_src, y_src), beta


@pytest.mark.parametrize("correction", ["ridge", "elasticnet", "none"])
def test_offset_with_nothing_to_correct_reproduces_the_source(correction):
    source, _ = fitted_source()
    rng = np.random.default_rng(1)
    X, X_new = rng.normal(size=(20, P)), rng.normal(size=(7, P))
    model = SourcePredictionOffset(source, correction=correction).fit(X, source.predict(X))
    np.testing.assert_allclose(model.predict(X_new), source.predict(X_new), atol=1e-9)


@pytest.mark.parametrize("correction", ["ridge", "elasticnet"])
def test_offset_with_infinite_penalty_keeps_the_rescaled_source(correction):
    source, _ = fitted_source()
    rng = np.random.default_rng(2)
    X, X_new = rng.normal(size=(25, P)), rng.normal(size=(6, P))
    y = rng.normal(size=25)  # anything: an infinite penalty must not learn from the genes
    model = SourcePredictionOffset(source, correction=correction, alpha=np.inf).fit(X, y)
    shift = model.predict(X_new) - source.predict(X_new)
    np.testing.assert_allclose(shift, shift[0])
    assert shift[0] == pytest.approx(np.mean(y - source.predict(X)))
    rescaled = SourcePredictionOffset(source, alpha=np.inf, rescale=True).fit(
        X, 3.0 * source.predict(X) - 2.0
    )
    np.testing.assert_allclose(rescaled.predict(X_new), 3.0 * source.predict(X_new) - 2.0,
                               atol=1e-9)


def test_offset_learns_what_the_source_gets_wrong():
    source, beta = fitted_source()
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, P))
    y = source.predict(X) + 1.5 * X[:, 30] + 0.1 * rng.normal(size=120)  # a target-only gene
    model = SourcePredictionOffset(source, correction="ridge").fit(X[:40], y[:40])
    rho_model = spearmanr(model.predict(X[40:]), y[40:]).statistic
    rho_source = spearmanr(source.predict(X[40:]), y[40:]).statistic
    assert rho_model > rho_source + 0.05
    assert rho_model > 0.9


def test_stacker_with_training_mean_rescales_a_good_source():
    source, _ = fitted_source()
    rng = np.random.default_rng(4)
    X, X_new = rng.normal(size=(20, P)), rng.normal(size=(5, P))
    model = SourcePredictionStacker(source).fit(X, 2.0 * source.predict(X) + 1.0)
    np.testing.assert_allclose(model.predict(X_new), 2.0 * source.predict(X_new) + 1.0,
                               atol=1e-8)


def test_stacker_drops_an_anticorrelated_source_to_the_training_mean():
    source, _ = fitted_source()
    rng = np.random.default_rng(5)
    X = rng.normal(size=(20, P))
    y = -source.predict(X)
    model = SourcePredictionStacker(source, positive=True).fit(X, y)
    np.testing.assert_allclose(model.weights_, [0.0])
    np.testing.assert_allclose(model.predict(X), np.full(20, y.mean()))


def test_stacker_prefers_the_target_model_when_the_source_is_useless():
    useless, _ = fitted_source(seed=11)
    rng = np.random.default_rng(6)
    X = rng.normal(size=(150, P))
    y = 2.0 * X[:, 35] - X[:, 36] + 0.1 * rng.normal(size=150)  # genes the source never used
    model = SourcePredictionStacker(useless, target_model=TunedElasticNet(n_alphas=20))
    model.fit(X[:60], y[:60])
    source_weight, target_weight = model.weights_
    assert target_weight > 0.8 and source_weight < 0.1
    assert spearmanr(model.predict(X[60:]), y[60:]).statistic > 0.95


def test_stacker_accepts_several_sources_and_config_strings():
    source_a, _ = fitted_source(0)
    source_b, _ = fitted_source(1)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(30, P))
    y = source_a.predict(X) + source_b.predict(X)
    model = SourcePredictionStacker([source_a, source_b], target_model="ridge").fit(X, y)
    assert model.n_sources_ == 2 and model.weights_.shape == (3,)
    assert spearmanr(model.predict(X), y).statistic > 0.99
    with pytest.raises(ValueError, match="target_model"):
        SourcePredictionStacker(source_a, target_model="boosting").fit(X, y)


@pytest.mark.parametrize("cls", [SourcePredictionOffset, SourcePredictionStacker])
def test_clone_keeps_the_fitted_source_and_is_deterministic(cls):
    source, _ = fitted_source()
    model = cls(source)
    copy = clone(model)
    assert copy.source is source  # not reset to an unfitted Ridge
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(24, P)), rng.normal(size=24)
    np.testing.assert_array_equal(copy.fit(X, y).predict(X), clone(model).fit(X, y).predict(X))


def test_validation_errors():
    source, _ = fitted_source()
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(10, P)), rng.normal(size=10)
    with pytest.raises(TypeError, match="predict"):
        SourcePredictionOffset(object()).fit(X, y)
    with pytest.raises(ValueError, match="correction"):
        SourcePredictionOffset(source, correction="lasso").fit(X, y)
    with pytest.raises(ValueError):
        SourcePredictionOffset(source).fit(X, y[:-2])
    with pytest.raises(ValueError):
        SourcePredictionStacker(source).fit(X[:, :5], y)  # source needs P genes: sklearn error
    X_bad = X.copy()
    X_bad[0, 0] = np.inf
    with pytest.raises(ValueError):
        SourcePredictionStacker(source).fit(X_bad, y)

    class TwoOutputs:
        def predict(self, X):
            return np.zeros((len(X), 2))

    with pytest.raises(ValueError, match="one prediction per sample"):
        SourcePredictionStacker(TwoOutputs()).fit(X, y)
