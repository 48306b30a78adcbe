"""Integration tests of the MGMT experiment on a small phantom cohort (CPU, ResNet-10).

Acceptance: with a strong MGMT signal, SpotTune and fine-tuning reach a clearly higher hold-out
AUC than the same runs with shuffled labels. Also: the threshold comes from validation only,
a killed run resumes reusing finished jobs, `predict` reproduces the hold-out predictions, and
a bad config key is one line on stderr with exit status 2.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gliotl.core.evaluation.metrics import choose_threshold
from gliotl.mgmt.config import MGMTExperimentConfig

pytestmark = pytest.mark.slow


N_PATIENTS = 64
"""20 hold-out patients (a null AUC above 0.75 has probability ~2% there), 2 folds of ~22."""
PRETRAIN_PATIENTS = 32
PHANTOM_SHAPE = (32, 32, 24)
"""x, y, z: the whole tumour spans ~10 voxels, its necrotic core and enhancing rim a few."""


def _config(name: str, cohort: dict, model: dict, cache: str) -> MGMTExperimentConfig:
    return MGMTExperimentConfig.model_validate({
        "name": name, "seed": 1, "cohort": cohort, "cache_dir": cache,
        # the tumour fills the network input: MGMT lives in its necrosis and enhancement
        "preprocessing": {"target_shape": [16, 16, 16], "region": "tumour_bbox", "margin": 1},
        "modalities": ["T1GD"],
        "model": {"depth": 10, **model},
        "methods": ["full", "spottune"],
        # ~6 optimiser steps an epoch, ~30 a job: enough for SpotTune's policy and the backbone
        "training": {"epochs": 5, "batch_size": 4, "balancing": "weighted_loss",
                     "eval_batch_size": 32, "lr_backbone": 2e-3,
                     "lr_policy": 1e-2, "temperature": 5.0, "augment": None,
                     "plateau_patience": 2},
        "split": {"test_size": 0.3, "n_splits": 2},
        "n_boot": 0,
        "reference": "spottune",
    })


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One phantom cohort (volumes preprocessed once, shared cache), one pretrained checkpoint,
    and two experiments on identical images: true labels and permuted labels."""
    from gliotl.mgmt.data.cohort import write_cohort_table
    from gliotl.mgmt.data.phantom import make_phantom_cohort
    from gliotl.mgmt.data.upenn import read_upenn
    from gliotl.mgmt.pipeline.experiment import run_mgmt_experiment

    root = tmp_path_factory.mktemp("mgmt")
    make_phantom_cohort(root / "phantom", N_PATIENTS, PHANTOM_SHAPE, signal=3.0, seed=5,
                        missing_dti_fraction=0, missing_dsc_fraction=0,
                        indeterminate_fraction=0, not_available_fraction=0,
                        followup_fraction=0, expert_fraction=0)
    cohort = read_upenn(root / "phantom")
    table = root / "cohort.csv"
    write_cohort_table(cohort, table)
    shuffled = cohort.table.copy()
    shuffled["label"] = np.random.default_rng(0).permutation(shuffled["label"].to_numpy())
    cohort.table = shuffled
    write_cohort_table(cohort, root / "shuffled.csv")
    cache = str(root / "cache")

    # Real labels, with the segmentation-pretraining stage (labels are not used by it). SpotTune
    # keeps the pretrained stem and frozen copies with their BatchNorm statistics, so these must
    # be settled (3 epochs); after 1 they are mostly the initial 0/1 and SpotTune cannot learn.
    pretrain = {"cohort": {"kind": "table", "table": str(table)}, "epochs": 3,
                "batch_size": 8, "shape": [16, 16, 16], "max_patients": PRETRAIN_PATIENTS}
    real = run_mgmt_experiment(
        _config("real", {"kind": "table", "table": str(table)}, {"pretrain": pretrain}, cache),
        root, out=root / "real", progress=False)
    weights = str(real.checkpoints / "pretrained_medicalnet.pth")
    null = run_mgmt_experiment(
        _config("shuffled", {"kind": "table", "table": str(root / "shuffled.csv")},
                {"weights": weights}, cache),
        root, out=root / "shuffled", progress=False)
    return {"real": real, "shuffled": null, "table": table, "root": root}


def _holdout(run) -> pd.DataFrame:
    metrics = json.loads(run.metrics_path.read_text())
    return pd.DataFrame(metrics["holdout"]).set_index(["group", "method"])


def test_signal_beats_shuffled_labels(runs):
    real, null = _holdout(runs["real"]), _holdout(runs["shuffled"])
    for method in ("full", "spottune"):
        auc_real = real.loc[("struct", method), "roc_auc"]
        auc_null = null.loc[("struct", method), "roc_auc"]
        assert auc_real >= 0.85, (method, auc_real)
        assert auc_real - auc_null >= 0.25, (method, auc_real, auc_null)


def test_outputs_and_validation_threshold(runs):
    run = runs["real"]
    for path in (run.predictions_path, run.metrics_path, run.report_path, run.splits_path):
        assert path.is_file()
    assert run.manifest()["status"] == "finished"
    preds = pd.read_csv(run.predictions_path)
    assert set(preds["level"]) == {"fold", "modality", "group"}
    holdout = _holdout(run)
    for method in ("full", "spottune"):
        fused = preds[(preds["level"] == "group") & (preds["method"] == method)]
        val = fused[fused["role"] == "val"]
        expected = choose_threshold(val["y_true"], val["y_pred"])
        assert holdout.loc[("struct", method), "threshold"] == pytest.approx(expected)
        # validation and hold-out patients never overlap
        assert not set(val["sample_id"]) & set(fused.loc[fused["role"] == "test", "sample_id"])
    metrics = json.loads(run.metrics_path.read_text())
    usage = pd.DataFrame(metrics["policy_usage"])
    assert set(usage["method"]) == {"spottune"} and usage["tuned_fraction"].between(0, 1).all()
    assert metrics["pretrain"]["volumes"] == PRETRAIN_PATIENTS
    assert "module.conv_seg.0.weight" in __import__("torch").load(
        metrics["weights"], weights_only=True)["state_dict"]
    assert "policy" in run.report_path.read_text().lower()
    card = (run.path / "model_card.md").read_text(encoding="utf-8")
    for heading in ("Data", "Evaluation splits", "Metrics", "Intended use", "Limits"):
        assert f"\n## {heading}\n" in card
    assert f"{N_PATIENTS} labelled patients" in card and "T1GD (64 patients)" in card
    spottune = holdout.loc[("struct", "spottune")]
    assert (f"| struct | spottune | {int(spottune['n_test'])} | {spottune['roc_auc']:.3f} | "
            f"{spottune['roc_auc_ci_low']:.2f}-{spottune['roc_auc_ci_high']:.2f} |") in card
    assert "Small n:" in card and "Not for diagnosis" in card


def test_resume_reuses_finished_jobs(runs, monkeypatch, capsys):
    from gliotl.mgmt.config import MGMTExperimentConfig
    from gliotl.mgmt.pipeline.experiment import run_mgmt_experiment

    run = runs["shuffled"]
    done = sorted(p for p in run.jobs_dir.glob("*/result.json"))
    stamps = {p: p.stat().st_mtime_ns for p in done}
    killed = run.jobs_dir / "full-T1GD-f1" / "result.json"
    killed.unlink()  # as if the process died while this job was training
    lost = next(p for p in sorted(run.jobs_dir.glob("*-f*/model.pt")) if p.parent != killed.parent)
    lost.unlink()  # a finished fold's model deleted: the job is redone, not reused
    run.metrics_path.unlink()
    run.update_manifest(status="running")
    config = MGMTExperimentConfig.model_validate(run.config())
    before = pd.read_csv(run.predictions_path)
    monkeypatch.setenv("CI", "true")  # as in a Slurm log: plain progress lines
    capsys.readouterr()
    again = run_mgmt_experiment(config, runs["root"], out=run.path, resume=True, progress=True)
    assert again.manifest()["status"] == "finished" and again.manifest()["resumed"]
    out = capsys.readouterr().out
    epochs = config.training.epochs
    assert f"[gliotl] full T1GD fold 1: epoch {epochs}/{epochs}: train_loss " in out
    assert re.search(r"\[gliotl\] fold models: (\d+)/\1 jobs done, [\d.]+ jobs/min, ETA 0s", out)
    assert killed.is_file() and lost.is_file()
    for path, stamp in stamps.items():
        if path not in (killed, lost.parent / "result.json"):
            assert path.stat().st_mtime_ns == stamp  # reused, not retrained
    assert (lost.parent / "result.json").stat().st_mtime_ns != stamps[lost.parent / "result.json"]
    after = pd.read_csv(run.predictions_path)
    pd.testing.assert_frame_equal(before, after)  # CPU training is deterministic per seed


def test_predict_reproduces_holdout_predictions(runs):
    from gliotl.mgmt.pipeline.predict import predict_cohort

    run = runs["real"]
    preds = pd.read_csv(run.predictions_path)
    fused = preds[(preds["level"] == "group") & (preds["method"] == "spottune")
                  & (preds["role"] == "test")].set_index("sample_id")
    table = pd.read_csv(runs["table"], dtype=str, keep_default_na=False)
    new = runs["root"] / "new.csv"
    table[table["patient_id"].isin(fused.index[:4])].drop(columns=["label"]).to_csv(new,
                                                                                    index=False)
    out = predict_cohort(run.path, new).set_index("patient_id")
    assert len(out) == 4 and "label" not in out.columns
    np.testing.assert_allclose(out["probability"], fused.loc[out.index, "y_pred"], atol=1e-5)
    assert (out["methylated"] == (out["probability"] >= out["threshold"])).all()


def test_cli_bad_config_key_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ncohort: {kind: phantom}\nmodel: {depht: 10}\n")
    proc = subprocess.run([sys.executable, "-m", "gliotl", "mgmt", "run", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.depht" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["mgmt_phantom.yaml", "schmitz2024.yaml"])
def test_shipped_mgmt_configs_are_valid(name):
    from pathlib import Path

    from gliotl.mgmt.config import load_mgmt_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    config, base = load_mgmt_config(configs / name)
    assert config.reference in {m.name for m in config.methods} and len(config.methods) == 6
    assert base == configs
