"""Aggregation of an MGMT run: predictions.csv, metrics.json, report.html, terminal summary."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.io import write_csv, write_json
from gliotl.core.runs.rundir import RunDir
from gliotl.mgmt.config import MGMTExperimentConfig
from gliotl.mgmt.pipeline.fusion import (
    compare_with_reference,
    evaluate_scores,
    fold_ensemble,
    fuse_groups,
    per_fold_metrics,
    predictions_table,
)

SHOWN = ["method", "n_test", "roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "average_precision",
         "sensitivity", "specificity", "accuracy", "f1", "threshold"]


def _records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    if frame is None or frame.empty:
        return []
    out = []
    for row in frame.to_dict("records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            clean[str(key)] = value
        out.append(clean)
    return out


def _frames(results: list[dict[str, Any]], key: str) -> pd.DataFrame:
    frames = [r[key] for r in results if isinstance(r.get(key), pd.DataFrame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def aggregate(config: MGMTExperimentConfig, raw: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Fold ensemble, fusion, metrics and comparisons from the jobs' raw predictions."""
    raw = raw.copy()
    raw["sample_id"] = raw["sample_id"].astype(str)
    ensembled = fold_ensemble(raw)
    fused = fuse_groups(ensembled, config.fusion_groups(), config.fusion.missing)
    thr = config.fusion.threshold
    groups = evaluate_scores(fused, "group", thr, config.n_boot, config.seed)
    modalities = evaluate_scores(ensembled, "modality", thr, 0, config.seed)
    return {
        "ensembled": ensembled, "fused": fused, "groups": groups, "modalities": modalities,
        "per_fold": per_fold_metrics(raw, thr),
        "comparisons": compare_with_reference(fused, "group", config.reference),
        "modality_comparisons": compare_with_reference(ensembled, "modality", config.reference),
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
           title=f"{method}: policy on the hold-out set")
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


def write_mgmt_outputs(run: RunDir, config: MGMTExperimentConfig,
                       results: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """Write predictions.csv, metrics.json and report.html; returns the metrics dict."""
    from gliotl.core.reporting.report import Report

    raw = _frames(results, "predictions")
    tables = aggregate(config, raw)
    usage = usage_summary(_frames(results, "policy_usage"))
    history = _frames(results, "history")
    write_csv(run.predictions_path, tables["predictions"])
    write_csv(run.path / "history.csv", history)
    if not usage.empty:
        write_csv(run.path / "policy_usage.csv", usage)
    metrics = {
        "protocol": {
            "test_size": config.split.test_size, "n_splits": config.split.n_splits,
            "input_mode": config.input_mode, "fusion_missing": config.fusion.missing,
            "threshold": f"{config.fusion.threshold} on fused out-of-fold validation scores",
            "checkpoint": "best validation 0.6*sensitivity + 0.4*specificity",
            "reference": config.reference,
        },
        "holdout": _records(tables["groups"]),
        "modalities": _records(tables["modalities"]),
        "comparisons": _records(tables["comparisons"]),
        "modality_comparisons": _records(tables["modality_comparisons"]),
        "per_fold": _records(tables["per_fold"]),
        "policy_usage": _records(usage),
        "best_epochs": _records(pd.DataFrame([
            {"method": r["predictions"]["method"].iloc[0],
             "modality": r["predictions"]["modality"].iloc[0],
             "fold": int(r["predictions"]["fold"].iloc[0]), "best_epoch": r.get("best_epoch"),
             "best_val_score": r.get("best_val_score"), "val_threshold": r.get("val_threshold")}
            for r in results])),
        **{k: v for k, v in extra.items()},
    }
    write_json(run.metrics_path, metrics)

    report = Report(f"gliotl MGMT from MRI: {config.name}")
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
    report.heading("Hold-out results by modality group")
    groups = tables["groups"]
    for group in config.fusion_groups():
        part = groups[groups["group"] == group] if not groups.empty else groups
        if part.empty:
            continue
        report.table(part[[c for c in SHOWN if c in part.columns]],
                     caption=f"group '{group}': {', '.join(config.fusion_groups()[group])}")
    if not tables["comparisons"].empty:
        report.heading(f"DeLong tests against '{config.reference}'")
        report.table(tables["comparisons"], caption="paired on the same hold-out patients")
    report.heading("ROC and precision-recall curves")
    fused = tables["fused"]
    for group in config.fusion_groups():
        part = fused[(fused["group"] == group) & (fused["role"] == "test")]
        if part["y_true"].nunique() == 2:
            report.figure(roc_figure(fused, group), caption=f"group '{group}'")
    if not usage.empty:
        report.heading("SpotTune policy")
        report.paragraph("Per residual block, the fraction of hold-out patients the trained "
                         "policy routes through the fine-tuned copy (mean over fold models).")
        for method in usage["method"].unique():
            report.figure(usage_figure(usage, method), caption=f"{method}: policy usage")
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
    report.config(run.config())
    report.write(run.report_path)
    return metrics


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
    from rich.table import Table

    frame = compact_table(run)
    table = Table(title=f"{run.path.name}: hold-out (fold ensemble, late fusion)")
    for column in frame.columns:
        table.add_column(str(column), no_wrap=True)
    for _, row in frame.iterrows():
        table.add_row(*["" if v is None or (isinstance(v, float) and not math.isfinite(v))
                        else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console = Console(width=max(120, Console().width))
    console.print(table)
    console.print(f"report: {run.report_path}")


__all__ = [
    "aggregate", "compact_table", "holdout_table", "print_summary", "roc_figure", "usage_figure",
    "usage_summary",
    "write_mgmt_outputs",
]
