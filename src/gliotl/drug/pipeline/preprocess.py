"""In-fold preprocessing of one step: gene filter + expression scaler + response transform,
with JSON state.

A thin composition of the scikit-learn style transforms in :mod:`gliotl.drug.data.transforms`
(``GeneFilter``, ``ExpressionScaler``; ``ResponseMinMax`` or ``LogTransform``): fitted on a
training fold only,
applied unchanged to its test fold, and saved as plain JSON next to a final model so that
``gliotl drug predict`` needs no pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.io import read_json, write_json
from gliotl.drug.data.transforms import ExpressionScaler, GeneFilter, LogTransform, ResponseMinMax
from gliotl.errors import GliotlError, input_error

_WHERE = "step preprocessing"
_RESPONSES = ("minmax", "none", "log")


def _response_transform(kind: str) -> ResponseMinMax | LogTransform | None:
    """The response transform for a step's ``response`` field (None: the raw response)."""
    if kind not in _RESPONSES:
        raise input_error(_WHERE, "response", f"expected one of {', '.join(_RESPONSES)}, got "
                          f"'{kind}'")
    if kind == "minmax":
        return ResponseMinMax(low=0.0, high=10.0)  # the paper's 0-10
    return LogTransform() if kind == "log" else None


class StepPreprocessor:
    """Keep the most variable genes (optional), scale expression per gene and transform the
    response, with training data only. The gene filter ranks genes by their variance before
    scaling (after a z-score every gene has variance 1)."""

    def __init__(self, scaler: str = "standard", response: str = "minmax",
                 top_k_variance: int | None = None):
        self.scaler = scaler
        self.response = response
        self.top_k_variance = top_k_variance

    def fit(self, X: pd.DataFrame, y: pd.Series) -> StepPreprocessor:
        X = X.rename(columns=str)
        if self.top_k_variance is not None:
            X = X[GeneFilter(top_k_variance=self.top_k_variance).fit(X).genes_]
        self.genes_ = list(X.columns)
        self.x_scaler_ = None
        if self.scaler != "none":
            self.x_scaler_ = ExpressionScaler(kind=self.scaler).fit(X.to_numpy(np.float64))
        self.y_transform_ = _response_transform(self.response)
        if self.y_transform_ is not None:
            self.y_transform_.fit(np.asarray(y, float))
        return self

    def transform_X(self, X: pd.DataFrame) -> np.ndarray:
        """Genes in training order; a gene missing here becomes 0 (the training centre)."""
        values = X.reindex(columns=self.genes_).to_numpy(np.float64)
        if self.x_scaler_ is not None:
            values = self.x_scaler_.transform(values)
        return np.nan_to_num(values, nan=0.0).astype(np.float32)

    def transform_y(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if self.y_transform_ is None:
            return y.astype(np.float32)
        try:
            return self.y_transform_.transform(y).astype(np.float32)
        except GliotlError as exc:
            raise input_error(_WHERE, "response", f"'{self.response}' cannot transform these "
                              f"responses ({exc})") from None

    def inverse_y(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        return y if self.y_transform_ is None else self.y_transform_.inverse_transform(y)

    def to_dict(self) -> dict[str, Any]:
        n = len(self.genes_)
        scaler = self.x_scaler_
        state = {"scaler": self.scaler, "response": self.response, "genes": self.genes_,
                 "top_k_variance": self.top_k_variance,
                 "center": scaler.center_.tolist() if scaler else np.zeros(n).tolist(),
                 "scale": scaler.scale_.tolist() if scaler else np.ones(n).tolist()}
        if isinstance(self.y_transform_, ResponseMinMax):
            state.update(y_min=self.y_transform_.min_, y_max=self.y_transform_.max_)
        return state

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StepPreprocessor:
        """Rebuild the fitted transforms from :meth:`to_dict`'s state (any earlier run's too)."""
        prep = cls(state["scaler"], state["response"], state.get("top_k_variance"))
        prep.genes_ = list(state["genes"])
        prep.x_scaler_ = None
        if prep.scaler != "none":
            prep.x_scaler_ = ExpressionScaler(kind=prep.scaler)
            prep.x_scaler_.center_ = np.asarray(state["center"], dtype=float)
            prep.x_scaler_.scale_ = np.asarray(state["scale"], dtype=float)
            prep.x_scaler_.n_features_in_ = prep.x_scaler_.center_.size
        prep.y_transform_ = _response_transform(prep.response)
        if isinstance(prep.y_transform_, ResponseMinMax):
            prep.y_transform_.min_ = float(state["y_min"])
            prep.y_transform_.max_ = float(state["y_max"])
        elif prep.y_transform_ is not None:
            prep.y_transform_.fit(None)
        return prep

    @classmethod
    def load(cls, path: Path) -> StepPreprocessor:
        """The saved state at ``path``; a damaged file is a one-line error naming it."""
        state = read_json(path)
        try:
            prep = cls.from_dict(state)
            genes, scaler = len(prep.genes_), prep.x_scaler_
            if scaler is not None and (scaler.center_.size != genes
                                       or not np.isfinite(scaler.center_).all()
                                       or not np.isfinite(scaler.scale_).all()):
                raise ValueError("scaler state does not match the gene list or is not finite")
        except (KeyError, TypeError, ValueError, AttributeError, GliotlError) as exc:
            raise input_error(path, None, f"damaged preprocessing state ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); this run "
                              "cannot predict, rerun it") from None
        return prep
