"""The HTML report is self-contained: tables, embedded PNGs, escaped text, no external links."""

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from gliotl.core.evaluation.evaluate import evaluate_predictions
from gliotl.core.reporting.plots import add_evaluation, per_repeat_boxplot, summary_table
from gliotl.core.reporting.report import Report


def _assert_self_contained(text):
    assert "<table>" in text and '<img alt="' in text
    assert 'src="data:image/png;base64,' in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text


def _predictions(task, n_repeats, rng):
    rows = []
    n = 24
    y = rng.integers(0, 2, n) if task == "classification" else rng.normal(size=n)
    y[:2] = [0, 1]
    for method, noise in (("transfer", 0.5), ("baseline", 1.5)):
        for repeat in range(n_repeats):
            for i in range(n):
                pred = y[i] + rng.normal(0, noise)
                rows.append({"method": method, "sample_id": f"s{i}", "repeat": repeat,
                             "fold": i % 3, "role": "test", "y_true": y[i], "y_pred": pred})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("task, n_repeats", [("regression", 3), ("classification", 1)])
def test_full_report_is_self_contained_and_readable(tmp_path, task, n_repeats):
    rng = np.random.default_rng(0)
    predictions = _predictions(task, n_repeats, rng)
    evaluation = evaluate_predictions(predictions, task, reference="baseline", n_boot=50)
    report = Report(f"gliotl {task} <run>")
    report.config({"experiment": {"name": "demo", "seeds": [0, 1]}, "note": "a <b> & c"})
    report.note("Synthetic data", kind="warning")
    add_evaluation(report, evaluation, predictions, task)
    path = report.write(tmp_path / "report.html")
    text = path.read_text()
    _assert_self_contained(text)
    assert text.count('src="data:image/png;base64,') == 3  # forest, scatter or ROC, box
    assert "gliotl " + task + " &lt;run&gt;" in text and "<run>" not in text
    assert "a &lt;b&gt; &amp; c" in text and "<pre>" in text
    assert "paired Wilcoxon signed-rank" in text
    assert ("DeLong" in text) == (task == "classification")
    assert "±" in text and "[95% CI]" in text
    assert plt.get_fignums() == []  # every figure closed after embedding
    assert not list(tmp_path.glob(".*tmp"))


def test_table_escapes_cells_and_formats_numbers():
    frame = pd.DataFrame({"method": ["<script>alert(1)</script>"], "auc": [0.123456],
                          "n": [7], "missing": [np.nan]})
    text = Report("t").table(frame, caption="Caption & more").html()
    assert "&lt;script&gt;" in text and "<script>" not in text
    assert "<td>0.123</td>" in text and "<td>7</td>" in text and "<td></td>" in text
    assert "Caption &amp; more" in text


def test_summary_table_and_boxplot():
    rng = np.random.default_rng(1)
    predictions = _predictions("regression", 4, rng)
    evaluation = evaluate_predictions(predictions, "regression", n_boot=30)
    table = summary_table(evaluation)
    assert list(table["method"]) == ["baseline", "transfer"]
    assert table["sd over"].tolist() == ["repeats", "repeats"]
    assert table["spearman"].str.contains("±").all()
    fig = per_repeat_boxplot(evaluation.per_repeat, "spearman")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["baseline", "transfer"]
    plt.close(fig)
