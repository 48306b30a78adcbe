"""Label permutations of the target through the engine's own fold fitting: seeded, paired over
methods, resumable, and summarised with the p-value's resolution in metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drugcases import baseline_config
from gliotl.drug.config import ExperimentConfig
from gliotl.drug.data.synthetic_chain import write_synthetic_chain
from gliotl.drug.pipeline.experiment import permuted_step, run_drug_experiment
from gliotl.drug.pipeline.steps import read_step


@pytest.fixture(scope="module")
def chain_data(tmp_path_factory) -> Path:
    return write_synthetic_chain(tmp_path_factory.mktemp("syn"), seed=0)


def test_permutation_p_values_in_metrics_and_resumable(chain_data, tmp_path):
    config = ExperimentConfig.model_validate(baseline_config(chain_data, 4))
    run = run_drug_experiment(config, tmp_path, out=tmp_path / "run", progress=False)
    metrics = json.loads(run.metrics_path.read_text())
    perm = metrics["permutation"]
    assert perm["n_permutations"] == 4 and perm["resolution"] == pytest.approx(0.2)
    rows = {r["method"]: r for r in perm["methods"]}
    summary = pd.DataFrame(metrics["target"]["summary"]).query("metric == 'spearman'")
    observed = summary.set_index("method").loc["elasticnet", "mean"]
    null = pd.read_csv(run.path / "permutation_null.csv").query("method == 'elasticnet'")
    assert len(null) == 4 and rows["elasticnet"]["observed"] == pytest.approx(observed)
    expected = (1 + int((null["statistic"] >= observed - 1e-12).sum())) / 5
    assert rows["elasticnet"]["p_value"] == pytest.approx(expected)
    assert rows["mean"]["p_value"] is None  # constant per fold: no rank statistic, no test
    html = run.report_path.read_text()
    assert "resolution" in html and "corrected resampled t" in html
    # interrupted after three of the four permutations: resuming reuses them, redoes the last
    kept = run.job_dir("perm-elasticnet-p0") / "result.json"
    stamp = kept.stat().st_mtime_ns
    (run.job_dir("perm-elasticnet-p3") / "result.json").unlink()
    run.update_manifest(status="failed")
    again = run_drug_experiment(config, tmp_path, out=tmp_path / "run", resume=True,
                                progress=False)
    assert kept.stat().st_mtime_ns == stamp
    assert (run.job_dir("perm-elasticnet-p3") / "result.json").is_file()
    assert json.loads(again.metrics_path.read_text())["permutation"] == perm  # seeded


def test_permuted_step_is_seeded_and_keeps_expression(chain_data, tmp_path):
    from gliotl.drug.pipeline.steps import prepare_steps

    config = ExperimentConfig.model_validate(baseline_config(chain_data, 0))
    prepare_steps(config, tmp_path / "data")
    data = read_step(tmp_path / "data", "target")
    a, b, c = (permuted_step(data, seed) for seed in (7, 7, 8))
    assert a.y.equals(b.y) and not a.y.equals(c.y)
    assert sorted(a.y.to_numpy()) == sorted(data.y.to_numpy())
    assert list(a.y.index) == list(data.y.index) and a.X is data.X
    assert not np.array_equal(a.y.to_numpy(), data.y.to_numpy())
