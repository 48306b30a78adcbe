"""GDSC official release files: fitted dose response, RMA expression, cell-line details.

Samples are keyed by the normalised cell-line name (``U-87-MG`` -> ``u87mg``) so that GDSC
lines meet other collections; COSMIC IDs and the published names stay in ``samples``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gliotl.core.io import read_table, require_columns
from gliotl.drug.data._common import require_finite, require_overlap, to_numeric_frame
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.harmonise import given_symbols, harmonise_expression, normalise_sample_key
from gliotl.errors import input_error

_DATA_COLUMN = re.compile(r"^DATA\.(\d+)(?:\.\d+)?$")
DETAILS_COLUMNS = {
    "Sample Name": "cell_line_name",
    "COSMIC identifier": "cosmic_id",
    "GDSC Tissue descriptor 1": "tissue",
    "GDSC Tissue descriptor 2": "tissue_sub_type",
    "Cancer Type (matching TCGA label)": "tcga_desc",
}


def _cosmic(value: object) -> str | None:
    """COSMIC IDs arrive as ints, floats (xlsx) or strings; one canonical string."""
    if pd.isna(value):
        return None
    text = str(value).strip()
    if text.endswith(".0"):
        text = text[:-2]
    return text if text.isdigit() else None


def _release_of(frame: pd.DataFrame, path: Path) -> pd.Series:
    if "DATASET" in frame.columns:
        return frame["DATASET"].astype(str)
    match = re.search(r"GDSC[12]", path.name, flags=re.IGNORECASE)
    return pd.Series(match.group(0).upper() if match else "GDSC", index=frame.index)


def read_gdsc_responses(paths: Sequence[str | Path],
                        measures: Sequence[str] = ("AUC", "LN_IC50")) -> pd.DataFrame:
    """Fitted-dose-response files (CSV or XLSX) as one wide table with a ``source`` column."""
    parts = []
    for raw in paths:
        path = Path(raw)
        frame = read_table(path)
        frame.columns = [str(c).strip() for c in frame.columns]
        require_columns(frame, ["CELL_LINE_NAME", "DRUG_NAME", *measures], path)
        values = to_numeric_frame(frame[list(measures)], path, "response values")
        part = pd.DataFrame({
            "cell_line_name": frame["CELL_LINE_NAME"].astype(str).str.strip(),
            "cosmic_id": frame["COSMIC_ID"].map(_cosmic) if "COSMIC_ID" in frame else None,
            "drug": frame["DRUG_NAME"].astype(str).str.strip(),
            "drug_id": frame["DRUG_ID"].astype("string") if "DRUG_ID" in frame else pd.NA,
            "source": _release_of(frame, path),
            "tcga_desc": frame["TCGA_DESC"] if "TCGA_DESC" in frame else pd.NA,
            "file": str(path),
        })
        parts.append(pd.concat([part, values], axis=1))
    return pd.concat(parts, ignore_index=True)


def read_gdsc_expression(path: str | Path) -> tuple[pd.DataFrame, int]:
    """``Cell_line_RMA_proc_basalExp.txt``: genes in rows, ``DATA.<COSMIC_ID>`` columns.

    Returns COSMIC ID x gene symbol and the number of probe rows without a symbol (dropped).
    """
    path = Path(path)
    frame = read_table(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    require_columns(frame, ["GENE_SYMBOLS"], path)
    data_columns = [c for c in frame.columns if _DATA_COLUMN.match(c)]
    if not data_columns:
        raise input_error(path, "DATA.<COSMIC_ID>", "no expression columns named DATA.<COSMIC_ID>")
    symbols = frame["GENE_SYMBOLS"]
    named = symbols.notna() & (symbols.astype(str).str.strip() != "")
    values = to_numeric_frame(frame.loc[named, data_columns], path, "expression values")
    values.index = symbols[named].astype(str).str.strip()
    matrix = values.T
    matrix.index = [_DATA_COLUMN.sub(r"\1", c) for c in data_columns]
    require_finite(matrix, path, "expression values")
    matrix = matrix.groupby(level=0, sort=False).mean()  # repeated arrays of one line
    return matrix, int((~named).sum())


def read_cell_line_details(path: str | Path) -> pd.DataFrame:
    """``Cell_Lines_Details.xlsx``: names, COSMIC IDs, tissues (headers contain newlines)."""
    path = Path(path)
    frame = read_table(path)
    frame.columns = [" ".join(str(c).split()) for c in frame.columns]
    require_columns(frame, ["Sample Name", "COSMIC identifier"], path)
    frame = frame[frame["COSMIC identifier"].map(_cosmic).notna()]
    out = frame[[c for c in DETAILS_COLUMNS if c in frame.columns]].rename(columns=DETAILS_COLUMNS)
    out["cosmic_id"] = out["cosmic_id"].map(_cosmic)
    out["cell_line_name"] = out["cell_line_name"].astype(str).str.strip()
    return out.reset_index(drop=True)


def _published_names(details: pd.DataFrame | None, responses: pd.DataFrame,
                     cosmic_ids: pd.Index) -> dict[str, str]:
    """COSMIC ID -> published name, from the details table first, then the response files."""
    names: dict[str, str] = {}
    if details is not None:
        names.update(zip(details["cosmic_id"], details["cell_line_name"], strict=True))
    for cosmic, line in zip(responses["cosmic_id"], responses["cell_line_name"], strict=True):
        if cosmic is not None and not pd.isna(cosmic):
            names.setdefault(cosmic, line)
    for cosmic in cosmic_ids:
        names.setdefault(cosmic, f"COSMIC{cosmic}")
    return names


def _sample_keys(names: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """COSMIC ID -> sample key; lines whose names normalise alike keep the COSMIC ID apart."""
    by_key: dict[str, list[str]] = {}
    for cosmic, line in names.items():
        by_key.setdefault(normalise_sample_key(line), []).append(cosmic)
    notes: list[str] = []
    sample_of: dict[str, str] = {}
    for key, cosmics in by_key.items():
        for cosmic in cosmics:
            sample_of[cosmic] = key if len(cosmics) == 1 else f"{key}_{cosmic}"
        if len(cosmics) > 1:
            shown = " / ".join(f"{names[c]} (COSMIC {c})" for c in cosmics)
            notes.append(f"name collision on key '{key}': {shown}; kept apart by COSMIC ID")
    return sample_of, notes


def _response_sample(row_cosmic: object, line: str, sample_of: dict[str, str]) -> str:
    """A response row's sample: by COSMIC ID when known, else by its normalised name."""
    if row_cosmic is not None and not pd.isna(row_cosmic) and row_cosmic in sample_of:
        return sample_of[row_cosmic]
    return normalise_sample_key(line)


def _add_tcga(samples: pd.DataFrame, responses: pd.DataFrame) -> None:
    """Fill ``tcga_desc`` from the response files where the details table has none."""
    tcga = responses.dropna(subset=["tcga_desc"]).drop_duplicates("sample_id")
    if not len(tcga):
        return
    from_responses = samples.index.map(tcga.set_index("sample_id")["tcga_desc"])
    if "tcga_desc" in samples:
        samples["tcga_desc"] = samples["tcga_desc"].fillna(pd.Series(from_responses,
                                                                     index=samples.index))
    else:
        samples["tcga_desc"] = from_responses


def _sample_table(names: dict[str, str], sample_of: dict[str, str], responses: pd.DataFrame,
                  details: pd.DataFrame | None) -> pd.DataFrame:
    """One row per sample: published name, COSMIC ID and the details' tissue columns."""
    samples = pd.DataFrame(
        {"cell_line_name": [names[c] for c in sample_of], "cosmic_id": list(sample_of)},
        index=pd.Index([sample_of[c] for c in sample_of], name="sample_id"),
    )
    only_responses = responses[~responses["sample_id"].isin(samples.index)]
    only_responses = only_responses.drop_duplicates("sample_id").set_index("sample_id")
    samples = pd.concat([samples, only_responses[["cell_line_name", "cosmic_id"]]])
    if details is not None:
        extra = details.set_index("cosmic_id").drop(columns="cell_line_name")
        for column in extra.columns:
            samples[column] = samples["cosmic_id"].map(extra[column])
    _add_tcga(samples, responses)
    return samples


def read_gdsc_release(
    response_paths: Sequence[str | Path] | str | Path,
    expression_path: str | Path,
    cell_lines_path: str | Path | None = None,
    measures: Sequence[str] = ("AUC", "LN_IC50"),
    name: str = "GDSC",
) -> DrugDataset:
    """Read GDSC1 / GDSC2 fitted dose response + RMA expression (+ cell-line details)."""
    if isinstance(response_paths, str | Path):
        response_paths = [response_paths]
    responses = read_gdsc_responses(response_paths, measures)
    expression, unnamed = read_gdsc_expression(expression_path)
    details = read_cell_line_details(cell_lines_path) if cell_lines_path else None

    names = _published_names(details, responses, expression.index)
    sample_of, notes = _sample_keys(names)
    responses["sample_id"] = [_response_sample(c, n, sample_of) for c, n in
                              zip(responses["cosmic_id"], responses["cell_line_name"], strict=True)]
    expression.index = [sample_of[c] for c in expression.index]
    symbols = given_symbols(expression.columns)
    expression, merged = harmonise_expression(expression)
    require_overlap(set(expression.index), set(responses["sample_id"]),
                    Path(response_paths[0]), "CELL_LINE_NAME",
                    f"the expression file {expression_path}")
    if unnamed:
        notes.append(f"{unnamed} expression rows without GENE_SYMBOLS dropped")
    if merged:
        notes.append(f"{merged} duplicate gene symbols averaged")

    long = responses.melt(
        id_vars=["sample_id", "drug", "drug_id", "source"], value_vars=list(measures),
        var_name="measure", value_name="value",
    ).dropna(subset=["value"])
    samples = _sample_table(names, sample_of, responses, details)
    used = set(expression.index) | set(long["sample_id"])
    samples = samples[samples.index.isin(used)]
    return DrugDataset(name=name, expression=expression, response=long, samples=samples,
                       notes=notes, gene_symbols=symbols)
