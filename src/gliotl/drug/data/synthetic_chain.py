"""A synthetic drug-response chain in which transfer must help, for tests and the offline demo.

Cell lines share a latent biology ``Z`` (k factors) that drives expression (``X = Z W + noise``)
and every drug's response. Drugs differ by how much of the *shared response program* they carry:
``Oxaliplatin`` carries it strongly, ``Temozolomide`` is the program itself, ``Bortezomib``
partly, ``Cyclophosphamide`` not at all. Glioma lines (the target) are few and shifted in latent
space, so a network trained on them alone sees too little data, while a network pretrained on the
many non-glioma lines has already learned the program. The layout mirrors the GDSC case study
(one dataset, tissue annotations, GDSC2-style AUC in 0..1) and is written in drevalpy's format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DRUG_SHARE = {"Temozolomide": 1.0, "Oxaliplatin": 0.9, "Bortezomib": 0.4, "Cyclophosphamide": 0.0}


def make_synthetic_chain(
    n_other: int = 300, n_glioma: int = 18, n_genes: int = 1000, n_factors: int = 6,
    noise: float = 0.35, expression_noise: float = 3.0, seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(expression, response)``: expression cell lines x genes; response long with
    ``cell_line_name, drug, measure ('AUC'), value, tissue``."""
    rng = np.random.default_rng(seed)
    n = n_other + n_glioma
    z = rng.normal(size=(n, n_factors))
    z[n_other:] += rng.normal(0.0, 0.5, size=n_factors)  # glioma lines: a shifted population
    loadings = rng.normal(size=(n_factors, n_genes)) * (rng.random((n_factors, n_genes)) < 0.3)
    expression = z @ loadings + rng.normal(0.0, expression_noise, size=(n, n_genes)) + 6.0
    shared = rng.normal(size=n_factors)
    names = [f"LINE-{i:04d}" for i in range(n)]
    tissue = ["other"] * n_other + ["glioma"] * n_glioma
    rows = []
    for drug, share in DRUG_SHARE.items():
        own = rng.normal(size=n_factors)
        beta = share * shared + np.sqrt(1.0 - share**2) * own
        signal = z @ beta / np.sqrt(n_factors)
        auc = 1.0 / (1.0 + np.exp(-(signal + rng.normal(0.0, noise, size=n))))
        rows.append(pd.DataFrame({"cell_line_name": names, "drug": drug, "measure": "AUC",
                                  "value": auc, "tissue": tissue}))
    genes = [f"GENE{j:04d}" for j in range(n_genes)]
    index = pd.Index(names, name="cell_line_name")
    frame = pd.DataFrame(expression.astype(np.float32), index=index, columns=genes)
    return frame, pd.concat(rows, ignore_index=True)


def write_synthetic_chain(out_dir: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write the synthetic chain in drevalpy's format; returns the folder."""
    from gliotl.drug.data.dataset import DrugDataset
    from gliotl.drug.data.drevalpy import write_drevalpy

    expression, response = make_synthetic_chain(seed=seed, **kwargs)
    samples = response.drop_duplicates("cell_line_name").set_index("cell_line_name")[["tissue"]]
    dataset = DrugDataset(
        name="synthetic_chain", expression=expression,
        response=response.rename(columns={"cell_line_name": "sample_id"}).drop(columns="tissue"),
        samples=samples,
    )
    return write_drevalpy(dataset, out_dir)
