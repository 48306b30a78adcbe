"""Checks shared by the readers: numeric matrices and ID overlap, each failing with one line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.core.io import read_table, require_columns
from gliotl.errors import input_error

_MISSING = {"", "na", "nan", "n/a", "null", "none", "-"}


def to_numeric_frame(frame: pd.DataFrame, source: str | Path, what: str,
                     finite: bool = False) -> pd.DataFrame:
    """Coerce every column to float; a non-numeric cell is an error naming its column (and, with
    ``finite``, an infinite one too, naming its row: missing values stay NaN for the documented
    policies, infinite ones have no policy)."""
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
    if finite:
        require_finite(result, source, what)
    return result


def require_finite(frame: pd.DataFrame, source: str | Path, what: str) -> None:
    """An infinite value is an error naming the file, the row (sample) and the column."""
    infinite = np.isinf(frame.to_numpy(dtype=np.float64))
    if infinite.any():
        row, column = np.argwhere(infinite)[0]
        raise input_error(source, str(frame.columns[column]),
                          f"sample '{frame.index[row]}': expected finite {what}, found "
                          f"{frame.iloc[row, column]}")


def average_duplicate_samples(frame: pd.DataFrame, source: str | Path,
                              notes: list[str]) -> pd.DataFrame:
    """Average the rows of samples given more than once (the documented policy), noting which."""
    repeated = frame.index[frame.index.duplicated()].unique()
    if len(repeated):
        shown = ", ".join(map(str, repeated[:5])) + (" ..." if len(repeated) > 5 else "")
        notes.append(f"{source}: {len(repeated)} samples with several expression rows "
                     f"averaged ({shown})")
    return frame.groupby(level=0, sort=False).mean()


def read_expression_table(path: str | Path, id_column: str | None = None,
                          genes_by_samples: bool = False) -> pd.DataFrame:
    """A samples x genes table (first column or ``id_column`` = sample ID) as floats, read by
    ``drug run`` (table datasets) and ``drug predict`` alike: non-numeric or infinite values and
    an ID column that holds measurements are errors naming file, sample and column."""
    path = Path(path)
    frame = read_table(path)
    id_col = id_column or frame.columns[0]
    require_columns(frame, [id_col], path)
    ids = frame[id_col]
    numbers = pd.to_numeric(ids, errors="coerce")
    if not genes_by_samples and numbers.notna().all() and not (numbers % 1 == 0).all():
        raise input_error(path, str(id_col), "holds measurements, not sample IDs; expected the "
                          "sample ID in the first column (samples x genes)")
    expression = to_numeric_frame(frame.set_index(id_col), path, "expression values",
                                  finite=True)
    if genes_by_samples:
        expression = expression.T
    expression.index = expression.index.astype(str).str.strip()
    return expression


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
