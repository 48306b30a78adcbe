"""Apply a finished run's final model to new samples (its genes, scaler and response scale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.core.io import read_table
from gliotl.core.runs.rundir import RunDir
from gliotl.errors import GliotlError, input_error


def _read_expression(data: Path) -> pd.DataFrame:
    if data.suffix in (".yaml", ".yml"):
        from gliotl.drug.data.loaders import load_dataset, load_spec_file

        return load_dataset(load_spec_file(data)).expression
    frame = read_table(data)
    frame = frame.set_index(frame.columns[0])
    frame.index = frame.index.astype(str)
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad = numeric.columns[numeric.isna().all() & frame.notna().any()]
    if len(bad):
        raise input_error(data, str(bad[0]), "expected numeric expression values")
    return numeric


def predict_from_run(run_dir: Path, data: Path, method: str | None = None) -> pd.DataFrame:
    from gliotl.drug.network.estimators import NetworkRegressor
    from gliotl.drug.pipeline.preprocess import StepPreprocessor

    run = RunDir(run_dir)
    if not run.manifest_path.is_file():
        raise GliotlError(f"{run_dir}: not a gliotl run directory (no manifest.json)")
    if run.manifest().get("status") != "finished":
        raise GliotlError(f"{run_dir}: run is not finished; resume it before predicting")
    method = method or run.config().get("reference")
    folder = run.checkpoints / str(method)
    if not (folder / "model.pt").is_file():
        available = sorted(p.name for p in run.checkpoints.iterdir() if p.is_dir())
        raise GliotlError(
            f"{run_dir}: field 'method': no saved model '{method}' (available: {available})"
        )
    prep = StepPreprocessor.load(folder / "preprocess.json")
    expression = _read_expression(Path(data))
    from gliotl.drug.data.harmonise import normalise_gene_symbol

    expression.columns = [normalise_gene_symbol(c) for c in expression.columns]
    expression = expression.T.groupby(level=0).mean().T
    known = [g for g in prep.genes_ if g in expression.columns]
    if len(known) < 0.5 * len(prep.genes_):
        raise input_error(data, "genes", f"only {len(known)} of the model's {len(prep.genes_)} "
                          "genes are present; expected gene symbols as columns")
    model = NetworkRegressor.load(folder / "model.pt")
    y = prep.inverse_y(model.predict(prep.transform_X(expression)))
    return pd.DataFrame({"sample_id": expression.index, "method": method,
                         "prediction": np.asarray(y, float),
                         "genes_missing": len(prep.genes_) - len(known)})
