"""Every mistake an experiment config can hold is one line at load, naming file and field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import gliotl
from gliotl.drug.config import load_experiment_config
from gliotl.errors import GliotlError


def base_config() -> dict:
    return {
        "name": "bad",
        "datasets": {"syn": {"kind": "drevalpy", "path": "syn"}},
        "genes": {"list_file": "genes.txt"},
        "steps": {
            "source": {"dataset": "syn", "drug": "Oxaliplatin", "train": "pretrain"},
            "target": {"dataset": "syn", "drug": "Temozolomide"},
        },
        "target_cv": {"splits_file": "splits.csv"},
        "methods": [
            {"name": "two_step", "kind": "network", "chain": ["source"]},
            {"name": "mean", "kind": "mean"},
            {"name": "elasticnet", "kind": "elasticnet", "params": {"n_alphas": 10,
                                                                    "grid": {"n_alphas": [5]}}},
            {"name": "random_forest", "kind": "random_forest"},
            {"name": "nested", "kind": "nested", "candidates": ["mean", "elasticnet"]},
            {"name": "stacking", "kind": "stacking", "chain": ["source"], "mode": "feature",
             "params": {"target_model": "ridge"}},
        ],
        "reference": "two_step",
    }


MISTAKES = {
    "elasticnet_params": (("methods", 2, "params", "n_alpha"), 20,
                          "field 'methods.2.params.n_alpha': unknown config key"),
    "random_forest_params": (("methods", 3, "params", "foo"), 1,
                             "field 'methods.3.params.foo': unknown config key"),
    "nested_params": (("methods", 4, "params", "alpha"), 0.1,
                      "field 'methods.4.params.alpha': unknown config key"),
    "candidate_grid": (("methods", 2, "params", "grid"), {"penalty": [1.0]},
                       "field 'methods.2.params.grid': Value error, grid key 'penalty'"),
    "stacking_params_of_other_mode": (("methods", 5, "params", "correction"), "ridge",
                                      "field 'methods.5.params.correction': unknown config key"),
    "network_key": (("network", "hiden"), [8], "field 'network.hiden': unknown config key"),
    "train_key": (("train", "finetune", "epoch"), 3,
                  "field 'train.finetune.epoch': unknown config key"),
    "train_value": (("train", "pretrain", "lr"), -1.0, "field 'train.pretrain.lr': Input should"),
    "method_train_key": (("methods", 0, "params", "train", "epoch"), 3,
                         "field 'methods.0.params.train.epoch': unknown config key"),
    "transfer_kind": (("methods", 0, "transfer"), {"kind": "l2"},
                      "field 'methods.0.transfer': Input tag 'l2'"),
    "transfer_key": (("methods", 0, "transfer"), {"kind": "l2sp", "alpah": 1.0},
                     "field 'methods.0.transfer.alpah': unknown config key"),
    "dataset_kind": (("datasets", "syn", "kind"), "drevalpi",
                     "field 'datasets.syn': Input tag 'drevalpi'"),
    "dataset_key": (("datasets", "syn", "pth"), "x",
                    "field 'datasets.syn.pth': unknown config key"),
    "method_kind": (("methods", 1, "kind"), "median",
                    "field 'methods.1.kind': unknown method kind 'median'"),
    "chain_step": (("methods", 0, "chain"), ["sorce"],
                   "chain step 'sorce' must be a non-target step"),
    "key_of_other_kind": (("methods", 1, "chain"), ["source"],
                          "field 'methods.1.chain': unknown config key"),
    "permutation_count": (("evaluation", "n_permutations"), -1,
                          "field 'evaluation.n_permutations': Input should be greater"),
    "permutation_method": (("evaluation", "permutation_methods"), ["ridge"],
                           "evaluation.permutation_methods: unknown method 'ridge'"),
    "evaluation_key": (("evaluation", "n_perm"), 10,
                       "field 'evaluation.n_perm': unknown config key"),
}


def write_with(tmp_path: Path, loc: tuple, value) -> Path:
    config = base_config()
    node = config
    for part in loc[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[loc[-1]] = value
    path = tmp_path / "configs" / "bad.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def test_valid_config_resolves_paths_against_its_folder(tmp_path):
    path = write_with(tmp_path, ("seed",), 3)
    config, base = load_experiment_config(path)
    folder = (tmp_path / "configs").resolve()
    assert base == folder
    assert config.datasets["syn"].path == str(folder / "syn")
    assert config.genes.list_file == str(folder / "genes.txt")
    assert config.target_cv.splits_file == str(folder / "splits.csv")
    assert config.methods[2].params.n_alphas == 10
    assert config.methods[5].params.target_model == "ridge"


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_mistake_is_one_line_naming_file_and_field(tmp_path, mistake):
    loc, value, expected = MISTAKES[mistake]
    path = write_with(tmp_path, loc, value)
    with pytest.raises(GliotlError) as info:
        load_experiment_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert expected in message, message


@pytest.mark.parametrize("mistake", ["elasticnet_params", "train_key", "dataset_kind"])
def test_cli_exits_2_before_any_run_folder_exists(tmp_path, mistake):
    loc, value, expected = MISTAKES[mistake]
    path = write_with(tmp_path, loc, value)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(gliotl.__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "gliotl", "drug", "run", str(path), "--out",
                           str(out)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", ["gdsc_glioma.yaml", "ju2025.yaml"])
def test_shipped_configs_survive_pickle(name):
    """Pool workers and Ray receive the config by pickle: every model class in it (the params
    and override models built at import included) must be found again by its name."""
    import pickle

    config, _ = load_experiment_config(Path(gliotl.__file__).parents[2] / "configs" / name)
    assert pickle.loads(pickle.dumps(config)) == config
