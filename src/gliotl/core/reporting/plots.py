"""Standard evaluation plots (matplotlib, Agg backend) and the report section that uses them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    precision_recall_curve,
    roc_curve,
)

from gliotl.core.evaluation.evaluate import (  # noqa: E402
    Evaluation,
    fold_thresholds,
    pool_test_predictions,
    validate_predictions,
)
from gliotl.core.evaluation.metrics import fast_auc, fast_spearman  # noqa: E402
from gliotl.core.reporting.report import Report  # noqa: E402


def _pooled(predictions: pd.DataFrame, task: str, by: Sequence[str] = ()) -> pd.DataFrame:
    frame = validate_predictions(predictions, task, by=by)
    keys = ["method", *by]
    thresholds = fold_thresholds(frame, keys, "fixed") if task == "classification" else None
    pooled = pool_test_predictions(frame, keys, thresholds)
    if by:
        pooled["method"] = pooled[keys].astype(str).agg(" / ".join, axis=1)
    return pooled


def _grid(n: int, size: float = 3.6) -> tuple[Figure, np.ndarray]:
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def predicted_vs_observed(predictions: pd.DataFrame, method: str | None = None,
                          by: Sequence[str] = ()) -> Figure:
    """Scatter of pooled test predictions against observed values, one panel per method."""
    pooled = _pooled(predictions, "regression", by)
    methods = [method] if method is not None else sorted(pooled["method"].unique())
    fig, axes = _grid(len(methods))
    low = min(pooled["y_true"].min(), pooled["y_pred"].min())
    high = max(pooled["y_true"].max(), pooled["y_pred"].max())
    for ax, name in zip(axes.flat, methods, strict=False):
        part = pooled[pooled["method"] == name]
        ax.scatter(part["y_true"], part["y_pred"], s=12, alpha=0.6, color="#3b6ea5")
        ax.plot([low, high], [low, high], color="#999999", lw=1, ls="--")
        rho = fast_spearman(part["y_true"].to_numpy(), part["y_pred"].to_numpy())
        ax.set_title(f"{name}\nSpearman {rho:.3f} (n={len(part)})", fontsize=10)
        ax.set_xlabel("observed")
        ax.set_ylabel("predicted")
    fig.tight_layout()
    return fig


def roc_pr_curves(predictions: pd.DataFrame, methods: Sequence[str] | None = None,
                  by: Sequence[str] = ()) -> Figure:
    """ROC and precision-recall curves of the pooled test scores, one line per method."""
    pooled = _pooled(predictions, "classification", by)
    names = list(methods) if methods is not None else sorted(pooled["method"].unique())
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.5))
    prevalence = float("nan")
    for name in names:
        part = pooled[pooled["method"] == name]
        if part["y_true"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(part["y_true"], part["y_pred"])
        precision, recall, _ = precision_recall_curve(part["y_true"], part["y_pred"])
        auc = fast_auc(part["y_true"].to_numpy(), part["y_pred"].to_numpy())
        ap = average_precision_score(part["y_true"], part["y_pred"])
        ax_roc.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {auc:.3f})")
        ax_pr.step(recall, precision, where="post", lw=1.5, label=f"{name} (AP {ap:.3f})")
        prevalence = float(part["y_true"].mean())
    ax_roc.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--")
    ax_roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (pooled test)")
    if np.isfinite(prevalence):
        ax_pr.axhline(prevalence, color="#999999", lw=1, ls="--")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (pooled test)",
              ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):  # below the axes: inside, the legend covers the curves
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1,
                  frameon=False)
    fig.tight_layout()
    return fig


def forest_plot(estimates: pd.DataFrame, metric: str, reference: str | None = None,
                null_value: float | None = None) -> Figure:
    """Every method's ``metric`` (e.g. "pooled Spearman") with its 95% CI, best first; the
    reference method is drawn in another colour with its estimate as a dashed line, chance as a
    dotted one.

    ``estimates`` has columns ``method``, ``estimate``, ``ci_low`` and ``ci_high`` (a missing
    CI draws the point alone; a missing estimate leaves the method out, named in the title)."""
    frame = estimates.dropna(subset=["estimate"]).sort_values("estimate", ascending=True)
    left_out = sorted(set(estimates["method"]) - set(frame["method"]))
    fig, ax = plt.subplots(figsize=(7.5, max(2.2, 0.38 * len(frame) + 1.3)))
    y = np.arange(len(frame))
    is_reference = (frame["method"] == reference).to_numpy()
    colours = np.where(is_reference, "#c0392b", "#3b6ea5")
    low = (frame["estimate"] - frame["ci_low"]).clip(lower=0).fillna(0).to_numpy()
    high = (frame["ci_high"] - frame["estimate"]).clip(lower=0).fillna(0).to_numpy()
    for i in range(len(frame)):
        ax.errorbar(frame["estimate"].iloc[i], y[i], xerr=[[low[i]], [high[i]]], fmt="o",
                    color=colours[i], ecolor=colours[i], capsize=3, ms=5, lw=1.4)
    labels = [f"{name} (reference)" if ref else str(name)
              for name, ref in zip(frame["method"], is_reference, strict=True)]
    ax.set_yticks(y, labels, fontsize=9)
    for tick, ref in zip(ax.get_yticklabels(), is_reference, strict=True):
        if ref:
            tick.set_color("#c0392b")
            tick.set_fontweight("bold")
    if is_reference.any():
        ax.axvline(float(frame.loc[is_reference, "estimate"].iloc[0]), color="#c0392b",
                   lw=1, ls="--", alpha=0.7)
    if null_value is not None:
        ax.axvline(null_value, color="#777777", lw=1, ls=":")
    ax.set_xlabel(f"{metric} (95% CI)")
    title = f"{metric[:1].upper()}{metric[1:]} per method"
    if left_out:
        title += f"\nnot shown (no estimate): {', '.join(map(str, left_out))}"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


LEARNING_CURVE_PANELS = (("train_loss", "training loss"), ("val_loss", "validation loss"),
                         ("val_auc", "validation AUC"))


def learning_curves(history: pd.DataFrame, group: str = "method",
                    panels: Sequence[tuple[str, str]] = LEARNING_CURVE_PANELS) -> Figure:
    """Per epoch, the mean over every fold model (and modality) of each ``group``, with the
    range over them shaded: readable at any number of folds and modalities."""
    shown = [(column, label) for column, label in panels if column in history.columns]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4.2 * max(1, len(shown)), 3.4),
                             squeeze=False)
    for ax, (column, label) in zip(axes.flat, shown, strict=False):
        for name, part in history.groupby(group, sort=True):
            per_epoch = part.groupby("epoch")[column].agg(["mean", "min", "max"])
            line = ax.plot(per_epoch.index, per_epoch["mean"], lw=1.5, label=str(name))[0]
            ax.fill_between(per_epoch.index, per_epoch["min"], per_epoch["max"],
                            color=line.get_color(), alpha=0.15, lw=0)
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def per_repeat_boxplot(per_repeat: pd.DataFrame, metric: str,
                       label_columns: Sequence[str] = ("method",)) -> Figure:
    """Distribution of a metric over repeats (or folds) per method, with the points shown."""
    labels = per_repeat[list(label_columns)].astype(str).agg(" / ".join, axis=1)
    names = sorted(labels.unique())
    data = [per_repeat.loc[labels == name, metric].dropna().to_numpy() for name in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 4))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, values.size), values, s=14, alpha=0.7,
                   color="#3b6ea5", zorder=3)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per unit (box: quartiles; dots: values)", fontsize=10)
    fig.tight_layout()
    return fig


def summary_table(evaluation: Evaluation) -> pd.DataFrame:
    """One row per method: 'mean +- sd' of each metric and the pooled primary metric with CI."""
    keys = evaluation.keys
    summary = evaluation.summary
    rows = []
    for key_values, part in summary.groupby(keys, sort=True):
        row: dict[str, Any] = dict(zip(keys, key_values, strict=True))
        part = part.set_index("metric")
        row["n"] = int(part["n"].iloc[0])
        row["sd over"] = str(part["over"].iloc[0]) + "s"
        for metric in evaluation.metrics:
            mean, sd = part.loc[metric, "mean"], part.loc[metric, "sd"]
            row[metric] = "" if np.isnan(mean) else (
                f"{mean:.3f}" if np.isnan(sd) else f"{mean:.3f} ± {sd:.3f}")
        primary = part.loc[evaluation.primary_metric]
        row[f"pooled {evaluation.primary_metric} [95% CI]"] = (
            f"{primary['pooled']:.3f} [{primary['ci_low']:.3f}, {primary['ci_high']:.3f}]"
            if np.isfinite(primary["ci_low"]) else
            ("n/a" if np.isnan(primary["pooled"]) else f"{primary['pooled']:.3f}"))
        rows.append(row)
    return pd.DataFrame(rows)


def pooled_estimates(evaluation: Evaluation) -> pd.DataFrame:
    """The pooled primary metric with its CI per method, in ``forest_plot``'s layout."""
    summary = evaluation.summary
    part = summary[summary["metric"] == evaluation.primary_metric].copy()
    part["method"] = part[evaluation.keys].astype(str).agg(" / ".join, axis=1)
    return part.rename(columns={"pooled": "estimate"})[["method", "estimate", "ci_low",
                                                         "ci_high"]]


def add_evaluation(report: Report, evaluation: Evaluation, predictions: pd.DataFrame,
                   task: str | None = None, heading: str | None = "Results") -> Report:
    """The standard results section: summary, comparisons, and the task's plots (under
    ``heading``; None when the caller has already opened the section)."""
    task = task or evaluation.task
    by = evaluation.keys[1:]
    if heading:
        report.heading(heading)
    over = "repeats" if _n_repeats(evaluation) > 1 else "folds"
    report.paragraph(
        f"Metrics on test predictions. Mean ± sd over {over}; "
        f"the pooled {evaluation.primary_metric} uses all out-of-fold (or fold-ensembled) test "
        "predictions, with a percentile bootstrap 95% CI over samples."
    )
    report.table(summary_table(evaluation), caption="Summary")
    if task == "classification":
        report.note("Decision thresholds were chosen on each fold's validation predictions "
                    f"({evaluation.threshold}) and applied unchanged to its test predictions.")
    report.heading("Comparisons")
    if evaluation.comparisons.empty:
        report.paragraph("No reference method was given, so no comparisons were made.")
    else:
        report.table(evaluation.comparisons, caption=f"Each method vs '{evaluation.reference}' "
                     "(test named per row; difference = method - reference)", float_format="{:.4g}")
    report.heading("Plots")
    report.figure(forest_plot(pooled_estimates(evaluation), f"pooled {evaluation.primary_metric}",
                              evaluation.reference, null_value=0.0 if task == "regression"
                              else 0.5),
                  caption=f"Forest plot: pooled {evaluation.primary_metric} per method with "
                          "its 95% bootstrap CI (reference in red)")
    if task == "regression":
        report.figure(predicted_vs_observed(predictions, by=by),
                      caption="Predicted vs observed (pooled test predictions)")
    else:
        report.figure(roc_pr_curves(predictions, by=by),
                      caption="ROC and precision-recall curves (pooled test predictions)")
    if _n_repeats(evaluation) > 1:
        units, unit_name = evaluation.per_repeat, "repeat"
    else:
        units, unit_name = evaluation.per_fold, "fold"
    report.figure(per_repeat_boxplot(units, evaluation.primary_metric, evaluation.keys),
                  caption=f"{evaluation.primary_metric} per {unit_name}")
    return report


def _n_repeats(evaluation: Evaluation) -> int:
    return int(evaluation.per_repeat["repeat"].nunique()) if len(evaluation.per_repeat) else 0


__all__ = [
    "LEARNING_CURVE_PANELS",
    "add_evaluation",
    "forest_plot",
    "learning_curves",
    "pooled_estimates",
    "per_repeat_boxplot",
    "predicted_vs_observed",
    "roc_pr_curves",
    "summary_table",
]
