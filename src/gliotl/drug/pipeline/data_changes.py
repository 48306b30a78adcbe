"""What the documented data policies changed, for ``data_changes.json`` and the report.

A step averages a sample's repeated responses, drops non-finite responses and imputes missing
expression values in-fold (the training centre); the readers average repeated expression rows
and merge gene symbols. None of it may pass silently: each change is listed with the file, the
samples and fields it touched and what was done. A step whose responses are all equal cannot be
learned from, so it is an error rather than a run of NaN metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.io import read_json, write_json
from gliotl.errors import input_error

DATA_CHANGES = "data_changes.json"
_SHOWN = 20  # samples / fields listed per change; the count is always complete


def dataset_files(spec: Any) -> tuple[str, str]:
    """The (expression, response) files a dataset spec reads, as written in the run's config."""
    expression = (getattr(spec, "expression_path", None) or getattr(spec, "counts_path", None)
                  or getattr(spec, "path", None) or f"dataset kind '{spec.kind}'")
    responses = (getattr(spec, "response_path", None) or getattr(spec, "response_paths", None)
                 or getattr(spec, "series_matrix_path", None) or getattr(spec, "path", None)
                 or f"dataset kind '{spec.kind}'")
    if isinstance(responses, list):
        responses = ", ".join(map(str, responses))
    return str(expression), str(responses)


def _change(step: str, file: str, what: str, samples: list[str], fields: list[str] | None,
            done: str) -> dict[str, Any]:
    return {"step": step, "file": file, "what": what, "n_samples": len(samples),
            "samples": samples[:_SHOWN], "fields": (fields or [])[:_SHOWN], "done": done}


def response_changes(step: str, rows: pd.DataFrame, file: str, drug: str,
                     measure: str) -> list[dict[str, Any]]:
    """Repeated responses averaged and non-finite responses dropped, for one step."""
    field = f"{drug} {measure}"
    counts = rows.groupby("sample_id", sort=False).size()
    repeated = [str(s) for s in counts.index[counts > 1]]
    means = rows.groupby("sample_id", sort=False)["value"].mean()
    infinite = [str(s) for s in means.index[~np.isfinite(means.to_numpy(dtype=float))]]
    changes = []
    if repeated:
        changes.append(_change(step, file, "repeated response measurements", repeated, [field],
                               "averaged per sample"))
    if infinite:
        changes.append(_change(step, file, "non-finite (inf) response", infinite, [field],
                               "sample dropped from the step"))
    return changes


def expression_changes(step: str, X: pd.DataFrame, file: str) -> list[dict[str, Any]]:
    """Missing expression values of the step's samples, imputed in-fold."""
    missing = X.isna()
    if not missing.to_numpy().any():
        return []
    samples = [str(s) for s in X.index[missing.any(axis=1)]]
    genes = [str(g) for g in X.columns[missing.any(axis=0)]]
    return [_change(step, file, f"{int(missing.to_numpy().sum())} missing expression values",
                    samples, genes, "imputed with the training fold's centre (0 after scaling)")]


def reader_changes(dataset: str, notes: list[str], file: str) -> list[dict[str, Any]]:
    """What a reader resolved on its own (repeated rows averaged, symbols merged)."""
    return [{"step": None, "dataset": dataset, "file": file, "what": note, "n_samples": None,
             "samples": [], "fields": [], "done": "as noted"} for note in notes]


def require_varying(step: str, y: pd.Series, file: str, drug: str, measure: str) -> None:
    """All responses of a step equal: nothing to learn or rank; refuse before any training."""
    values = y.to_numpy(dtype=float)
    if len(values) and np.all(values == values[0]):
        raise input_error(file, f"steps.{step}", f"all {len(values)} {drug} {measure} "
                          f"responses are equal ({values[0]:g}) after filtering; expected "
                          "varying responses (a constant target cannot be learned)")


def record_data_changes(summary: Path, out: Path) -> None:
    """Write the changes the step preparation listed in ``summary`` as the run's own file."""
    write_json(out, {"changes": read_json(summary).get("changes", [])})


def changes_table(changes: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per change, for the report."""
    rows = [{"step": c.get("step") or c.get("dataset"), "file": c["file"], "what": c["what"],
             "samples": (f"{c['n_samples']}: " if c.get("n_samples") else "")
             + ", ".join(c["samples"]), "fields": ", ".join(c["fields"]), "done": c["done"]}
            for c in changes]
    return pd.DataFrame(rows, columns=["step", "file", "what", "samples", "fields", "done"])
