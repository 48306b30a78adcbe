"""gliotl splits / predictions <-> drevalpy's split and prediction files (no drevalpy needed)."""

from __future__ import annotations

import pandas as pd
import pytest

from gliotl.core.evaluation.splits import kfold_splits
from gliotl.errors import GliotlError
from gliotl.interop.drevalpy_files import (
    gliotl_folds,
    read_drevalpy_predictions,
    read_drevalpy_splits,
    write_drevalpy_predictions,
    write_drevalpy_splits,
)

IDS = [f"l{i}" for i in range(12)]
NAMES = {f"L-{i}": f"l{i}" for i in range(12)}  # drevalpy name -> gliotl sample ID


def test_splits_round_trip_through_drevalpy_files(tmp_path):
    splits = kfold_splits(IDS, [float(i) for i in range(12)], n_splits=3, n_repeats=2, seed=1,
                          task="regression")
    responses = pd.DataFrame({"cell_line_name": list(NAMES), "pubchem_id": "TMZ",
                              "response": range(12), "tissue": "nervous_system"})
    write_drevalpy_splits(splits, responses, tmp_path / "splits", repeat=1, names=NAMES)
    files = sorted(p.name for p in (tmp_path / "splits").iterdir())
    assert files[:3] == ["cv_split_0_test.csv", "cv_split_0_train.csv",
                         "cv_split_0_validation.csv"] and len(files) == 9
    folds = gliotl_folds(splits, repeat=1)
    for fold in folds:  # validation comes out of the training fold, never out of the test
        assert not set(fold["validation"]) & set(fold["test"])
        assert fold["validation"] and not set(fold["validation"]) & set(fold["train"])
    back = read_drevalpy_splits(tmp_path / "splits", "TMZ", NAMES)
    original = splits[splits.repeat == 1]
    for (fold, role), group in original.groupby(["fold", "role"]):
        assert set(group.sample_id) == set(back[(back.fold == fold) & (back.role == role)]
                                           .sample_id)


def test_predictions_round_trip_through_drevalpy_files(tmp_path):
    predictions = pd.DataFrame({"method": ["a"] * 4 + ["b"] * 4, "sample_id": IDS[:4] * 2,
                                "repeat": 0, "fold": [0, 0, 1, 1] * 2, "role": "test",
                                "y_true": [1.0, 2.0, 3.0, 4.0] * 2,
                                "y_pred": [1.5, 2.5, 3.5, 4.5, 0.0, 0.1, 0.2, 0.3]})
    written = write_drevalpy_predictions(predictions, tmp_path, "TMZ", names=NAMES)
    assert len(written) == 4
    table = pd.read_csv(tmp_path / "a" / "predictions" / "predictions_split_1.csv")
    assert table.columns.tolist() == ["cell_line_name", "pubchem_id", "response", "predictions"]
    assert table.cell_line_name.tolist() == ["L-2", "L-3"]
    back = read_drevalpy_predictions(tmp_path / "b" / "predictions", "b", "TMZ", NAMES)
    expected = predictions[predictions.method == "b"].reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)


def test_a_folder_without_drevalpy_files_is_one_line_error(tmp_path):
    with pytest.raises(GliotlError, match=r"no drevalpy predictions_split_<i>.csv files"):
        read_drevalpy_predictions(tmp_path, "m")
