"""The one DataFrame printer: cell formats, alignment and missing values per style."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from rich.console import Console

from gliotl.core.reporting.console import TableStyle, format_cell, frame_table, print_frame


def test_format_cell_per_style():
    assert format_cell(0.12345) == "0.123" and format_cell(np.float64(2.0)) == "2.000"
    assert format_cell(7) == "7" and format_cell("x") == "x" and format_cell(None) == "None"
    assert format_cell(float("nan")) == "nan"
    blank = TableStyle(missing="")
    assert format_cell(None, blank) == "" and format_cell(np.inf, blank) == ""
    assert format_cell(123456.789, TableStyle(float_format=".4g")) == "1.235e+05"


def test_numbers_align_right_only_when_asked_and_output_is_text():
    frame = pd.DataFrame({"method": ["a", "b"], "rho": [0.5, np.nan], "n": [3, 4]})
    plain = frame_table(frame, "t")
    assert [c.justify for c in plain.columns] == ["left", "left", "left"]
    aligned = frame_table(frame, "t", TableStyle(align_numbers=True, title_justify="left"))
    assert [c.justify for c in aligned.columns] == ["left", "right", "right"]
    console = Console(file=io.StringIO(), width=80, color_system=None)
    print_frame(frame, "scores", console)
    out = console.file.getvalue()
    assert "scores" in out and "0.500" in out and "nan" in out and " 3 " in out
