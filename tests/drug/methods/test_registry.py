"""A new method kind is one registration: its config loads from YAML and it runs end to end."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import BaseEstimator, RegressorMixin

from gliotl.core.config import StrictModel
from gliotl.drug.config import MethodConfig, load_experiment_config
from gliotl.drug.data.synthetic_chain import write_synthetic_chain
from gliotl.drug.methods.registry import MethodKind, method_kinds, register_method
from gliotl.drug.pipeline.experiment import run_drug_experiment
from gliotl.errors import GliotlError


class QuantileRegressor(BaseEstimator, RegressorMixin):
    """Predicts a quantile of the training responses (the median by default)."""

    def __init__(self, q: float = 0.5):
        self.q = q

    def fit(self, X, y):
        self.value_ = float(np.quantile(y, self.q))
        return self

    def predict(self, X):
        return np.full(len(X), self.value_)


class QuantileParams(StrictModel):
    q: float = 0.5


class QuantileMethod(MethodConfig):
    kind: Literal["toy_quantile"]
    params: QuantileParams = QuantileParams()


@pytest.fixture(scope="module", autouse=True)
def toy_kind():
    register_method(MethodKind(QuantileMethod, lambda method, ctx: QuantileRegressor(
        q=method.params.q)), replace=True)


def write_config(tmp_path, params: dict) -> tuple:
    data = write_synthetic_chain(tmp_path / "syn", seed=0)
    config = {
        "name": "toy", "seed": 0,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data.relative_to(tmp_path))}},
        "steps": {"target": {"dataset": "syn", "drug": "Temozolomide",
                             "filters": [{"column": "tissue", "equals": "glioma"}]}},
        "target_cv": {"n_splits": 3, "n_repeats": 2},
        "methods": [{"name": "median", "kind": "toy_quantile", "params": params},
                    {"name": "mean", "kind": "mean"}],
        "reference": "median", "n_boot": 20,
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_registered_kind_loads_from_yaml_and_runs_end_to_end(tmp_path):
    assert "toy_quantile" in method_kinds()
    config, _ = load_experiment_config(write_config(tmp_path, {"q": 0.5}))
    assert isinstance(config.methods[0], QuantileMethod)
    run = run_drug_experiment(config, out=tmp_path / "run", progress=False)
    predictions = pd.read_csv(run.predictions_path)
    splits = pd.read_csv(run.splits_path)
    truth = predictions.drop_duplicates("sample_id").set_index("sample_id")["y_true"]
    for (repeat, fold), group in predictions[predictions.method == "median"].groupby(
            ["repeat", "fold"]):
        train = splits[(splits.repeat == repeat) & (splits.fold == fold)
                       & (splits.role == "train")].sample_id
        assert np.allclose(group.y_pred, np.median(truth.loc[train]))
    assert run.manifest()["status"] == "finished"


def test_registered_kind_params_are_strict(tmp_path):
    with pytest.raises(GliotlError, match=r"field 'methods.0.params.quantile': unknown config"):
        load_experiment_config(write_config(tmp_path, {"quantile": 0.5}))
