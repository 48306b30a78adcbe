"""The experiment skeleton: a run ends finished with the body's fields, or failed with its error,
and splits are drawn once and read back."""

from __future__ import annotations

import pandas as pd
import pytest

from gliotl.core.config import StrictModel
from gliotl.core.runs.experiment import run_experiment
from gliotl.core.runs.rundir import RunDir
from gliotl.errors import GliotlError


class Toy(StrictModel):
    name: str = "toy"


def test_a_finished_run_records_the_body_fields(tmp_path):
    run = run_experiment(Toy(), lambda experiment: {"answer": 42}, name="toy", seed=1,
                         out=tmp_path / "run", progress=False)
    manifest = run.manifest()
    assert manifest["status"] == "finished" and manifest["answer"] == 42


def test_a_failing_body_marks_the_run_failed_and_it_can_be_resumed(tmp_path):
    def body(experiment):
        raise GliotlError("data.csv: field 'x': expected a number")

    with pytest.raises(GliotlError):
        run_experiment(Toy(), body, name="toy", seed=1, out=tmp_path / "run", progress=False)
    manifest = RunDir(tmp_path / "run").manifest()
    assert manifest["status"] == "failed"
    assert manifest["error"] == "GliotlError: data.csv: field 'x': expected a number"
    run = run_experiment(Toy(), lambda experiment: {}, name="toy", seed=1, out=tmp_path / "run",
                         resume=True, progress=False)
    assert run.manifest()["status"] == "finished"


def test_splits_are_drawn_once_and_read_back(tmp_path):
    calls = []

    def draw():
        calls.append(1)
        return pd.DataFrame({"sample_id": ["a", "b", "a", "b"], "repeat": 0,
                             "fold": [0, 0, 1, 1], "role": ["train", "test", "test", "train"]})

    def body(experiment):
        first = experiment.splits("splits.csv", ["a", "b"], draw)
        second = experiment.splits("splits.csv", ["a", "b"], draw)
        assert first.equals(second)
        return {}

    run_experiment(Toy(), body, name="toy", seed=1, out=tmp_path / "run", progress=False)
    assert calls == [1]
