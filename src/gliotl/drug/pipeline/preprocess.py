"""In-fold preprocessing of one step: expression scaler + response transform, with JSON state.

Fitted on a training fold only, applied unchanged to its test fold, and saved as plain JSON next
to a final model so that ``gliotl drug predict`` needs no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.core.io import write_json
from gliotl.drug.data.transforms import ExpressionScaler, ResponseMinMax


class StepPreprocessor:
    """Scale expression per gene and min-max the response (the paper's 0-10), training data only."""

    def __init__(self, scaler: str = "standard", response: str = "minmax"):
        self.scaler = scaler
        self.response = response

    def fit(self, X: pd.DataFrame, y: pd.Series) -> StepPreprocessor:
        self.genes_ = list(map(str, X.columns))
        values = X.to_numpy(np.float64)
        if self.scaler == "none":
            self.center_ = np.zeros(values.shape[1])
            self.scale_ = np.ones(values.shape[1])
        else:
            fitted = ExpressionScaler(kind=self.scaler).fit(values)
            self.center_, self.scale_ = fitted.center_, fitted.scale_
        if self.response == "minmax":
            fitted_y = ResponseMinMax(low=0.0, high=10.0).fit(np.asarray(y, float))
            self.y_min_, self.y_max_ = float(fitted_y.min_), float(fitted_y.max_)
        return self

    def transform_X(self, X: pd.DataFrame) -> np.ndarray:
        values = X.reindex(columns=self.genes_).to_numpy(np.float64)
        out = (values - self.center_) / self.scale_
        return np.nan_to_num(out, nan=0.0).astype(np.float32)

    def _span(self) -> float:
        return (self.y_max_ - self.y_min_) or 1.0

    def transform_y(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if self.response == "minmax":
            y = (y - self.y_min_) / self._span() * 10.0
        elif self.response == "log":
            y = np.log(y)
        return y.astype(np.float32)

    def inverse_y(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if self.response == "minmax":
            return y / 10.0 * self._span() + self.y_min_
        if self.response == "log":
            return np.exp(y)
        return y

    def to_dict(self) -> dict:
        state = {"scaler": self.scaler, "response": self.response, "genes": self.genes_,
                 "center": self.center_.tolist(), "scale": self.scale_.tolist()}
        if self.response == "minmax":
            state.update(y_min=self.y_min_, y_max=self.y_max_)
        return state

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> StepPreprocessor:
        state = json.loads(Path(path).read_text())
        prep = cls(state["scaler"], state["response"])
        prep.genes_ = state["genes"]
        prep.center_ = np.asarray(state["center"])
        prep.scale_ = np.asarray(state["scale"])
        if "y_min" in state:
            prep.y_min_, prep.y_max_ = state["y_min"], state["y_max"]
        return prep
