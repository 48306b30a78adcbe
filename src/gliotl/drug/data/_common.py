"""Checks shared by the readers: numeric matrices and ID overlap, each failing with one line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.errors import input_error

_MISSING = {"", "na", "nan", "n/a", "null", "none", "-"}


def to_numeric_frame(frame: pd.DataFrame, source: str | Path, what: str) -> pd.DataFrame:
    """Coerce every column to float; a non-numeric cell is an error naming its column."""
    out = {}
    for column in frame.columns:
        values = frame[column]
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if bad.any():
            text = values[bad].astype(str).str.strip().str.lower()
            real = bad.copy()
            real[bad] = ~text.isin(_MISSING)
            if real.any():
                example = values[real].iloc[0]
                raise input_error(source, str(column),
                                  f"expected numeric {what}, found '{example}'")
        out[column] = numbers.astype(float)
    result = pd.DataFrame(out, index=frame.index)
    result.columns = frame.columns
    return result


def parse_number(text: object) -> float:
    """Leading number of a cell such as ``'12.7 uM'``; NaN for empty / NA; ValueError otherwise."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return float("nan")
    stripped = str(text).strip()
    if stripped.lower() in _MISSING:
        return float("nan")
    match = re.match(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", stripped)
    if not match:
        raise ValueError(stripped)
    return float(match.group(0))


def require_overlap(expression_ids: set[str], response_ids: set[str], source: str | Path,
                    column: str, other: str) -> None:
    """Fail when no response sample matches an expression sample: the IDs are surely mislabelled."""
    if response_ids and expression_ids and not (expression_ids & response_ids):
        example = sorted(response_ids)[0]
        raise input_error(source, column, f"no sample ID matches any sample of {other} "
                          f"(e.g. '{example}'); expected the same cell lines / cultures")
