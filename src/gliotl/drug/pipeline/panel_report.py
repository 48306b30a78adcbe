"""What a drug benchmark panel found: ``panel.csv`` (per drug and method), ``panel_summary.csv``
(per method over drugs), the per-drug Spearman figure and ``report.html``.

Per drug, every method is compared with that drug's best baseline (of the ``panel.baselines``
that have a per-fold Spearman in most folds, the one with the highest mean Spearman there) by
the corrected resampled t-test on per-fold Spearman, the engine's headline test. A baseline
that is constant in most folds (the training mean always; a tuned ElasticNet whose inner CV
ends at the top of its alpha path) is not eligible: its mean Spearman comes from the few folds
where it ranks at all, and the t-test would pair on those few. ``panel.csv`` names, per drug,
the baselines left out and why. A method *wins* a
drug when it is above the best baseline with corrected p < ``panel.alpha`` and *loses* when it is
below with p < alpha. Against chance: each drug run's label-permutation p, for the methods in
``evaluation.permutation_methods``; the others say why they have none. Counts over drugs are
reported as counts: the drugs share cell lines, so no test over drugs is made here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.io import write_bytes, write_csv
from gliotl.core.runs.rundir import RunDir, read_run_manifest
from gliotl.drug.config import ExperimentConfig
from gliotl.drug.pipeline.panel import DRUG_RUNS, PANEL_DRUGS, read_panel_drugs
from gliotl.errors import GliotlError

PANEL_TABLE = "panel.csv"
PANEL_SUMMARY = "panel_summary.csv"
PANEL_FIGURE = "panel_spearman.png"


def _permutation_note(config: ExperimentConfig, method: str) -> str:
    evaluation = config.evaluation
    if evaluation.n_permutations == 0:
        return "not computed: evaluation.n_permutations is 0"
    names = evaluation.permutation_methods
    if names is not None and method not in names:
        return "not computed: not in evaluation.permutation_methods"
    return ""


def ineligible_baselines(per_fold: pd.DataFrame, baselines: list[str]) -> dict[str, str]:
    """The baselines without a per-fold Spearman in more than half of their folds, with why."""
    out = {}
    for name in baselines:
        rho = per_fold.loc[per_fold["method"] == name, "spearman"].astype(float).to_numpy()
        ranked, folds = int(np.isfinite(rho).sum()), int(rho.size)
        if ranked * 2 <= folds or folds == 0:
            out[name] = f"Spearman in {ranked} of {folds} folds (constant in the rest)"
    return out


def best_baseline(summary: pd.DataFrame, baselines: list[str]) -> str | None:
    """The baseline with the highest mean Spearman (ties: the first listed); None when none
    has one. Pass the eligible baselines (see :func:`ineligible_baselines`)."""
    means = summary.set_index("method")["mean"].reindex(baselines).astype(float)
    means = means[np.isfinite(means.to_numpy())]
    return None if means.empty else str(means.idxmax())


def _against_best(predictions: pd.DataFrame, best: str | None, config: ExperimentConfig
                  ) -> dict[str, dict[str, Any]]:
    """Corrected-t rows of every method against ``best`` (by method)."""
    from gliotl.drug.pipeline.report import evaluate_drug_predictions

    if best is None:
        return {}
    evaluation = evaluate_drug_predictions(predictions, best, 0, config.seed,
                                           config.evaluation.n_boot_test)
    rows = evaluation.comparisons
    rows = rows[(rows["metric"] == "spearman") & rows["headline"].astype(bool)]
    return {str(r["method"]): r for r in rows.to_dict(orient="records")}


def _outcome(method: str, best: str | None, row: dict[str, Any] | None, alpha: float) -> str:
    if best is None:
        return "n/a: no baseline has a Spearman in most folds"
    if method == best:
        return "best baseline"
    if row is None:
        return "n/a: fewer than 2 folds where both have a Spearman"
    if not np.isfinite(row.get("p_value", np.nan)):
        return str(row["test"])
    if row["p_value"] >= alpha:
        return "no difference"
    return "win" if row["difference"] > 0 else "loss"


def drug_rows(run_path: Path, drug: pd.Series, config: ExperimentConfig) -> list[dict[str, Any]]:
    """One row per method of one finished drug run."""
    assert config.panel is not None
    sub = run_path / DRUG_RUNS / str(drug["folder"])
    metrics = json.loads((sub / "metrics.json").read_text())
    summary = pd.DataFrame(metrics["target"]["summary"])
    summary = summary[summary["metric"] == "spearman"]
    perm = {r["method"]: r for r in metrics.get("permutation", {}).get("methods", [])}
    per_fold = pd.DataFrame(metrics["target"]["per_fold"])
    left_out = ineligible_baselines(per_fold, config.panel.baselines)
    best = best_baseline(summary, [b for b in config.panel.baselines if b not in left_out])
    against = _against_best(pd.read_csv(sub / "predictions.csv"), best, config)
    rows = []
    for record in summary.to_dict(orient="records"):
        method = str(record["method"])
        comparison = against.get(method)
        versus = comparison or {}
        p_perm = perm.get(method, {}).get("p_value")
        rows.append({
            "drug": drug["drug"], "target_samples": int(drug[f"{config.target}_samples"]),
            "method": method, "spearman": record["mean"], "spearman_sd": record["sd"],
            "ci_low": record.get("ci_low"), "ci_high": record.get("ci_high"),
            "permutation_p": p_perm if p_perm is not None else float("nan"),
            "permutation_note": "" if method in perm else _permutation_note(config, method),
            "best_baseline": best or "",
            "ineligible_baselines": "; ".join(f"{k}: {v}" for k, v in left_out.items()),
            "fold_spearman_difference_vs_best_baseline": versus.get("difference", float("nan")),
            "corrected_t_p_vs_best_baseline": versus.get("p_value", float("nan")),
            "outcome": _outcome(method, best, comparison, config.panel.alpha),
        })
    return rows


def panel_table(run_path: Path, config: ExperimentConfig, drugs: pd.DataFrame) -> pd.DataFrame:
    rows = [r for _, drug in drugs.iterrows() for r in drug_rows(run_path, drug, config)]
    return pd.DataFrame(rows)


def panel_summary(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Per method over drugs: Spearman's median and mean, the drugs where its permutation p <=
    alpha (of those computed; p = (1 + b) / (1 + n) rejected at p <= alpha is a level-alpha
    test), its wins and losses against the best baseline, and how often it
    was the best baseline."""
    rows = []
    for method, part in table.groupby("method", sort=False):
        rho = part["spearman"].astype(float)
        perm = part["permutation_p"].astype(float)
        outcome = part["outcome"]
        rows.append({
            "method": method, "drugs": int(len(part)),
            "drugs_with_spearman": int(np.isfinite(rho).sum()),
            "spearman_median": float(rho.median()), "spearman_mean": float(rho.mean()),
            "permutation_computed": int(np.isfinite(perm).sum()),
            f"permutation_p_at_most_{alpha:g}": int((perm <= alpha).sum()),
            "wins_vs_best_baseline": int((outcome == "win").sum()),
            "losses_vs_best_baseline": int((outcome == "loss").sum()),
            "best_baseline_on": int((outcome == "best baseline").sum()),
        })
    return pd.DataFrame(rows)


def spearman_figure(table: pd.DataFrame) -> Any:
    """Per-drug Spearman, one marker per method (drugs in panel order, top to bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drugs = list(dict.fromkeys(table["drug"]))
    methods = list(dict.fromkeys(table["method"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(drugs) + 1.6))
    markers = "osD^vP*Xh<>"
    position = {d: len(drugs) - 1 - i for i, d in enumerate(drugs)}
    unranked = []
    for j, method in enumerate(methods):
        part = table[(table["method"] == method) & np.isfinite(table["spearman"].astype(float))]
        if part.empty:
            unranked.append(method)
            continue
        offset = (j - (len(methods) - 1) / 2) * 0.1
        ax.scatter(part["spearman"].astype(float),
                   [position[d] + offset for d in part["drug"]], label=method, s=22,
                   marker=markers[j % len(markers)])
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(range(len(drugs)), list(reversed(drugs)))
    ax.set_xlabel("Spearman (mean over CV repeats of pooled out-of-fold predictions)")
    if unranked:
        ax.set_title(f"no Spearman on any drug (constant per fold): {', '.join(unranked)}",
                     fontsize=8, loc="left")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.4 / len(drugs)),
              ncol=min(len(methods), 4))
    fig.tight_layout()
    return fig


def write_panel_outputs(run: RunDir, config: ExperimentConfig, drugs: pd.DataFrame
                        ) -> pd.DataFrame:
    """Write panel.csv, panel_summary.csv, the figure and report.html; returns the summary."""
    from gliotl.core.reporting.report import Report

    assert config.panel is not None
    table = panel_table(run.path, config, drugs)
    summary = panel_summary(table, config.panel.alpha)
    write_csv(run.path / PANEL_TABLE, table)
    write_csv(run.path / PANEL_SUMMARY, summary)
    fig = spearman_figure(table)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_bytes(run.path / PANEL_FIGURE, buffer.getvalue())
    report = Report(f"gliotl drug benchmark panel: {config.name}")
    report.paragraph(_method_text(config, len(drugs)))
    report.table(drugs, caption="Drugs (by the rule in panel, fixed before any training)")
    report.table(summary, caption="Per method over drugs")
    report.figure(fig, caption="Per-drug Spearman by method (constant-per-fold methods have "
                  "none)")
    report.table(table, caption="Per drug and method")
    report.heading("Config")
    report.config(run.config())
    report.write(run.report_path)
    return summary


def _method_text(config: ExperimentConfig, n_drugs: int) -> str:
    assert config.panel is not None
    panel, cv, evaluation = config.panel, config.target_cv, config.evaluation
    perm = (f"{evaluation.n_permutations} label permutations (p resolution "
            f"{1 / (evaluation.n_permutations + 1):.3g}) for "
            f"{', '.join(evaluation.permutation_methods or ['every method'])}"
            if evaluation.n_permutations else "no permutation test")
    return (f"{n_drugs} drugs, each its own run (drugs/): steps {', '.join(panel.steps)} take "
            f"the drug; target CV {cv.n_splits}-fold x {cv.n_repeats} repeats. Spearman: mean "
            f"over repeats of the pooled out-of-fold Spearman, with its pooled 95% CI. Against "
            f"chance: {perm}. Against the best baseline (of {', '.join(panel.baselines)}, the "
            f"highest mean Spearman on that drug among those with a per-fold Spearman in most "
            f"folds; panel.csv names the others): the corrected resampled t-test on per-fold "
            f"Spearman; win / loss = above / below it with p < {panel.alpha:g}. Drugs share "
            f"cell lines, so the counts over drugs are not independent and no test over "
            f"drugs is made.")


def rewrite_panel_report(run_path: Path) -> pd.DataFrame:
    """Write a finished panel's tables, figure and report again from its saved drug runs with
    this version's rules (no training); returns the summary. Every drug run must be finished."""
    run = RunDir(run_path)
    if not run.manifest_path.is_file() or not (run_path / PANEL_DRUGS).is_file():
        raise GliotlError(f"{run_path}: not a drug benchmark panel run (expected manifest.json "
                          f"and {PANEL_DRUGS}, written by gliotl drug benchmark)")
    config = ExperimentConfig.model_validate(run.config())
    if config.panel is None:
        raise GliotlError(f"{run.config_path}: field 'panel': missing; expected the panel "
                          "block the run was made with")
    drugs = read_panel_drugs(run_path)
    for folder in drugs["folder"]:
        manifest = read_run_manifest(run_path / DRUG_RUNS / str(folder))
        if manifest is None or manifest.get("status") != "finished":
            raise GliotlError(f"{run_path / DRUG_RUNS / str(folder)}: drug run not finished; "
                              f"expected every drug finished: run gliotl drug benchmark "
                              f"CONFIG --out {run_path} --resume")
    return write_panel_outputs(run, config, drugs)
