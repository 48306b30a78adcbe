"""One JSON writer: always strict JSON (no bare NaN / Infinity), numpy and paths made plain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gliotl.core.io import json_safe, write_json


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_metrics_with_nan_inf_and_numpy_scalars_write_strict_json(tmp_path):
    metrics = {
        "spearman": float("nan"), "rmse": np.float32(0.25), "n": np.int64(7),
        "upper": float("inf"), "lower": -np.inf, "ok": np.bool_(True),
        "per_fold": [np.float64("nan"), np.float32(1.5), (np.int32(2), None)],
        "array": np.array([[1.0, np.nan], [np.inf, 2.0]], dtype=np.float32),
        "path": tmp_path / "model.pt", "nested": {"p": np.nan, np.int64(3): "key"},
    }
    data = _strict(write_json(tmp_path / "metrics.json", metrics).read_text())
    assert data == {
        "spearman": None, "rmse": 0.25, "n": 7, "upper": None, "lower": None, "ok": True,
        "per_fold": [None, 1.5, [2, None]], "array": [[1.0, None], [None, 2.0]],
        "path": str(tmp_path / "model.pt"), "nested": {"p": None, "3": "key"},
    }
    assert type(json_safe(np.float32(0.5))) is float and type(json_safe(np.int64(1))) is int


def test_plain_values_pass_unchanged_and_unknown_types_still_fail(tmp_path):
    plain = {"a": [1, 2.5, "x", None, True], "b": {"c": -0.0}}
    assert json_safe(plain) == plain
    assert json_safe(Path("a/b")) == "a/b"
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()
