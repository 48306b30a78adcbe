"""drevalpy's on-disk data contract, read and written, so data can move between the two tools.

Layout: ``<dir>/<name>/<name>.csv`` holds the responses (``cell_line_name``, a drug identifier
column ``pubchem_id``, ``tissue``, one column per measure such as ``LN_IC50`` / ``AUC``), and
``<dir>/<name>/gene_expression.csv`` holds expression indexed by ``cell_line_name`` (an optional
``cellosaurus_id`` column is carried along, not read as a gene). drevalpy treats ``pubchem_id``
as an opaque drug key; gliotl writes its drug label there when it knows no PubChem ID.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gliotl.core.io import read_table, require_columns, write_csv
from gliotl.drug.data._common import average_duplicate_samples, require_overlap, to_numeric_frame
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.harmonise import given_symbols, harmonise_expression, key_samples
from gliotl.errors import input_error

DRUG_COLUMNS = ("pubchem_id", "drug_name", "drug", "drug_id")
ID_COLUMNS = {"cell_line_name", "cellosaurus_id", "tissue", "tissue_sub_type", "cosmic_id",
              "release", "replicate", "gliotl_sample_id", *DRUG_COLUMNS}
# drevalpy's own prediction files carry these next to the response; they are not measures.
PREDICTION_COLUMN = "predictions"
_FEATURE_INDEX = re.compile(r"^feature_\d+$")
# Cell lines and drugs are names: 'NA' is a cell line, not a missing value.
_AS_TEXT = {"keep_default_na": False, "na_values": [""],
            "dtype": {"cell_line_name": str, "pubchem_id": str, "drug_name": str, "tissue": str,
                      "tissue_sub_type": str, "cosmic_id": str, "cellosaurus_id": str,
                      "gliotl_sample_id": str, "release": str, "published_name": str}}


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


def _measure_columns(table: pd.DataFrame, measures: Sequence[str] | None, source: Path,
                     notes: list[str]) -> list[str]:
    """The response measures: numeric columns that are neither IDs, drevalpy predictions nor
    feature-index columns (both skipped, and said so)."""
    skipped = [c for c in table.columns if c == PREDICTION_COLUMN or _FEATURE_INDEX.match(str(c))]
    if skipped and measures is None:
        notes.append(f"{source.name}: columns {', '.join(map(str, skipped))} skipped "
                     "(drevalpy predictions / feature indices, not response measures)")
    if measures is None:
        measures = [c for c in table.columns if c not in ID_COLUMNS and c not in skipped
                    and pd.to_numeric(table[c], errors="coerce").notna().any()]
    require_columns(table, list(measures), source)
    if not measures:
        raise input_error(source, "LN_IC50", "no response measure column found")
    return list(measures)


def _drug_labels(table: pd.DataFrame, drug_col: str, folder: Path) -> pd.Series:
    """Drug names through ``drug_names.csv`` (drevalpy keys drugs by PubChem ID); IDs it does
    not list keep the ID."""
    ids = table[drug_col].astype(str)
    names_path = folder / "drug_names.csv"
    if drug_col != "pubchem_id" or not names_path.is_file() or "drug_name" in table.columns:
        return table["drug_name"].astype(str) if "drug_name" in table.columns else ids
    names = read_table(names_path, **_AS_TEXT)
    require_columns(names, ["pubchem_id", "drug_name"], names_path)
    names = names.dropna(subset=["drug_name"]).drop_duplicates("pubchem_id")
    label = names["drug_name"].astype(str)
    shared = label.duplicated(keep=False)  # one name, several compounds: keep them apart
    label = label.where(~shared, label + " (" + names["pubchem_id"].astype(str) + ")")
    by_id = dict(zip(names["pubchem_id"].astype(str), label, strict=True))
    return ids.map(lambda d: by_id.get(d, d))


def _sample_map(names: pd.Series, lines: pd.DataFrame | None, label: str,
                notes: list[str]) -> dict[str, str]:
    """Cell-line name -> sample_id: the ID a gliotl export recorded, else the normalised key;
    names that share a key keep apart as ``key@name`` (which of them is meant cannot be told)."""
    if lines is not None and "gliotl_sample_id" in lines.columns:
        recorded = dict(zip(lines["cell_line_name"].astype(str),
                            lines["gliotl_sample_id"].astype(str), strict=True))
        if set(names.astype(str)) <= set(recorded):
            return recorded
    mapping, collisions = key_samples(names)
    for key, raws in collisions.items():
        notes.append(f"{label}: names {' / '.join(raws)} share the key '{key}'; kept apart")
        mapping.update({raw: f"{key}@{raw}" for raw in raws})
    return mapping


def _cell_lines(folder: Path) -> pd.DataFrame | None:
    path = folder / "cell_line_names.csv"
    if not path.is_file():
        return None
    lines = read_table(path, **_AS_TEXT)
    require_columns(lines, ["cell_line_name"], path)
    return lines


def _read_expression(path: Path, lines: pd.DataFrame | None, notes: list[str]) -> tuple[
    pd.DataFrame, dict[str, str], dict[str, str], dict[str, str]
]:
    """Expression by sample ID, the symbols as given, name -> sample ID, sample -> Cellosaurus."""
    frame = read_table(path, **_AS_TEXT)
    require_columns(frame, ["cell_line_name"], path)
    genes = [c for c in frame.columns if c not in ("cell_line_name", "cellosaurus_id")]
    expression = to_numeric_frame(frame[genes].set_axis(frame["cell_line_name"].astype(str)),
                                  path, "expression values", finite=True)
    expr_map = _sample_map(frame["cell_line_name"], lines, "expression", notes)
    expression.index = frame["cell_line_name"].astype(str).map(expr_map)
    expression = average_duplicate_samples(expression, path, notes)
    symbols = given_symbols(expression.columns)
    expression, merged = harmonise_expression(expression)
    if merged:
        notes.append(f"{merged} duplicate gene symbols averaged")
    cellosaurus = {}
    if "cellosaurus_id" in frame.columns:
        cellosaurus = dict(zip(frame["cell_line_name"].astype(str).map(expr_map),
                               frame["cellosaurus_id"], strict=True))
    return expression, symbols, expr_map, cellosaurus


def _sample_table(table: pd.DataFrame, ids: pd.Series, lines: pd.DataFrame | None,
                  names: dict[str, str], cellosaurus: dict[str, str]) -> pd.DataFrame:
    samples = pd.DataFrame({"cell_line_name": pd.Series(names)})
    for column in ("tissue", "tissue_sub_type", "cosmic_id"):
        if column in table.columns:
            samples[column] = pd.Series(table[column].to_numpy(), index=ids.to_numpy()).groupby(
                level=0).first()
    if lines is not None:
        recorded = (lines["gliotl_sample_id"] if "gliotl_sample_id" in lines.columns else
                    lines["cell_line_name"].astype(str).map({n: s for s, n in names.items()}))
        by_sample = lines.assign(sample_id=recorded)
        by_sample = by_sample.dropna(subset=["sample_id"]).drop_duplicates("sample_id")
        by_sample = by_sample.set_index("sample_id")
        if "published_name" in by_sample.columns:
            by_sample["cell_line_name"] = by_sample["published_name"]
        for column in ("cell_line_name", "tissue", "tissue_sub_type", "cosmic_id",
                       "cellosaurus_id"):
            if column in by_sample.columns:
                listed = pd.Series(samples.index.map(by_sample[column]), index=samples.index)
                current = samples[column] if column in samples.columns else listed
                samples[column] = (listed.combine_first(current) if column == "cell_line_name"
                                   else current.combine_first(listed))
    if cellosaurus and "cellosaurus_id" not in samples.columns:
        samples["cellosaurus_id"] = samples.index.map(cellosaurus)
    return samples


def read_drevalpy(path: str | Path, dataset_name: str | None = None,
                  measures: Sequence[str] | None = None) -> DrugDataset:
    """Read a drevalpy dataset folder (``path`` is the data root or the dataset folder)."""
    folder, name = _folder(path, dataset_name)
    response_path = folder / f"{name}.csv"
    table = read_table(response_path, **_AS_TEXT)
    require_columns(table, ["cell_line_name"], response_path)
    drug_col = next((c for c in DRUG_COLUMNS if c in table.columns), None)
    if drug_col is None:
        raise input_error(response_path, "pubchem_id", "required drug column missing")
    notes: list[str] = []
    measures = _measure_columns(table, measures, response_path, notes)
    values = to_numeric_frame(table[measures], response_path, "response values")
    lines = _cell_lines(folder)
    expression_path = folder / "gene_expression.csv"
    expression, symbols, expr_map, cellosaurus = _read_expression(expression_path, lines, notes)
    resp_map = _sample_map(table["cell_line_name"], lines, "response", notes)
    ids = table["cell_line_name"].astype(str).map(resp_map)
    require_overlap(set(expression.index), set(ids), response_path, "cell_line_name",
                    f"the expression file {expression_path}")
    release = table["release"].fillna(name).astype(str) if "release" in table.columns else name
    long = values.assign(sample_id=ids, drug=_drug_labels(table, drug_col, folder),
                         source=release).melt(
        id_vars=["sample_id", "drug", "source"], var_name="measure", value_name="value"
    ).dropna(subset=["value"])
    long = long[["sample_id", "drug", "measure", "value", "source"]]
    names = {v: k for k, v in {**resp_map, **expr_map}.items()}
    samples = _sample_table(table, ids, lines, names, cellosaurus)
    return DrugDataset(name=name, expression=expression, response=long, samples=samples,
                       notes=notes, gene_symbols=symbols)


def write_drevalpy(dataset: DrugDataset, path: str | Path, dataset_name: str | None = None,
                   source: str | None = None) -> Path:
    """Write ``dataset`` in drevalpy's layout; returns the dataset folder.

    One response row per (cell line, drug) with one column per measure; repeated measurements
    (and several sources unless ``source`` picks one) are averaged. This compact form feeds the
    synthetic chain; :func:`gliotl.drug.data.drevalpy_export.export_drevalpy` (``gliotl data
    export``) is the lossless export that drevalpy's models run on.
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
