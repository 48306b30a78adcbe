"""Linear transfer: the prior-centred ElasticNet's defining properties and its benefit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.linear_model import ElasticNet
from sklearn.preprocessing import StandardScaler

from gliotl.drug.methods.baselines import TunedElasticNet
from gliotl.drug.methods.linear_transfer import (
    PriorCentredElasticNet,
    TunedPriorCentredElasticNet,
    fit_source_linear_model,
)

P = 120


def shared_program(seed: int = 0):
    """A large source and a small target whose responses share most of one linear program."""
    rng = np.random.default_rng(seed)
    beta_src = np.zeros(P)
    beta_src[:10] = rng.normal(size=10)
    beta_tgt = beta_src.copy()
    beta_tgt[0] += 0.5  # the target differs a little from the source
    X_src = rng.normal(size=(400, P)) * 2.0 + 1.0
    y_src = X_src @ beta_src + 0.3 * rng.normal(size=400)
    X_tgt = rng.normal(size=(80, P))
    y_tgt = X_tgt @ beta_tgt + 0.3 * rng.normal(size=80)
    return X_src, y_src, X_tgt, y_tgt


def test_fit_source_linear_model_learns_on_source_scale():
    X_src, y_src, _, _ = shared_program()
    coef, intercept, scaler = fit_source_linear_model(X_src, y_src, n_alphas=20)
    np.testing.assert_allclose(scaler.mean_, X_src.mean(axis=0))
    pred = scaler.transform(X_src) @ coef + intercept
    assert spearmanr(pred, y_src).statistic > 0.95
    raw = fit_source_linear_model(X_src, y_src, n_alphas=10, standardise=False)
    assert raw.scaler is None and raw.coef.shape == (P,)


@pytest.mark.parametrize("alpha", [np.inf, 1e6])
def test_infinite_penalty_returns_the_source_model(alpha):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, P))
    y = rng.normal(size=30)
    source_coef = rng.normal(size=P)
    model = PriorCentredElasticNet(source_coef, 0.7, alpha=alpha, fit_intercept=False).fit(X, y)
    np.testing.assert_array_equal(model.coef_, source_coef)
    X_new = rng.normal(size=(5, P))
    expected = StandardScaler().fit(X).transform(X_new) @ source_coef + 0.7
    np.testing.assert_allclose(model.predict(X_new), expected)
    # with a free intercept only the level moves, by the mean residual on the training data
    shifted = PriorCentredElasticNet(source_coef, 0.7, alpha=alpha).fit(X, y)
    np.testing.assert_array_equal(shifted.coef_, source_coef)
    offset = shifted.predict(X_new) - expected
    np.testing.assert_allclose(offset, offset[0])


def test_zero_source_is_plain_elastic_net():
    _, _, X, y = shared_program()
    model = PriorCentredElasticNet(np.zeros(P), 0.0, alpha=0.05, l1_ratio=0.7).fit(X, y)
    scaler = StandardScaler().fit(X)
    plain = ElasticNet(alpha=0.05, l1_ratio=0.7, max_iter=5000).fit(scaler.transform(X), y)
    np.testing.assert_allclose(model.coef_, plain.coef_, atol=1e-12)
    np.testing.assert_allclose(model.predict(X), plain.predict(scaler.transform(X)), atol=1e-10)


def test_rescaled_source_matches_target_response_scale():
    """A target on another response scale (3 s + 5) is reproduced exactly after rescaling."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(25, P))
    source_coef = rng.normal(size=P)
    s = StandardScaler().fit(X).transform(X) @ source_coef
    model = PriorCentredElasticNet(source_coef, alpha=np.inf, rescale_source=True).fit(
        X, 3.0 * s + 5.0
    )
    assert model.source_scale_ == pytest.approx(3.0)
    np.testing.assert_allclose(model.predict(X), 3.0 * s + 5.0, atol=1e-9)


def test_prior_centring_beats_plain_elastic_net_on_a_small_target():
    """20 target samples, 120 genes: the source prior should carry the ranking."""
    gains = []
    for seed in (1, 2, 3):
        X_src, y_src, X_tgt, y_tgt = shared_program(seed)
        # the target is standardised with its own statistics, the source prior with the source's
        source = fit_source_linear_model(X_src, y_src, n_alphas=20)
        prior = TunedPriorCentredElasticNet(source.coef, source.intercept, n_alphas=20,
                                             rescale_source=True)
        plain = TunedElasticNet(n_alphas=20)
        rho_prior = spearmanr(prior.fit(X_tgt[:20], y_tgt[:20]).predict(X_tgt[20:]),
                              y_tgt[20:]).statistic
        rho_plain = spearmanr(plain.fit(X_tgt[:20], y_tgt[:20]).predict(X_tgt[20:]),
                              y_tgt[20:]).statistic
        assert rho_prior > 0.9
        gains.append(rho_prior - rho_plain)
    assert min(gains) > 0.0 and np.mean(gains) > 0.2


def test_tuned_variant_with_nothing_to_correct_keeps_the_source():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, P))
    source_coef = rng.normal(size=P)
    y = StandardScaler().fit(X).transform(X) @ source_coef + 1.0
    model = TunedPriorCentredElasticNet(source_coef, 1.0, n_alphas=5).fit(X, y)
    np.testing.assert_array_equal(model.coef_, source_coef)
    assert model.alpha_ == np.inf
    np.testing.assert_allclose(model.predict(X), y, atol=1e-9)


def test_tuned_variant_is_deterministic_and_clonable():
    _, _, X, y = shared_program()
    source_coef = np.full(P, 0.01)
    model = TunedPriorCentredElasticNet(source_coef, n_alphas=8, seed=5)
    a = clone(model).fit(X[:30], y[:30]).predict(X[30:])
    b = clone(model).fit(X[:30], y[:30]).predict(X[30:])
    np.testing.assert_array_equal(a, b)
    assert clone(model).get_params()["source_coef"] is not source_coef  # deep-copied, not shared


@pytest.mark.parametrize("cls", [PriorCentredElasticNet, TunedPriorCentredElasticNet])
def test_input_validation(cls):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 6)), rng.normal(size=12)
    with pytest.raises(ValueError, match="6 genes"):
        cls(np.zeros(5)).fit(X, y)
    with pytest.raises(ValueError):
        cls(np.zeros(6)).fit(X[:, 0], y)
    with pytest.raises(ValueError):
        cls(np.zeros(6)).fit(X, y[:-1])
    X_bad = X.copy()
    X_bad[1, 1] = np.nan
    with pytest.raises(ValueError):
        cls(np.zeros(6)).fit(X_bad, y)
    with pytest.raises(ValueError, match="finite"):
        cls(np.full(6, np.nan)).fit(X, y)
    fitted = cls(np.zeros(6)).fit(X, y)
    with pytest.raises(ValueError):
        fitted.predict(X[:, :3])


def test_float32_inputs_as_the_engine_passes_them():
    _, _, X, y = shared_program()
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    model = TunedPriorCentredElasticNet(np.zeros(P), n_alphas=5).fit(X32, y32)
    assert np.all(np.isfinite(model.predict(X32)))
    assert spearmanr(model.predict(X32), y).statistic > 0.8


def test_source_linear_round_trip_and_bad_file(tmp_path):
    from gliotl.drug.methods.linear_transfer import load_source_linear, save_source_linear
    from gliotl.errors import GliotlError

    path = save_source_linear(tmp_path / "linear.npz", np.arange(4.0), 1.5)
    coef, intercept = load_source_linear(path)
    np.testing.assert_array_equal(coef, np.arange(4.0))
    assert intercept == 1.5
    np.savez(tmp_path / "wrong.npz", weights=np.zeros(3))
    with pytest.raises(GliotlError, match="coef"):
        load_source_linear(tmp_path / "wrong.npz")
    (tmp_path / "junk.npz").write_text("not an archive")
    with pytest.raises(GliotlError, match="junk.npz"):
        load_source_linear(tmp_path / "junk.npz")
