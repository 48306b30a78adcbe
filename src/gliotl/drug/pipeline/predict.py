"""Apply a finished run's final model to new samples (its genes, scaler and response scale).

The table is read by the reader ``drug run`` uses, so the same values are refused; missing genes
and missing values are imputed as in training (the training centre) and counted per sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.core.runs.rundir import RunDir
from gliotl.errors import GliotlError, input_error


def _read_expression(data: Path, genes: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """New samples x harmonised genes through the readers ``drug run`` uses, and what the
    documented policies changed (duplicate rows averaged); the ID column may not be a gene."""
    from gliotl.drug.data._common import average_duplicate_samples, read_expression_table
    from gliotl.drug.data.harmonise import harmonise_expression, normalise_gene_symbol

    notes: list[str] = []
    if data.suffix in (".yaml", ".yml"):
        from gliotl.drug.data.loaders import load_dataset, load_spec_file

        dataset = load_dataset(load_spec_file(data))
        return dataset.expression, list(dataset.notes)
    frame = read_expression_table(data)
    id_column = str(frame.index.name)
    if normalise_gene_symbol(id_column) in set(genes):
        raise input_error(data, id_column, "is one of the model's genes; expected the sample ID "
                          "in the first column (samples x genes)")
    frame = average_duplicate_samples(frame, data, notes)
    expression, _ = harmonise_expression(frame)
    return expression, notes


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
    expression, notes = _read_expression(Path(data), prep.genes_)
    known = [g for g in prep.genes_ if g in expression.columns]
    if len(known) < 0.5 * len(prep.genes_):
        raise input_error(data, "genes", f"only {len(known)} of the model's {len(prep.genes_)} "
                          "genes are present; expected gene symbols as columns")
    model = NetworkRegressor.load(folder / "model.pt")
    y = prep.inverse_y(model.predict(prep.transform_X(expression)))
    imputed = expression.reindex(columns=known).isna().sum(axis=1).to_numpy(int)
    return pd.DataFrame({"sample_id": expression.index, "method": method,
                         "prediction": np.asarray(y, float),
                         "genes_missing": len(prep.genes_) - len(known),
                         "values_imputed": imputed,
                         "note": "; ".join(notes)})
