"""drevalpy's on-disk data contract, read and written, so data can move between the two tools.

Layout: ``<dir>/<name>/<name>.csv`` holds the responses (``cell_line_name``, a drug identifier
column ``pubchem_id``, ``tissue``, one column per measure such as ``LN_IC50`` / ``AUC``), and
``<dir>/<name>/gene_expression.csv`` holds expression indexed by ``cell_line_name`` (an optional
``cellosaurus_id`` column is carried along, not read as a gene). drevalpy treats ``pubchem_id``
as an opaque drug key; gliotl writes its drug label there when it knows no PubChem ID.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gliotl.core.io import read_table, require_columns, write_csv
from gliotl.drug.data._common import require_overlap, to_numeric_frame
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.harmonise import harmonise_expression, key_samples
from gliotl.errors import input_error

DRUG_COLUMNS = ("pubchem_id", "drug_name", "drug", "drug_id")
ID_COLUMNS = {"cell_line_name", "cellosaurus_id", "tissue", *DRUG_COLUMNS}


def _folder(path: str | Path, dataset_name: str | None) -> tuple[Path, str]:
    path = Path(path)
    if dataset_name is None:
        if (path / f"{path.name}.csv").is_file():
            return path, path.name
        candidates = [p for p in sorted(path.glob("*/")) if (p / f"{p.name}.csv").is_file()]
        if len(candidates) != 1:
            raise input_error(path, "dataset_name", "expected a folder <name>/<name>.csv "
                              f"(found {len(candidates)} candidates); name the dataset")
        return candidates[0], candidates[0].name
    return path / dataset_name, dataset_name


def read_drevalpy(path: str | Path, dataset_name: str | None = None,
                  measures: Sequence[str] | None = None) -> DrugDataset:
    """Read a drevalpy dataset folder (``path`` is the data root or the dataset folder)."""
    folder, name = _folder(path, dataset_name)
    response_path = folder / f"{name}.csv"
    expression_path = folder / "gene_expression.csv"
    table = read_table(response_path)
    require_columns(table, ["cell_line_name"], response_path)
    drug_col = next((c for c in DRUG_COLUMNS if c in table.columns), None)
    if drug_col is None:
        raise input_error(response_path, "pubchem_id", "required drug column missing")
    if measures is None:
        measures = [c for c in table.columns if c not in ID_COLUMNS
                    and pd.to_numeric(table[c], errors="coerce").notna().any()]
    require_columns(table, list(measures), response_path)
    if not measures:
        raise input_error(response_path, "LN_IC50", "no response measure column found")
    values = to_numeric_frame(table[list(measures)], response_path, "response values")

    frame = read_table(expression_path)
    require_columns(frame, ["cell_line_name"], expression_path)
    genes = [c for c in frame.columns if c not in ("cell_line_name", "cellosaurus_id")]
    expression = to_numeric_frame(frame[genes], expression_path, "expression values")
    notes: list[str] = []
    expr_map, collisions = key_samples(frame["cell_line_name"])
    if collisions:
        raise input_error(expression_path, "cell_line_name",
                          f"names {next(iter(collisions.values()))} denote the same key")
    expression.index = frame["cell_line_name"].astype(str).map(expr_map)
    expression = expression.groupby(level=0, sort=False).mean()
    expression, merged = harmonise_expression(expression)
    if merged:
        notes.append(f"{merged} duplicate gene symbols averaged")
    resp_map, _ = key_samples(table["cell_line_name"])
    ids = table["cell_line_name"].astype(str).map(resp_map)
    require_overlap(set(expression.index), set(ids), response_path, "cell_line_name",
                    f"the expression file {expression_path}")
    long = values.assign(sample_id=ids, drug=table[drug_col].astype(str)).melt(
        id_vars=["sample_id", "drug"], var_name="measure", value_name="value"
    ).dropna(subset=["value"]).assign(source=name)
    samples = pd.DataFrame({"cell_line_name": pd.Series({v: k for k, v in
                                                         {**resp_map, **expr_map}.items()})})
    if "tissue" in table.columns:
        samples["tissue"] = pd.Series(table["tissue"].to_numpy(), index=ids).groupby(
            level=0).first()
    if "cellosaurus_id" in frame.columns:
        samples["cellosaurus_id"] = pd.Series(frame["cellosaurus_id"].to_numpy(),
                                              index=frame["cell_line_name"].map(expr_map))
    return DrugDataset(name=name, expression=expression, response=long, samples=samples,
                       notes=notes)


def write_drevalpy(dataset: DrugDataset, path: str | Path, dataset_name: str | None = None,
                   source: str | None = None) -> Path:
    """Write ``dataset`` in drevalpy's layout; returns the dataset folder.

    One response row per (cell line, drug) with one column per measure; repeated measurements
    (and several sources unless ``source`` picks one) are averaged.
    """
    name = dataset_name or dataset.name
    folder = Path(path) / name
    response = dataset.response
    if source is not None:
        response = response[response["source"] == source]
    wide = response.pivot_table(index=["sample_id", "drug"], columns="measure", values="value",
                                aggfunc="mean").reset_index()
    wide.columns.name = None
    names = dataset.samples.get("cell_line_name", pd.Series(dtype=object))
    ids = wide["sample_id"].astype(str)
    wide.insert(0, "cell_line_name", ids.map(names).astype(object).fillna(ids).astype(str))
    wide = wide.rename(columns={"drug": "pubchem_id"}).drop(columns="sample_id")
    tissue = dataset.samples.get("tissue")
    by_name = dict(zip(dataset.samples.index.map(lambda s: names.get(s, s)),
                       tissue if tissue is not None else [pd.NA] * len(dataset.samples),
                       strict=True))
    wide.insert(2, "tissue", wide["cell_line_name"].map(by_name))
    write_csv(folder / f"{name}.csv", wide)
    expression = dataset.expression.copy()
    expression.index = [str(names.get(s, s)) if pd.notna(names.get(s, s)) else s
                        for s in expression.index]
    expression.index.name = "cell_line_name"
    write_csv(folder / "gene_expression.csv", expression.reset_index())
    return folder
