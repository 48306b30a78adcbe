"""A method's own preprocessing (scaler on/off, variance filter) and ElasticNet's penalty
options, each shown to be fitted on the training fold only: extreme values put in the test fold
alone leave every fitted transform, selected gene and chosen penalty unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drugcases import baseline_config
from gliotl.core.config import config_to_dict
from gliotl.core.runs.rundir import RunDir
from gliotl.drug.config import ExperimentConfig, MethodPreprocessing, StepConfig
from gliotl.drug.data.synthetic_chain import write_synthetic_chain
from gliotl.drug.methods.registry import BuildContext
from gliotl.drug.pipeline.experiment import FoldRequest, StepInput, fold_job
from gliotl.drug.pipeline.preprocess import StepPreprocessor
from gliotl.drug.pipeline.steps import prepare_steps, read_step
from gliotl.errors import GliotlError


@pytest.fixture(scope="module")
def chain_data(tmp_path_factory) -> Path:
    return write_synthetic_chain(tmp_path_factory.mktemp("syn"), seed=0)


METHODS = {
    "filtered_robust": {"name": "m", "kind": "elasticnet",
                        "preprocessing": {"scaler": "robust", "top_k_variance": 15},
                        "params": {"n_alphas": 5, "l1_ratios": [0.5]}},
    "unscaled": {"name": "m", "kind": "elasticnet", "preprocessing": {"scaler": "none"},
                 "params": {"standardise": False, "n_alphas": 5, "l1_ratios": [0.5]}},
    "fixed_alpha": {"name": "m", "kind": "elasticnet",
                    "params": {"alpha": 0.05, "l1_ratios": [0.5], "standardise": False}},
    "forest_filtered": {"name": "m", "kind": "random_forest",
                        "preprocessing": {"top_k_variance": 10},
                        "params": {"n_estimators": 20}},
}


def _fold_outputs(chain_data: Path, tmp_path: Path, method: dict, poison: bool):
    data = baseline_config(chain_data, 0)
    data["methods"], data["reference"] = [method], "m"
    config = ExperimentConfig.model_validate(data)
    run = RunDir.open("t", config_to_dict(config), 0, out=tmp_path / str(poison))
    prepare_steps(config, run.path / "data")
    target = read_step(run.path / "data", "target")
    ids = list(target.y.index)
    train, test = ids[: 2 * len(ids) // 3], ids[2 * len(ids) // 3:]
    poisoned_genes: list[str] = []
    if poison:  # the least variable training genes get wild test values (and test labels)
        path = run.path / "data" / "target.parquet"
        frame = pd.read_parquet(path)
        genes = [c for c in frame.columns if c != "__y__"]
        poisoned_genes = list(frame.loc[train, genes].var().sort_values().index[:5])
        frame.loc[test, poisoned_genes] = 1e4
        frame.loc[test, "__y__"] = 1e6
        frame.to_parquet(path)
    job_dir = run.path / "job"
    job_dir.mkdir()
    step = StepInput(str(run.path / "data"), "target", config.steps["target"])
    context = BuildContext(config.network, config.train.preset("finetune"), seed=1)
    result = fold_job(job_dir, FoldRequest(step, config.methods[0], context, 0, 0, train, test,
                                           save_model=True))
    state = json.loads((job_dir / "preprocess.json").read_text())
    return state, result.get("tuning"), poisoned_genes


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_preprocessing_is_fitted_in_fold(chain_data, tmp_path, name):
    clean, clean_tuning, _ = _fold_outputs(chain_data, tmp_path / "c", METHODS[name], False)
    dirty, dirty_tuning, poisoned = _fold_outputs(chain_data, tmp_path / "p", METHODS[name],
                                                  True)
    assert clean == dirty  # genes kept, scaler centre / scale, response min-max: training only
    assert clean_tuning == dirty_tuning  # the penalty and the coefficients' support too
    top_k = METHODS[name].get("preprocessing", {}).get("top_k_variance")
    if top_k is not None:
        assert len(dirty["genes"]) == top_k and not set(poisoned) & set(dirty["genes"])
    scaler = METHODS[name].get("preprocessing", {}).get("scaler", "step")
    assert dirty["scaler"] == ("standard" if scaler == "step" else scaler)


def test_variance_filter_keeps_the_most_variable_training_genes():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(20, 6)) * [1, 5, 2, 0.1, 3, 0.5],
                     columns=list("abcdef"))
    prep = StepPreprocessor("standard", "none", top_k_variance=3).fit(X, pd.Series(range(20)))
    assert set(prep.genes_) == set(X.var().sort_values().index[-3:])  # b, e, c
    assert prep.transform_X(X).shape == (20, 3)
    again = StepPreprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    np.testing.assert_array_equal(again.transform_X(X), prep.transform_X(X))


def test_default_preprocessing_is_the_steps():
    step = StepInput("unused", "target", StepConfig(dataset="d", drug="x", scaler="robust"))
    X = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=list("abc"))
    y = pd.Series([1.0, 2, 3, 4])
    default = step.preprocessor(X, y, MethodPreprocessing())
    assert default.to_dict() == StepPreprocessor("robust", "minmax").fit(X, y).to_dict() | {
        "top_k_variance": None}
    assert step.preprocessor(X, y, MethodPreprocessing(scaler="none")).x_scaler_ is None


@pytest.mark.parametrize(("method", "message"), [
    ({"name": "tl", "kind": "prior_elasticnet", "chain": ["intermediate"],
      "preprocessing": {"top_k_variance": 5}}, "top_k_variance needs a method without"),
    ({"name": "m", "kind": "mean", "preprocessing": {"scaler": "minmax"}}, "scaler"),
    ({"name": "m", "kind": "mean", "preprocessing": {"top_k_variance": 0}}, "top_k_variance"),
])
def test_preprocessing_mistakes_fail_at_load(chain_data, tmp_path, method, message):
    import yaml

    from gliotl.drug.config import load_experiment_config

    data = baseline_config(chain_data, 0)
    data["steps"]["intermediate"] = {"dataset": "syn", "drug": "Temozolomide", "filters": [
        {"column": "tissue", "not_equals": "glioma"}]}
    data["methods"].append(method)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(GliotlError, match=message) as info:
        load_experiment_config(path)
    assert "\n" not in str(info.value)


def test_nested_candidates_may_not_set_their_own_preprocessing(chain_data):
    data = baseline_config(chain_data, 0)
    data["methods"][0]["preprocessing"] = {"scaler": "none"}
    data["methods"].append({"name": "nested", "kind": "nested",
                            "candidates": ["elasticnet", "mean"]})
    with pytest.raises(ValueError, match="candidate 'elasticnet' sets preprocessing"):
        ExperimentConfig.model_validate(data)
