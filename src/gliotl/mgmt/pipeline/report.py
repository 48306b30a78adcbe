"""Aggregation of an MGMT run: predictions.csv, metrics.json, report.html, terminal summary."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.evaluation.evaluate import fold_ensemble, records
from gliotl.core.io import write_csv, write_json
from gliotl.core.reporting.notes import degenerate_interval_note
from gliotl.core.runs.rundir import RunDir
from gliotl.mgmt.config import MGMTExperimentConfig
from gliotl.mgmt.methods import method_label
from gliotl.mgmt.pipeline.fusion import (
    delong_comparisons,
    evaluate_table,
    fuse_groups,
    holdout_metrics,
    per_fold_metrics,
    predictions_table,
)

SHOWN = ["method", "n_test", "roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "average_precision",
         "sensitivity", "specificity", "accuracy", "f1", "threshold"]


def _frames(results: list[dict[str, Any]], key: str) -> pd.DataFrame:
    frames = [r[key] for r in results if isinstance(r.get(key), pd.DataFrame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def aggregate(config: MGMTExperimentConfig, raw: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Fold ensemble, fusion, metrics and comparisons from the jobs' raw predictions."""
    raw = raw.copy()
    raw["sample_id"] = raw["sample_id"].astype(str)
    ensembled = fold_ensemble(raw, ["method", "modality"])
    fused = fuse_groups(ensembled, config.fusion_units(), config.fusion.missing)
    thr = config.fusion.threshold
    groups = evaluate_table(fused, "group", thr, config.n_boot, config.seed, config.reference)
    modalities = evaluate_table(ensembled, "modality", thr, 0, config.seed, config.reference)
    return {
        "ensembled": ensembled, "fused": fused,
        "groups": holdout_metrics(fused, groups, "group"),
        "modalities": holdout_metrics(ensembled, modalities, "modality"),
        "per_fold": per_fold_metrics(raw, thr),
        "comparisons": delong_comparisons(groups, "group"),
        "modality_comparisons": delong_comparisons(modalities, "modality"),
        "predictions": predictions_table(raw, ensembled, fused),
    }


def usage_summary(usage: pd.DataFrame) -> pd.DataFrame:
    """Per (method, modality, block): the fraction of hold-out patients routed to the tuned copy,
    averaged over the fold models (each fold model routes every hold-out patient once)."""
    if usage.empty:
        return usage
    grouped = usage.groupby(["method", "modality", "block"], sort=False)
    return grouped.agg(tuned_fraction=("tuned_fraction", "mean"),
                       n_models=("fold", "nunique"),
                       n_samples=("n_samples", "first")).reset_index()


def usage_figure(summary: pd.DataFrame, method: str):
    import matplotlib.pyplot as plt

    part = summary[summary["method"] == method]
    units = list(dict.fromkeys(part["modality"]))
    blocks = list(dict.fromkeys(part["block"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(blocks) * max(1, len(units)) / 2), 3.6))
    width = 0.8 / max(1, len(units))
    x = np.arange(len(blocks))
    for i, unit in enumerate(units):
        values = part[part["modality"] == unit].set_index("block").reindex(blocks)
        ax.bar(x + i * width - 0.4 + width / 2, values["tuned_fraction"], width, label=unit)
    ax.set_xticks(x, blocks, rotation=45, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.02), ylabel="fraction routed to tuned copy",
           title=f"{method_label(method)}: policy on the hold-out set")
    if len(units) > 1:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


CLASS_NAMES = {0: "unmethylated", 1: "methylated"}
ROUTING_COLUMNS = ["method", "modality", "fold", "sample_id", "y_true", "block", "tuned"]
"""routing.csv: per hold-out patient, block and fold model, 1 = routed to the tuned copy."""


def routing_figure(routing: pd.DataFrame, method: str):
    """Heatmap per MGMT class: modality x block, the fraction of hold-out patients (over every
    fold model) routed through the fine-tuned copy. Readable at 11 modalities x 16 blocks."""
    import matplotlib.pyplot as plt

    part = routing[routing["method"] == method]
    modalities = list(dict.fromkeys(part["modality"]))
    blocks = list(dict.fromkeys(part["block"]))
    classes = sorted(int(c) for c in part["y_true"].unique())
    width = max(3.0, 0.42 * len(blocks) + 1.2)
    fig, axes = plt.subplots(1, len(classes), figsize=(width * len(classes) + 1.0,
                                                       0.42 * len(modalities) + 1.9),
                             squeeze=False, layout="constrained")
    image = None
    for ax, label in zip(axes.flat, classes, strict=True):
        rows = part[part["y_true"] == label]
        grid = rows.pivot_table(index="modality", columns="block", values="tuned",
                                aggfunc="mean").reindex(index=modalities, columns=blocks)
        image = ax.imshow(grid.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        if grid.size <= 400:
            _annotate_cells(ax, grid.to_numpy(float))
        ax.set_xticks(range(len(blocks)), blocks, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(modalities)), modalities, fontsize=8)
        ax.set_title(f"{CLASS_NAMES.get(label, label)} "
                     f"(n={rows['sample_id'].nunique()} patients)", fontsize=9)
    fig.suptitle(f"{method_label(method)}: fraction routed to the tuned copy (hold-out)",
                 fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="tuned fraction")
    return fig


def _annotate_cells(ax: Any, values: np.ndarray) -> None:
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")


def roc_figure(fused: pd.DataFrame, group: str):
    from gliotl.core.reporting.plots import roc_pr_curves

    part = fused[(fused["group"] == group) & (fused["role"] == "test")]
    frame = part.assign(repeat=0, fold=0)[["method", "sample_id", "repeat", "fold", "role",
                                           "y_true", "y_pred"]]
    fig = roc_pr_curves(frame)
    fig.suptitle(f"group '{group}' (hold-out, fold ensemble)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # room for the suptitle above the panel titles
    return fig


def _best_epochs(results: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([
        {"method": r["method"], "modality": r["modality"], "fold": int(r["fold"]),
         "best_epoch": r.get("best_epoch"), "best_val_score": r.get("best_val_score"),
         "val_threshold": r.get("val_threshold")}
        for r in results])


def _metrics(config: MGMTExperimentConfig, tables: dict[str, pd.DataFrame], usage: pd.DataFrame,
             results: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """What metrics.json holds: the protocol, every table as records, and ``extra``."""
    return {
        "protocol": {
            "test_size": config.split.test_size, "n_splits": config.split.n_splits,
            "input_mode": config.input_mode, "fusion_missing": config.fusion.missing,
            "threshold": f"{config.fusion.threshold} on fused out-of-fold validation scores",
            "checkpoint": "best validation 0.6*sensitivity + 0.4*specificity",
            "reference": config.reference,
        },
        "holdout": records(tables["groups"]),
        "modalities": records(tables["modalities"]),
        "comparisons": records(tables["comparisons"]),
        "modality_comparisons": records(tables["modality_comparisons"]),
        "per_fold": records(tables["per_fold"]),
        "policy_usage": records(usage),
        "best_epochs": records(_best_epochs(results)),
        **extra,
    }


def write_mgmt_outputs(run: RunDir, config: MGMTExperimentConfig,
                       results: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """Write predictions.csv, metrics.json and report.html; returns the metrics dict."""
    tables = aggregate(config, _frames(results, "predictions"))
    usage = usage_summary(_frames(results, "policy_usage"))
    write_csv(run.predictions_path, tables["predictions"])
    history = _frames(results, "history")
    write_csv(run.path / "history.csv", history)
    routing = _frames(results, "routing")
    if not usage.empty:
        write_csv(run.path / "policy_usage.csv", usage)
    if not routing.empty:
        write_csv(run.path / "routing.csv", routing[ROUTING_COLUMNS])
    metrics = _metrics(config, tables, usage, results, extra)
    write_json(run.metrics_path, metrics)
    _write_report(run, config, tables, {"usage": usage, "routing": routing, "history": history},
                  extra)
    return metrics


def _protocol_section(report: Any, config: MGMTExperimentConfig, extra: dict[str, Any]) -> None:
    cohort = extra.get("cohort") or {}
    report.paragraph(
        f"Cohort: {cohort.get('patients', '?')} patients ({cohort.get('methylated', '?')} "
        f"methylated, {cohort.get('unmethylated', '?')} unmethylated). "
        f"{int(config.split.test_size * 100)}% stratified hold-out + {config.split.n_splits}-fold "
        "stratified CV on the rest (splits.csv, shared by every method). Each fold model is "
        "checkpointed on its validation fold's 0.6 x sensitivity + 0.4 x specificity; hold-out "
        "probabilities are averaged over the fold models, then over the modalities of a group "
        f"(late fusion, '{config.fusion.missing}' patients). The decision threshold is chosen "
        "by Youden's J on the fused out-of-fold validation probabilities only."
    )
    if extra.get("pretrain"):
        pre = extra["pretrain"]
        report.note(
            f"Backbone weights: segmentation-pretrained stand-in for MedicalNet "
            f"({pre.get('volumes')} volumes of a separate cohort, {pre.get('epochs')} epochs), "
            f"saved in MedicalNet format as {extra.get('weights')}."
        )
    elif extra.get("weights"):
        report.paragraph(f"Backbone weights: {extra['weights']}")
    else:
        report.note("No pretrained weights: every method starts from random weights.",
                    "warning")


def _group_sections(report: Any, config: MGMTExperimentConfig,
                    tables: dict[str, pd.DataFrame]) -> None:
    report.heading("Hold-out results by modality group")
    groups = tables["groups"]
    for group, members in config.fusion_groups().items():
        part = groups[groups["group"] == group] if not groups.empty else groups
        if not part.empty:
            report.table(part[[c for c in SHOWN if c in part.columns]],
                         caption=f"group '{group}': {', '.join(members)}")
    if not groups.empty:
        _forest_section(report, config, groups)
    if not tables["comparisons"].empty:
        report.heading(f"DeLong tests against '{config.reference}'")
        report.table(tables["comparisons"], caption="paired on the same hold-out patients")
    report.heading("ROC and precision-recall curves")
    fused = tables["fused"]
    for group in config.fusion_groups():
        part = fused[(fused["group"] == group) & (fused["role"] == "test")]
        if part["y_true"].nunique() == 2:
            report.figure(roc_figure(fused, group), caption=f"group '{group}'")


def _forest_section(report: Any, config: MGMTExperimentConfig, groups: pd.DataFrame) -> None:
    """One forest plot per fused group, after a note on any zero-width DeLong CI."""
    labelled = groups.assign(row=groups["group"] + " / " + groups["method"])
    note = degenerate_interval_note(labelled, "row", "roc_auc_ci_low", "roc_auc_ci_high",
                                    "DeLong AUC CI") if "roc_auc_ci_low" in groups else None
    if note:
        report.note(note)
    for group in config.fusion_groups():
        part = groups[groups["group"] == group]
        if not part.empty:
            report.figure(auc_forest_figure(part, config.reference),
                          caption=f"Forest plot: hold-out AUC with DeLong 95% CI, group "
                                  f"'{group}' (reference in red)")


def _detail_sections(report: Any, tables: dict[str, pd.DataFrame],
                     saved: dict[str, pd.DataFrame], cohort: dict[str, Any]) -> None:
    usage, routing = saved["usage"], saved["routing"]
    if not routing.empty:
        report.heading("SpotTune policy")
        report.paragraph("Per modality and residual block, the fraction of hold-out patients "
                         "(over every fold model) the trained policy routes through the "
                         "fine-tuned copy, split by MGMT class; per-patient routing is saved "
                         "in routing.csv.")
        for method in routing["method"].unique():
            report.figure(routing_figure(routing, method),
                          caption=f"{method_label(method)}: routing by class")
    elif not usage.empty:
        report.heading("SpotTune policy")
        for method in usage["method"].unique():
            report.figure(usage_figure(usage, method),
                          caption=f"{method_label(method)}: policy usage")
    if not saved["history"].empty:
        from gliotl.core.reporting.plots import learning_curves

        report.heading("Learning curves")
        report.figure(learning_curves(saved["history"]),
                      caption="Per epoch, mean over fold models and modalities (band: range); "
                              "from history.csv")
    report.heading("Single modalities (fold ensemble)")
    mods = tables["modalities"]
    if not mods.empty:
        report.table(mods[["modality", *[c for c in SHOWN if c in mods.columns]]])
    report.heading("Fold models on the hold-out")
    report.table(tables["per_fold"])
    report.heading("Cohort")
    report.table(pd.DataFrame([{"modality": k, "patients": v}
                               for k, v in cohort.get("per_modality", {}).items()]))
    if cohort.get("exclusions"):
        report.table(pd.DataFrame([{"excluded": k, "patients": v}
                                   for k, v in cohort["exclusions"].items()]))


def _write_report(run: RunDir, config: MGMTExperimentConfig, tables: dict[str, pd.DataFrame],
                  saved: dict[str, pd.DataFrame], extra: dict[str, Any]) -> None:
    from gliotl.core.reporting.report import Report

    report = Report(f"gliotl MGMT from MRI: {config.name}")
    _protocol_section(report, config, extra)
    _group_sections(report, config, tables)
    _detail_sections(report, tables, saved, extra.get("cohort") or {})
    report.config(run.config(), non_default=config.model_dump(mode="json",
                                                              exclude_defaults=True))
    report.write(run.report_path)


def auc_forest_figure(holdout: pd.DataFrame, reference: str | None):
    """Forest plot of one group's hold-out AUC per method with its DeLong CI."""
    from gliotl.core.reporting.plots import forest_plot

    estimates = holdout.rename(columns={"roc_auc": "estimate", "roc_auc_ci_low": "ci_low",
                                        "roc_auc_ci_high": "ci_high"})
    for column in ("ci_low", "ci_high"):
        if column not in estimates.columns:
            estimates[column] = np.nan
    return forest_plot(estimates[["method", "estimate", "ci_low", "ci_high"]], "hold-out AUC",
                       reference, null_value=0.5)


def holdout_table(run: RunDir) -> pd.DataFrame:
    metrics = json.loads(run.metrics_path.read_text())
    frame = pd.DataFrame(metrics["holdout"])
    cols = ["group", "method", "n_test", "roc_auc", "roc_auc_ci_low", "roc_auc_ci_high",
            "average_precision", "sensitivity", "specificity", "accuracy", "f1", "threshold"]
    return frame[[c for c in cols if c in frame.columns]]


def compact_table(run: RunDir) -> pd.DataFrame:
    """The hold-out table with short column names and the AUC CI as one 'low-high' cell."""
    frame = holdout_table(run)

    def ci(row: pd.Series) -> str:
        low, high = row.get("roc_auc_ci_low"), row.get("roc_auc_ci_high")
        if low is None or high is None or pd.isna(low) or pd.isna(high):
            return ""
        return f"{low:.2f}-{high:.2f}"

    return pd.DataFrame({
        "group": frame["group"], "method": frame["method"], "n": frame["n_test"],
        "AUC": frame["roc_auc"], "95% CI": frame.apply(ci, axis=1),
        "AP": frame["average_precision"], "sens": frame["sensitivity"],
        "spec": frame["specificity"], "acc": frame["accuracy"], "F1": frame["f1"],
        "thr": frame["threshold"],
    })


def print_summary(run: RunDir) -> None:
    from rich.console import Console

    from gliotl.core.reporting.console import TableStyle, print_frame

    console = Console(width=max(120, Console().width))
    print_frame(compact_table(run), f"{run.path.name}: hold-out (fold ensemble, late fusion)",
                console, TableStyle(no_wrap=True, missing=""))
    console.print(f"report: {run.report_path}")


__all__ = [
    "ROUTING_COLUMNS", "aggregate", "auc_forest_figure", "compact_table", "print_summary",
    "holdout_table", "roc_figure", "routing_figure", "usage_figure",
    "usage_summary",
    "write_mgmt_outputs",
]
