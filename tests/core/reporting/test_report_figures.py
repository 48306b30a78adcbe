"""Figures a paper can use: every report figure is also written as SVG and PDF beside the page
(byte-reproducible), forest plots are sorted with the reference marked, the routing heatmap is
split by class, and statistics at their resolution limit carry a note."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from gliotl.core.evaluation.evaluate import evaluate_predictions
from gliotl.core.reporting.notes import (
    degenerate_interval_note,
    permutation_floor_note,
    wilcoxon_floor_note,
)
from gliotl.core.reporting.plots import add_evaluation, forest_plot, learning_curves
from gliotl.core.reporting.report import Report
from gliotl.drug.pipeline.report import steps_table
from gliotl.mgmt.pipeline.report import routing_figure

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _estimates() -> pd.DataFrame:
    return pd.DataFrame({"method": ["a", "ref", "c", "none"], "estimate": [0.2, 0.5, 0.1, np.nan],
                         "ci_low": [0.0, 0.3, -0.2, np.nan], "ci_high": [0.4, 0.7, 0.3, np.nan]})


def _routing(n_modalities: int = 11, n_blocks: int = 16) -> pd.DataFrame:
    """Modalities x blocks x 2 folds x 6 patients (3 per class); 11 x 16 is the paper's grid."""
    rng = np.random.default_rng(0)
    rows = [{"method": "spottune", "modality": f"mod{m}", "fold": fold, "sample_id": f"p{p}",
             "y_true": p % 2, "block": f"layer{b // 4 + 1}.{b % 4}",
             "tuned": int(rng.random() < (0.9 if p % 2 else 0.1))}
            for m in range(n_modalities) for b in range(n_blocks) for fold in range(2)
            for p in range(6)]
    return pd.DataFrame(rows)


def test_forest_plot_sorts_best_first_marks_the_reference_and_names_what_is_left_out():
    fig = forest_plot(_estimates(), "pooled Spearman", reference="ref", null_value=0.0)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["c", "a", "ref (reference)"]  # bottom to top: best at the top
    assert "none" in ax.get_title()
    dashed = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert dashed == [0.5]
    plt.close(fig)


def test_routing_heatmap_has_one_panel_per_class_with_the_full_grid():
    fig = routing_figure(_routing(), "spottune")  # drawn, not saved: fast at the full grid
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2
    assert [ax.get_title().split(" (")[0] for ax in panels] == ["unmethylated", "methylated"]
    grids = [ax.get_images()[0].get_array() for ax in panels]
    assert all(grid.shape == (11, 16) for grid in grids)
    assert grids[0].mean() < 0.3 < 0.7 < grids[1].mean()  # the class split is what is drawn
    plt.close(fig)


def test_learning_curves_draw_one_line_per_method_per_panel():
    history = pd.DataFrame([{"method": method, "modality": "T1", "fold": fold, "epoch": epoch,
                             "train_loss": 1.0 / (epoch + 1), "val_loss": 0.5, "val_auc": 0.6}
                            for method in ("full", "spottune") for fold in range(2)
                            for epoch in range(4)])
    fig = learning_curves(history)
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "validation loss",
                                                   "validation AUC"]
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    plt.close(fig)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report written once for the tests that only read it."""
    return _report(tmp_path_factory.mktemp("report"))


def _report(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(size=24)
    predictions = pd.DataFrame([
        {"method": method, "sample_id": f"s{i}", "repeat": 0, "fold": i % 3, "role": "test",
         "y_true": y[i], "y_pred": y[i] + rng.normal(0, noise)}
        for method, noise in (("transfer", 0.5), ("baseline", 1.5)) for i in range(24)])
    evaluation = evaluate_predictions(predictions, "regression", reference="baseline", n_boot=30)
    report = Report("figures")
    report.heading("Target results")
    add_evaluation(report, evaluation, predictions, "regression", heading=None)
    report.figure(routing_figure(_routing(2, 4), "spottune"), caption="routing by class")
    report.config({"seed": 0, "epochs": 30, "name": "x"}, non_default={"epochs": 30})
    path = report.write(tmp_path / "report.html")
    return report, path


def test_every_figure_is_written_as_svg_and_pdf_beside_the_page_reproducibly(built, tmp_path):
    report, path = built
    folder = path.parent
    text = path.read_text()
    stems = re.findall(r'<figure data-file="([^"]+)">', text)
    assert len(stems) == 4 and stems[0].startswith("01-forest-plot")
    assert report.figure_files == [f"figures/{s}.{fmt}" for s in stems for fmt in ("svg", "pdf")]
    for name in report.figure_files:
        data = (folder / name).read_bytes()
        assert data.startswith(b"%PDF") if name.endswith(".pdf") else b"<svg" in data[:2000]
        assert name in text  # the caption names the files
    _, again = _report(tmp_path)
    for name in report.figure_files:  # no dates inside: the same report gives the same bytes
        assert (folder / name).read_bytes() == (again.parent / name).read_bytes()
    assert "<h2>Results</h2>" not in text and text.count("<h2>Target results</h2>") == 1
    # the config shows what differs from the defaults; the whole config sits collapsed
    assert '<pre class="config-non-default">epochs: 30\n</pre>' in text
    assert "<details><summary>Full resolved configuration" in text and "seed: 0" in text
    assert plt.get_fignums() == []


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_figures_render_in_headless_chromium(built, tmp_path):
    report, path = built
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    figures = re.findall(r'<figure data-file="([^"]+)"><img alt="([^"]*)" '
                         r'src="data:image/png;base64,', dom.stdout)
    assert [stem for stem, _ in figures] == [name.split("/")[1].rsplit(".", 1)[0]
                                             for name in report.figure_files[::2]]
    assert any("Forest plot" in alt for _, alt in figures)
    assert all((path.parent / name).stat().st_size > 1000 for name in report.figure_files)


def test_notes_name_statistics_at_their_resolution_limit():
    assert "0.5" in wilcoxon_floor_note(2) and wilcoxon_floor_note(10) is None
    methods = pd.DataFrame({"method": ["a", "b"], "p_value": [1 / 20, 0.3]})
    note = permutation_floor_note(methods, 19)
    assert note is not None and "0.05" in note and " a" in note and "b" not in note.split(":")[0]
    assert permutation_floor_note(methods.assign(p_value=0.3), 19) is None
    holdout = pd.DataFrame({"method": ["full", "spottune"], "low": [1.0, 0.7], "high": [1.0, 1.0]})
    note = degenerate_interval_note(holdout, "method", "low", "high", "DeLong AUC CI")
    assert note is not None and "full" in note and "spottune" not in note


def test_counts_in_the_steps_table_are_integers():
    steps = steps_table({"steps": {"source": {"samples": 300, "genes": 1000, "y_min": 0.1},
                                   "target": {"samples": 18, "genes": 1000, "y_min": 0.2}}})
    text = Report("t").table(steps).html()
    assert "<td>300</td>" in text and "300.000" not in text and "<td>0.100</td>" in text


def test_rewriting_a_page_removes_only_the_figures_it_no_longer_has(tmp_path):
    def page(n_figures):
        report = Report("page")
        for index in range(n_figures):
            fig, ax = plt.subplots()
            ax.plot([0, index])
            report.figure(fig, caption=f"curve {index}")
        return report, report.write(tmp_path / "report.html")

    first, _ = page(2)
    folder = tmp_path / "figures"
    mine = [folder / "notes.svg", folder / "09-my-own-plot.pdf"]  # the user's, never listed
    for path in mine:
        path.write_text("keep")
    assert all((tmp_path / name).is_file() for name in first.figure_files)
    second, _ = page(1)
    assert all((tmp_path / name).is_file() for name in second.figure_files)
    gone = set(first.figure_files) - set(second.figure_files)
    assert len(gone) == 2 and not any((tmp_path / name).exists() for name in gone)
    assert all(path.read_text() == "keep" for path in mine)
    page(0)
    assert not list(folder.glob("0*-curve-*")) and all(path.is_file() for path in mine)
