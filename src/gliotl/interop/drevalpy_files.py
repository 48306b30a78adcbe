"""Converters between gliotl's ``splits.csv`` / ``predictions.csv`` and drevalpy's files.

drevalpy (1.6.0) keeps one response table per split and role,
``<splits>/cv_split_<i>_<role>.csv`` (``cell_line_name, pubchem_id, response[, tissue]``;
roles ``train``, ``validation``, ``test`` and the optional ``validation_es`` and
``early_stopping``, both taken out of ``validation``), and one prediction table per split,
``<model>/[drugs/<drug>/]predictions/predictions_split_<i>.csv`` (the same columns plus
``predictions``). gliotl keeps one long table of sample IDs per (repeat, fold, role) and one of
predictions per (method, repeat, fold). Pure pandas: nothing here imports drevalpy.

A drevalpy split becomes gliotl fold ``i`` of repeat 0; its model was finally trained on
``train`` + ``validation``, so both are gliotl's ``train``. A gliotl fold becomes a drevalpy
split whose ``validation`` is gliotl's ``val`` role, or else a seeded share of the training
fold (drevalpy tunes hyper-parameters on it and then refits on train + validation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.core.io import read_table, require_columns, write_csv
from gliotl.errors import input_error

SPLIT_FILE = re.compile(r"^cv_split_(\d+)_(train|validation|test)\.csv$")
PREDICTION_FILE = re.compile(r"^predictions_split_(\d+)\.csv$")
_TEXT = {"keep_default_na": False, "na_values": [""],
         "dtype": {"cell_line_name": str, "pubchem_id": str, "gliotl_sample_id": str}}


def sample_ids_by_name(cell_line_names: str | Path) -> dict[str, str]:
    """drevalpy cell-line name -> gliotl sample ID, from a gliotl export's cell_line_names.csv."""
    lines = read_table(cell_line_names, **_TEXT)
    require_columns(lines, ["cell_line_name", "gliotl_sample_id"], cell_line_names)
    return dict(zip(lines["cell_line_name"], lines["gliotl_sample_id"], strict=True))


def _map_ids(names: pd.Series, ids: Mapping[str, str] | None) -> pd.Series:
    names = names.astype(str)
    return names if ids is None else names.map(lambda n: ids.get(n, n))


def _numbered(folder: Path, pattern: re.Pattern[str], what: str) -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = pattern.match(path.name)
        if match:
            role = match.group(2) if pattern.groups > 1 else ""
            found.append((int(match.group(1)), role, path))
    if not found:
        raise input_error(folder, None, f"no drevalpy {what} files found here")
    return sorted(found, key=lambda item: (item[0], item[1]))


def _rows(path: Path, drug: str | None) -> pd.DataFrame:
    table = read_table(path, **_TEXT)
    require_columns(table, ["cell_line_name", "pubchem_id"], path)
    return table if drug is None else table[table["pubchem_id"] == drug]


def read_drevalpy_splits(folder: str | Path, drug: str | None = None,
                         sample_ids: Mapping[str, str] | None = None) -> pd.DataFrame:
    """drevalpy's split folder as gliotl ``splits.csv`` rows (repeat 0, fold = split index);
    ``drug`` keeps one drug's rows (a gliotl target has one drug)."""
    parts = []
    for index, role, path in _numbered(Path(folder), SPLIT_FILE, "cv_split_<i>_<role>.csv"):
        rows = _rows(path, drug)
        parts.append(pd.DataFrame({
            "sample_id": _map_ids(rows["cell_line_name"], sample_ids).to_numpy(),
            "repeat": 0, "fold": index, "role": "test" if role == "test" else "train",
        }))
    splits = pd.concat(parts, ignore_index=True).drop_duplicates()
    return splits.sort_values(["repeat", "fold", "role", "sample_id"]).reset_index(drop=True)


def read_drevalpy_predictions(folder: str | Path, method: str, drug: str | None = None,
                              sample_ids: Mapping[str, str] | None = None) -> pd.DataFrame:
    """drevalpy's ``predictions_split_<i>.csv`` files as gliotl ``predictions.csv`` rows."""
    parts = []
    for index, _, path in _numbered(Path(folder), PREDICTION_FILE, "predictions_split_<i>.csv"):
        rows = _rows(path, drug)
        require_columns(rows, ["response", "predictions"], path)
        parts.append(pd.DataFrame({
            "method": method,
            "sample_id": _map_ids(rows["cell_line_name"], sample_ids).to_numpy(),
            "repeat": 0, "fold": index, "role": "test",
            "y_true": pd.to_numeric(rows["response"]).to_numpy(float),
            "y_pred": pd.to_numeric(rows["predictions"]).to_numpy(float),
        }))
    return pd.concat(parts, ignore_index=True)


def _names(ids: pd.Series, names: Mapping[str, str] | None) -> pd.Series:
    """gliotl sample ID -> drevalpy cell-line name (the inverse of :func:`sample_ids_by_name`)."""
    if names is None:
        return ids.astype(str)
    inverse = {v: k for k, v in names.items()}
    return ids.astype(str).map(lambda s: inverse.get(s, s))


def gliotl_folds(splits: pd.DataFrame, repeat: int = 0, validation_share: float = 0.1,
                 seed: int = 0) -> list[dict[str, list[str]]]:
    """The sample IDs of each role of each fold of one ``repeat``, in drevalpy's roles."""
    chosen = splits[splits["repeat"].astype(int) == repeat]
    if chosen.empty:
        raise input_error("splits.csv", "repeat", f"no rows of repeat {repeat}")
    rng = np.random.default_rng(seed)
    folds = []
    for _, fold in chosen.groupby(chosen["fold"].astype(int), sort=True):
        by_role = {r: sorted(fold.loc[fold["role"] == r, "sample_id"].astype(str))
                   for r in ("train", "val", "test")}
        train, validation = by_role["train"], by_role["val"]
        if not validation:
            n_val = max(1, round(validation_share * len(train)))
            picked = set(rng.choice(train, size=n_val, replace=False).tolist())
            train, validation = [s for s in train if s not in picked], sorted(picked)
        folds.append({"train": train, "validation": validation, "test": by_role["test"]})
    return folds


def write_drevalpy_splits(splits: pd.DataFrame, responses: pd.DataFrame, folder: str | Path,
                          repeat: int = 0, names: Mapping[str, str] | None = None,
                          seed: int = 0) -> list[Path]:
    """One repeat of gliotl ``splits`` as drevalpy split files in ``folder``; ``responses`` are
    drevalpy response rows (``cell_line_name, pubchem_id, response[, tissue]``) of the target."""
    require_columns(responses, ["cell_line_name", "pubchem_id", "response"], "responses")
    written = []
    for index, fold in enumerate(gliotl_folds(splits, repeat, seed=seed)):
        for role, ids in fold.items():
            wanted = set(_names(pd.Series(ids, dtype=str), names))
            rows = responses[responses["cell_line_name"].astype(str).isin(wanted)]
            written.append(write_csv(Path(folder) / f"cv_split_{index}_{role}.csv", rows))
    return written


def write_drevalpy_predictions(predictions: pd.DataFrame, folder: str | Path, drug_id: str,
                               repeat: int = 0, names: Mapping[str, str] | None = None
                               ) -> list[Path]:
    """gliotl ``predictions`` of one repeat as ``<folder>/<method>/predictions/
    predictions_split_<fold>.csv`` (test rows only, drug ``drug_id``)."""
    rows = predictions[(predictions["repeat"].astype(int) == repeat)
                       & (predictions["role"] == "test")]
    written = []
    for (method, fold), group in rows.groupby(["method", rows["fold"].astype(int)], sort=True):
        table = pd.DataFrame({"cell_line_name": _names(group["sample_id"], names).to_numpy(),
                              "pubchem_id": drug_id, "response": group["y_true"].to_numpy(),
                              "predictions": group["y_pred"].to_numpy()})
        path = Path(folder) / str(method) / "predictions" / f"predictions_split_{fold}.csv"
        written.append(write_csv(path, table))
    return written
