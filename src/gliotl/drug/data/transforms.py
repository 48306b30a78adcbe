"""Response and expression transforms as scikit-learn estimators, fitted inside each fold.

Everything learned from data (min / max, thresholds, scaler statistics, selected genes) is
learned in ``fit`` from the training part only and reused unchanged by ``transform``: the
authors' code scaled each test fold with its own statistics, which leaks fold composition.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import RobustScaler, StandardScaler
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, validate_data

from gliotl.errors import GliotlError


def _as_1d(y) -> np.ndarray:
    values = np.asarray(y, dtype=float)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise GliotlError(f"response transform: expected one response column, got shape "
                          f"{values.shape}")
    return values


def _like(original, values: np.ndarray):
    """Return ``values`` in the container ``original`` came in (Series keeps its index)."""
    if isinstance(original, pd.Series):
        return pd.Series(values, index=original.index, name=original.name)
    if isinstance(original, pd.DataFrame):
        return pd.DataFrame(values.reshape(len(original), -1), index=original.index,
                            columns=original.columns)
    original = np.asarray(original)
    return values.reshape(original.shape) if original.ndim == 2 else values


class _ResponseTransform(TransformerMixin, BaseEstimator):
    """A transform of the response vector ``y`` (1-D), not of a feature matrix.

    Tagged as scikit-learn tags its own ``LabelEncoder``: no 2-D input, so the estimator checks
    (which feed feature matrices) do not apply.
    """

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        return tags


class ResponseMinMax(_ResponseTransform):
    """Min-max scale a response to ``[low, high]`` (the paper's 0-10) with training min / max."""

    def __init__(self, low: float = 0.0, high: float = 10.0):
        self.low = low
        self.high = high

    def fit(self, y, _=None) -> ResponseMinMax:
        values = _as_1d(y)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise GliotlError("ResponseMinMax: field 'y': no finite training responses")
        self.min_, self.max_ = float(values.min()), float(values.max())
        return self

    def _span(self) -> float:
        return (self.max_ - self.min_) or 1.0  # a constant training response maps to ``low``

    def transform(self, y):
        check_is_fitted(self, "min_")
        values = _as_1d(y)
        out = (values - self.min_) / self._span() * (self.high - self.low) + self.low
        return _like(y, out)

    def inverse_transform(self, y):
        check_is_fitted(self, "min_")
        values = _as_1d(y)
        out = (values - self.low) / (self.high - self.low) * self._span() + self.min_
        return _like(y, out)


class LogTransform(_ResponseTransform):
    """Natural log of a positive response (IC50 in uM -> ln IC50, GDSC's scale); no state."""

    def fit(self, y, _=None) -> LogTransform:
        self.fitted_ = True
        return self

    def transform(self, y):
        values = _as_1d(y)
        finite = values[np.isfinite(values)]
        if (finite <= 0).any():
            raise GliotlError(f"LogTransform: field 'y': expected positive values, found "
                              f"{finite[finite <= 0][0]}")
        return _like(y, np.log(values))

    def inverse_transform(self, y):
        return _like(y, np.exp(_as_1d(y)))


class Binarise(_ResponseTransform):
    """Response -> 0/1 by a fixed ``threshold`` or a training ``quantile``.

    ``positive="below"`` labels low values 1 (a low AUC / IC50 means sensitive); NaN stays NaN.
    """

    def __init__(self, threshold: float | None = None, quantile: float | None = None,
                 positive: Literal["above", "below"] = "above"):
        self.threshold = threshold
        self.quantile = quantile
        self.positive = positive

    def fit(self, y, _=None) -> Binarise:
        if (self.threshold is None) == (self.quantile is None):
            raise GliotlError("Binarise: field 'threshold': give exactly one of threshold or "
                              "quantile")
        if self.quantile is not None:
            if not 0 < self.quantile < 1:
                raise GliotlError("Binarise: field 'quantile': expected a value in (0, 1)")
            values = _as_1d(y)
            self.threshold_ = float(np.nanquantile(values, self.quantile))
        else:
            assert self.threshold is not None  # exactly one of the two, checked above
            self.threshold_ = float(self.threshold)
        return self

    def transform(self, y):
        check_is_fitted(self, "threshold_")
        values = _as_1d(y)
        labels = values > self.threshold_ if self.positive == "above" else \
            values < self.threshold_
        out = np.where(np.isnan(values), np.nan, labels.astype(float))
        return _like(y, out)


class ExpressionScaler(TransformerMixin, BaseEstimator):
    """Per-gene scaling with training statistics: ``standard`` (z-score) or ``robust``
    (median / IQR, the paper's choice for GDSC). Keeps DataFrame index and gene names."""

    def __init__(self, kind: str = "standard"):  # "standard" or "robust", checked in fit
        self.kind = kind

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing value stays missing, as in StandardScaler
        return tags

    def fit(self, X, y=None) -> ExpressionScaler:
        if self.kind not in ("standard", "robust"):
            raise GliotlError(f"ExpressionScaler: field 'kind': expected 'standard' or 'robust', "
                              f"got '{self.kind}'")
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        scaler = StandardScaler() if self.kind == "standard" else RobustScaler()
        scaler.fit(values)
        self.center_ = np.asarray(scaler.mean_ if self.kind == "standard" else scaler.center_)
        self.scale_ = np.asarray(scaler.scale_, dtype=float)
        self.scale_[~np.isfinite(self.scale_) | (self.scale_ == 0)] = 1.0
        return self

    def transform(self, X):
        check_is_fitted(self, "center_")
        if isinstance(X, pd.DataFrame) and hasattr(self, "feature_names_in_"):
            if list(X.columns) != list(self.feature_names_in_):
                raise GliotlError("ExpressionScaler: field 'genes': columns differ from the "
                                  "training genes; align genes first")
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan",
                               reset=False)
        values = (values - self.center_) / self.scale_
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(values, index=X.index, columns=X.columns)
        return values

    def inverse_transform(self, X):
        check_is_fitted(self, "center_")
        values = np.asarray(X, dtype=float) * self.scale_ + self.center_
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(values, index=X.index, columns=X.columns)
        return values


class GeneFilter(TransformerMixin, BaseEstimator):
    """Keep the training set's most variable genes (``top_k_variance``) and / or those with
    variance >= ``min_variance``; the same genes, by name, are then taken from test data."""

    def __init__(self, top_k_variance: int | None = None, min_variance: float | None = None):
        self.top_k_variance = top_k_variance
        self.min_variance = min_variance

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # variances ignore missing values
        return tags

    def fit(self, X, y=None) -> GeneFilter:
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        variance = np.nanvar(values, axis=0, ddof=1) if len(values) > 1 else \
            np.zeros(values.shape[1])
        variance = np.nan_to_num(variance, nan=0.0)
        keep = np.ones(values.shape[1], dtype=bool)
        if self.min_variance is not None:
            keep &= variance >= self.min_variance
        if self.top_k_variance is not None:
            if self.top_k_variance < 1:
                raise GliotlError("GeneFilter: field 'top_k_variance': expected >= 1")
            order = np.argsort(-np.where(keep, variance, -np.inf), kind="stable")
            top = np.zeros_like(keep)
            top[order[: min(self.top_k_variance, int(keep.sum()))]] = True
            keep &= top
        if not keep.any():
            raise GliotlError("GeneFilter: field 'min_variance': no gene passes the filter")
        self.support_ = keep
        self.variance_ = variance
        names = X.columns if isinstance(X, pd.DataFrame) else [f"x{i}" for i in
                                                                range(values.shape[1])]
        self.genes_ = [str(g) for g, k in zip(names, keep, strict=True) if k]
        return self

    def transform(self, X):
        check_is_fitted(self, "support_")
        if isinstance(X, pd.DataFrame):
            missing = [g for g in self.genes_ if g not in X.columns]
            if missing:
                raise GliotlError(f"GeneFilter: field 'genes': gene '{missing[0]}' chosen in "
                                  "training is missing; align genes first")
            return X[self.genes_]
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan",
                               reset=False)
        return values[:, self.support_]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "support_")
        return np.asarray(self.genes_, dtype=object)
