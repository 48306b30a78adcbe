"""``--set key=value``: dotted keys, YAML-typed values, applied before validation, recorded in
the resolved config and the manifest; a bad key is one line naming the ``--set``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clirun import run_gliotl
from gliotl.core.overrides import apply_overrides, parse_override
from gliotl.drug.data.synthetic_chain import write_synthetic_chain
from gliotl.errors import GliotlError
from gliotl.mgmt.config import load_mgmt_config

REPO = Path(__file__).resolve().parents[3]


def test_values_are_yaml_typed_and_paths_are_made():
    data = {"seed": 0, "methods": [{"name": "a", "params": {}}]}
    out = apply_overrides(data, ["seed=3", "train.finetune.epochs=5", "train.finetune.lr=0.001",
                                 "methods.0.params.alphas=[0.1, 1]", "name=run two",
                                 "methods.0.name=b", "seed=4"])
    assert out == {"seed": 4, "methods": [{"name": "b", "params": {"alphas": [0.1, 1]}}],
                   "train": {"finetune": {"epochs": 5, "lr": 0.001}}, "name": "run two"}
    assert data == {"seed": 0, "methods": [{"name": "a", "params": {}}]}  # not changed
    assert parse_override("flag=null").value is None
    assert parse_override("a.b=yes").parts == ("a", "b")


@pytest.mark.parametrize(("text", "message"), [
    ("seed", r"--set: expected key=value"),
    ("a..b=1", r"--set: expected key=value"),
    ("=3", r"--set: expected key=value"),
    ("seed=[1", r"--set seed: the value '\[1' is not valid YAML"),
    ("seed.x=1", r"--set seed.x: 'seed' holds a single value"),
    ("methods.3.name=x", r"--set methods.3.name: '3' must index the list there \(0 to 0\)"),
    ("methods.first.name=x", r"--set methods.first.name: 'first' must index"),
])
def test_malformed_overrides_are_refused(text, message):
    with pytest.raises(GliotlError, match=message):
        apply_overrides({"seed": 0, "methods": [{"name": "a"}]}, [text])


def test_an_override_reaches_the_mgmt_config_and_a_bad_key_names_the_set():
    config, _ = load_mgmt_config(REPO / "configs/mgmt_phantom.yaml",
                                 ["training.epochs=3", "seed=9"])
    assert (config.training.epochs, config.seed) == (3, 9)
    with pytest.raises(GliotlError, match=r"^--set training.epochz: field 'training.epochz': "
                                          r"unknown config key \(config .*mgmt_phantom.yaml\)$"):
        load_mgmt_config(REPO / "configs/mgmt_phantom.yaml", ["training.epochz=3"])
    with pytest.raises(GliotlError, match=r"^--set training.epochs: field 'training.epochs'"):
        load_mgmt_config(REPO / "configs/mgmt_phantom.yaml", ["training.epochs=many"])


def _drug_config(tmp_path) -> Path:
    data = write_synthetic_chain(tmp_path / "syn", seed=0)
    config = {
        "name": "setrun", "seed": 0,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data)}},
        "steps": {"target": {"dataset": "syn", "drug": "Temozolomide",
                             "filters": [{"column": "tissue", "equals": "glioma"}]}},
        "target_cv": {"n_splits": 3, "n_repeats": 1},
        "methods": [{"name": "knn", "kind": "sklearn",
                     "estimator": "sklearn.neighbors.KNeighborsRegressor",
                     "params": {"n_neighbors": 3}}, {"name": "mean", "kind": "mean"}],
        "reference": "mean", "n_boot": 20,
    }
    path = tmp_path / "setrun.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_drug_run_applies_and_records_the_overrides(tmp_path, capsys):
    path = _drug_config(tmp_path)
    sets = ["--set", "seed=5", "--set", "methods.0.params.n_neighbors=2"]
    code, _, err = run_gliotl(["drug", "run", str(path), "--out", str(tmp_path / "run"), *sets],
                              capsys)
    assert code == 0, err
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["seed"] == 5 and resolved["methods"][0]["params"]["n_neighbors"] == 2
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["overrides"] == ["seed=5", "methods.0.params.n_neighbors=2"]
    assert manifest["seed"] == 5


def test_a_bad_set_key_is_one_line_exit_2_before_any_run(tmp_path, capsys):
    path = _drug_config(tmp_path)
    code, out, err = run_gliotl(["drug", "run", str(path), "--out", str(tmp_path / "run"),
                                 "--set", "target_cv.n_splitz=4"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: --set target_cv.n_splitz: field 'target_cv.n_splitz': unknown config key "
        f"(config {path})"]
    assert not (tmp_path / "run").exists()
