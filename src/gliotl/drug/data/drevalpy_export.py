"""Export a gliotl dataset as a drevalpy data root that drevalpy's loaders and models run on.

Layout written under the new folder ``OUT`` (drevalpy 1.6.0's contract)::

    OUT/<name>/<name>.csv            responses: cell_line_name, pubchem_id, drug_name, tissue,
                                     tissue_sub_type, cosmic_id, release, replicate, <measures>
    OUT/<name>/gene_expression.csv   cell_line_name + one column per gene, symbols as given
    OUT/<name>/cell_line_names.csv   cell_line_name (unique), gliotl_sample_id, published_name,
                                     cellosaurus_id, cosmic_id, tissue, tissue_sub_type
    OUT/<name>/drug_names.csv        pubchem_id (unique), drug_name
    OUT/meta/gene_lists/all_genes.csv   Symbol: every exported gene (``gene_list: all_genes``)
    OUT/export.json                  what was exported, from what, with which options

Nothing is lost on the way: releases stay apart (``release``), replicates stay rows of their own
unless averaged on request (within a release, never across), cell-line and drug IDs are unique
and stable (the published name, or gliotl's sample key where two lines share a name), and an
unknown tissue stays an empty cell, never the text ``nan``. drevalpy itself reads an empty
tissue as ``'nan'`` (``astype(str)``), so the export reports how many lines lack one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from gliotl.core.config import SafeName
from gliotl.core.io import current_umask, write_csv, write_json
from gliotl.drug.data.dataset import DrugDataset
from gliotl.errors import input_error

Replicates = Literal["keep", "mean"]
ALL_GENES_LIST = "all_genes"
# drevalpy downloads these by name instead of reading the folder (its AVAILABLE_DATASETS).
DREVALPY_BUILTIN_NAMES = frozenset({
    "GDSC1", "GDSC2", "CCLE", "TOYv1", "TOYv2", "CTRPv1", "CTRPv2", "CTRPv2_clean",
    "CTRPv2_cleaner", "CTRPv2_cleanest", "BeatAML2", "PDX_Bruna",
})
_ANNOTATIONS = ("cellosaurus_id", "cosmic_id", "tissue", "tissue_sub_type")


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote, for the command's one-paragraph report."""

    folder: Path
    name: str
    n_rows: int
    n_cell_lines: int
    n_drugs: int
    n_genes: int
    releases: list[str]
    without_tissue: int


def _unique_cell_line_names(dataset: DrugDataset, sample_ids: list[str]) -> pd.Series:
    """Published name per sample; gliotl's key where several samples share a name."""
    names = dataset.samples.get("cell_line_name", pd.Series(dtype=object))
    published = pd.Series([names.get(s) for s in sample_ids], index=sample_ids, dtype=object)
    published = published.where(published.notna(), pd.Series(sample_ids, index=sample_ids))
    published = published.astype(str)
    shared = published.duplicated(keep=False)
    return published.where(~shared, pd.Series(sample_ids, index=sample_ids))


def _drug_ids(drugs: list[str], source: Path) -> dict[str, str]:
    """drevalpy strips commas from drug IDs when it reads its own datasets, so IDs have none."""
    ids = {drug: drug.replace(",", ";") for drug in drugs}
    if len(set(ids.values())) != len(ids):
        clash = next(d for d in drugs if list(ids.values()).count(ids[d]) > 1)
        raise input_error(source, "drug", f"drug '{clash}' and another get the same drevalpy ID")
    return ids


def _wide_responses(dataset: DrugDataset, replicates: Replicates) -> pd.DataFrame:
    """One row per (sample, drug, release, replicate), one column per measure.

    Replicates of a measure are numbered in the order the source listed them, so the n-th AUC
    and the n-th LN_IC50 of a pair share a row."""
    response = dataset.response.dropna(subset=["value"])
    keys = ["sample_id", "drug", "source"]
    if replicates == "mean":
        response = response.groupby([*keys, "measure"], sort=False, as_index=False)["value"].mean()
    response = response.assign(replicate=response.groupby([*keys, "measure"]).cumcount())
    wide = response.pivot_table(index=[*keys, "replicate"], columns="measure", values="value",
                                aggfunc="first", sort=True).reset_index()
    wide.columns.name = None
    return wide


def _annotation_table(dataset: DrugDataset, sample_ids: list[str]) -> pd.DataFrame:
    table = pd.DataFrame(index=pd.Index(sample_ids, name="gliotl_sample_id"))
    for column in _ANNOTATIONS:
        if column in dataset.samples.columns:
            values = dataset.samples[column].reindex(sample_ids)
            table[column] = values.astype(object).where(values.notna(), None)
    return table


def _given_genes(dataset: DrugDataset) -> list[str]:
    return [dataset.gene_symbols.get(g, g) for g in dataset.expression.columns]


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise input_error(out, "OUT", "expected a new or empty folder (an export never "
                          "writes into a folder that holds files)")


def _write_tables(dataset: DrugDataset, root: Path, name: str, replicates: Replicates,
                  source: Path) -> ExportSummary:
    wide = _wide_responses(dataset, replicates)
    sample_ids = sorted(set(dataset.expression.index) | set(wide["sample_id"]))
    line_names = _unique_cell_line_names(dataset, sample_ids)
    drugs = sorted(wide["drug"].astype(str).unique())
    drug_ids = _drug_ids(drugs, source)
    annotations = _annotation_table(dataset, sample_ids)
    measures = [c for c in wide.columns if c not in ("sample_id", "drug", "source", "replicate")]
    per_row = annotations.reindex(wide["sample_id"]).reset_index(drop=True)
    responses = pd.DataFrame({
        "cell_line_name": wide["sample_id"].map(line_names).to_numpy(),
        "pubchem_id": wide["drug"].map(drug_ids).to_numpy(),
        "drug_name": wide["drug"].to_numpy(),
    })
    for column in ("tissue", "tissue_sub_type", "cosmic_id"):
        if column in per_row.columns:
            responses[column] = per_row[column].to_numpy()
    responses["release"] = wide["source"].to_numpy()
    responses["replicate"] = wide["replicate"].to_numpy()
    for measure in measures:
        responses[measure] = wide[measure].to_numpy()
    folder = root / name
    write_csv(folder / f"{name}.csv", responses)
    expression = dataset.expression.set_axis(_given_genes(dataset), axis=1)
    expression.index = expression.index.map(line_names)
    expression.index.name = "cell_line_name"
    write_csv(folder / "gene_expression.csv", expression, index=True)
    lines = annotations.reset_index()
    lines.insert(0, "cell_line_name", lines["gliotl_sample_id"].map(line_names))
    published = dataset.samples.get("cell_line_name", pd.Series(dtype=object))
    lines.insert(2, "published_name", lines["gliotl_sample_id"].map(published))
    write_csv(folder / "cell_line_names.csv", lines)
    write_csv(folder / "drug_names.csv", pd.DataFrame({"pubchem_id": list(drug_ids.values()),
                                                       "drug_name": list(drug_ids)}))
    write_csv(root / "meta" / "gene_lists" / f"{ALL_GENES_LIST}.csv",
              pd.DataFrame({"Symbol": _given_genes(dataset)}))
    tissue = annotations.get("tissue", pd.Series(None, index=annotations.index, dtype=object))
    return ExportSummary(folder=folder, name=name, n_rows=len(responses),
                         n_cell_lines=len(sample_ids), n_drugs=len(drugs),
                         n_genes=dataset.expression.shape[1],
                         releases=sorted(wide["source"].astype(str).unique()),
                         without_tissue=int(tissue.isna().sum()))


def export_drevalpy(dataset: DrugDataset, out: str | Path, name: str | None = None,
                    replicates: Replicates = "keep", release: str | None = None,
                    spec: str = "SPEC") -> ExportSummary:
    """Write ``dataset`` as the drevalpy data root ``out`` (a new or empty folder), atomically:
    everything is written into a hidden sibling folder that is renamed onto ``out`` at the end."""
    out = Path(out)
    name = name or dataset.name
    try:
        TypeAdapter(SafeName).validate_python(name)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise input_error(out, "--name", message) from None
    if name in DREVALPY_BUILTIN_NAMES:
        raise input_error(out, "--name", f"'{name}' is a drevalpy built-in dataset that drevalpy "
                          "downloads instead of reading; choose another name")
    if release is not None:
        chosen = dataset.response["source"].astype(str) == release
        if not chosen.any():
            raise input_error(spec, "--release", f"no release '{release}' (available: "
                              f"{', '.join(dataset.sources())})")
        dataset = DrugDataset(name=dataset.name, expression=dataset.expression,
                              response=dataset.response[chosen], samples=dataset.samples,
                              notes=dataset.notes, gene_symbols=dataset.gene_symbols)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".export-tmp", dir=out.parent))
    try:
        summary = _write_tables(dataset, staging, name, replicates, Path(spec))
        write_json(staging / "export.json", {
            "format": "drevalpy", "drevalpy_version_checked": "1.6.0", "spec": spec,
            "dataset": dataset.name, "name": name, "replicates": replicates,
            "release": release, "releases": summary.releases, "rows": summary.n_rows,
            "cell_lines": summary.n_cell_lines, "drugs": summary.n_drugs,
            "genes": summary.n_genes, "cell_lines_without_tissue": summary.without_tissue,
            "gene_list": ALL_GENES_LIST, "notes": list(dataset.notes),
        })
        os.chmod(staging, 0o777 & ~current_umask())
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return replace(summary, folder=out / name)
