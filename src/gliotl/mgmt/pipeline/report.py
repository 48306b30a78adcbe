"""Aggregation of an MGMT run: predictions.csv, metrics.json, report.html, terminal summary."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.evaluation.evaluate import fold_ensemble, records
from gliotl.core.io import write_csv, write_json
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


def roc_figure(fused: pd.DataFrame, group: str):
    from gliotl.core.reporting.plots import roc_pr_curves

    part = fused[(fused["group"] == group) & (fused["role"] == "test")]
    frame = part.assign(repeat=0, fold=0)[["method", "sample_id", "repeat", "fold", "role",
                                           "y_true", "y_pred"]]
    fig = roc_pr_curves(frame)
    fig.suptitle(f"group '{group}' (hold-out, fold ensemble)", fontsize=10)
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
    write_csv(run.path / "history.csv", _frames(results, "history"))
    if not usage.empty:
        write_csv(run.path / "policy_usage.csv", usage)
    metrics = _metrics(config, tables, usage, results, extra)
    write_json(run.metrics_path, metrics)
    _write_report(run, config, tables, usage, extra)
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
    if not tables["comparisons"].empty:
        report.heading(f"DeLong tests against '{config.reference}'")
        report.table(tables["comparisons"], caption="paired on the same hold-out patients")
    report.heading("ROC and precision-recall curves")
    fused = tables["fused"]
    for group in config.fusion_groups():
        part = fused[(fused["group"] == group) & (fused["role"] == "test")]
        if part["y_true"].nunique() == 2:
            report.figure(roc_figure(fused, group), caption=f"group '{group}'")


def _detail_sections(report: Any, tables: dict[str, pd.DataFrame], usage: pd.DataFrame,
                     cohort: dict[str, Any]) -> None:
    if not usage.empty:
        report.heading("SpotTune policy")
        report.paragraph("Per residual block, the fraction of hold-out patients the trained "
                         "policy routes through the fine-tuned copy (mean over fold models).")
        for method in usage["method"].unique():
            report.figure(usage_figure(usage, method),
                          caption=f"{method_label(method)}: policy usage")
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
                  usage: pd.DataFrame, extra: dict[str, Any]) -> None:
    from gliotl.core.reporting.report import Report

    report = Report(f"gliotl MGMT from MRI: {config.name}")
    _protocol_section(report, config, extra)
    _group_sections(report, config, tables)
    _detail_sections(report, tables, usage, extra.get("cohort") or {})
    report.config(run.config())
    report.write(run.report_path)


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
    "aggregate", "compact_table", "print_summary", "holdout_table", "roc_figure", "usage_figure",
    "usage_summary",
    "write_mgmt_outputs",
]
