"""Aggregation of a drug run: metrics.json, report.html and the terminal summary.

Headline p-values: the corrected resampled t-test (Nadeau & Bengio) on per-fold Spearman
against the reference, and the label-permutation p against chance when permutations were run.
The paired bootstrap over samples and the Wilcoxon over repeats are kept as labelled secondary
columns: on null data the bootstrap rejects too often, and repeats over the same samples are
not independent (see :mod:`gliotl.core.evaluation.stats`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.io import write_json
from gliotl.core.runs.rundir import RunDir
from gliotl.drug.config import ExperimentConfig
from gliotl.drug.pipeline.data_changes import changes_table


def evaluate_drug_predictions(predictions: pd.DataFrame, reference: str, n_boot: int, seed: int,
                              n_boot_test: int | None = 2000):
    from gliotl.core.evaluation.evaluate import evaluate_predictions

    return evaluate_predictions(
        predictions, task="regression", reference=reference, primary_metric="spearman",
        pair_on="repeat", n_boot=n_boot, seed=seed, resampling_boot=n_boot_test,
    )


def permutation_summary(evaluation, null: list[dict[str, Any]], n_permutations: int
                        ) -> dict[str, Any]:
    """Each method's observed mean-over-repeats Spearman against its permutation null:
    p = (1 + #{null >= observed}) / (1 + n), resolution 1 / (n + 1)."""
    from gliotl.core.evaluation.stats import permutation_p_value

    table = pd.DataFrame(null)
    summary = evaluation.summary[evaluation.summary["metric"] == "spearman"].set_index("method")
    rows = []
    for method, part in table.groupby("method", sort=True):
        values = part["statistic"].to_numpy(float)
        result = permutation_p_value(float(summary.loc[method, "mean"]), values)
        finite = values[np.isfinite(values)]
        rows.append({"method": method, "observed": result["statistic"],
                     "p_value": result["p_value"], "n": result["n"],
                     "resolution": result["resolution"],
                     "null_mean": float(finite.mean()) if finite.size else float("nan"),
                     "null_sd": float(finite.std(ddof=1)) if finite.size > 1 else float("nan")})
    return {"test": "label permutation (whole target pipeline refitted on permuted targets, "
                    "same splits)", "n_permutations": n_permutations,
            "resolution": 1.0 / (n_permutations + 1), "methods": rows}


def results_table(evaluation) -> pd.DataFrame:
    """Per method and metric: the summary over repeats and pooled CI, with one p-value column
    per test against the reference (corrected t headline; bootstrap, Wilcoxon secondary)."""
    summary = evaluation.summary.copy()
    comparisons = evaluation.comparisons
    if comparisons is not None and len(comparisons):
        summary = summary.merge(_p_columns(comparisons, evaluation.reference), on="method",
                                how="left", suffixes=("", "_comparison"))
    return summary


def write_drug_outputs(run: RunDir, config: ExperimentConfig, predictions: pd.DataFrame,
                       extra: dict[str, Any]) -> None:
    from gliotl.core.reporting.plots import add_evaluation
    from gliotl.core.reporting.report import Report

    evaluation = evaluate_drug_predictions(predictions, config.reference, config.n_boot,
                                           config.seed, config.evaluation.n_boot_test)
    data_summary = json.loads((run.path / "data" / "summary.json").read_text())
    extra = dict(extra)
    null = extra.pop("permutation_null", None)
    if null:
        extra["permutation"] = permutation_summary(evaluation, null,
                                                   config.evaluation.n_permutations)
    metrics = {"target": evaluation.to_dict(), "data": data_summary, **extra}
    write_json(run.metrics_path, metrics)

    report = Report(f"gliotl drug response: {config.name}")
    report.paragraph(
        f"Target step '{config.target}': {config.target_cv.n_splits}-fold CV x "
        f"{config.target_cv.n_repeats} repeats on splits saved in splits.csv and shared by every "
        f"method. Spearman's rho is computed per repeat on the pooled out-of-fold predictions "
        f"(n/a for a method constant in every fold, such as the training mean: pooling per-fold "
        f"constants gives a correlation that reflects fold means, not ranking). Each method is "
        f"compared with '{config.reference}' by the corrected resampled t-test of Nadeau & "
        f"Bengio on per-fold Spearman (the headline p; it accounts for overlapping training "
        f"sets); a paired bootstrap over samples (conditional on the fitted models, liberal on "
        f"null data) and a Wilcoxon over repeats (repeats share samples) are secondary."
    )
    report.heading("Data")
    report.table(steps_table(data_summary),
                 caption="Samples and genes per step (after filters and gene alignment)")
    changes = data_summary.get("changes", [])
    if changes:
        report.table(changes_table(changes), caption="What the data policies changed (all of "
                     "it in data_changes.json): repeated measurements averaged, non-finite "
                     "responses dropped, missing expression imputed in-fold")
    else:
        report.paragraph("The data needed no change: no repeated measurements, no non-finite "
                         "responses, no missing expression values (data_changes.json).")
    _upstream_sections(report, extra)
    report.heading("Target results")
    report.table(headline_table(metrics), caption="Headline: Spearman mean and sd over "
                 "repeats, pooled 95% CI, p vs the reference (corrected t; bootstrap and "
                 "Wilcoxon secondary) and vs chance (permutation)")
    for note in statistic_notes(metrics):
        report.note(note)
    _permutation_section(report, metrics)
    add_evaluation(report, evaluation, predictions, task="regression", heading=None)
    report.config(run.config(), caption="Config",
                  non_default=config.model_dump(mode="json", exclude_defaults=True))
    report.write(run.report_path)


def steps_table(data_summary: dict[str, Any]) -> pd.DataFrame:
    """Samples and genes per step, counts as integers (a transposed all-number frame is float)."""
    steps = pd.DataFrame(data_summary["steps"]).T.reset_index(names="step")
    for column in ("samples", "genes"):
        if column in steps.columns:
            steps[column] = pd.to_numeric(steps[column]).round().astype("Int64")
    return steps


def statistic_notes(metrics: dict[str, Any]) -> list[str]:
    """Notes where a p-value is at its resolution limit (Wilcoxon over few repeats,
    permutation p at 1/(n+1))."""
    from gliotl.core.reporting.notes import permutation_floor_note, wilcoxon_floor_note

    per_repeat = pd.DataFrame(metrics["target"].get("per_repeat", []))
    notes = []
    if "repeat" in per_repeat.columns:
        notes.append(wilcoxon_floor_note(int(per_repeat["repeat"].nunique())))
    if "permutation" in metrics:
        perm = metrics["permutation"]
        notes.append(permutation_floor_note(pd.DataFrame(perm["methods"]),
                                            int(perm["n_permutations"])))
    return [note for note in notes if note]


def _upstream_sections(report: Any, extra: dict[str, Any]) -> None:
    """Sections for the stages before the target results, for those this run had."""
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
    if "tuning" in extra:
        report.heading("Penalty tuning")
        report.paragraph("Per tuned ElasticNet over the outer folds: the range of its alpha "
                         "grid, the median alpha chosen by the inner CV, how many folds chose "
                         "the top of the grid (the largest penalty on the path) and how many "
                         "ended with no gene (a constant model predicting the training mean).")
        report.table(pd.DataFrame(extra["tuning"]), caption="ElasticNet alpha per outer fold")
    if "nested_selection" in extra:
        report.heading("Nested selection")
        report.paragraph("In each outer training fold an inner CV (training rows only) chose the "
                         "method; the outer test fold was used once, for scoring.")
        report.table(pd.DataFrame(extra["nested_selection"]),
                     caption="How often each method was chosen across outer folds")


def _permutation_section(report: Any, metrics: dict[str, Any]) -> None:
    """The test against chance, with its resolution."""
    if "permutation" in metrics:
        perm = metrics["permutation"]
        report.paragraph(
            f"Against chance: {perm['n_permutations']} label permutations of the target, each "
            f"refitting the whole target pipeline (in-fold preprocessing, tuning, fit) on the "
            f"same saved splits; p = (1 + #null >= observed) / (1 + n), so the smallest "
            f"attainable p (the resolution) is {perm['resolution']:.4g}.")
        report.table(pd.DataFrame(perm["methods"]), caption="Permutation test per method")


_P_COLUMNS = {"corrected resampled t": "corrected t", "paired bootstrap": "bootstrap, secondary",
              "paired Wilcoxon": "Wilcoxon, secondary", "n/a": "corrected t"}


def _p_columns(comparisons: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One column of p-values vs ``reference`` per test (a run from before the headline tests
    has only the Wilcoxon, shown as ``p vs reference``)."""
    if "headline" not in comparisons.columns:
        return comparisons[["method", "p_value"]].rename(
            columns={"p_value": f"p vs {reference}"})
    label = comparisons["test"].map(lambda t: next(
        (v for k, v in _P_COLUMNS.items() if t.startswith(k)), t))
    wide = comparisons.assign(label=label).pivot_table(
        index="method", columns="label", values="p_value", aggfunc="first", dropna=False)
    order = [c for c in dict.fromkeys(_P_COLUMNS.values()) if c in wide.columns]
    wide = wide[order].rename(columns=lambda c: f"p vs {reference} ({c})")
    notes = comparisons[comparisons["test"].str.startswith("n/a")]
    wide = wide.reset_index()
    wide["note"] = wide["method"].map(dict(zip(notes["method"], notes["test"], strict=True)))
    wide["note"] = wide["note"].fillna("")
    return wide


def headline_table(metrics: dict) -> pd.DataFrame:
    """One row per method: Spearman mean +- sd over repeats, pooled 95% CI, p vs reference
    (corrected t; bootstrap and Wilcoxon secondary) and, with permutations, p vs chance."""
    target = metrics["target"]
    summary = pd.DataFrame(target["summary"])
    summary = summary[summary["metric"] == target["primary_metric"]]
    table = summary[["method", "mean", "sd", "ci_low", "ci_high"]].copy()
    comparisons = pd.DataFrame(target["comparisons"])
    if len(comparisons):
        comparisons = comparisons[comparisons["metric"] == target["primary_metric"]]
        table = table.merge(_p_columns(comparisons, target["reference"]), on="method",
                            how="left")
    if "permutation" in metrics:
        perm = pd.DataFrame(metrics["permutation"]["methods"])[["method", "p_value"]]
        resolution = metrics["permutation"]["resolution"]
        table = table.merge(perm.rename(columns={
            "p_value": f"p vs chance (permutation, resolution {resolution:.3g})"}),
            on="method", how="left")
    if "note" in table.columns:
        table["note"] = table["note"].fillna("")
    return table.sort_values("mean", ascending=False, na_position="last").reset_index(drop=True)


def print_summary(run: RunDir) -> None:
    from rich.console import Console

    from gliotl.core.reporting.console import print_frame

    metrics = json.loads(run.metrics_path.read_text())
    console = Console()
    print_frame(headline_table(metrics), f"{run.path.name}: target Spearman per repeat", console)
    console.print(f"report: {run.report_path}")
