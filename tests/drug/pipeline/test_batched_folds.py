"""The engine stacks the fold jobs of each network method (issue 17): same predictions as the
fold-by-fold path within float32 rounding, each member's result in its own job folder, and a
resumed run redoes only missing members."""

from __future__ import annotations

import pandas as pd
import pytest

from gliotl.drug.config import ExperimentConfig
from gliotl.drug.data.synthetic_chain import write_synthetic_chain
from gliotl.drug.network import batched
from gliotl.drug.network.batched import CPU_STACKING_MAX_PARAMETERS
from gliotl.drug.network.model import parameter_count
from gliotl.drug.pipeline import batching
from gliotl.drug.pipeline.experiment import run_drug_experiment

#: Predictions are responses on their original scale (synthetic AUCs of order 1).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return write_synthetic_chain(tmp_path_factory.mktemp("syn"), seed=0)


def _config(data, stacking: str = "always") -> ExperimentConfig:
    target = {"dataset": "syn", "drug": "Temozolomide",
              "filters": [{"column": "tissue", "equals": "glioma"}]}
    source = {"dataset": "syn", "drug": "Oxaliplatin", "train": "pretrain",
              "filters": [{"column": "tissue", "not_equals": "glioma"}]}
    return ExperimentConfig.model_validate({
        "name": "stacked", "seed": 0,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data)}},
        "steps": {"source": source, "target": target},
        "target_cv": {"n_splits": 3, "n_repeats": 2},
        "network": {"hidden": [16, 8]},
        "train": {"pretrain": {"epochs": 5},
                  "finetune": {"epochs": 12, "lr": 1e-3, "stacking": stacking}},
        "methods": [{"name": "target_only", "kind": "network"},
                    {"name": "l2sp", "kind": "network", "chain": ["source"],
                     "transfer": {"kind": "l2sp"}},
                    {"name": "mean", "kind": "mean"}],
        "reference": "target_only", "n_boot": 10,
    })


def _predictions(run) -> pd.DataFrame:
    frame = pd.read_csv(run.predictions_path)
    return frame.sort_values(["method", "repeat", "fold", "sample_id"]).reset_index(drop=True)


def test_stacked_fold_jobs_equal_the_fold_by_fold_run_and_resume_per_member(
        chain, tmp_path, monkeypatch):
    config = _config(chain)
    stacked = run_drug_experiment(config, tmp_path, out=tmp_path / "stacked", progress=False)
    jobs = stacked.path / "jobs"
    batch_dirs = sorted(p.name for p in jobs.glob("batch-target-*"))
    assert len(batch_dirs) == 2  # one per network method; mean is not a network
    assert (jobs / "target-l2sp-r1-f2" / "timing.json").is_file()
    with monkeypatch.context() as patch:
        patch.setattr(batching, "batch_jobs", lambda jobs, done: [])
        plain = run_drug_experiment(config, tmp_path, out=tmp_path / "plain", progress=False)
    assert not list((plain.path / "jobs").glob("batch-*"))
    got, want = _predictions(stacked), _predictions(plain)
    assert got[["method", "sample_id", "repeat", "fold"]].equals(
        want[["method", "sample_id", "repeat", "fold"]])
    assert (got.y_pred - want.y_pred).abs().max() <= TOLERANCE
    # resume: lost members are redone together (a new batch of just them), nothing else changes
    lost = [jobs / f"target-target_only-r{r}-f1" / "result.json" for r in (0, 1)]
    kept = (jobs / "target-target_only-r0-f0" / "result.json").read_bytes()
    for path in lost:
        path.unlink()
    stacked.update_manifest(status="failed")
    resumed = run_drug_experiment(config, tmp_path, out=stacked.path, progress=False,
                                  resume=True)
    assert all(path.is_file() for path in lost)
    assert len(list(jobs.glob("batch-target-target_only-r0-f1-n2-*"))) == 1
    assert (jobs / "target-target_only-r0-f0" / "result.json").read_bytes() == kept
    assert (_predictions(resumed).y_pred - got.y_pred).abs().max() <= TOLERANCE


def test_by_default_a_cpu_run_stacks_a_small_networks_folds_and_fits_a_large_ones_one_by_one(
        chain, tmp_path, monkeypatch):
    """``train.stacking: auto`` on CPU stacks networks of at most
    ``CPU_STACKING_MAX_PARAMETERS`` (here 1,000 genes x [16, 8]: 16,161) and fits larger ones
    fold by fold, each fold its own job."""
    config = _config(chain, stacking="auto")
    assert parameter_count(1000, config.network) == 16_161 <= CPU_STACKING_MAX_PARAMETERS
    small = run_drug_experiment(config, tmp_path, out=tmp_path / "small", progress=False)
    assert len(list((small.path / "jobs").glob("batch-target-*"))) == 2
    member_timing = small.path / "jobs" / "target-l2sp-r1-f2" / "timing.json"
    assert '"batched": true' in member_timing.read_text()
    monkeypatch.setattr(batched, "CPU_STACKING_MAX_PARAMETERS", 16_160)  # one weight too many
    large = run_drug_experiment(config, tmp_path, out=tmp_path / "large", progress=False)
    jobs = large.path / "jobs"
    assert not list(jobs.glob("batch-*"))
    timing = (jobs / "target-l2sp-r1-f2" / "timing.json").read_text()
    assert '"batched"' not in timing
    got, want = _predictions(small), _predictions(large)
    assert (got.y_pred - want.y_pred).abs().max() <= TOLERANCE
