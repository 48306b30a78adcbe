"""Any CSV / TSV / Parquet / XLSX data set, described by a column mapping in the config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from gliotl.core.io import read_table, require_columns
from gliotl.drug.data._common import (
    average_duplicate_samples,
    read_expression_table,
    require_overlap,
    to_numeric_frame,
)
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.harmonise import harmonise_expression, key_samples
from gliotl.drug.data.loaders import TableSpec
from gliotl.errors import input_error


def read_table_dataset(spec: TableSpec) -> DrugDataset:
    """Read a dataset from generic tables; the spec's paths must already be resolved.

    Response either long (``measure_column`` + ``value_column``) or wide (``value_columns``:
    measure -> column). The drug comes from ``drug_column`` or is the constant ``drug``.
    ``annotations`` maps output annotation names (tissue, mgmt_status, ...) to columns of the
    samples table (or of the response table when no samples table is given).
    """
    expression = _read_expression(spec)
    table = read_table(spec.response_path)
    long = _long_responses(spec, table)
    notes: list[str] = []
    expr_map, resp_map = _sample_keys(spec, expression.index, long["raw"], notes)
    expression.index = expression.index.map(expr_map)
    expression = average_duplicate_samples(expression, Path(spec.expression_path), notes)
    expression, merged = harmonise_expression(expression)
    if merged:
        notes.append(f"{merged} duplicate gene symbols averaged")
    long["sample_id"] = long["raw"].map(resp_map)
    require_overlap(set(expression.index), set(long["sample_id"]), Path(spec.response_path),
                    spec.sample_column, f"the expression file {Path(spec.expression_path)}")
    samples = pd.DataFrame({"name": pd.Series({v: k for k, v in {**resp_map, **expr_map}.items()})})
    if spec.annotations:
        _annotate(samples, spec, table, resp_map)
    return DrugDataset(name=spec.name, expression=expression,
                       response=long.drop(columns="raw").assign(source=spec.name),
                       samples=samples, notes=notes)


def _read_expression(spec: TableSpec) -> pd.DataFrame:
    """Numeric samples x genes, sample names stripped (not yet keyed)."""
    return read_expression_table(spec.expression_path, spec.expression_id_column,
                                 spec.expression_orientation == "genes_by_samples")


def _measure_columns(spec: TableSpec) -> dict[str, str]:
    """Wide layout: measure -> column; empty for the long layout; an error for neither."""
    if spec.value_columns:
        return dict(spec.value_columns)
    if spec.measure_column and spec.value_column:
        return {}
    raise input_error(Path(spec.response_path), "value_columns",
                      "give value_columns, or measure_column and value_column")


def _long_responses(spec: TableSpec, table: pd.DataFrame) -> pd.DataFrame:
    """One row per (raw sample name, drug, measure) with a value; missing values dropped."""
    path = Path(spec.response_path)
    measures = _measure_columns(spec)
    layout = list(measures.values()) if measures else [spec.measure_column, spec.value_column]
    needed = [spec.sample_column, *([spec.drug_column] if spec.drug_column else []), *layout]
    require_columns(table, needed, path)
    if spec.drug_column is None and spec.drug is None:
        raise input_error(path, "drug", "give drug_column or a constant drug name")
    drugs = table[spec.drug_column].astype(str) if spec.drug_column else \
        pd.Series(spec.drug, index=table.index)
    raw = table[spec.sample_column].astype(str)
    if measures:
        values = to_numeric_frame(table[list(measures.values())], path, "responses")
        values.columns = list(measures)
        long = values.assign(raw=raw, drug=drugs).melt(
            id_vars=["raw", "drug"], var_name="measure", value_name="value")
    else:
        values = to_numeric_frame(table[[spec.value_column]], path, "responses")
        long = pd.DataFrame({"raw": raw, "drug": drugs,
                             "measure": table[spec.measure_column].astype(str),
                             "value": values[spec.value_column]})
    return long.dropna(subset=["value"])


def _sample_keys(spec: TableSpec, expression_names: pd.Index, response_names: pd.Series,
                 notes: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Raw name -> sample key for expression and responses (identity without normalising)."""
    if not spec.normalise_keys:
        return {s: s for s in expression_names}, {s: s for s in response_names}
    expr_map, collisions = key_samples(expression_names)
    for key, raws in collisions.items():
        notes.append(f"expression: names {' / '.join(raws)} share key '{key}'; averaged")
    resp_map, _ = key_samples(response_names)
    return expr_map, resp_map


def _annotate(samples: pd.DataFrame, spec: TableSpec, table: pd.DataFrame,
              resp_map: Mapping[str, str]) -> None:
    """Add the ``annotations`` columns from the samples table (or the response table)."""
    if spec.samples_path:
        source, sid = Path(spec.samples_path), spec.samples_id_column
        annot = read_table(source)
    else:
        source, sid, annot = Path(spec.response_path), spec.sample_column, table
    annotations = spec.annotations or {}
    require_columns(annot, [sid or annot.columns[0], *annotations.values()], source)
    sid = sid or annot.columns[0]
    keys = annot[sid].astype(str).map(_annotation_key(spec, resp_map))
    for out, column in annotations.items():
        samples[out] = pd.Series(annot[column].to_numpy(), index=keys).groupby(level=0).first()


def _annotation_key(spec: TableSpec, resp_map: Mapping[str, str]) -> Mapping | Callable:
    """Response-table names are keyed as before; a samples table's names are keyed alone."""
    if not spec.samples_path:
        return resp_map
    if not spec.normalise_keys:
        return lambda s: s
    return lambda s: key_samples([s])[0][s]
