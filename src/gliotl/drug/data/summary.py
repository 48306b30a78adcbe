"""What a dataset holds: sizes, drugs x measures, tissues, missing values, overlaps.

Used by ``gliotl data summary`` to let a user check what was read before training on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd

from gliotl.drug.data.dataset import DrugDataset

FOCUS_DRUGS = ("Temozolomide", "Oxaliplatin", "Cyclophosphamide", "Bortezomib")
GLIOMA_WORDS = ("glioma", "glioblastoma", "gbm")


def glioma_mask(samples: pd.DataFrame) -> pd.Series:
    """Samples annotated as glioma / glioblastoma in any tissue column."""
    mask = pd.Series(False, index=samples.index)
    for column in ("tissue_sub_type", "tissue", "tcga_desc"):
        if column in samples:
            text = samples[column].astype("string").str.lower().fillna("")
            mask |= text.str.contains("|".join(GLIOMA_WORDS)) | (text == "lgg")
    return mask


def overview(ds: DrugDataset) -> dict[str, object]:
    expr = ds.expression
    return {
        "dataset": ds.name,
        "samples with expression": expr.shape[0],
        "genes": expr.shape[1],
        "samples with responses": ds.response["sample_id"].nunique(),
        "drugs": len(ds.drugs()),
        "measures": ", ".join(ds.measures()),
        "sources": ", ".join(ds.sources()),
        "missing expression values": int(expr.isna().sum().sum()),
        "glioma samples with expression": int(glioma_mask(ds.samples.reindex(expr.index)).sum()),
    }


def drug_table(ds: DrugDataset, drugs: Sequence[str] | None = None) -> pd.DataFrame:
    """Per drug x measure x source: samples with expression (all / glioma) and value ranges."""
    table = ds.response
    if drugs is not None:
        wanted = {d.casefold() for d in drugs}
        table = table[table["drug"].astype(str).str.casefold().isin(wanted)]
    glioma = set(ds.samples.index[glioma_mask(ds.samples)])
    have = set(ds.expression.index)
    rows = []
    for (drug, measure, source), part in table.groupby(["drug", "measure", "source"]):
        per_sample = part.groupby("sample_id")["value"].mean()
        with_expr = per_sample[per_sample.index.isin(have)]
        rows.append({
            "drug": drug, "measure": measure, "source": source, "rows": len(part),
            "samples": int(per_sample.size), "with expression": int(with_expr.size),
            "glioma with expression": int(with_expr.index.isin(glioma).sum()),
            "missing": int(part["value"].isna().sum()),
            "min": float(with_expr.min()) if len(with_expr) else np.nan,
            "median": float(with_expr.median()) if len(with_expr) else np.nan,
            "max": float(with_expr.max()) if len(with_expr) else np.nan,
        })
    return pd.DataFrame(rows)


def tissue_table(ds: DrugDataset, top: int = 10) -> pd.DataFrame:
    samples = ds.samples.reindex(ds.expression.index)
    column = next((c for c in ("tissue_sub_type", "tissue") if c in samples), None)
    if column is None:
        return pd.DataFrame(columns=["tissue", "samples"])
    counts = samples[column].astype("string").fillna("(unknown)").value_counts()
    return counts.head(top).rename_axis(column).reset_index(name="samples")


def overlap_table(datasets: Sequence[DrugDataset]) -> pd.DataFrame:
    """Pairwise shared samples (on normalised keys) and shared genes."""
    rows = []
    for a, b in combinations(datasets, 2):
        rows.append({
            "datasets": f"{a.name} / {b.name}",
            "shared samples": len(set(a.expression.index) & set(b.expression.index)),
            "shared genes": len(set(a.expression.columns) & set(b.expression.columns)),
            "genes only in first": len(set(a.expression.columns) - set(b.expression.columns)),
            "genes only in second": len(set(b.expression.columns) - set(a.expression.columns)),
        })
    return pd.DataFrame(rows)
