"""The drug benchmark panel (``gliotl drug benchmark``): one drug experiment per drug of a rule.

One target cannot rank methods. The panel runs the experiment of a config over many drugs, each
drug replacing the drug of ``panel.steps`` (the target and its intermediate), so that each has
its own target (e.g. the glioma lines) and intermediate (the same drug elsewhere); the source
stays as the config fixes it. The drug list comes from the rule in ``panel`` and is saved in the
run (``panel_drugs.csv``) before any training, and read back on ``--resume``: it never depends on
an outcome. Each drug is a whole drug run under ``drugs/<NNN>_<drug>/`` on the ordinary engine,
so a resumed panel skips finished drugs and resumes the unfinished one job by job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from gliotl.core.config import resolve_config_paths
from gliotl.core.io import write_csv
from gliotl.core.runs.experiment import Experiment, run_experiment
from gliotl.core.runs.jobs import Executor
from gliotl.core.runs.rundir import RunDir, read_run_manifest
from gliotl.drug.config import ExperimentConfig, PanelConfig
from gliotl.errors import GliotlError

PANEL_DRUGS = "panel_drugs.csv"
DRUG_RUNS = "drugs"


def _panel(config: ExperimentConfig) -> PanelConfig:
    if config.panel is None:
        raise GliotlError(f"config '{config.name}': field 'panel': missing; expected a panel "
                          "block (the drug-list rule) for gliotl drug benchmark")
    return config.panel


def _measured_drugs(config: ExperimentConfig, dataset: Any) -> list[str]:
    """Every drug the target step's dataset has for its measure (and release), by name."""
    step = config.steps[config.target]
    table = dataset.response
    rows = table["measure"].astype(str).str.casefold() == step.measure.casefold()
    if step.release:
        rows &= table["source"].astype(str).str.casefold() == step.release.casefold()
    rows &= table["value"].notna()
    return sorted(table.loc[rows, "drug"].astype(str).unique(), key=lambda d: (d.casefold(), d))


def _folder(index: int, drug: str) -> str:
    """``001_5-Fluorouracil``: the index keeps folders unique whatever the drug names hold."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", drug).strip("._") or "drug"
    return f"{index:03d}_{slug}"


def resolve_panel_drugs(config: ExperimentConfig) -> pd.DataFrame:
    """The panel's drugs by its rule (no result is read): ``drug``, ``folder`` and the sample
    count of every panel step."""
    from gliotl.drug.pipeline.steps import load_and_align, step_response

    panel = _panel(config)
    datasets, _ = load_and_align(config)
    target = config.steps[config.target]
    explicit = panel.drugs is not None
    candidates = list(panel.drugs) if panel.drugs is not None else _measured_drugs(
        config, datasets[target.dataset])
    excluded = {d.casefold() for d in panel.exclude}
    rows = []
    for drug in (d for d in candidates if d.casefold() not in excluded):
        counts = {f"{name}_samples": len(step_response(
            name, config.steps[name], datasets[config.steps[name].dataset], drug))
            for name in panel.steps}
        needed = {f"{name}_samples": (panel.min_target_samples if name == config.target
                                      else panel.min_step_samples) for name in panel.steps}
        short = [key for key, n in counts.items() if n < needed[key]]
        if short and explicit:
            key = short[0]
            raise GliotlError(f"config '{config.name}': field 'panel.drugs': '{drug}' has "
                              f"{counts[key]} samples in step '{key[:-8]}'; expected at least "
                              f"{needed[key]}")
        if not short:
            rows.append({"drug": drug, **counts})
    if panel.first is not None:
        rows = rows[: panel.first]
    if not rows:
        raise GliotlError(f"config '{config.name}': field 'panel': no drug meets the rule "
                          f"(at least {panel.min_target_samples} samples in step "
                          f"'{config.target}'); expected at least one")
    table = pd.DataFrame(rows)
    table.insert(1, "folder", [_folder(i + 1, d) for i, d in enumerate(table["drug"])])
    return table


def drug_config(config: ExperimentConfig, drug: str, index: int) -> ExperimentConfig:
    """The panel's experiment for one drug: the panel steps take ``drug``; no panel block."""
    panel = _panel(config)
    steps = {name: step.model_copy(update={"drug": drug}) if name in panel.steps else step
             for name, step in config.steps.items()}
    return config.model_copy(update={"name": f"{config.name}_{index:03d}", "steps": steps,
                                     "panel": None})


def read_panel_drugs(run_path: Path) -> pd.DataFrame:
    return pd.read_csv(run_path / PANEL_DRUGS, dtype={"drug": str, "folder": str},
                       keep_default_na=False)


def run_panel_drug(exp: Experiment, config: ExperimentConfig, index: int, drug: str,
                   folder: str) -> RunDir:
    """One drug's run inside the panel: kept when finished, resumed when started, else new."""
    from gliotl.drug.pipeline.experiment import run_drug_experiment

    path = exp.run.path / DRUG_RUNS / folder
    manifest = read_run_manifest(path)
    if manifest is not None and manifest.get("status") == "finished":
        return RunDir(path)
    return run_drug_experiment(drug_config(config, drug, index), out=path,
                               resume=manifest is not None, executor=exp.executor,
                               retries=exp.retries, progress=exp.progress)


def _body(config: ExperimentConfig) -> Any:
    def body(exp: Experiment) -> dict[str, Any]:
        from gliotl.drug.pipeline.panel_report import write_panel_outputs

        path = exp.run.path / PANEL_DRUGS
        drugs = exp.prepare_once(path, lambda: _save_drugs(path, config),
                                 lambda: read_panel_drugs(exp.run.path))
        exp.inputs_checked()  # the drug list is fixed and saved: from here on it is trained
        (exp.run.path / DRUG_RUNS).mkdir(exist_ok=True)
        for index, row in enumerate(drugs.itertuples(index=False), start=1):
            if exp.progress:
                print(f"panel drug {index}/{len(drugs)}: {row.drug}", flush=True)
            run_panel_drug(exp, config, index, str(row.drug), str(row.folder))
        summary = write_panel_outputs(exp.run, config, drugs)
        return {"panel_drugs": int(len(drugs)), "panel_methods": int(len(summary))}

    return body


def _save_drugs(path: Path, config: ExperimentConfig) -> pd.DataFrame:
    table = resolve_panel_drugs(config)
    write_csv(path, table)
    return table


def run_drug_benchmark(
    config: ExperimentConfig,
    base_dir: Path | None = None,
    out: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Executor | None = None,
    retries: int = 0,
    progress: bool = True,
) -> RunDir:
    """Run the panel of ``config`` (its ``panel`` block) and write the panel run; returns it."""
    _panel(config)
    if base_dir is not None:
        config = resolve_config_paths(config, base_dir)
    return run_experiment(config, _body(config), name=config.name, seed=config.seed, out=out,
                          resume=resume, overwrite=overwrite, executor=executor,
                          retries=retries, progress=progress)
