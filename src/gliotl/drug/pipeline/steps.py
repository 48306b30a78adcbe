"""Turn an experiment config into per-step matrices (samples x aligned genes, one response each).

Prepared step data are written once into the run directory (``data/<step>.parquet``) so that every
job, in any process or on any cluster node with the shared run folder, reads identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.io import write_json, write_parquet
from gliotl.drug.config import ExperimentConfig, SampleFilter, StepConfig
from gliotl.drug.pipeline.data_changes import (
    dataset_files,
    expression_changes,
    reader_changes,
    require_varying,
    response_changes,
)
from gliotl.errors import GliotlError


@dataclass
class StepData:
    """One step's training material: expression ``X`` (samples x genes), response ``y``, and
    sample annotations (tissue, MGMT status, ...)."""

    name: str
    X: pd.DataFrame
    y: pd.Series
    annotations: pd.DataFrame


def step_key(step: str, drug: str | None = None) -> str:
    """A step instance: the step itself, or the step with its drug replaced (source candidates)."""
    return f"{step}@{drug}" if drug else step


def _apply_filter(samples: pd.DataFrame, flt: SampleFilter, where: str) -> pd.Index:
    if flt.column not in samples.columns:
        shown = ", ".join(map(str, samples.columns[:10]))
        raise GliotlError(
            f"{where}: field 'filters.column': annotation '{flt.column}' not in the data "
            f"(found: {shown})"
        )
    values = samples[flt.column].astype("string")
    keep = pd.Series(True, index=samples.index)
    if flt.equals is not None:
        keep &= values == flt.equals
    if flt.not_equals is not None:
        keep &= values.fillna("") != flt.not_equals
    if flt.isin is not None:
        keep &= values.isin(flt.isin)
    if flt.not_in is not None:
        keep &= ~values.fillna("").isin(flt.not_in)
    return samples.index[keep.fillna(False).to_numpy(bool)]


def step_response(name: str, step: StepConfig, dataset, drug: str | None = None) -> pd.Series:
    """One step's finite responses on the samples its filters keep (``drug`` replacing the
    step's own); the drug benchmark panel counts samples with it before anything is built."""
    drug = drug or step.drug
    kwargs = {"source": step.release} if step.release else {}
    y = dataset.responses(drug, step.measure, **kwargs)
    y = y[np.isfinite(y.to_numpy(dtype=float))]
    samples = dataset.samples.reindex(y.index)
    keep = y.index
    for flt in step.filters:
        keep = keep.intersection(_apply_filter(samples, flt, f"step '{name}'"))
    return y.loc[keep].astype(float)


def build_step(name: str, step: StepConfig, dataset, drug: str | None = None,
               files: tuple[str, str] | None = None,
               changes: list[dict[str, Any]] | None = None) -> StepData:
    """Select one step's samples and response from an aligned dataset; what the data policies
    changed on the way (``files``: its expression and response files) goes into ``changes``."""
    key = step_key(name, drug)
    drug = drug or step.drug
    expression_file, response_file = files or (f"dataset '{step.dataset}'",) * 2
    kwargs = {"source": step.release} if step.release else {}
    rows = dataset.response_rows(drug, step.measure, **kwargs)
    found = response_changes(key, rows, response_file, drug, step.measure)
    y = step_response(name, step, dataset, drug)
    if len(y) < 3:
        raise GliotlError(
            f"step '{name}': field 'drug': only {len(y)} samples of dataset '{step.dataset}' have "
            f"'{drug}' {step.measure} after filtering; expected at least 3"
        )
    require_varying(key, y, response_file, drug, step.measure)
    X = dataset.expression.loc[y.index].astype(np.float32)
    kept = set(map(str, y.index))
    for change in found:  # only what touched the samples the step kept (and those it dropped)
        if change["what"].startswith("repeated"):
            change["samples"] = [s for s in change["samples"] if s in kept]
            change["n_samples"] = len(change["samples"])
    found = [c for c in found if c["n_samples"]]
    found += expression_changes(key, X, expression_file)
    if changes is not None:
        changes += found
    return StepData(key, X, y, dataset.samples.reindex(y.index))


def load_and_align(config: ExperimentConfig):
    """Load every dataset the steps use and align their genes by symbol."""
    from gliotl.drug.data import harmonise
    from gliotl.drug.data.loaders import load_dataset

    used = sorted({step.dataset for step in config.steps.values()})
    datasets = {name: load_dataset(config.datasets[name]) for name in used}
    genes = None
    if config.genes.list_file:
        path = Path(config.genes.list_file)
        if not path.is_file():
            raise GliotlError(f"{path}: field 'genes.list_file': gene list file not found")
        genes = [g.strip() for g in path.read_text().splitlines() if g.strip()]
    aligned, report = harmonise.align_genes(
        [datasets[name] for name in used], policy=config.genes.policy, genes=genes
    )
    return dict(zip(used, aligned, strict=True)), report


def _build_steps(config: ExperimentConfig, datasets: dict) -> tuple[dict[str, StepData],
                                                                   list[dict[str, Any]]]:
    """Every step instance (source candidates included) and what the data policies changed."""
    instances: list[tuple[str, str | None]] = [(name, None) for name in config.steps]
    if config.source_selection is not None:
        for candidate in config.source_selection.candidates:
            instances.append((config.source_selection.step, candidate))
    built: dict[str, StepData] = {}
    changes: list[dict[str, Any]] = []
    files = {name: dataset_files(config.datasets[name]) for name in datasets}
    for name, ds in datasets.items():
        changes += reader_changes(name, list(ds.notes), files[name][0])
    for name, drug in instances:
        step = config.steps[name]
        data = build_step(name, step, datasets[step.dataset], drug, files[step.dataset], changes)
        built[data.name] = data
    return built, changes


def prepare_steps(config: ExperimentConfig, data_dir: Path) -> dict[str, dict]:
    """Write every step instance the experiment needs; returns a summary per step instance.
    Paths in ``config`` are used as given (absolute once validated against its file)."""
    datasets, gene_report = load_and_align(config)
    built, changes = _build_steps(config, datasets)
    target = built[config.target]
    for key, data in built.items():
        if key == config.target:
            continue
        overlap = target.X.index.intersection(data.X.index)
        if len(overlap):
            raise GliotlError(
                f"step '{key}': field 'filters': {len(overlap)} target samples also appear in this "
                f"earlier step (e.g. {overlap[0]}); target samples may not be used earlier"
            )
    summary = {}
    for key, data in built.items():
        frame = data.X.copy()
        frame.insert(0, "__y__", data.y.astype(float))
        write_parquet(data_dir / f"{key}.parquet", frame)
        write_parquet(data_dir / f"{key}.annotations.parquet", data.annotations.astype("string"))
        summary[key] = {
            "samples": int(len(data.y)), "genes": int(data.X.shape[1]),
            "y_min": float(data.y.min()), "y_max": float(data.y.max()),
        }
    write_json(data_dir / "summary.json", {"steps": summary, "genes": _as_dict(gene_report),
                                           "changes": changes})
    return summary


def _as_dict(report) -> dict:
    if hasattr(report, "to_dict"):
        return report.to_dict()
    if hasattr(report, "__dict__"):
        return {k: v for k, v in vars(report).items() if not k.startswith("_")}
    return dict(report)


@lru_cache(maxsize=16)
def _read_step(path: str, mtime: float) -> StepData:
    frame = pd.read_parquet(path)
    annotations = pd.read_parquet(path.replace(".parquet", ".annotations.parquet"))
    y = frame.pop("__y__")
    return StepData(Path(path).stem, frame.astype(np.float32), y, annotations)


def read_step(data_dir: Path, key: str) -> StepData:
    path = data_dir / f"{key}.parquet"
    return _read_step(str(path), path.stat().st_mtime)
