"""Every run holds a model card: data, splits, metrics with CIs, intended use, limits."""

from __future__ import annotations

import pandas as pd
import yaml

from gliotl.core.reporting.model_card import MODEL_CARD, markdown_table
from gliotl.drug.config import load_experiment_config
from gliotl.drug.data.synthetic_chain import write_synthetic_chain
from gliotl.drug.pipeline.experiment import run_drug_experiment


def test_markdown_table_formats_floats_and_blanks_missing_values():
    frame = pd.DataFrame({"method": ["a|b", "c"], "rho": [0.12345, float("nan")]})
    assert markdown_table(frame).splitlines() == [
        "| method | rho |", "|---|---|", "| a\\|b | 0.123 |", "| c |  |"]


def test_a_drug_run_writes_its_model_card(tmp_path):
    data = write_synthetic_chain(tmp_path / "syn", seed=0)
    config = {
        "name": "card", "seed": 2,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data)}},
        "steps": {"target": {"dataset": "syn", "drug": "Temozolomide",
                             "filters": [{"column": "tissue", "equals": "glioma"}]}},
        "target_cv": {"n_splits": 3, "n_repeats": 2},
        "methods": [{"name": "knn", "kind": "sklearn",
                     "estimator": "sklearn.neighbors.KNeighborsRegressor",
                     "params": {"n_neighbors": 3}}, {"name": "mean", "kind": "mean"}],
        "reference": "mean", "n_boot": 20,
    }
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg, _ = load_experiment_config(path)
    run = run_drug_experiment(cfg, out=tmp_path / "run", progress=False)
    card = (run.path / MODEL_CARD).read_text(encoding="utf-8")
    for heading in ("Model", "Data", "Evaluation splits", "Metrics", "Intended use", "Limits",
                    "Provenance"):
        assert f"\n## {heading}\n" in card
    n_target = int(pd.read_csv(run.splits_path).sample_id.nunique())
    assert f"| target | syn | drevalpy | Temozolomide | AUC | {n_target} |" in card
    assert "3-fold cross-validation x 2 repeats" in card and "(6 train/test splits" in card
    assert f"Small n: the target step has {n_target} samples" in card
    assert "Cell lines are not patients" in card
    knn = next(line for line in card.splitlines() if line.startswith("| knn |"))
    metrics = pd.read_json(run.metrics_path, typ="series")["target"]["summary"]
    row = next(r for r in metrics if r["method"] == "knn" and r["metric"] == "spearman")
    assert knn.startswith(f"| knn | {row['mean']:.3f} | {row['sd']:.3f} | "
                          f"{row['ci_low']:.3f} | {row['ci_high']:.3f} |")
