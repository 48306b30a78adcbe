"""`gliotl data export --format drevalpy` loses nothing; drevalpy folders read back as written."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from clirun import run_gliotl
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.drevalpy import read_drevalpy
from gliotl.drug.data.drevalpy_export import export_drevalpy


def small_dataset() -> DrugDataset:
    """Two releases, a replicate, a mixed-case gene, two lines sharing a published name, a
    line named 'NA', a line without tissue and a drug with a comma in its name."""
    ids = ["s1", "s2", "x@a", "x@b", "na"]
    expression = pd.DataFrame(np.arange(10, dtype=float).reshape(5, 2), index=ids,
                              columns=["C16ORF74", "TP53"])
    samples = pd.DataFrame({
        "cell_line_name": ["S-1", "S-2", "X", "X", "NA"],
        "cosmic_id": ["901", "902", "903", None, "905"],
        "tissue": ["nervous_system", None, "lung", "lung", "blood"],
        "tissue_sub_type": ["glioma", None, "nsclc", "sclc", "leukemia"],
    }, index=ids)
    rows = [("s1", "Temozolomide", "AUC", 0.9, "GDSC1"), ("s1", "Temozolomide", "AUC", 0.8,
            "GDSC2"), ("s1", "Temozolomide", "AUC", 0.7, "GDSC2"),
            ("s1", "Temozolomide", "LN_IC50", 5.0, "GDSC2"),
            ("s2", "Drug, B", "AUC", 0.5, "GDSC2"), ("x@a", "Drug, B", "AUC", 0.4, "GDSC2"),
            ("x@b", "Drug, B", "AUC", 0.3, "GDSC2"), ("na", "Temozolomide", "AUC", 0.6, "GDSC1")]
    response = pd.DataFrame(rows, columns=["sample_id", "drug", "measure", "value", "source"])
    return DrugDataset("small", expression, response, samples,
                       gene_symbols={"C16ORF74": "C16orf74"})


def test_export_keeps_releases_replicates_symbols_tissue_and_ids(tmp_path):
    dataset = small_dataset()
    summary = export_drevalpy(dataset, tmp_path / "out", "small_x")
    folder = tmp_path / "out" / "small_x"
    assert summary.folder == folder and summary.without_tissue == 1
    text = pd.read_csv(folder / "small_x.csv", dtype=str, keep_default_na=False)
    assert text.loc[text.cell_line_name == "S-2", "tissue"].tolist() == [""]  # not 'nan'
    table = pd.read_csv(folder / "small_x.csv", keep_default_na=False, na_values=[""],
                        dtype={"cell_line_name": str, "cosmic_id": str})
    tmz = table[table.drug_name == "Temozolomide"]
    s1 = tmz[tmz.cell_line_name == "S-1"].sort_values(["release", "replicate"])
    assert list(zip(s1.release, s1.replicate, s1.AUC, strict=True)) == [("GDSC1", 0, 0.9),
                                                           ("GDSC2", 0, 0.8), ("GDSC2", 1, 0.7)]
    assert s1.LN_IC50.tolist()[1] == 5.0 and np.isnan(s1.LN_IC50.tolist()[2])
    assert set(table.cell_line_name) == {"S-1", "S-2", "x@a", "x@b", "NA"}  # unique names
    assert s1.tissue_sub_type.iloc[0] == "glioma" and s1.cosmic_id.iloc[0] == "901"
    assert not table.pubchem_id.str.contains(",").any()
    drugs = pd.read_csv(folder / "drug_names.csv")
    assert set(drugs.drug_name) == {"Temozolomide", "Drug, B"} and drugs.pubchem_id.is_unique
    lines = pd.read_csv(folder / "cell_line_names.csv", keep_default_na=False, na_values=[""])
    assert lines.cell_line_name.is_unique and set(lines.published_name) == {"S-1", "S-2", "X",
                                                                            "NA"}
    genes = pd.read_csv(tmp_path / "out" / "meta" / "gene_lists" / "all_genes.csv")
    assert genes.Symbol.tolist() == ["C16orf74", "TP53"]
    assert pd.read_csv(folder / "gene_expression.csv").columns.tolist() == [
        "cell_line_name", "C16orf74", "TP53"]

    back = read_drevalpy(tmp_path / "out")
    pd.testing.assert_frame_equal(back.expression.sort_index(), dataset.expression.sort_index())
    keys = ["sample_id", "drug", "measure", "source", "value"]
    pd.testing.assert_frame_equal(
        back.response[keys].sort_values(keys).reset_index(drop=True),
        dataset.response[keys].sort_values(keys).reset_index(drop=True))
    for column in ("cell_line_name", "cosmic_id", "tissue", "tissue_sub_type"):
        pd.testing.assert_series_equal(back.samples[column].reindex(dataset.samples.index),
                                       dataset.samples[column], check_dtype=False,
                                       check_names=False)
    assert back.gene_symbols == {"C16ORF74": "C16orf74"}


def test_replicates_mean_averages_within_a_release_never_across(tmp_path):
    export_drevalpy(small_dataset(), tmp_path / "out", "m", replicates="mean")
    table = pd.read_csv(tmp_path / "out" / "m" / "m.csv")
    s1 = table[(table.cell_line_name == "S-1")].sort_values("release")
    assert s1.release.tolist() == ["GDSC1", "GDSC2"]
    assert s1.AUC.tolist() == pytest.approx([0.9, 0.75]) and set(s1.replicate) == {0}


def test_release_option_exports_one_release(tmp_path):
    summary = export_drevalpy(small_dataset(), tmp_path / "out", "r", release="GDSC1")
    assert summary.releases == ["GDSC1"] and summary.n_rows == 2


def write_drevalpy_folder(root):
    """A folder as drevalpy writes it: PubChem IDs, a prediction and a feature-index column."""
    folder = root / "mine"
    folder.mkdir(parents=True)
    pd.DataFrame({"cell_line_name": ["NA", "A-1", "B2", "NA", "B2", "B2"],
                  "pubchem_id": ["5394", "5394", "60750", "60750", "1", "2"],
                  "tissue": ["Blood", "", "Lung", "Blood", "Lung", "Lung"],
                  "LN_IC50": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                  "predictions": [1.1, 2.1, 2.9, 4.2, 5.0, 6.0],
                  "feature_0": [0, 1, 0, 1, 0, 1]}).to_csv(folder / "mine.csv", index=False)
    pd.DataFrame({"cell_line_name": ["NA", "A-1", "B2"], "TP53": [1.0, 2.0, 3.0],
                  "C16orf74": [0.5, 0.1, 0.2]}).to_csv(folder / "gene_expression.csv",
                                                       index=False)
    pd.DataFrame({"pubchem_id": ["5394", "60750", "1", "2"],
                  "drug_name": ["Temozolomide", "Gemcitabine", "Twin", "Twin"]}
                 ).to_csv(folder / "drug_names.csv", index=False)
    return folder


def test_reading_drevalpy_data_maps_drugs_skips_predictions_and_keeps_na(tmp_path):
    write_drevalpy_folder(tmp_path)
    dataset = read_drevalpy(tmp_path)
    assert dataset.drugs() == ["Gemcitabine", "Temozolomide", "Twin (1)", "Twin (2)"]
    assert dataset.measures() == ["LN_IC50"]
    assert any("predictions, feature_0 skipped" in note for note in dataset.notes)
    assert dataset.samples.loc["na", "cell_line_name"] == "NA"
    assert dataset.responses("Temozolomide", "LN_IC50").to_dict() == {"na": 1.0, "a1": 2.0}
    assert pd.isna(dataset.samples.loc["a1", "tissue"])
    assert dataset.gene_symbols == {"C16ORF74": "C16orf74"}


def test_cli_export_of_a_spec_and_its_refusals(tmp_path, capsys):
    write_drevalpy_folder(tmp_path / "in")
    spec = tmp_path / "spec.yaml"
    spec.write_text("kind: drevalpy\npath: in\n")
    code, out, err = run_gliotl(["data", "export", spec, tmp_path / "out", "--format",
                                 "drevalpy", "--name", "mine_copy"], capsys)
    assert code == 0, err
    assert "3 cell lines, 4 drugs, 2 genes" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export.json", "meta",
                                                                   "mine_copy"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    before = hashlib.sha256((taken / "mine.txt").read_bytes()).hexdigest()
    for argv, field in [
        ([spec, taken], "OUT"),
        ([spec, tmp_path / "o2", "--format", "csv"], "--format"),
        ([spec, tmp_path / "o3", "--replicates", "median"], "--replicates"),
        ([spec, tmp_path / "o4", "--release", "GDSC9"], "--release"),
        ([spec, tmp_path / "o5", "--name", "GDSC2"], "--name"),
        ([spec, tmp_path / "o6", "--name", "../escape"], "--name"),
    ]:
        code, out, err = run_gliotl(["data", "export", *argv], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and field in err, err
    assert hashlib.sha256((taken / "mine.txt").read_bytes()).hexdigest() == before
    assert not any((tmp_path / f"o{i}").exists() for i in range(2, 7))
