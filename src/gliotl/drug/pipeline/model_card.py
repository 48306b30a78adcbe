"""The drug run's model card: datasets and steps (samples, genes), the target splits, the
methods' Spearman with pooled CIs, intended use and limits; built from the run's own files."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from gliotl.core.reporting.model_card import (
    ModelCard,
    bullet_list,
    markdown_table,
    run_provenance,
)
from gliotl.core.runs.rundir import RunDir

SMALL_TARGET = 100
"""Below this many target samples the card warns that estimates are imprecise."""


def _steps_table(config: dict[str, Any], summary: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for key, values in summary.get("steps", {}).items():
        name, _, candidate = key.partition("@")  # a source candidate: step@drug
        step = config["steps"].get(name, {})
        dataset = step.get("dataset", "")
        rows.append({"step": key, "dataset": dataset,
                     "kind": config["datasets"].get(dataset, {}).get("kind", ""),
                     "drug": candidate or step.get("drug", ""), "measure": step.get("measure", ""),
                     "samples": values.get("samples"), "genes": values.get("genes")})
    return pd.DataFrame(rows)


def _results_table(metrics: dict[str, Any]) -> pd.DataFrame:
    from gliotl.drug.pipeline.report import headline_table

    table = headline_table(metrics)
    keep = [c for c in table.columns if c in ("method", "mean", "sd", "ci_low", "ci_high")
            or c.startswith("p ")]
    return table[keep].rename(columns={"mean": "Spearman mean", "sd": "sd over repeats",
                                       "ci_low": "95% CI low", "ci_high": "95% CI high"})


def _limits(n_target: int) -> list[str]:
    limits = [
        "Cell lines are not patients: response measured in vitro (AUC/IC50 of a dose-response "
        "curve) need not carry over to tumours, and a cell-line model is no clinical tool.",
        "Scores are cross-validated within this target set only; no external cohort was used. "
        "Another lab, assay or expression platform may shift the data (batch effects).",
        "Methods are compared on shared splits; a p-value above 0.05 means no difference was "
        "shown, not that methods are equal.",
    ]
    if n_target < SMALL_TARGET:
        limits.insert(0, f"Small n: the target step has {n_target} samples, so per-method "
                         "Spearman estimates are imprecise (see the CI widths) and rankings "
                         "between close methods are not reliable.")
    return limits


def drug_model_card(run: RunDir) -> ModelCard:
    """The card of a finished drug run (its config, data summary and metrics)."""
    config = run.config()
    metrics = json.loads(run.metrics_path.read_text(encoding="utf-8"))
    summary = metrics.get("data", {})
    target = config["target"]
    steps = _steps_table(config, summary)
    target_rows = steps[steps["step"] == target]
    n_target = int(target_rows["samples"].iloc[0]) if len(target_rows) else 0
    splits = pd.read_csv(run.splits_path) if run.splits_path.is_file() else pd.DataFrame()
    cv = config["target_cv"]
    card = ModelCard(f"Model card: {config['name']} (gliotl drug response)")
    card.add("Model",
             f"Drug-response regression from gene expression: predicts the target step's "
             f"response ('{target}') from expression. Methods compared: "
             + ", ".join(f"`{m['name']}` ({m['kind']})" for m in config["methods"])
             + f". Reference method: `{config['reference']}`. The saved final models "
             "(`checkpoints/`) are refitted on every target sample.")
    card.add("Data", markdown_table(steps) if len(steps) else "no step summary recorded",
             "Samples and genes per step after filters and gene alignment; upstream steps "
             "(source, intermediate) only pretrain and never see target samples.")
    n_folds = splits.groupby(["repeat", "fold"]).ngroups if len(splits) else 0
    card.add("Evaluation splits",
             f"{cv['n_splits']}-fold cross-validation x {cv['n_repeats']} repeats on the target "
             f"step ({n_folds} train/test splits in `splits.csv`, shared by every method). "
             "Everything learned from data (scalers, response scaling, hyper-parameters) is "
             "fitted on training folds only.")
    card.add("Metrics",
             markdown_table(_results_table(metrics)),
             f"Spearman's rho between predicted and observed response, per repeat on pooled "
             f"out-of-fold predictions; 95% CI pooled over repeats; p vs `{config['reference']}` "
             "by the corrected resampled t-test (Nadeau & Bengio). A method constant in every "
             "fold (the training mean) has no Spearman.")
    card.add("Intended use",
             "Research only: comparing transfer-learning methods for drug response on small "
             "glioblastoma expression sets, and generating hypotheses about which cell lines "
             "respond. Not for treatment decisions or any clinical use.")
    card.add("Limits", bullet_list(_limits(n_target)))
    card.add("Provenance", run_provenance(run))
    return card


__all__ = ["drug_model_card"]
