"""Splits: stratification kept, groups never split across roles, CSV round trip, bad input."""

import numpy as np
import pandas as pd
import pytest

from gliotl.core.evaluation.splits import (
    ROLES,
    SPLIT_COLUMNS,
    holdout_kfold_splits,
    iter_folds,
    kfold_splits,
    load_splits,
    save_splits,
    stratification_labels,
    validate_splits,
)
from gliotl.errors import GliotlError


def _ids(n):
    return [f"{i:03d}" for i in range(n)]


def _assert_groups_one_role(splits, ids, groups):
    group_of = dict(zip(ids, groups, strict=True))
    frame = splits.assign(group=splits["sample_id"].map(group_of))
    roles_per_group = frame.groupby(["repeat", "fold", "group"])["role"].nunique()
    assert roles_per_group.max() == 1


def test_kfold_each_sample_tested_once_per_repeat_and_repeats_differ():
    ids = _ids(40)
    splits = kfold_splits(ids, n_splits=4, n_repeats=3, seed=7)
    assert list(splits.columns) == SPLIT_COLUMNS
    assert len(splits) == 40 * 4 * 3
    tested = splits[splits["role"] == "test"].groupby(["repeat", "sample_id"]).size()
    assert (tested == 1).all() and len(tested) == 40 * 3
    first = splits[(splits["repeat"] == 0) & (splits["role"] == "test")]
    second = splits[(splits["repeat"] == 1) & (splits["role"] == "test")]
    assert not first.set_index("sample_id")["fold"].equals(
        second.set_index("sample_id").loc[first["sample_id"], "fold"])
    again = kfold_splits(ids, n_splits=4, n_repeats=3, seed=7)
    pd.testing.assert_frame_equal(splits, again)
    assert not splits.equals(kfold_splits(ids, n_splits=4, n_repeats=3, seed=8))


def test_classification_stratification_kept_in_every_test_fold():
    rng = np.random.default_rng(0)
    ids = _ids(90)
    y = rng.permutation(np.r_[np.zeros(60, int), np.ones(30, int)])
    splits = kfold_splits(ids, y, n_splits=5, n_repeats=2, seed=1)
    label = dict(zip(ids, y, strict=True))
    for (_, _), part in splits[splits["role"] == "test"].groupby(["repeat", "fold"]):
        share = part["sample_id"].map(label).mean()
        assert abs(share - 1 / 3) <= 1 / len(part) + 1e-9


def test_regression_quantile_bins_kept_in_every_test_fold():
    rng = np.random.default_rng(1)
    ids = _ids(100)
    y = rng.lognormal(size=100)
    labels = stratification_labels(y, 100, "auto", n_bins=5, min_count=5)
    assert np.bincount(labels).tolist() == [20] * 5
    splits = kfold_splits(ids, y, n_splits=5, seed=3)
    bin_of = dict(zip(ids, labels, strict=True))
    for _, part in splits[splits["role"] == "test"].groupby("fold"):
        counts = np.bincount(part["sample_id"].map(bin_of), minlength=5)
        assert counts.tolist() == [4] * 5


def test_task_auto_detection_and_small_bins_merged():
    assert stratification_labels([0, 1, 2, 1, 0, 2], 6).tolist() == [0, 1, 2, 1, 0, 2]
    assert set(stratification_labels(["a", "b", "a", "b"], 4)) == {0, 1}
    # 8 samples cannot fill 5 bins of >= 4: merged down to 2 bins of 4.
    labels = stratification_labels(np.linspace(0, 1, 8), 8, n_bins=5, min_count=4)
    assert np.bincount(labels).tolist() == [4, 4]


@pytest.mark.parametrize("stratify", [True, False])
def test_grouped_kfold_with_val_never_splits_a_group(stratify):
    rng = np.random.default_rng(2)
    ids = _ids(120)
    groups = [f"patient{i // 3}" for i in range(120)]
    y = rng.normal(size=120) if stratify else None
    splits = kfold_splits(ids, y, n_splits=5, n_repeats=2, groups=groups, val_fraction=0.2,
                          seed=4)
    assert set(splits["role"]) == set(ROLES)
    _assert_groups_one_role(splits, ids, groups)
    validate_splits(splits, "splits", sample_ids=ids, groups=groups)
    val_share = (splits["role"] == "val").mean()
    assert 0.1 < val_share < 0.25


def test_holdout_kfold_matches_the_mgmt_protocol():
    rng = np.random.default_rng(3)
    ids = _ids(100)
    y = rng.permutation(np.r_[np.zeros(60, int), np.ones(40, int)])
    groups = [f"p{i // 2}" for i in range(100)]
    splits = holdout_kfold_splits(ids, y, test_size=0.3, n_splits=5, seed=0, groups=groups)
    assert set(splits["repeat"]) == {0} and set(splits["fold"]) == set(range(5))
    tests = [frozenset(f.test) for f in iter_folds(splits)]
    assert len(set(tests)) == 1 and len(tests[0]) == 30
    label = dict(zip(ids, y, strict=True))
    assert abs(np.mean([label[s] for s in tests[0]]) - 0.4) <= 0.1
    vals = np.concatenate([f.val for f in iter_folds(splits)])
    assert len(vals) == len(set(vals)) == 70  # val folds partition the non-test samples
    _assert_groups_one_role(splits, ids, groups)


def test_save_and_load_round_trip_is_identical(tmp_path):
    ids = _ids(30)
    splits = kfold_splits(ids, np.arange(30) % 2, n_splits=3, n_repeats=2, val_fraction=0.25)
    path = save_splits(splits, tmp_path / "splits.csv")
    loaded = load_splits(path, sample_ids=ids)
    pd.testing.assert_frame_equal(splits, loaded)
    assert loaded["sample_id"].iloc[0].startswith("0")  # '000' not read back as 0
    assert not list(tmp_path.glob(".*tmp"))


def test_iter_folds_in_order_with_roles():
    splits = kfold_splits(_ids(12), n_splits=3, n_repeats=2, val_fraction=0.25)
    folds = list(iter_folds(splits))
    assert [(f.repeat, f.fold) for f in folds] == [(r, k) for r in range(2) for k in range(3)]
    for f in folds:
        assert len(f.test) == 4 and len(f.val) >= 1
        assert len(set(f.train) | set(f.val) | set(f.test)) == 12


def _write(tmp_path, text):
    path = tmp_path / "user_splits.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("sample_id,repeat,fold,role\na,0,0,train\nb,0,0,holdout\n", "unknown role 'holdout'"),
        ("sample_id,repeat,role\na,0,train\n", "field 'fold': required column missing"),
        ("sample_id,repeat,fold,role\na,0,0,train\na,0,0,test\n", "appears twice"),
        ("sample_id,repeat,fold,role\na,0,0,train\nzzz,0,0,test\n", "ids not in the data"),
        ("sample_id,repeat,fold,role\na,0,x,train\nb,0,0,test\n", "expected an integer"),
        ("sample_id,repeat,fold,role\na,0,0,train\nb,0,0,val\n", "no 'test' samples"),
        ("sample_id,repeat,fold,role\n", "no rows"),
    ],
)
def test_bad_user_splits_give_one_line_errors(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(GliotlError) as err:
        load_splits(path, sample_ids=["a", "b", "c"])
    assert message in str(err.value)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_group_in_two_roles_is_rejected(tmp_path):
    path = _write(tmp_path, "sample_id,repeat,fold,role\na,0,0,train\nb,0,0,test\nc,0,0,test\n")
    with pytest.raises(GliotlError, match="group 'P1' has samples in more than one role"):
        load_splits(path, groups={"a": "P1", "b": "P1", "c": "P2"})


def test_bad_generator_arguments():
    with pytest.raises(GliotlError, match="duplicate sample id"):
        kfold_splits(["a", "a", "b"], n_splits=2)
    with pytest.raises(GliotlError, match="only 3 samples/groups"):
        kfold_splits(["a", "b", "c"], n_splits=5)
    with pytest.raises(GliotlError, match="field 'y'"):
        kfold_splits(["a", "b", "c", "d"], [1.0, np.nan, 2.0, 3.0], n_splits=2)
    with pytest.raises(GliotlError, match="field 'groups'"):
        kfold_splits(["a", "b", "c", "d"], groups=["g1", "g2"], n_splits=2)
