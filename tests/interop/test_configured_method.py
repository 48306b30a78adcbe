"""A config's method fitted outside `gliotl drug run` gives the run's own predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from gliotl.core.seeding import derive_seed
from gliotl.drug.config import load_experiment_config
from gliotl.drug.data.drevalpy import read_drevalpy
from gliotl.drug.data.synthetic_chain import write_synthetic_chain
from gliotl.drug.pipeline.experiment import run_drug_experiment
from gliotl.errors import GliotlError
from gliotl.interop.configured_method import ConfiguredMethodRegressor


def chain_config(data, methods: list[dict]) -> dict:
    return {
        "name": "chain", "seed": 0,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data)}},
        "steps": {
            "source": {"dataset": "syn", "drug": "Oxaliplatin", "train": "pretrain",
                       "filters": [{"column": "tissue", "not_equals": "glioma"}]},
            "intermediate": {"dataset": "syn", "drug": "Temozolomide",
                             "filters": [{"column": "tissue", "not_equals": "glioma"}]},
            "target": {"dataset": "syn", "drug": "Temozolomide",
                       "filters": [{"column": "tissue", "equals": "glioma"}]},
        },
        "target_cv": {"n_splits": 3, "n_repeats": 1},
        "network": {"hidden": [16, 8]},
        "train": {"pretrain": {"epochs": 4}, "finetune": {"epochs": 6}},
        "methods": methods, "reference": methods[0]["name"], "n_boot": 20,
    }


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    data = write_synthetic_chain(root / "syn", seed=0)
    methods = [{"name": "two_step", "kind": "network", "chain": ["source", "intermediate"]},
               {"name": "prior", "kind": "prior_elasticnet", "chain": ["source"],
                "params": {"n_alphas": 4, "l1_ratios": [0.5]}}]
    path = root / "chain.yaml"
    path.write_text(yaml.safe_dump(chain_config(data, methods)))
    config, _ = load_experiment_config(path)
    run = run_drug_experiment(config, out=root / "run", progress=False)
    dataset = read_drevalpy(data)
    return path, run, dataset


@pytest.mark.parametrize("method", ["two_step", "prior"])
def test_fitted_on_a_runs_training_fold_it_predicts_what_the_run_predicted(chain, tmp_path,
                                                                          method):
    path, run, dataset = chain
    splits = pd.read_csv(run.splits_path, dtype={"sample_id": str})
    fold = splits[(splits.repeat == 0) & (splits.fold == 0)]
    train = list(fold[fold.role == "train"].sample_id)
    test = list(fold[fold.role == "test"].sample_id)
    y = dataset.responses("Temozolomide", "AUC")
    model = ConfiguredMethodRegressor(path, method, work_dir=tmp_path / "work",
                                      seed=derive_seed(0, "target", method, 0, 0))
    model.fit(dataset.expression.loc[train], y.loc[train].to_numpy())
    predictions = pd.read_csv(run.predictions_path, dtype={"sample_id": str})
    expected = predictions[(predictions.method == method) & (predictions.repeat == 0)
                           & (predictions.fold == 0)].set_index("sample_id").loc[test, "y_pred"]
    assert np.allclose(model.predict(dataset.expression.loc[test]), expected.to_numpy(),
                       atol=1e-6)


def test_a_target_line_in_an_upstream_step_is_refused(chain, tmp_path):
    path, _, dataset = chain
    others = dataset.samples.index[dataset.samples.tissue != "glioma"][:5]
    y = dataset.responses("Temozolomide", "AUC").reindex(others)
    model = ConfiguredMethodRegressor(path, "two_step", work_dir=tmp_path / "w")
    with pytest.raises(GliotlError, match=r"steps.source.filters': 5 target cell lines"):
        model.fit(dataset.expression.loc[others], y.to_numpy())


def test_unknown_method_names_the_config_field(chain):
    path, _, dataset = chain
    with pytest.raises(GliotlError, match=r"field 'method': no method 'nope'"):
        ConfiguredMethodRegressor(path, "nope").fit(dataset.expression.iloc[:3], [1.0, 2.0, 3.0])


def test_a_target_gene_missing_upstream_names_the_step(chain, tmp_path):
    path, _, dataset = chain
    glioma = dataset.samples.index[dataset.samples.tissue == "glioma"][:6]
    X = dataset.expression.loc[glioma].assign(NOT_A_GENE=1.0)
    model = ConfiguredMethodRegressor(path, "two_step", work_dir=tmp_path / "w")
    with pytest.raises(GliotlError, match=r"steps.source': 1 target genes .*'NOT_A_GENE'"):
        model.fit(X, dataset.responses("Temozolomide", "AUC").reindex(glioma).to_numpy())
