"""evaluate_predictions: the levels, val-chosen thresholds, comparisons, JSON, bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gliotl.core.evaluation.evaluate import evaluate_predictions
from gliotl.core.evaluation.metrics import (
    choose_threshold,
    classification_metrics,
    regression_metrics,
)
from gliotl.core.evaluation.splits import holdout_kfold_splits, iter_folds, kfold_splits
from gliotl.core.evaluation.stats import delong_test
from gliotl.errors import GliotlError


def _predictions(splits, truth, noises, rng, task, roles=("test",)):
    rows = []
    for fold in iter_folds(splits):
        for method, noise in noises.items():
            for role in roles:
                for sample in getattr(fold, role):
                    y = truth[sample]
                    pred = y + rng.normal(0, noise)
                    if task == "classification":
                        pred = 1 / (1 + np.exp(-2 * (pred - 0.5)))
                    rows.append({"method": method, "sample_id": sample, "repeat": fold.repeat,
                                 "fold": fold.fold, "role": role, "y_true": y, "y_pred": pred,
                                 "modality": "T1"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def regression_case():
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(45)]
    y = rng.normal(size=45)
    splits = kfold_splits(ids, y, n_splits=3, n_repeats=4, seed=1)
    truth = dict(zip(ids, y, strict=True))
    return _predictions(splits, truth, {"tl": 0.4, "dl": 1.5}, rng, "regression")


def test_regression_levels_match_direct_computation(regression_case):
    pred = regression_case
    ev = evaluate_predictions(pred, "regression", reference="dl", n_boot=200)
    fold = pred[(pred.method == "tl") & (pred.repeat == 2) & (pred.fold == 1)]
    row = ev.per_fold.query("method == 'tl' and repeat == 2 and fold == 1").iloc[0]
    direct = regression_metrics(fold.y_true, fold.y_pred)
    assert row["spearman"] == pytest.approx(direct["spearman"])
    rep = pred[(pred.method == "tl") & (pred.repeat == 3)]  # out-of-fold: each sample once
    rrow = ev.per_repeat.query("method == 'tl' and repeat == 3").iloc[0]
    assert rrow["n"] == 45 and rrow["rmse"] == pytest.approx(
        regression_metrics(rep.y_true, rep.y_pred)["rmse"])
    summary = ev.summary.query("method == 'tl' and metric == 'spearman'").iloc[0]
    per_repeat = ev.per_repeat.query("method == 'tl'")["spearman"]
    assert summary["over"] == "repeat" and summary["n"] == 4
    assert summary["mean"] == pytest.approx(per_repeat.mean())
    assert summary["sd"] == pytest.approx(per_repeat.std(ddof=1))
    assert summary["ci_low"] < summary["pooled"] < summary["ci_high"]
    comp = ev.comparisons.iloc[0]
    assert (comp["method"], comp["reference"], comp["test"]) == ("tl", "dl",
                                                                 "paired Wilcoxon signed-rank")
    dl = ev.per_repeat.query("method == 'dl'")["spearman"].to_numpy()
    assert comp["p_value"] == pytest.approx(stats.wilcoxon(per_repeat.to_numpy(), dl).pvalue)
    assert comp["difference"] > 0 and comp["unit"] == "repeat" and comp["n"] == 4
    by_fold = evaluate_predictions(pred, "regression", reference="dl", pair_on="fold", n_boot=0)
    assert by_fold.comparisons.iloc[0]["n"] == 12
    text = json.dumps(ev.to_dict(), allow_nan=False)
    assert json.loads(text)["summary"][0]["method"] == "dl"


def test_extra_columns_ignored_unless_grouped_on(regression_case):
    t1 = regression_case
    plain = evaluate_predictions(t1, "regression", n_boot=0)
    t2 = t1.assign(modality="T2", y_pred=t1["y_true"] + 0.01 * np.arange(len(t1)) % 1)
    both = pd.concat([t1, t2], ignore_index=True)
    grouped = evaluate_predictions(both, "regression", reference="dl", by=["modality"], n_boot=0)
    assert set(grouped.pooled["modality"]) == {"T1", "T2"}
    assert list(grouped.comparisons["modality"]) == ["T1", "T2"]
    t1_rows = grouped.pooled[grouped.pooled["modality"] == "T1"]
    assert t1_rows["spearman"].tolist() == plain.pooled["spearman"].tolist()
    with pytest.raises(GliotlError, match="appears twice"):  # not grouped: duplicates
        evaluate_predictions(both, "regression", n_boot=0)


@pytest.fixture(scope="module")
def classification_case():
    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(80)]
    y = rng.permutation(np.r_[np.zeros(44, int), np.ones(36, int)])
    splits = kfold_splits(ids, y, n_splits=4, n_repeats=2, val_fraction=0.25, seed=2)
    truth = dict(zip(ids, y, strict=True))
    return _predictions(splits, truth, {"spot": 0.6, "scratch": 1.2}, rng, "classification",
                        roles=("val", "test"))


def test_thresholds_chosen_on_val_and_applied_unchanged_on_test(classification_case):
    pred = classification_case
    ev = evaluate_predictions(pred, "classification", reference="scratch", n_boot=0)
    for (method, repeat, fold), part in pred.groupby(["method", "repeat", "fold"]):
        val, test = part[part.role == "val"], part[part.role == "test"]
        expected = choose_threshold(val.y_true, val.y_pred)
        row = ev.per_fold.query(f"method == '{method}' and repeat == {repeat} and fold == {fold}")
        assert row["threshold"].iloc[0] == expected
        assert row["threshold_source"].iloc[0] == "youden on val"
        direct = classification_metrics(test.y_true, test.y_pred, expected,
                                        allow_single_class=True)
        assert row["sensitivity"].iloc[0] == pytest.approx(direct["sensitivity"])
        assert row["specificity"].iloc[0] == pytest.approx(direct["specificity"])
    # Test labels never influence a threshold: flip them all and the thresholds stay put.
    flipped = pred.copy()
    is_test = flipped.role == "test"
    flipped.loc[is_test, "y_true"] = 1 - flipped.loc[is_test, "y_true"]
    ev_flipped = evaluate_predictions(flipped, "classification", n_boot=0)
    np.testing.assert_array_equal(ev.per_fold["threshold"], ev_flipped.per_fold["threshold"])
    # Pooled out-of-fold threshold metrics keep every fold's own threshold.
    test = pred[pred.role == "test"].merge(
        ev.per_fold[["method", "repeat", "fold", "threshold"]], on=["method", "repeat", "fold"])
    spot = test[(test.method == "spot") & (test.repeat == 0)]
    direct = classification_metrics(spot.y_true, spot.y_pred, spot.threshold.to_numpy())
    row = ev.per_repeat.query("method == 'spot' and repeat == 0").iloc[0]
    assert row["balanced_accuracy"] == pytest.approx(direct["balanced_accuracy"])
    # Two repeats: Wilcoxon only (samples are not one shared test set pooled once).
    assert ev.comparisons["test"].tolist() == ["paired Wilcoxon signed-rank"]


def test_fixed_and_numeric_thresholds(classification_case):
    no_val = classification_case[classification_case.role == "test"]
    ev = evaluate_predictions(no_val, "classification", n_boot=0)
    assert set(ev.per_fold["threshold"]) == {0.5}
    assert set(ev.per_fold["threshold_source"]) == {"fixed (no val rows)"}
    ev = evaluate_predictions(classification_case, "classification", threshold=0.3, n_boot=0)
    assert set(ev.per_fold["threshold"]) == {0.3}


def test_holdout_fold_ensemble_and_delong(tmp_path):
    rng = np.random.default_rng(4)
    ids = [f"UPENN-{i:03d}" for i in range(90)]
    y = rng.permutation(np.r_[np.zeros(50, int), np.ones(40, int)])
    splits = holdout_kfold_splits(ids, y, test_size=0.3, n_splits=3, seed=0)
    truth = dict(zip(ids, y, strict=True))
    pred = _predictions(splits, truth, {"spottune": 0.5, "random_init": 1.5}, rng,
                        "classification", roles=("val", "test"))
    pred = pred.rename(columns={"y_pred": "y_score"}).assign(y_pred=-1)  # y_score is used
    ev = evaluate_predictions(pred, "classification", reference="random_init", n_boot=100)
    test = pred[pred.role == "test"]
    ensemble = test.groupby(["method", "sample_id"]).agg(y=("y_true", "first"),
                                                         s=("y_score", "mean"))
    a, b = ensemble.loc["spottune"], ensemble.loc["random_init"]
    rep = ev.per_repeat.query("method == 'spottune'").iloc[0]
    assert rep["n"] == 27 and bool(rep["fold_ensemble"])
    delong = ev.comparisons[ev.comparisons["test"] == "DeLong"].iloc[0]
    expected = delong_test(a["y"], a["s"], b["s"])
    assert delong["p_value"] == pytest.approx(expected["p_value"])
    assert delong["value"] == pytest.approx(expected["auc_a"])
    summary = ev.summary.query("method == 'spottune' and metric == 'roc_auc'").iloc[0]
    assert summary["over"] == "fold" and summary["n"] == 3
    assert set(ev.comparisons["test"]) == {"paired Wilcoxon signed-rank", "DeLong"}


def _table(**overrides):
    frame = pd.DataFrame({
        "method": ["m"] * 6, "sample_id": list("abcdef"), "repeat": 0, "fold": 0,
        "role": ["test"] * 6, "y_true": [0, 1, 0, 1, 0, 1],
        "y_pred": [0.1, 0.9, 0.3, 0.6, 0.2, 0.8],
    })
    for column, values in overrides.items():
        frame[column] = values
    return frame


@pytest.mark.parametrize(
    "frame, task, message",
    [
        (_table().iloc[0:0], "classification", "predictions table is empty"),
        (_table(y_pred=[0.1, np.nan, np.nan, 0.6, np.nan, 0.8]), "classification",
         "field 'y_pred': 3 NaN values; expected finite numbers"),
        (_table(y_true=[1] * 6), "classification", "only the positive class present"),
        (_table(role=["test"] * 5 + ["holdout"]), "regression", "unknown role 'holdout'"),
        (_table().drop(columns="fold"), "regression", "field 'fold': required column missing"),
        (_table(sample_id=list("abcdea")), "regression", "appears twice"),
        (_table(role=["val"] * 6), "regression", "no 'test' rows"),
        (_table(), "survival", "expected regression or classification"),
    ],
)
def test_bad_predictions_give_one_line_errors(frame, task, message):
    with pytest.raises(GliotlError) as err:
        evaluate_predictions(frame, task, n_boot=0)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_comparison_requests():
    frame = pd.concat([_table(), _table(method="other")])
    with pytest.raises(GliotlError, match="reference method 'nope' not in the table"):
        evaluate_predictions(frame, "classification", reference="nope", n_boot=0)
    with pytest.raises(GliotlError, match="primary_metric"):
        evaluate_predictions(frame, "classification", primary_metric="spearman", n_boot=0)
    shifted = frame.copy()
    shifted.loc[shifted.method == "other", "sample_id"] = list("abcdeg")
    with pytest.raises(GliotlError, match="tested on different samples"):
        evaluate_predictions(shifted, "classification", reference="m", n_boot=0)


def _with_training_mean(pred: pd.DataFrame) -> pd.DataFrame:
    """Add a constant-per-fold method: the training-fold mean of y_true (one value a fold)."""
    rows = []
    for (repeat, fold), part in pred[pred.method == "dl"].groupby(["repeat", "fold"]):
        train = pred[(pred.method == "dl") & (pred.repeat == repeat) & (pred.fold != fold)]
        rows.append(part.assign(method="mean", y_pred=train["y_true"].mean()))
    return pd.concat([pred, *rows], ignore_index=True)


def test_constant_per_fold_predictor_gets_no_rank_statistic(regression_case):
    pred = _with_training_mean(regression_case)
    ev = evaluate_predictions(pred, "regression", reference="dl", n_boot=100,
                              resampling_boot=200)
    pooled = ev.pooled.set_index("method")
    assert np.isnan(pooled.loc["mean", "spearman"]) and np.isnan(pooled.loc["mean", "pearson"])
    assert np.isnan(pooled.loc["mean", "spearman_ci_low"])
    assert pooled.loc["mean", "n_constant_folds"] == pooled.loc["mean", "n_folds"] == 12
    assert pooled.loc["tl", "n_constant_folds"] == 0 and np.isfinite(pooled.loc["tl", "spearman"])
    assert np.isfinite(pooled.loc["mean", "rmse"])  # error metrics stay
    assert ev.per_repeat.query("method == 'mean'")["spearman"].isna().all()
    note = ev.summary.query("method == 'mean' and metric == 'spearman'").iloc[0]
    assert np.isnan(note["mean"]) and note["note"] == "n/a: constant per fold"
    rows = ev.comparisons.query("method == 'mean'")
    assert list(rows["test"]) == ["n/a: constant per fold"] and rows["p_value"].isna().all()


def test_headline_comparison_is_the_corrected_t_on_folds(regression_case):
    from gliotl.core.evaluation.stats import corrected_resampled_ttest

    ev = evaluate_predictions(regression_case, "regression", reference="dl", n_boot=0,
                              resampling_boot=300)
    rows = ev.comparisons.set_index("test")
    assert list(ev.comparisons["headline"]) == [True, False, False]
    t = rows.loc["corrected resampled t (Nadeau-Bengio)"]
    folds = ev.per_fold.pivot_table(index=["repeat", "fold"], columns="method",
                                    values="spearman")
    # 45 samples in 3 folds: n_test / n_train = 15 / 30 exactly
    expected = corrected_resampled_ttest(folds["tl"], folds["dl"], 3, 4, 0.5)
    assert t["n"] == 12 and t["p_value"] == pytest.approx(expected["p_value"])
    boot = rows.loc["paired bootstrap over samples (conditional on the fitted models)"]
    per_repeat = ev.per_repeat.pivot_table(index="repeat", columns="method", values="spearman")
    assert boot["difference"] == pytest.approx((per_repeat["tl"] - per_repeat["dl"]).mean())
    assert boot["unit"] == "sample" and boot["n"] == 45
    assert "secondary" in ev.comparisons["test"].iloc[2]
    json.dumps(ev.to_dict(), allow_nan=False)
