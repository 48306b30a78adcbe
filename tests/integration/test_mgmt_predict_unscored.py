"""``mgmt predict`` names every patient it could not score and why (in its output and on
stderr), and fails when it could score none; folds the classes cannot fill are refused before
any training. One tiny finished phantom run (14 patients, 16^3 input, one epoch) serves all."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import yaml

from clirun import run_gliotl
from gliotl.cli import main

MGMT = {
    "name": "tiny_mgmt", "seed": 0,
    "cohort": {"kind": "phantom", "n_patients": 14, "shape": [32, 32, 24], "signal": 1.0,
               "seed": 1},
    "preprocessing": {"target_shape": [16, 16, 16]},
    "modalities": ["T1GD"], "model": {"depth": 10}, "methods": ["full"], "reference": "full",
    "training": {"epochs": 1, "device": "cpu"}, "split": {"n_splits": 2}, "n_boot": 0,
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("mgmt_predict")
    (root / "m.yaml").write_text(yaml.safe_dump(MGMT))
    main(["mgmt", "run", str(root / "m.yaml"), "--out", str(root / "run")])
    assert json.loads((root / "run" / "manifest.json").read_text())["status"] == "finished"
    return root


def _new_cohort(root, rows: list[tuple[str, str, str]]):
    path = root / "new.csv"
    pd.DataFrame(rows, columns=["patient_id", "T1GD", "segmentation"]).to_csv(path, index=False)
    return path


def test_unscored_patients_are_listed_with_their_reason(finished, capsys):
    cohort = pd.read_csv(finished / "run" / "cohort.csv", dtype=str, keep_default_na=False)
    good = cohort.iloc[0]
    (finished / "corrupt.nii.gz").write_bytes(b"not a nifti")
    path = _new_cohort(finished, [
        (good["patient_id"], good["T1GD"], good["segmentation"]),
        ("P-missing", "", good["segmentation"]),
        ("P-corrupt", str(finished / "corrupt.nii.gz"), good["segmentation"]),
    ])
    code, out, err = run_gliotl(["mgmt", "predict", finished / "run", path], capsys)
    assert code == 0
    frame = pd.read_csv(io.StringIO(out), keep_default_na=False).set_index("patient_id")
    assert frame.loc[good["patient_id"], "not_scored"] == ""
    assert frame.loc[good["patient_id"], "probability"] != ""
    assert "missing modality T1GD" in frame.loc["P-missing", "not_scored"]
    assert "corrupt.nii.gz" in frame.loc["P-corrupt", "not_scored"]
    assert frame.loc["P-corrupt", "probability"] == ""
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and "P-missing" in warnings[0] and "P-corrupt" in warnings[1]


def test_none_scored_is_one_line_exit_2(finished, capsys):
    cohort = pd.read_csv(finished / "run" / "cohort.csv", dtype=str, keep_default_na=False)
    path = _new_cohort(finished, [("P-missing", "", cohort.iloc[0]["segmentation"])])
    code, _, err = run_gliotl(["mgmt", "predict", finished / "run", path], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert "new.csv" in lines[0] and "no patient could be scored" in lines[0]


def test_stacked_input_gets_its_own_fusion_group():
    """The stacked network's predictions are named 'stacked': its group must find them (it
    once looked for the stacked modalities' names and produced no hold-out metrics)."""
    from gliotl.mgmt.config import MGMTExperimentConfig
    from gliotl.mgmt.pipeline.fusion import fuse_groups

    config = MGMTExperimentConfig.model_validate(
        {**MGMT, "modalities": ["T1GD", "T2"], "input_mode": "stacked"})
    ensembled = pd.DataFrame({"method": "full", "modality": "stacked", "repeat": 0,
                              "role": "test", "sample_id": ["a", "b"], "y_true": [0, 1],
                              "y_pred": [0.2, 0.7], "fold": -1})
    fused = fuse_groups(ensembled, config.fusion_units(), config.fusion.missing)
    assert list(fused["group"]) == ["stacked", "stacked"]
    assert list(fused["y_pred"]) == [0.2, 0.7]
