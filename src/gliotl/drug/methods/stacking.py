"""Prediction-level transfer: a fitted source model's prediction feeds a small target model.

When the source and target measure the same drug on different platforms, the source network's
weights may transfer poorly while its *ranking* of samples still carries signal. These models
use only the source's predictions, so any source works (a network, a linear model, an
intermediate-step model): anything with ``predict(X)`` on the target's gene matrix.

* :class:`SourcePredictionOffset`: ``y = a*s(X) + b + correction(X)``: the source prediction
  is the starting point and a regularised linear model of the genes fits only what the source
  gets wrong. With nothing to correct (or infinite regularisation) it returns the source.
* :class:`SourcePredictionStacker`: the source prediction is a feature of a non-negative linear
  stack, next to either the training mean or a target-only model's out-of-fold predictions.

Everything is fitted on the data given to ``fit`` (the training fold); the source itself is
never refitted. Cloning keeps the same fitted source object (it is an input, not a parameter to
re-learn), so the engine and nested selection can clone these estimators per fold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.linear_model import ElasticNet, ElasticNetCV, LinearRegression, Ridge, RidgeCV
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from gliotl.drug.methods.baselines import TunedElasticNet, inner_kfold

__all__ = ["SourcePredictionOffset", "SourcePredictionStacker", "source_predictions"]

RIDGE_ALPHAS = tuple(np.logspace(-2, 5, 15))
ENET_MAX_ITER = 5000


def source_predictions(source: Any, X: np.ndarray) -> np.ndarray:
    """Predictions of one fitted source (or a list of them) as an ``n_samples x k`` matrix."""
    sources = list(source) if isinstance(source, list | tuple) else [source]
    if not sources:
        raise ValueError("source must be a fitted predictor or a non-empty list of them")
    columns = []
    for model in sources:
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"source {type(model).__name__} has no predict(X) method")
        pred = np.asarray(model.predict(X), dtype=float)
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.shape != (X.shape[0],):
            raise ValueError(
                f"source {type(model).__name__} returned shape {pred.shape}, "
                f"expected one prediction per sample ({X.shape[0]},)"
            )
        if not np.all(np.isfinite(pred)):
            raise ValueError(f"source {type(model).__name__} returned non-finite predictions")
        columns.append(pred)
    return np.column_stack(columns)


def _affine_fit(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``a, b`` in ``y ~ a*s + b``; a constant source keeps ``a = 1``."""
    var = float(np.var(s))
    a = float(np.mean((s - s.mean()) * (y - y.mean())) / var) if var > 0 else 1.0
    return a, float(y.mean() - a * s.mean())


class _UsesFittedSource(RegressorMixin, BaseEstimator):
    """Cloning shares the fitted source instead of resetting or deep-copying it."""

    def __sklearn_clone__(self) -> _UsesFittedSource:
        params = self.get_params(deep=False)
        source = params.pop("source")
        return type(self)(source=source, **{k: clone(v, safe=False) for k, v in params.items()})


class SourcePredictionOffset(_UsesFittedSource):
    """Source prediction plus a regularised linear correction fitted on the residual.

    ``correction``: ``"ridge"``, ``"elasticnet"`` or ``"none"`` (source plus the training
    fold's mean residual, i.e. only a level shift); ``alpha=None`` tunes the
    penalty on the fit data (ridge: efficient leave-one-out over a log grid; ElasticNet:
    ``inner_folds``-fold CV over alpha and l1_ratio), ``alpha=np.inf`` keeps only an intercept.
    The genes are standardised inside the correction with training statistics. ``rescale``
    first maps the source onto the target's response scale by least squares (``a*s + b``).
    """

    def __init__(
        self,
        source: Any,
        correction: str = "ridge",
        alpha: float | None = None,
        l1_ratio: float = 0.5,
        rescale: bool = False,
        inner_folds: int = 3,
        seed: int | None = 0,
    ) -> None:
        self.source = source
        self.correction = correction
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.rescale = rescale
        self.inner_folds = inner_folds
        self.seed = seed

    def _base(self, X: np.ndarray) -> np.ndarray:
        s = source_predictions(self.source, X)
        if s.shape[1] != 1:
            raise ValueError("SourcePredictionOffset needs exactly one source model")
        return self.scale_ * s[:, 0] + self.shift_

    def _correction_model(self, n_samples: int) -> Pipeline:
        if self.correction == "ridge":
            head = RidgeCV(alphas=RIDGE_ALPHAS) if self.alpha is None else Ridge(alpha=self.alpha)
        else:
            head = (
                ElasticNetCV(l1_ratio=[0.1, 0.5, 0.9, 1.0], alphas=30, max_iter=ENET_MAX_ITER,
                             cv=inner_kfold(n_samples, self.inner_folds, self.seed))
                if self.alpha is None
                else ElasticNet(alpha=self.alpha, l1_ratio=self.l1_ratio, max_iter=ENET_MAX_ITER)
            )
        return make_pipeline(StandardScaler(), head)

    def fit(self, X: np.ndarray, y: np.ndarray) -> SourcePredictionOffset:
        X, y = validate_data(self, X, y, y_numeric=True)
        if self.correction not in ("ridge", "elasticnet", "none"):
            raise ValueError(
                f"correction must be 'ridge', 'elasticnet' or 'none', got {self.correction!r}"
            )
        if self.alpha is not None and not self.alpha >= 0:
            raise ValueError(f"alpha must be None (tuned) or >= 0, got {self.alpha}")
        self.scale_, self.shift_ = 1.0, 0.0
        if self.rescale:
            self.scale_, self.shift_ = _affine_fit(source_predictions(self.source, X)[:, 0], y)
        residual = y - self._base(X)
        nothing_to_fit = np.std(residual) <= 1e-12 * max(1.0, float(np.std(y)))
        self.correction_: Pipeline | None = None
        self.offset_ = float(residual.mean())
        if not (self.correction == "none" or nothing_to_fit or self.alpha == np.inf):
            self.correction_ = self._correction_model(X.shape[0]).fit(X, residual)
            self.offset_ = 0.0
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "offset_")
        X = validate_data(self, X, reset=False)
        pred = self._base(X) + self.offset_
        if self.correction_ is not None:
            pred = pred + self.correction_.predict(X)
        return pred


class SourcePredictionStacker(_UsesFittedSource):
    """Non-negative linear stack of source prediction(s) and a target-side model.

    ``target_model``: ``"mean"`` (the stack is ``a*s + b``; ``a = 0`` means "the training mean"
    wins), ``"elasticnet"`` (a :class:`TunedElasticNet` on the target), ``"ridge"`` (standardised
    ridge, leave-one-out tuned) or any scikit-learn regressor. A target model enters the stack
    through its out-of-fold predictions from ``inner_folds``-fold CV on the fit data, so the
    stack weights are not fooled by in-sample fit; it is then refitted on all the fit data.
    ``positive`` keeps stack weights >= 0 so an anti-correlated source is dropped, not flipped.
    """

    def __init__(
        self,
        source: Any,
        target_model: str | BaseEstimator = "mean",
        inner_folds: int = 3,
        positive: bool = True,
        seed: int | None = 0,
    ) -> None:
        self.source = source
        self.target_model = target_model
        self.inner_folds = inner_folds
        self.positive = positive
        self.seed = seed

    def _target_estimator(self) -> BaseEstimator | None:
        if isinstance(self.target_model, str):
            if self.target_model == "mean":
                return None
            if self.target_model == "elasticnet":
                return TunedElasticNet(seed=self.seed)
            if self.target_model == "ridge":
                return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
            raise ValueError(
                "target_model must be 'mean', 'elasticnet', 'ridge' or an estimator, "
                f"got {self.target_model!r}"
            )
        return clone(self.target_model)

    def fit(self, X: np.ndarray, y: np.ndarray) -> SourcePredictionStacker:
        X, y = validate_data(self, X, y, y_numeric=True)
        features = source_predictions(self.source, X)
        self.n_sources_ = features.shape[1]
        self.target_estimator_ = self._target_estimator()
        if self.target_estimator_ is not None:
            folds = inner_kfold(X.shape[0], self.inner_folds, self.seed)
            oof = cross_val_predict(clone(self.target_estimator_), X, y, cv=folds)
            features = np.column_stack([features, oof])
            self.target_estimator_.fit(X, y)
        self.stack_ = LinearRegression(positive=self.positive).fit(features, y)
        self.weights_ = self.stack_.coef_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "stack_")
        X = validate_data(self, X, reset=False)
        features = source_predictions(self.source, X)
        if self.target_estimator_ is not None:
            features = np.column_stack([features, self.target_estimator_.predict(X)])
        return self.stack_.predict(features)

