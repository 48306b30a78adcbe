"""``--mlflow URI``: the finished run's config, headline metrics and files in an MLflow store
(a local file store here); a missing mlflow is one line, exit 2, before any run starts."""

from __future__ import annotations

import builtins
import json

import pytest
import yaml

from clirun import run_gliotl
from gliotl.core.runs.mlflow_logging import config_params, flatten, run_metrics
from gliotl.drug.data.synthetic_chain import write_synthetic_chain


def _config(tmp_path):
    data = write_synthetic_chain(tmp_path / "syn", seed=0)
    config = {
        "name": "tracked", "seed": 1,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data)}},
        "steps": {"target": {"dataset": "syn", "drug": "Temozolomide",
                             "filters": [{"column": "tissue", "equals": "glioma"}]}},
        "target_cv": {"n_splits": 3, "n_repeats": 1},
        "methods": [{"name": "knn", "kind": "sklearn",
                     "estimator": "sklearn.neighbors.KNeighborsRegressor",
                     "params": {"n_neighbors": 3}}, {"name": "mean", "kind": "mean"}],
        "reference": "mean", "n_boot": 20,
    }
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_flatten_gives_dotted_keys_and_list_indices():
    data = {"a": {"b": 1, "c": [1, 2]}, "m": [{"name": "x"}, {"name": "y"}]}
    assert dict(flatten(data)) == {"a.b": 1, "a.c": [1, 2], "m.0.name": "x", "m.1.name": "y"}
    assert config_params({"s": {"t": None}}) == {"s.t": "None"}
    metrics = {"holdout": [{"group": "dsc", "method": "spottune", "roc_auc": 0.9,
                            "roc_auc_ci_low": float("nan"), "note": "x"}]}
    assert run_metrics(metrics) == {"holdout/dsc/spottune/roc_auc": 0.9}


def test_drug_run_is_logged_to_a_local_file_store(tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    code, out, err = run_gliotl(["drug", "run", str(_config(tmp_path)), "--out",
                                 str(tmp_path / "run"), "--set", "seed=4", "--mlflow", store],
                                capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    run_id = manifest["mlflow"]["run_id"]
    assert f"as run {run_id}" in out
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    logged = client.get_run(run_id)
    assert logged.data.params["seed"] == "4"
    assert logged.data.params["methods.0.params.n_neighbors"] == "3"
    assert logged.data.params["target_cv.n_splits"] == "3"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    knn = next(r for r in metrics["target"]["summary"]
               if r["method"] == "knn" and r["metric"] == "spearman")
    assert logged.data.metrics["target/spearman/knn/mean"] == pytest.approx(knn["mean"])
    assert logged.data.metrics["target/spearman/knn/ci_low"] == pytest.approx(knn["ci_low"])
    files = {item.path for item in client.list_artifacts(run_id)}
    assert {"report.html", "predictions.csv", "metrics.json", "config.yaml",
            "model_card.md"} <= files
    assert logged.info.status == "FINISHED"
    assert client.get_experiment(logged.info.experiment_id).name == "tracked"


def test_missing_mlflow_is_one_line_exit_2_before_the_run(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    code, _, err = run_gliotl(["drug", "run", str(tmp_path / "any.yaml"), "--out",
                               str(tmp_path / "run"), "--mlflow", "file:///tmp/x"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --mlflow: mlflow is not installed; pip install 'gliotl[mlflow]' "
        "(or pip install mlflow-skinny)"]
    assert not (tmp_path / "run").exists()
