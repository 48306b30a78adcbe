"""`gliotl mgmt run` end to end on a small RSNA-MICCAI cohort in Kaggle's DICOM layout:
series read by geometry, resampled onto one grid, cropped to the head foreground (no
segmentation), four per-modality networks, late fusion and the report (CPU, ResNet-10,
1 epoch: a smoke test of the whole input side, not of learning)."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from gliotl.cli import main
from gliotl.core.io import read_json
from gliotl.mgmt.data.rsna_sample import write_kaggle_cohort

pytestmark = pytest.mark.slow

IDS = (0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 109)
"""Ten usable cases (5 methylated) and one of the organisers' exclusions."""


def test_mgmt_run_on_kaggle_dicom(tmp_path, monkeypatch, capsys):
    download = tmp_path / "rsna-miccai-brain-tumor-radiogenomic-classification"
    write_kaggle_cohort(download, IDS, labels=[1, 0] * 5 + [1], seed=2, scale=0.6)
    config = tmp_path / "rsna.yaml"
    config.write_text(yaml.safe_dump({
        "name": "rsna_dicom", "seed": 0,
        "cohort": {"kind": "rsna", "root": download.name, "grid_spacing": 2.0,
                   "converted": "nifti"},
        "preprocessing": {"preset": "rsna2021", "target_shape": [16, 16, 16]},
        "cache_dir": "cache",
        "modalities": ["struct"],
        "model": {"depth": 10},
        "methods": ["full", "spottune"],
        "training": {"epochs": 1, "batch_size": 4, "eval_batch_size": 8, "augment": None,
                     "balancing": "weighted_loss", "device": "cpu", "amp": False},
        "split": {"test_size": 0.3, "n_splits": 2},
        "n_boot": 0,
        "reference": "spottune",
    }))
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["gliotl", "mgmt", "run", str(config), "--out", str(out)])
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    summary = read_json(out / "cohort_summary.json")
    assert summary["patients"] == 10 and summary["methylated"] == 5
    assert summary["exclusions"] == {"exclusion list": 1}
    assert summary["per_modality"] == {"T1": 10, "T1GD": 10, "T2": 10, "FLAIR": 10}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file()
    assert sorted(p.name for p in (tmp_path / "nifti").iterdir())[0] == "BraTS2021_00000"
