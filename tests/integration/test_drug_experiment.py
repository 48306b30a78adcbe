"""The drug experiment end to end on the synthetic chain (real formats, real pipeline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gliotl.drug.config import ExperimentConfig, load_experiment_config
from gliotl.drug.data.synthetic_chain import write_synthetic_chain
from gliotl.drug.methods.registry import BuildContext
from gliotl.drug.pipeline.experiment import FoldRequest, StepInput, fold_job, run_drug_experiment
from gliotl.errors import GliotlError

ROOT = Path(__file__).resolve().parents[2]


def chain_config(data: Path, methods: list[dict], **overrides) -> dict:
    config = {
        "name": "synthetic_chain",
        "seed": 0,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data)}},
        "steps": {
            "source": {"dataset": "syn", "drug": "Oxaliplatin", "scaler": "robust",
                       "train": "pretrain",
                       "filters": [{"column": "tissue", "not_equals": "glioma"}]},
            "intermediate": {"dataset": "syn", "drug": "Temozolomide",
                             "filters": [{"column": "tissue", "not_equals": "glioma"}]},
            "target": {"dataset": "syn", "drug": "Temozolomide",
                       "filters": [{"column": "tissue", "equals": "glioma"}]},
        },
        "target_cv": {"n_splits": 3, "n_repeats": 3},
        "network": {"hidden": [64, 16]},
        "train": {"pretrain": {"epochs": 60}, "finetune": {"epochs": 150, "lr": 1e-3}},
        "methods": methods,
        "reference": methods[0]["name"],
        "n_boot": 100,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def chain_data(tmp_path_factory) -> Path:
    return write_synthetic_chain(tmp_path_factory.mktemp("syn"), seed=0)


@pytest.mark.slow
def test_two_step_transfer_beats_target_only_on_shared_splits(chain_data, tmp_path):
    methods = [{"name": "two_step", "kind": "network", "chain": ["source", "intermediate"]},
               {"name": "target_only", "kind": "network"},
               {"name": "mean", "kind": "mean"}]
    config = ExperimentConfig.model_validate(chain_config(chain_data, methods))
    run = run_drug_experiment(config, tmp_path, out=tmp_path / "run", progress=False)
    predictions = pd.read_csv(run.predictions_path)
    splits = pd.read_csv(run.splits_path)
    # every method was scored on exactly the saved test folds
    tests = splits[splits.role == "test"].sort_values(["repeat", "fold", "sample_id"])
    for _, group in predictions.groupby("method"):
        got = group.sort_values(["repeat", "fold", "sample_id"])
        assert list(got.sample_id.astype(str)) == list(tests.sample_id.astype(str))
    metrics = json.loads(run.metrics_path.read_text())
    summary = pd.DataFrame(metrics["target"]["summary"])
    rho = summary[summary.metric == "spearman"].set_index("method")["mean"]
    assert rho["two_step"] > rho["target_only"] + 0.05, rho.to_dict()
    assert rho["two_step"] > 0.6
    assert run.manifest()["status"] == "finished"
    html = run.report_path.read_text()
    assert "two_step" in html and "data:image/png;base64" in html
    # the final model predicts new samples through the CLI
    expression = pd.read_csv(chain_data / "gene_expression.csv").head(5)
    new = tmp_path / "new.csv"
    expression.to_csv(new, index=False)
    proc = subprocess.run([sys.executable, "-m", "gliotl", "drug", "predict", str(run.path),
                           str(new)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = pd.read_csv(__import__("io").StringIO(proc.stdout))
    assert len(out) == 5 and np.isfinite(out["prediction"]).all()


def test_target_preprocessing_is_fitted_on_training_folds_only(chain_data, tmp_path):
    methods = [{"name": "target_only", "kind": "network", "params": {"train": {"epochs": 5}}}]
    config = ExperimentConfig.model_validate(chain_config(chain_data, methods))
    from gliotl.core.config import config_to_dict
    from gliotl.core.runs.rundir import RunDir
    from gliotl.drug.pipeline.steps import prepare_steps, read_step

    outputs = {}
    for label in ("clean", "poisoned"):
        run = RunDir.open("t", config_to_dict(config), 0, out=tmp_path / label)
        prepare_steps(config, run.path / "data")
        target = read_step(run.path / "data", "target")
        ids = list(target.y.index)
        train, test = ids[:12], ids[12:]
        if label == "poisoned":  # test fold labels and expression replaced by wild values
            path = run.path / "data" / "target.parquet"
            frame = pd.read_parquet(path)
            frame.loc[test, "__y__"] = 1e6
            frame.loc[test, frame.columns[1:]] = -1e6
            frame.to_parquet(path)
        job_dir = run.path / "job"
        job_dir.mkdir()
        step = StepInput(str(run.path / "data"), "target", config.steps["target"])
        context = BuildContext(config.network, config.train.preset("finetune"), seed=1)
        result = fold_job(job_dir, FoldRequest(step, config.methods[0], context, 0, 0, train,
                                               test, save_model=True))
        outputs[label] = (json.loads((job_dir / "preprocess.json").read_text()), result)
    clean, poisoned = outputs["clean"][0], outputs["poisoned"][0]
    assert clean == poisoned  # scaler, gene list and response min-max saw training rows only
    assert poisoned["y_max"] < 1.0  # the 1e6 test responses never entered the min-max


def test_target_samples_may_not_appear_in_an_earlier_step(chain_data, tmp_path):
    methods = [{"name": "two_step", "kind": "network", "chain": ["source", "intermediate"]}]
    data = chain_config(chain_data, methods)
    data["steps"]["intermediate"]["filters"] = []
    config = ExperimentConfig.model_validate(data)
    with pytest.raises(GliotlError, match="target samples also appear"):
        run_drug_experiment(config, tmp_path, out=tmp_path / "run", progress=False)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_results(chain_data, tmp_path):
    # Each network method's 12 folds train as one stacked batch job (stacking: always) that
    # writes all 12 results at its end; the second, longer one is still training when the kill
    # comes.
    stacked = {"stacking": "always"}
    methods = [{"name": "target_only", "kind": "network",
                "params": {"train": {"epochs": 40, **stacked}}},
               {"name": "target_long", "kind": "network",
                "params": {"train": {"epochs": 160, **stacked}}},
               {"name": "mean", "kind": "mean"}]
    config = chain_config(chain_data, methods, target_cv={"n_splits": 3, "n_repeats": 4})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gliotl", "drug", "run", str(path)]

    reference = tmp_path / "uninterrupted"
    subprocess.run([*cmd, "--out", str(reference)], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        done = list((killed / "jobs").glob("target-target_only-*/result.json"))
        if len(done) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = {p.parent.name for p in (killed / "jobs").glob("*/result.json")}
    assert 3 <= len(finished_before) < 36
    assert not list((killed / "jobs").glob("target-target_long-*/result.json"))
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    mtimes = {name: (killed / "jobs" / name / "result.json").stat().st_mtime_ns
              for name in finished_before}

    done = subprocess.run([*cmd, "--out", str(killed), "--resume"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name, mtime in mtimes.items():  # finished jobs were reused, not redone
        assert (killed / "jobs" / name / "result.json").stat().st_mtime_ns == mtime
    a = pd.read_csv(reference / "predictions.csv").sort_values(["method", "repeat", "sample_id"])
    b = pd.read_csv(killed / "predictions.csv").sort_values(["method", "repeat", "sample_id"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


@pytest.mark.parametrize("name", ["gdsc_glioma.yaml", "ju2025.yaml"])
def test_shipped_configs_are_valid(name):
    config, base = load_experiment_config(ROOT / "configs" / name)
    assert config.reference in {m.name for m in config.methods}
    assert base == ROOT / "configs"


@pytest.mark.slow
@pytest.mark.ray
def test_ray_executor_gives_the_same_metrics_as_local(chain_data, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind Ray to loopback only
    from gliotl.core.runs.jobs import LocalExecutor, make_executor

    methods = [{"name": "target_only", "kind": "network", "params": {"train": {"epochs": 20}}},
               {"name": "mean", "kind": "mean"}]
    config = ExperimentConfig.model_validate(
        chain_config(chain_data, methods, target_cv={"n_splits": 3, "n_repeats": 1}))
    local = run_drug_experiment(config, tmp_path, out=tmp_path / "local",
                                executor=LocalExecutor(workers=1), progress=False)
    on_ray = run_drug_experiment(config, tmp_path, out=tmp_path / "ray",
                                 executor=make_executor("ray", address="local", num_cpus=2),
                                 progress=False)
    a = json.loads(local.metrics_path.read_text())["target"]["summary"]
    b = json.loads(on_ray.metrics_path.read_text())["target"]["summary"]
    assert a == b


def test_source_selection_carries_the_best_candidate_into_the_chain(chain_data, tmp_path):
    """Each candidate source drug is scored by one-step transfer on the intermediate step; the
    best is carried forward, and methods naming ``source`` fine-tune from its network."""
    methods = [{"name": "two_step", "kind": "network", "chain": ["source", "intermediate"]},
               {"name": "mean", "kind": "mean"}]
    config = ExperimentConfig.model_validate(chain_config(
        chain_data, methods,
        source_selection={"step": "source", "candidates": ["Cyclophosphamide", "Oxaliplatin"],
                          "score_on": "intermediate", "cv": {"n_splits": 2, "n_repeats": 1}},
        target_cv={"n_splits": 3, "n_repeats": 1},
        train={"pretrain": {"epochs": 20}, "finetune": {"epochs": 40, "lr": 1e-3}},
    ))
    run = run_drug_experiment(config, tmp_path, out=tmp_path / "run", progress=False)
    table = pd.read_csv(run.path / "source_selection.csv").set_index("method")
    assert set(table.index) == {"from_Cyclophosphamide", "from_Oxaliplatin", "intermediate_only"}
    # by construction oxaliplatin carries the shared response program, cyclophosphamide none of it
    rho = table["spearman_mean"]
    assert rho["from_Oxaliplatin"] > rho["from_Cyclophosphamide"], rho.to_dict()
    assert run.manifest()["selected_source_drug"] == "Oxaliplatin"  # the best "from_" candidate
    jobs = {p.name for p in (run.path / "jobs").iterdir()}
    assert "upstream-source_Oxaliplatin__intermediate" in jobs  # the chain starts at the winner
    assert "upstream-source_Cyclophosphamide__intermediate" not in jobs
    assert (run.path / "checkpoints" / "two_step" / "model.pt").is_file()
