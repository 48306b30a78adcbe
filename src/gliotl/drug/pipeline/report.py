"""Aggregation of a drug run: metrics.json, report.html and the terminal summary."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from gliotl.core.io import write_json
from gliotl.core.runs.rundir import RunDir
from gliotl.drug.config import ExperimentConfig


def evaluate_drug_predictions(predictions: pd.DataFrame, reference: str, n_boot: int, seed: int):
    from gliotl.core.evaluation.evaluate import evaluate_predictions

    return evaluate_predictions(
        predictions, task="regression", reference=reference, primary_metric="spearman",
        pair_on="repeat", n_boot=n_boot, seed=seed,
    )


def results_table(evaluation) -> pd.DataFrame:
    """Per method: Spearman over repeats (mean, sd), pooled CI, and the paired test vs reference."""
    summary = evaluation.summary.copy()
    comparisons = evaluation.comparisons
    if comparisons is not None and len(comparisons):
        cols = [c for c in ("method", "p_value", "test") if c in comparisons.columns]
        summary = summary.merge(comparisons[cols], on="method", how="left")
    return summary


def write_drug_outputs(run: RunDir, config: ExperimentConfig, predictions: pd.DataFrame,
                       extra: dict[str, Any]) -> None:
    from gliotl.core.reporting.plots import add_evaluation
    from gliotl.core.reporting.report import Report

    evaluation = evaluate_drug_predictions(predictions, config.reference, config.n_boot,
                                           config.seed)
    data_summary = json.loads((run.path / "data" / "summary.json").read_text())
    metrics = {"target": evaluation.to_dict(), "data": data_summary, **extra}
    write_json(run.metrics_path, metrics)

    report = Report(f"gliotl drug response: {config.name}")
    report.paragraph(
        f"Target step '{config.target}': {config.target_cv.n_splits}-fold CV x "
        f"{config.target_cv.n_repeats} repeats on splits saved in splits.csv and shared by every "
        f"method. Spearman's rho is computed per repeat on the pooled out-of-fold predictions; "
        f"each method is compared with '{config.reference}' by a paired test over repeats."
    )
    steps = pd.DataFrame(data_summary["steps"]).T.reset_index(names="step")
    report.heading("Data")
    report.table(steps, caption="Samples and genes per step (after filters and gene alignment)")
    if "source_selection" in extra:
        report.heading("Source-drug selection")
        report.paragraph(
            f"One source model per candidate drug, fine-tuned on the intermediate step by "
            f"one-step transfer and cross-validated there. Selected: "
            f"{extra['source_selection']['selected']}."
        )
        report.table(pd.DataFrame(extra["source_selection"]["table"]),
                     caption="Spearman on the intermediate step (mean and sd over repeats)")
    if "source_cv" in extra:
        report.heading("Source models (cross-validated on their own data)")
        report.table(pd.DataFrame(extra["source_cv"]))
    if "nested_selection" in extra:
        report.heading("Nested selection")
        report.paragraph("In each outer training fold an inner CV (training rows only) chose the "
                         "method; the outer test fold was used once, for scoring.")
        report.table(pd.DataFrame(extra["nested_selection"]),
                     caption="How often each method was chosen across outer folds")
    report.heading("Target results")
    add_evaluation(report, evaluation, predictions, task="regression")
    report.heading("Config")
    report.config(run.config())
    report.write(run.report_path)


def headline_table(metrics: dict) -> pd.DataFrame:
    """One row per method: Spearman mean +- sd over repeats, pooled 95% CI, p vs reference."""
    target = metrics["target"]
    summary = pd.DataFrame(target["summary"])
    summary = summary[summary["metric"] == target["primary_metric"]]
    table = summary[["method", "mean", "sd", "ci_low", "ci_high"]].copy()
    comparisons = pd.DataFrame(target["comparisons"])
    if len(comparisons):
        comparisons = comparisons[comparisons["metric"] == target["primary_metric"]]
        table = table.merge(comparisons[["method", "p_value"]], on="method", how="left")
    table = table.sort_values("mean", ascending=False).reset_index(drop=True)
    return table.rename(columns={"p_value": f"p vs {target['reference']}"})


def print_summary(run: RunDir) -> None:
    from rich.console import Console

    from gliotl.core.reporting.console import print_frame

    metrics = json.loads(run.metrics_path.read_text())
    console = Console()
    print_frame(headline_table(metrics), f"{run.path.name}: target Spearman per repeat", console)
    console.print(f"report: {run.report_path}")
