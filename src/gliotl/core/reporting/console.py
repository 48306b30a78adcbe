"""A DataFrame as a rich table on the terminal: the one printer behind every summary command.

The systems differ only in presentation details (float format, right-aligned numbers, a blank
for missing values), collected in :class:`TableStyle` so that each call site keeps its look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@dataclass(frozen=True)
class TableStyle:
    """How cells and columns are shown."""

    float_format: str = ".3f"
    align_numbers: bool = False  # right-justify integer and float columns
    title_justify: Literal["left", "center", "right"] = "center"
    no_wrap: bool = False
    missing: str | None = None  # shown for None / NaN / inf; None: formatted like any value


def format_cell(value: Any, style: TableStyle = TableStyle()) -> str:
    if style.missing is not None and (
        value is None or (isinstance(value, float) and not math.isfinite(value))
    ):
        return style.missing
    return format(value, style.float_format) if isinstance(value, float) else str(value)


def frame_table(frame: pd.DataFrame, title: str, style: TableStyle = TableStyle()) -> Table:
    """One rich column per frame column, one row per frame row, cells by ``format_cell``."""
    from rich.table import Table

    table = Table(title=title, title_justify=style.title_justify)
    for column in frame.columns:
        numeric = style.align_numbers and frame[column].dtype.kind in "if"
        table.add_column(str(column), justify="right" if numeric else "left",
                         no_wrap=style.no_wrap)
    for row in frame.itertuples(index=False):
        table.add_row(*[format_cell(value, style) for value in row])
    return table


def print_frame(frame: pd.DataFrame, title: str, console: Console | None = None,
                style: TableStyle = TableStyle()) -> None:
    """Print ``frame`` as a table on ``console`` (a default rich Console if None)."""
    from rich.console import Console

    (console or Console()).print(frame_table(frame, title, style))


__all__ = ["TableStyle", "format_cell", "frame_table", "print_frame"]
