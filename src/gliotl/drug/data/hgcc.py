"""HGCC (Human Glioblastoma Cell Culture resource): expression matrix + drug AUC table.

Culture names appear as ``U3065MG`` in one file and ``U3065`` in another, so samples are keyed
with the culture suffix dropped (``u3065``). Every ``AUC_<Drug>`` column of the response table
is read (``AUC_Temozolomide`` is the one the paper uses); repeated rows of a culture are averaged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pandas as pd

from gliotl.core.io import read_table
from gliotl.drug.data._common import require_overlap, to_numeric_frame
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.harmonise import harmonise_expression, key_samples
from gliotl.errors import input_error

_CULTURE = re.compile(r"^U\d+", re.IGNORECASE)
SAMPLE_COLUMN_NAMES = ("sample", "sample_id", "cell_line", "cell line", "culture", "cellline",
                       "cell_line_name", "id", "name")


def _looks_like_cultures(values: pd.Series) -> bool:
    text = values.dropna().astype(str).str.strip()
    return len(text) > 0 and text.str.match(_CULTURE).mean() >= 0.5


def _sample_column(frame: pd.DataFrame, path: Path, wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in frame.columns:
            raise input_error(path, wanted, "sample column missing")
        return wanted
    for column in frame.columns:
        if str(column).strip().lower() in SAMPLE_COLUMN_NAMES:
            return column
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) and _looks_like_cultures(frame[column]):
            return column
    raise input_error(path, "sample", "no column of culture IDs (U3065MG, ...) found")


def read_hgcc_expression(
    path: str | Path,
    orientation: Literal["auto", "genes_by_samples", "samples_by_genes"] = "auto",
) -> pd.DataFrame:
    """Expression as culture name x gene; ``auto`` finds culture IDs in the header or column 1."""
    path = Path(path)
    frame = read_table(path)
    first = frame.columns[0]
    if orientation == "auto":
        header_cultures = sum(bool(_CULTURE.match(str(c))) for c in frame.columns[1:])
        orientation = ("genes_by_samples" if header_cultures >= max(1, (len(frame.columns) - 1) / 2)
                       else "samples_by_genes")
    frame = frame.set_index(first)
    frame.index = frame.index.astype(str).str.strip()
    values = to_numeric_frame(frame, path, "expression values", finite=True)
    if orientation == "genes_by_samples":
        values = values.T
    values.index = values.index.astype(str).str.strip()
    return values


def read_hgcc(
    expression_path: str | Path,
    response_path: str | Path,
    orientation: Literal["auto", "genes_by_samples", "samples_by_genes"] = "auto",
    sample_column: str | None = None,
    response_prefix: str = "AUC_",
    measure: str = "AUC",
    name: str = "HGCC",
) -> DrugDataset:
    """Read HGCC expression and its ``AUC_<Drug>`` response table into one dataset."""
    expression_path, response_path = Path(expression_path), Path(response_path)
    expression = read_hgcc_expression(expression_path, orientation)
    table = read_table(response_path)
    sample_col = _sample_column(table, response_path, sample_column)
    drug_columns = [c for c in table.columns if str(c).startswith(response_prefix)]
    if not drug_columns:
        raise input_error(response_path, f"{response_prefix}Temozolomide",
                          f"no response column named {response_prefix}<Drug>")
    values = to_numeric_frame(table[drug_columns], response_path, "response values")
    notes: list[str] = []
    expr_map, expr_coll = key_samples(expression.index, drop_culture_suffix=True)
    resp_map, resp_coll = key_samples(table[sample_col], drop_culture_suffix=True)
    for label, coll in (("expression", expr_coll), ("response", resp_coll)):
        for key, raws in coll.items():
            notes.append(f"{label}: names {' / '.join(raws)} share key '{key}'; averaged")
    expression.index = [expr_map[n] for n in expression.index]
    expression = expression.groupby(level=0, sort=False).mean()
    expression, merged = harmonise_expression(expression)
    if merged:
        notes.append(f"{merged} duplicate gene symbols averaged")
    values.insert(0, "sample_id", table[sample_col].astype(str).map(resp_map).to_numpy())
    values = values.dropna(subset=["sample_id"])
    repeated = int(values["sample_id"].duplicated().sum())
    if repeated:
        notes.append(f"{repeated} repeated response rows averaged")
    per_sample = values.groupby("sample_id", sort=False)[drug_columns].mean()
    require_overlap(set(expression.index), set(per_sample.index), response_path, sample_col,
                    f"the expression file {expression_path}")
    long = per_sample.reset_index().melt(id_vars="sample_id", var_name="column",
                                         value_name="value").dropna(subset=["value"])
    long["drug"] = long["column"].str[len(response_prefix):]
    long["measure"] = measure
    long["source"] = name
    names = {**{v: k for k, v in resp_map.items()}, **{v: k for k, v in expr_map.items()}}
    samples = pd.DataFrame({"culture": pd.Series(names)})
    samples["tissue"] = "glioblastoma"
    return DrugDataset(name=name, expression=expression,
                       response=long[["sample_id", "drug", "measure", "value", "source"]],
                       samples=samples, notes=notes)
