"""Small drug experiment configs shared by the pipeline tests (importable: tests/ is on the
path)."""

from __future__ import annotations

from pathlib import Path


def baseline_config(data: Path, n_permutations: int) -> dict:
    return {
        "name": "perm",
        "seed": 0,
        "datasets": {"syn": {"kind": "drevalpy", "path": str(data)}},
        "steps": {"target": {"dataset": "syn", "drug": "Temozolomide",
                             "filters": [{"column": "tissue", "equals": "glioma"}]}},
        "target_cv": {"n_splits": 3, "n_repeats": 2},
        "methods": [
            {"name": "elasticnet", "kind": "elasticnet",
             "params": {"n_alphas": 5, "l1_ratios": [0.5]}},
            {"name": "mean", "kind": "mean"},
        ],
        "reference": "elasticnet",
        "n_boot": 50,
        "evaluation": {"n_permutations": n_permutations, "n_boot_test": 100},
    }
