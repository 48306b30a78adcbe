"""Against the real drevalpy 1.6.0 (its own environment: `make test-drevalpy`).

The GDSC copy's glioma lines are exported (a few drugs, 300 genes, GDSC2), drevalpy's own
loader reads the export, and drevalpy's entry point ``drug_response_experiment`` runs one of its
baselines and gliotl's one-step transfer (upstream: the non-glioma GDSC lines, loaded by the
adapter itself) on gliotl's saved splits; the results are read back with gliotl's converters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

drevalpy = pytest.importorskip("drevalpy", reason="drevalpy is tested in its own environment")

from drevalpy.datasets.loader import load_dataset as drevalpy_load  # noqa: E402
from drevalpy.experiment import drug_response_experiment  # noqa: E402
from drevalpy.models import MODEL_FACTORY  # noqa: E402

from gliotl.core.evaluation.splits import kfold_splits  # noqa: E402
from gliotl.core.io import write_csv  # noqa: E402
from gliotl.drug.data.drevalpy import read_drevalpy  # noqa: E402
from gliotl.drug.data.drevalpy_export import export_drevalpy  # noqa: E402
from gliotl.drug.data.pypi import load_gdsc_pypi  # noqa: E402
from gliotl.interop.configured_method import ConfiguredMethodRegressor  # noqa: E402
from gliotl.interop.drevalpy_files import (  # noqa: E402
    gliotl_folds,
    read_drevalpy_predictions,
    read_drevalpy_splits,
    sample_ids_by_name,
)
from gliotl.interop.drevalpy_model import drevalpy_model, gliotl_splitter  # noqa: E402

pytestmark = pytest.mark.drevalpy
DRUGS = ["Temozolomide", "Oxaliplatin"]
N_GENES = 300


@pytest.fixture(scope="module")
def gdsc():
    return load_gdsc_pypi()


def _glioma_subset(gdsc):
    """The glioma lines, DRUGS, the first N_GENES genes (all of C16orf74's spelling kept)."""
    glioma = gdsc.samples.index[gdsc.samples.tissue_sub_type == "glioma"]
    genes = list(gdsc.expression.columns[:N_GENES])
    mixed = next(g for g in gdsc.expression.columns if g in gdsc.gene_symbols)
    if mixed not in genes:
        genes[-1] = mixed
    subset = gdsc.subset([s for s in glioma if s in gdsc.expression.index])
    subset.expression = subset.expression[genes]
    subset.response = subset.response[subset.response.drug.isin(DRUGS)]
    subset.gene_symbols = {g: s for g, s in gdsc.gene_symbols.items() if g in genes}
    return subset


def _config(tmp_path: Path) -> Path:
    config = {
        "name": "dv", "seed": 0,
        "datasets": {"gdsc": {"kind": "gdsc_pypi"}},
        "steps": {
            "source": {"dataset": "gdsc", "drug": "Temozolomide", "release": "GDSC2",
                       "train": "pretrain",
                       "filters": [{"column": "tissue_sub_type", "not_equals": "glioma"}]},
            "target": {"dataset": "gdsc", "drug": "Temozolomide", "release": "GDSC2",
                       "filters": [{"column": "tissue_sub_type", "equals": "glioma"}]},
        },
        "network": {"hidden": [16, 8]},
        "train": {"pretrain": {"epochs": 3}, "finetune": {"epochs": 5}},
        "methods": [{"name": "one_step", "kind": "network", "chain": ["source"]}],
        "reference": "one_step",
    }
    path = tmp_path / "gliotl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_export_runs_in_drevalpy_and_results_come_back(gdsc, tmp_path):
    subset = _glioma_subset(gdsc)
    root = tmp_path / "data"
    export_drevalpy(subset, root, "GDSC_glioma", release="GDSC2")
    folder = root / "GDSC_glioma"
    # drevalpy's loader reads the export; every pair is one row (GDSC2, no replicates there)
    response = drevalpy_load("GDSC_glioma", path_data=str(root), measure="AUC")
    assert len(response) == subset.response[(subset.response.measure == "AUC")
                                            & (subset.response.source == "GDSC2")].shape[0]
    assert "nan" not in set(response.tissue)  # every glioma line has its tissue
    names = sample_ids_by_name(folder / "cell_line_names.csv")
    # gliotl's lossless reading of the same folder
    back = read_drevalpy(root)
    pd.testing.assert_frame_equal(back.expression.sort_index(),
                                  subset.expression.sort_index(), check_exact=False, rtol=1e-6)
    assert set(back.drugs()) == set(DRUGS)

    # gliotl splits of the temozolomide lines, handed to drevalpy as its custom splitter
    tmz = sorted({names[c] for c, d in zip(response.cell_line_ids, response.drug_ids,
                                           strict=True) if d == "Temozolomide"})
    splits = kfold_splits(tmz, np.arange(len(tmz), dtype=float), n_splits=3, n_repeats=1,
                          seed=0, task="regression")
    write_csv(tmp_path / "splits.csv", splits)
    response.reduce_to(drug_ids=np.array(["Temozolomide"]))
    model = drevalpy_model(_config(tmp_path), "one_step")
    assert MODEL_FACTORY["Gliotl_one_step"] is model
    drug_response_experiment(
        models=[model], baselines=[MODEL_FACTORY["NaiveDrugMeanPredictor"]],
        response_data=response, test_mode="LCO", n_cv_splits=3, run_id="dv",
        path_out=str(tmp_path / "results"), path_data=str(root), hyperparameter_tuning=False,
        custom_splitter=gliotl_splitter(tmp_path / "splits.csv", sample_ids=names),
        custom_split_name="gliotl")
    result = tmp_path / "results" / "dv" / "GDSC_glioma" / "gliotl"

    # drevalpy's saved splits are gliotl's folds (train + validation = gliotl's train)
    read_back = read_drevalpy_splits(result / "splits", "Temozolomide", names)
    original = splits.assign(sample_id=splits.sample_id.astype(str))
    for fold in range(3):
        for role in ("train", "test"):
            a = set(original[(original.fold == fold) & (original.role == role)].sample_id)
            b = set(read_back[(read_back.fold == fold) & (read_back.role == role)].sample_id)
            assert a == b
    # the baseline's and gliotl's predictions come back as gliotl predictions.csv rows
    baseline = read_drevalpy_predictions(result / "NaiveDrugMeanPredictor" / "predictions",
                                         "NaiveDrugMeanPredictor", "Temozolomide", names)
    ours = read_drevalpy_predictions(
        result / "Gliotl_one_step" / "drugs" / "Temozolomide" / "predictions", "one_step",
        "Temozolomide", names)
    assert len(ours) == len(baseline) == len(tmz)
    assert set(ours.sample_id) == set(tmz)
    # inside drevalpy the adapter predicts what gliotl predicts on the same training fold
    fold0 = gliotl_folds(original)[0]
    train = sorted(by_name(names, fold0["train"] + fold0["validation"]))
    expression = pd.read_csv(folder / "gene_expression.csv", index_col="cell_line_name")
    y = dict(zip(response.cell_line_ids, response.response, strict=True))
    direct = ConfiguredMethodRegressor(_config(tmp_path), "one_step",
                                       work_dir=tmp_path / "direct")
    direct.fit(expression.loc[train], [y[c] for c in train])
    test = ours[ours.fold == 0].set_index("sample_id")
    expected = direct.predict(expression.loc[by_name(names, list(test.index))])
    assert np.allclose(test.y_pred.to_numpy(), expected, atol=1e-6)
    assert np.allclose(ours.y_true, [y[c] for c in by_name(names, list(ours.sample_id))])


def by_name(names: dict[str, str], sample_ids: list[str]) -> list[str]:
    """gliotl sample IDs -> the export's drevalpy cell-line names."""
    inverse = {v: k for k, v in names.items()}
    return [inverse[s] for s in sample_ids]
