"""Linear transfer: an ElasticNet that shrinks toward a source model instead of toward zero.

With 14-30 target samples, a plain ElasticNet must learn every coefficient from scratch. If a
linear model fitted on a large source (GDSC) already ranks cell lines well, centring the
target's penalty on the source coefficients lets the target data correct the source where it
disagrees and fall back to the source where it carries no evidence. Writing
``beta = beta_src + delta``, the ElasticNet objective in ``beta`` with the penalty on
``beta - beta_src`` is exactly a plain ElasticNet in ``delta`` fitted on the residual
``y - Z @ beta_src - b_src``, which is how it is computed here.

Scaling convention: coefficients act on standardised genes (z-scores), and each dataset is
standardised with its own training statistics, as the paper scales each dataset separately.
:func:`fit_source_linear_model` standardises the source with a scaler fitted on the source;
the target models standardise with a scaler fitted on the target training fold. So a source
coefficient means "effect of one standard deviation of this gene" in both datasets. When the
caller has already scaled each dataset, pass ``standardise=False`` to both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import ElasticNet, ElasticNetCV
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from gliotl.core.io import atomic_path
from gliotl.drug.methods.baselines import inner_kfold
from gliotl.errors import input_error

__all__ = [
    "PriorCentredElasticNet",
    "SourceLinearModel",
    "TunedPriorCentredElasticNet",
    "fit_source_linear_model",
    "load_source_linear",
    "save_source_linear",
]


class SourceLinearModel(NamedTuple):
    """A linear model fitted on the source: ``y = scaler(X) @ coef + intercept``."""

    coef: np.ndarray
    intercept: float
    scaler: StandardScaler | None


def fit_source_linear_model(
    X_src: np.ndarray,
    y_src: np.ndarray,
    *,
    l1_ratios: Sequence[float] = (0.1, 0.5, 0.9, 1.0),
    n_alphas: int = 50,
    inner_folds: int = 5,
    standardise: bool = True,
    max_iter: int = 5000,
    seed: int | None = 0,
) -> SourceLinearModel:
    """Fit a CV-tuned ElasticNet on the source data only; its coefficients become the prior."""
    holder = BaseEstimator()  # validate_data needs an estimator to record n_features_in_
    X_src, y_src = validate_data(holder, X_src, y_src, y_numeric=True)
    scaler = StandardScaler().fit(X_src) if standardise else None
    Z = scaler.transform(X_src) if scaler is not None else X_src
    enet = ElasticNetCV(
        l1_ratio=list(l1_ratios),
        alphas=n_alphas,
        cv=inner_kfold(Z.shape[0], inner_folds, seed),
        max_iter=max_iter,
        random_state=seed,
    ).fit(Z, y_src)
    return SourceLinearModel(np.asarray(enet.coef_, dtype=float), float(enet.intercept_), scaler)


def save_source_linear(path: str | Path, coef: np.ndarray, intercept: float) -> Path:
    """Write a source prior atomically as plain arrays (``.npz``, no pickled objects)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, coef=np.asarray(coef, dtype=float), intercept=np.float64(intercept))
    return path


def load_source_linear(path: str | Path) -> tuple[np.ndarray, float]:
    """Read ``(coef, intercept)`` written by :func:`save_source_linear`; pickles are refused."""
    try:
        with np.load(path, allow_pickle=False) as data:
            for field in ("coef", "intercept"):
                if field not in data.files:
                    raise input_error(path, field, "an array written by save_source_linear")
            coef, intercept = np.asarray(data["coef"], dtype=float), float(data["intercept"])
    except (OSError, ValueError) as err:
        raise input_error(path, None, f"a readable .npz source linear model ({err})") from None
    if coef.ndim != 1:
        raise input_error(path, "coef", "a 1-D array of gene coefficients")
    return coef, intercept


class _SourceCentredLinear(RegressorMixin, BaseEstimator):
    """Shared preparation: validate, standardise on the fit data, form the source prior."""

    def _prepare(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Return the standardised X, the prior coefficients and prior intercept."""
        if self.source_coef is None:  # no source: the plain ElasticNet
            prior = np.zeros(X.shape[1])
        else:
            prior = np.asarray(self.source_coef, dtype=float).ravel()
        if prior.shape[0] != X.shape[1]:
            raise ValueError(
                f"source_coef has {prior.shape[0]} coefficients but X has {X.shape[1]} genes"
            )
        if not np.all(np.isfinite(prior)) or not np.isfinite(self.source_intercept):
            raise ValueError("source_coef and source_intercept must be finite")
        self.scaler_ = StandardScaler().fit(X) if self.standardise else None
        Z = self._transform(X)
        prior_intercept = float(self.source_intercept)
        self.source_scale_, self.source_shift_ = 1.0, 0.0
        if self.rescale_source:
            # Put the source prediction on the target's response scale (a*s + b, least squares)
            # before centring on it: responses are min-max scaled per dataset, so levels differ.
            s = Z @ prior + prior_intercept
            var = float(np.var(s))
            a = float(np.mean((s - s.mean()) * (y - y.mean())) / var) if var > 0 else 1.0
            self.source_scale_, self.source_shift_ = a, float(y.mean() - a * s.mean())
            prior, prior_intercept = a * prior, a * prior_intercept + self.source_shift_
        return Z, prior, prior_intercept

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return self.scaler_.transform(X) if self.scaler_ is not None else X

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False)
        return self._transform(X) @ self.coef_ + self.intercept_


class PriorCentredElasticNet(_SourceCentredLinear):
    """ElasticNet with penalty ``alpha * (l1_ratio*|b - b_src|_1 + (1-l1_ratio)/2*|b - b_src|^2)``.

    ``alpha=np.inf`` (or any alpha large enough) returns the source coefficients; a zero
    ``source_coef`` (or None) gives the plain ElasticNet. The intercept is not penalised when
    ``fit_intercept`` is true, so a level shift between datasets is always absorbed.
    ``coef_`` and ``intercept_`` act on the standardised genes (see the module docstring).
    """

    def __init__(
        self,
        source_coef: np.ndarray | None = None,
        source_intercept: float = 0.0,
        alpha: float = 1.0,
        l1_ratio: float = 0.5,
        standardise: bool = True,
        rescale_source: bool = False,
        fit_intercept: bool = True,
        max_iter: int = 5000,
    ) -> None:
        self.source_coef = source_coef
        self.source_intercept = source_intercept
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.standardise = standardise
        self.rescale_source = rescale_source
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> PriorCentredElasticNet:
        X, y = validate_data(self, X, y, y_numeric=True)
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0 (np.inf allowed), got {self.alpha}")
        Z, prior, prior_intercept = self._prepare(X, y)
        residual = y - Z @ prior - prior_intercept
        if np.isinf(self.alpha):
            delta = np.zeros_like(prior)
            delta_intercept = float(residual.mean()) if self.fit_intercept else 0.0
            self.n_iter_ = 0
        else:
            enet = ElasticNet(
                alpha=self.alpha,
                l1_ratio=self.l1_ratio,
                fit_intercept=self.fit_intercept,
                max_iter=self.max_iter,
            ).fit(Z, residual)
            delta, delta_intercept = enet.coef_, float(enet.intercept_)
            self.n_iter_ = int(enet.n_iter_)
        self.coef_ = prior + delta
        self.intercept_ = prior_intercept + delta_intercept
        return self


class TunedPriorCentredElasticNet(_SourceCentredLinear):
    """:class:`PriorCentredElasticNet` with alpha and l1_ratio chosen by inner CV on fit data.

    The alpha grid starts where the correction is all zero, so "use the source model as is" is
    always a candidate. The scaler (and the optional source rescaling) are learned on the whole
    fit data before the inner split; neither ever sees data outside ``fit``.
    """

    def __init__(
        self,
        source_coef: np.ndarray | None = None,
        source_intercept: float = 0.0,
        l1_ratios: Sequence[float] = (0.1, 0.5, 0.9, 1.0),
        n_alphas: int = 50,
        inner_folds: int = 3,
        standardise: bool = True,
        rescale_source: bool = False,
        max_iter: int = 5000,
        seed: int | None = 0,
    ) -> None:
        self.source_coef = source_coef
        self.source_intercept = source_intercept
        self.l1_ratios = l1_ratios
        self.n_alphas = n_alphas
        self.inner_folds = inner_folds
        self.standardise = standardise
        self.rescale_source = rescale_source
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> TunedPriorCentredElasticNet:
        X, y = validate_data(self, X, y, y_numeric=True)
        Z, prior, prior_intercept = self._prepare(X, y)
        residual = y - Z @ prior - prior_intercept
        if np.std(residual) <= 1e-12 * max(1.0, float(np.std(y))):
            # Nothing left to correct (up to rounding): no alpha grid exists for a constant.
            self.alpha_, self.l1_ratio_ = np.inf, float(self.l1_ratios[-1])
            delta, delta_intercept = np.zeros_like(prior), float(residual.mean())
            self.n_iter_ = 0
        else:
            enet = ElasticNetCV(
                l1_ratio=list(self.l1_ratios),
                alphas=self.n_alphas,
                cv=inner_kfold(Z.shape[0], self.inner_folds, self.seed),
                max_iter=self.max_iter,
                random_state=self.seed,
            ).fit(Z, residual)
            self.alpha_, self.l1_ratio_ = float(enet.alpha_), float(enet.l1_ratio_)
            delta, delta_intercept = enet.coef_, float(enet.intercept_)
            self.n_iter_ = int(enet.n_iter_)
        self.coef_ = prior + delta
        self.intercept_ = prior_intercept + delta_intercept
        return self
