"""The drug report's headline table: corrected t as the headline p, secondary columns labelled,
p vs chance with its resolution, constant predictors marked; old runs' metrics still read."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from gliotl.core.evaluation.splits import iter_folds, kfold_splits
from gliotl.drug.pipeline.report import (
    evaluate_drug_predictions,
    headline_table,
    permutation_summary,
    results_table,
)


def _predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(30)]
    y = dict(zip(ids, rng.normal(size=30), strict=True))
    rows = []
    for fold in iter_folds(kfold_splits(ids, np.array(list(y.values())), 3, 3, seed=0)):
        train_mean = np.mean([y[s] for s in fold.train])
        for s in fold.test:
            for method, pred in (("good", y[s] + rng.normal(0, 0.5)), ("bad", rng.normal()),
                                 ("mean", train_mean)):
                rows.append({"method": method, "sample_id": s, "repeat": fold.repeat,
                             "fold": fold.fold, "role": "test", "y_true": y[s], "y_pred": pred})
    return pd.DataFrame(rows)


def test_headline_table_columns_and_constant_note():
    evaluation = evaluate_drug_predictions(_predictions(), "bad", n_boot=50, seed=0,
                                           n_boot_test=200)
    null = [{"method": m, "permutation": i, "statistic": v}
            for m in ("good", "bad", "mean") for i, v in enumerate(np.linspace(-0.3, 0.3, 9))]
    metrics = json.loads(json.dumps({"target": evaluation.to_dict(),
                                     "permutation": permutation_summary(evaluation, null, 9)}))
    table = headline_table(metrics).set_index("method")
    assert list(table.columns) == [
        "mean", "sd", "ci_low", "ci_high", "p vs bad (corrected t)",
        "p vs bad (bootstrap, secondary)", "p vs bad (Wilcoxon, secondary)", "note",
        "p vs chance (permutation, resolution 0.1)"]
    assert table.loc["good", "p vs bad (corrected t)"] < 0.01
    assert table.loc["good", "p vs chance (permutation, resolution 0.1)"] == 0.1  # 1 / (9 + 1)
    assert np.isnan(table.loc["mean", "mean"]) and table.loc["mean", "note"].startswith("n/a")
    assert np.isnan(table.loc["mean", "p vs chance (permutation, resolution 0.1)"])
    assert list(table.index)[-1] == "mean"  # NaN sorts last
    assert len(results_table(evaluation)) == len(evaluation.summary)


def test_headline_table_reads_metrics_written_before_the_headline_tests():
    evaluation = evaluate_drug_predictions(_predictions(), "bad", n_boot=0, seed=0,
                                           n_boot_test=None)
    table = headline_table(json.loads(json.dumps({"target": evaluation.to_dict()})))
    assert "p vs bad" in table.columns and len(table) == 3
