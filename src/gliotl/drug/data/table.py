"""Any CSV / TSV / Parquet / XLSX data set, described by a column mapping in the config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import pandas as pd

from gliotl.core.io import read_table, require_columns
from gliotl.drug.data._common import require_overlap, to_numeric_frame
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.harmonise import harmonise_expression, key_samples
from gliotl.errors import input_error


def read_table_dataset(
    expression_path: str | Path,
    response_path: str | Path,
    sample_column: str,
    expression_orientation: Literal["samples_by_genes", "genes_by_samples"] = "samples_by_genes",
    expression_id_column: str | None = None,
    drug_column: str | None = None,
    drug: str | None = None,
    measure_column: str | None = None,
    value_column: str | None = None,
    value_columns: Mapping[str, str] | None = None,
    samples_path: str | Path | None = None,
    samples_id_column: str | None = None,
    annotations: Mapping[str, str] | None = None,
    normalise_keys: bool = True,
    name: str = "table",
) -> DrugDataset:
    """Read a dataset from generic tables.

    Response either long (``measure_column`` + ``value_column``) or wide (``value_columns``:
    measure -> column). The drug comes from ``drug_column`` or is the constant ``drug``.
    ``annotations`` maps output annotation names (tissue, mgmt_status, ...) to columns of the
    samples table (or of the response table when no samples table is given).
    """
    expression_path, response_path = Path(expression_path), Path(response_path)
    frame = read_table(expression_path)
    id_col = expression_id_column or frame.columns[0]
    require_columns(frame, [id_col], expression_path)
    frame = frame.set_index(id_col)
    expression = to_numeric_frame(frame, expression_path, "expression values")
    if expression_orientation == "genes_by_samples":
        expression = expression.T
    expression.index = expression.index.astype(str).str.strip()

    table = read_table(response_path)
    if value_columns:
        measures = dict(value_columns)
    elif measure_column and value_column:
        measures = {}
    else:
        raise input_error(response_path, "value_columns",
                          "give value_columns, or measure_column and value_column")
    needed = [sample_column, *( [drug_column] if drug_column else []),
              *measures.values(), *([measure_column, value_column] if not measures else [])]
    require_columns(table, needed, response_path)
    if drug_column is None and drug is None:
        raise input_error(response_path, "drug", "give drug_column or a constant drug name")
    drugs = table[drug_column].astype(str) if drug_column else pd.Series(drug, index=table.index)
    if measures:
        values = to_numeric_frame(table[list(measures.values())], response_path, "responses")
        values.columns = list(measures)
        long = values.assign(raw=table[sample_column].astype(str), drug=drugs).melt(
            id_vars=["raw", "drug"], var_name="measure", value_name="value")
    else:
        values = to_numeric_frame(table[[value_column]], response_path, "responses")
        long = pd.DataFrame({"raw": table[sample_column].astype(str), "drug": drugs,
                             "measure": table[measure_column].astype(str),
                             "value": values[value_column]})
    long = long.dropna(subset=["value"])

    notes: list[str] = []
    if normalise_keys:
        expr_map, collisions = key_samples(expression.index)
        for key, raws in collisions.items():
            notes.append(f"expression: names {' / '.join(raws)} share key '{key}'; averaged")
        resp_map, _ = key_samples(long["raw"])
    else:
        expr_map = {s: s for s in expression.index}
        resp_map = {s: s for s in long["raw"]}
    expression.index = expression.index.map(expr_map)
    expression = expression.groupby(level=0, sort=False).mean()
    expression, merged = harmonise_expression(expression)
    if merged:
        notes.append(f"{merged} duplicate gene symbols averaged")
    long["sample_id"] = long["raw"].map(resp_map)
    require_overlap(set(expression.index), set(long["sample_id"]), response_path, sample_column,
                    f"the expression file {expression_path}")
    samples = pd.DataFrame({"name": pd.Series({v: k for k, v in {**resp_map, **expr_map}.items()})})
    if annotations:
        source, sid = (Path(samples_path), samples_id_column) if samples_path else \
            (response_path, sample_column)
        annot = read_table(source) if samples_path else table
        require_columns(annot, [sid or annot.columns[0], *annotations.values()], source)
        sid = sid or annot.columns[0]
        keys = annot[sid].astype(str).map(resp_map if not samples_path else
                                          (lambda s: key_samples([s])[0][s]
                                           if normalise_keys else s))
        for out, column in annotations.items():
            samples[out] = pd.Series(annot[column].to_numpy(), index=keys).groupby(
                level=0).first()
    return DrugDataset(name=name, expression=expression,
                       response=long.drop(columns="raw").assign(source=name),
                       samples=samples, notes=notes)
