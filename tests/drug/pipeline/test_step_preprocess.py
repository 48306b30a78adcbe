"""StepPreprocessor: the drug transforms composed, fitted on training rows, saved as JSON."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gliotl.drug.data.transforms import ExpressionScaler, ResponseMinMax
from gliotl.drug.pipeline.preprocess import StepPreprocessor
from gliotl.errors import GliotlError


def _frame(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(30, 5)), columns=[f"g{i}" for i in range(5)])
    return X, pd.Series(np.exp(rng.normal(size=30)))


@pytest.mark.parametrize("scaler", ["standard", "robust"])
def test_equals_the_transforms_it_composes(scaler):
    X, y = _frame()
    prep = StepPreprocessor(scaler, "minmax").fit(X, y)
    expected_X = ExpressionScaler(scaler).fit(X.to_numpy()).transform(X.to_numpy())
    np.testing.assert_array_equal(prep.transform_X(X), expected_X.astype(np.float32))
    minmax = ResponseMinMax(0.0, 10.0).fit(y.to_numpy())
    np.testing.assert_array_equal(prep.transform_y(y),
                                  minmax.transform(y.to_numpy()).astype(np.float32))
    np.testing.assert_allclose(prep.inverse_y(prep.transform_y(y)), y, rtol=1e-6)


def test_json_state_round_trip_including_an_earlier_runs_file(tmp_path):
    X, y = _frame(1)
    for scaler, response in [("robust", "minmax"), ("none", "log"), ("standard", "none")]:
        prep = StepPreprocessor(scaler, response).fit(X, y)
        prep.save(tmp_path / "preprocess.json")
        loaded = StepPreprocessor.load(tmp_path / "preprocess.json")
        np.testing.assert_array_equal(loaded.transform_X(X), prep.transform_X(X))
        np.testing.assert_array_equal(loaded.inverse_y([0.5, 2.0]), prep.inverse_y([0.5, 2.0]))
        assert loaded.to_dict() == prep.to_dict()
    old = {"scaler": "none", "response": "minmax", "genes": ["a", "b"], "center": [0.0, 0.0],
           "scale": [1.0, 1.0], "y_min": 1.0, "y_max": 3.0}  # as the first releases wrote it
    prep = StepPreprocessor.from_dict(old)
    np.testing.assert_array_equal(prep.inverse_y([0.0, 10.0]), [1.0, 3.0])
    frame = pd.DataFrame({"b": [2.0], "a": [np.nan]})
    np.testing.assert_array_equal(prep.transform_X(frame), [[0.0, 2.0]])


def test_log_of_non_positive_responses_raises_naming_the_field():
    X, y = _frame()
    prep = StepPreprocessor("standard", "log").fit(X, y)
    np.testing.assert_allclose(prep.transform_y(y), np.log(y), rtol=1e-6)
    bad = y.copy()
    bad.iloc[4] = -2.0
    with pytest.raises(GliotlError, match=r"field 'response': 'log' .*-2\.0"):
        prep.transform_y(bad)
    with pytest.raises(GliotlError, match="field 'response'"):
        prep.transform_y([0.0, 1.0])


def test_unknown_response_is_an_error():
    X, y = _frame()
    with pytest.raises(GliotlError, match="field 'response': expected one of minmax"):
        StepPreprocessor("standard", "sqrt").fit(X, y)
