"""Method kind ``sklearn``: any scikit-learn regressor by import path, checked at load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.neighbors import KNeighborsRegressor

from clirun import run_gliotl
from gliotl.drug.config import load_experiment_config
from gliotl.drug.data.synthetic_chain import write_synthetic_chain
from gliotl.drug.methods.registry import BuildContext, method_kind
from gliotl.drug.methods.sklearn_regressor import SklearnMethod
from gliotl.drug.network.model import NetworkConfig, TrainConfig
from gliotl.drug.pipeline.experiment import run_drug_experiment
from gliotl.errors import GliotlError


def write_config(tmp_path, method: dict) -> object:
    data = write_synthetic_chain(tmp_path / "syn", seed=0)
    config = {
        "name": "sk", "seed": 3,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data.relative_to(tmp_path))}},
        "steps": {"target": {"dataset": "syn", "drug": "Temozolomide",
                             "filters": [{"column": "tissue", "equals": "glioma"}]}},
        "target_cv": {"n_splits": 3, "n_repeats": 1},
        "methods": [{"name": "knn", "kind": "sklearn", **method}, {"name": "mean", "kind": "mean"}],
        "reference": "mean", "n_boot": 20,
    }
    path = tmp_path / "sk.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_sklearn_kind_runs_the_named_regressor_on_the_shared_splits(tmp_path):
    path = write_config(tmp_path, {"estimator": "sklearn.neighbors.KNeighborsRegressor",
                                   "params": {"n_neighbors": 3}})
    config, _ = load_experiment_config(path)
    assert isinstance(config.methods[0], SklearnMethod)
    run = run_drug_experiment(config, out=tmp_path / "run", progress=False)
    predictions = pd.read_csv(run.predictions_path)
    knn = predictions[predictions.method == "knn"]
    assert len(knn) == len(predictions[predictions.method == "mean"]) > 0
    # the same 3-NN on the same folds predicts something else than the training mean
    assert not np.allclose(knn.y_pred.to_numpy(),
                           predictions[predictions.method == "mean"].y_pred.to_numpy())
    assert run.manifest()["status"] == "finished"


def test_sklearn_kind_passes_the_job_seed_as_random_state_unless_given():
    ctx = BuildContext(NetworkConfig(), TrainConfig(), seed=11)
    forest = SklearnMethod(name="rf", kind="sklearn",
                           estimator="sklearn.ensemble.RandomForestRegressor")
    assert method_kind("sklearn").build(forest, ctx).random_state == 11
    fixed = forest.model_copy(update={"params": {"random_state": 5}})
    assert method_kind("sklearn").build(fixed, ctx).random_state == 5
    knn = SklearnMethod(name="k", kind="sklearn",
                        estimator="sklearn.neighbors.KNeighborsRegressor")
    assert isinstance(method_kind("sklearn").build(knn, ctx), KNeighborsRegressor)


@pytest.mark.parametrize(("method", "message"), [
    ({"estimator": "sklearn.nowhere.Thing"}, r"methods.0.estimator': .*cannot import module"),
    ({"estimator": "sklearn.svm.NoSuchSVR"}, r"methods.0.estimator': .*is not a class"),
    ({"estimator": "sklearn.linear_model.LogisticRegression"},
     r"methods.0.estimator': .*not a scikit-learn regressor"),
    ({"estimator": "os.path"}, r"methods.0.estimator': .*is not a class"),
    ({"estimator": "__import__('os')"}, r"methods.0.estimator': .*expected an import path"),
    ({"estimator": "sklearn.svm.SVR", "params": {"gamma_typo": 1}},
     r"methods.0.params': .*'gamma_typo' is not a parameter"),
    ({"estimator": "sklearn.svm.SVR", "params": {"C": -1.0}}, r"methods.0.params': .*'C'"),
])
def test_bad_estimator_or_params_are_config_errors(tmp_path, method, message):
    with pytest.raises(GliotlError, match=message):
        load_experiment_config(write_config(tmp_path, method))


def test_bad_import_path_through_the_cli_is_one_line_exit_2(tmp_path, capsys):
    path = write_config(tmp_path, {"estimator": "sklearn.linear_model.LogisticRegression"})
    code, out, err = run_gliotl(["drug", "run", str(path), "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "methods.0.estimator" in err and "regressor" in err
    assert not (tmp_path / "r").exists()
