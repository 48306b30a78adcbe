"""Nested selection: inner CV on the training rows only, picks the best, refits it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline

from gliotl.drug.methods.baselines import TrainingMeanRegressor, TunedElasticNet
from gliotl.drug.methods.selection import (
    Candidate,
    NestedSelector,
    accepted_fit_params,
    score_predictions,
    stratified_inner_splits,
)


def signal_data(n: int = 45, p: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = 3.0 * X[:, 0] - 2.0 * X[:, 1] + 0.3 * rng.normal(size=n)
    return X, y


def one_gene_model(column: int):
    """A linear model that only sees one (irrelevant) gene: a plausible but wrong method."""
    pick = ColumnTransformer([("gene", "passthrough", [column])])
    return make_pipeline(pick, LinearRegression())


class LabelRecorder(RegressorMixin, BaseEstimator):
    """Predicts the training mean and records every label it is shown (a real, tiny estimator)."""

    seen: list[float] = []

    def fit(self, X, y):
        LabelRecorder.seen.extend(np.asarray(y, dtype=float).tolist())
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


def selector() -> NestedSelector:
    return NestedSelector(
        [
            Candidate("mean", TrainingMeanRegressor()),
            Candidate("wrong_gene", one_gene_model(7)),
            Candidate("ridge", Ridge(), {"alpha": [0.1, 10.0, 1e4]}),
            Candidate("elasticnet", lambda: TunedElasticNet((0.5,), n_alphas=5, inner_folds=2)),
            Candidate("recorder", LabelRecorder()),
        ],
        inner_splits=3,
        inner_repeats=2,
        seed=5,
    )


def test_poisoned_outer_test_fold_changes_nothing_the_selector_learns():
    X, y = signal_data()
    rng = np.random.default_rng(99)
    template = selector()
    for train, test in KFold(3, shuffle=True, random_state=0).split(X):
        poisoned = y.copy()
        poisoned[test] = rng.normal(size=len(test)) * 1e3 + 1e4  # noise far outside y's range
        LabelRecorder.seen = []
        clean = clone(template).fit(X[train], y[train])
        LabelRecorder.seen = []
        dirty = clone(template).fit(X[train], poisoned[train])
        assert clean.selected_ == dirty.selected_
        pd.testing.assert_frame_equal(clean.inner_scores_, dirty.inner_scores_)
        pd.testing.assert_frame_equal(clean.inner_fold_scores_, dirty.inner_fold_scores_)
        np.testing.assert_array_equal(clean.predict(X[test]), dirty.predict(X[test]))
        # the candidates were shown training labels only, never the poisoned test labels
        assert LabelRecorder.seen and max(LabelRecorder.seen) < 1e3
        assert set(LabelRecorder.seen) <= set(y[train].tolist())


def test_clearly_best_candidate_is_selected_and_refitted_on_all_rows():
    X, y = signal_data(60)
    model = selector().fit(X, y)
    assert model.selected_["method"] in ("ridge", "elasticnet")
    if model.selected_["method"] == "ridge":
        assert model.selected_["params"] == {"alpha": 0.1}
    table = model.inner_scores_
    assert len(table) == 1 + 1 + 3 + 1 + 1
    assert set(table.columns) >= {"candidate", "params", "mean_score", "std_score", "rank"}
    best = table.loc[table["rank"] == 1].iloc[0]
    assert best["candidate"] == model.selected_["method"] and best["mean_score"] > 0.9
    by_name = table.set_index("candidate")["mean_score"]
    assert by_name["mean"] == 0.0  # constant predictions: no rank information
    assert by_name["wrong_gene"] < 0.5
    assert (model.inner_fold_scores_.groupby(["candidate", "params"]).size() == 6).all()
    refit = clone(model.best_estimator_).fit(X, y)
    np.testing.assert_allclose(model.predict(X[:5]), refit.predict(X[:5]))


def test_ridge_alpha_chosen_by_inner_cv():
    X, y = signal_data(60)
    only_ridge = NestedSelector([Candidate("ridge", Ridge(), {"alpha": [1e5, 1.0]})], seed=1)
    assert only_ridge.fit(X, y).selected_ == {"method": "ridge", "params": {"alpha": 1.0}}


class NeedsSource(RegressorMixin, BaseEstimator):
    """A regressor whose fit needs an extra argument, like a network's ``source=``."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def fit(self, X, y, source=None):
        if source is None:
            raise ValueError("source required")
        self.source_ = source
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return self.weight * self.source_.predict(X) + self.mean_


def test_fit_params_reach_only_candidates_that_accept_them():
    X, y = signal_data(40)
    source = LinearRegression().fit(X, y)
    model = NestedSelector(
        [Candidate("ridge", Ridge()), Candidate("transfer", NeedsSource(), {"weight": [0.0, 1.0]})]
    ).fit(X, y, source=source)
    assert model.selected_ == {"method": "transfer", "params": {"weight": 1.0}}
    assert model.best_estimator_.source_ is source
    assert accepted_fit_params(Ridge(), {"source": 1}) == {}
    assert accepted_fit_params(NeedsSource(), {"source": 1, "other": 2}) == {"source": 1}


def test_inner_splits_are_stratified_on_quantile_bins_and_seeded():
    y = np.arange(30.0)[::-1]
    splits = stratified_inner_splits(y, n_splits=3, n_repeats=2, seed=4)
    assert [(r, f) for r, f, _, _ in splits] == [(r, f) for r in range(2) for f in range(3)]
    for _, _, train, val in splits:
        assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 30
        bins = np.floor((29 - val) * 5 / 30).astype(int)  # y = 29 - index, 5 bins of 6
        np.testing.assert_array_equal(np.bincount(bins, minlength=5), [2] * 5)
    again = stratified_inner_splits(y, n_splits=3, n_repeats=2, seed=4)
    assert all(np.array_equal(a[3], b[3]) for a, b in zip(splits, again, strict=True))
    assert not np.array_equal(splits[0][3], splits[3][3])  # repeats differ
    tiny = stratified_inner_splits(np.arange(4.0), n_splits=5, n_repeats=1, seed=0)
    assert len(tiny) == 4  # n_splits capped by n


def test_scores():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert score_predictions("spearman", y, y[::-1]) == pytest.approx(-1.0)
    assert score_predictions("spearman", y, np.ones(4)) == 0.0
    assert score_predictions("neg_mse", y, y + 1) == pytest.approx(-1.0)
    assert score_predictions(lambda t, p: 7.0, y, y) == 7.0
    with pytest.raises(ValueError, match="scoring"):
        score_predictions("auc", y, y)


def test_selector_is_deterministic_and_validates():
    X, y = signal_data(30)
    a = selector().fit(X, y)
    b = clone(selector()).fit(X, y)
    pd.testing.assert_frame_equal(a.inner_scores_, b.inner_scores_)
    with pytest.raises(ValueError, match="unique"):
        NestedSelector([Candidate("a", Ridge()), Candidate("a", Ridge())]).fit(X, y)
    with pytest.raises(ValueError, match="at least one"):
        NestedSelector([]).fit(X, y)
    with pytest.raises(ValueError, match="scoring"):
        NestedSelector([Candidate("a", Ridge())], scoring="auc").fit(X, y)
    with pytest.raises(ValueError):
        selector().fit(X, y[:-1])
    with pytest.raises(ValueError):
        a.predict(X[:, :3])


def test_failing_candidate_error_names_it():
    X, y = signal_data(20)
    with pytest.raises(ValueError, match="source required") as info:
        NestedSelector([Candidate("transfer", NeedsSource())]).fit(X, y)
    assert any("transfer" in note for note in info.value.__notes__)


def test_engine_inputs_float32_and_dataframes():
    """The engine passes float32 matrices (and may pass DataFrames); both must work."""
    X, y = signal_data(30)
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"G{i}" for i in range(X.shape[1])])
    model = NestedSelector([Candidate("ridge", Ridge(), {"alpha": [1.0]})]).fit(frame, y)
    assert model.selected_estimator_ is model.best_estimator_
    assert model.predict(frame).dtype == np.float64 and model.predict(frame).shape == (30,)
