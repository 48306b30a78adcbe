"""``--mlflow URI``: copy a finished run to an MLflow tracking server or store.

The run folder stays the record; MLflow gets a searchable view of it: params = the resolved
config flattened to dotted keys, metrics = the headline numbers of ``metrics.json``, artifacts
= the report, predictions, splits, config, manifest and model card. mlflow is an optional
extra (``pip install 'gliotl[mlflow]'``); it is checked before the run starts, so a missing
package costs no compute.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

from gliotl.core.runs.rundir import RunDir
from gliotl.errors import GliotlError

INSTALL_HINT = "pip install 'gliotl[mlflow]' (or pip install mlflow-skinny)"
ARTIFACTS = ("report.html", "predictions.csv", "metrics.json", "splits.csv", "config.yaml",
             "manifest.json", "model_card.md", "run.log")
PARAM_VALUE_MAX = 6000  # MLflow's limit on one param value
BATCH = 100  # params per log_batch call (MLflow's limit)
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def require_mlflow(uri: str | None) -> None:
    """Fail before the run when ``--mlflow`` is given but mlflow cannot be imported."""
    if uri is None:
        return
    if not uri.strip():
        raise GliotlError("--mlflow: expected a tracking URI such as file:///tmp/mlruns or "
                          "http://host:5000, got ''")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise GliotlError(f"--mlflow: mlflow is not installed; {INSTALL_HINT}") from None


def flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of nested mappings and lists as (dotted key, value); list items by index."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from flatten(value, f"{prefix}{key}.")
    elif isinstance(data, list) and any(isinstance(item, (dict, list)) for item in data):
        for index, value in enumerate(data):
            yield from flatten(value, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), data


def config_params(config: dict[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params (values as text, cut to MLflow's limit)."""
    return {_UNSAFE.sub("_", key): str(value)[:PARAM_VALUE_MAX]
            for key, value in flatten(config)}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _record_metrics(rows: list[dict[str, Any]], key_columns: tuple[str, ...], prefix: str
                    ) -> dict[str, float]:
    out = {}
    for row in rows:
        name = "/".join(str(row.get(column)) for column in key_columns)
        for column, value in row.items():
            number = _number(value)
            if column not in key_columns and number is not None:
                out[_UNSAFE.sub("_", f"{prefix}/{name}/{column}")] = number
    return out


def run_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Headline numbers: drug ``target.summary`` per metric and method (mean, sd, CI) or MGMT
    ``holdout`` per modality group and method (AUC, CI, AP, ...)."""
    out: dict[str, float] = {}
    target = metrics.get("target")
    if isinstance(target, dict) and isinstance(target.get("summary"), list):
        out.update(_record_metrics(target["summary"], ("metric", "method"), "target"))
    if isinstance(metrics.get("holdout"), list):
        out.update(_record_metrics(metrics["holdout"], ("group", "method"), "holdout"))
    return out


def _allow_file_store(uri: str) -> None:
    """MLflow 3 refuses its file store unless asked; a ``file:`` URI given here is that ask."""
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def log_run(run: RunDir, uri: str) -> str:
    """Log the finished ``run`` to the MLflow store at ``uri``; returns the MLflow run id and
    records it in the run's manifest."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    _allow_file_store(uri)
    config = run.config()
    metrics = json.loads(run.metrics_path.read_text(encoding="utf-8"))
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(config["name"])
        experiment = found.experiment_id if found else client.create_experiment(config["name"])
        tracked = client.create_run(experiment, run_name=run.path.name, tags={
            "gliotl.run_dir": str(run.path.resolve()),
            "gliotl.status": str(run.manifest().get("status"))})
        run_id = tracked.info.run_id
        params = [Param(k, v) for k, v in config_params(config).items()]
        for start in range(0, len(params), BATCH):
            client.log_batch(run_id, params=params[start:start + BATCH])
        values = [Metric(k, v, 0, 0) for k, v in run_metrics(metrics).items()]
        for start in range(0, len(values), 10 * BATCH):
            client.log_batch(run_id, metrics=values[start:start + 10 * BATCH])
        for name in ARTIFACTS:
            if (run.path / name).is_file():
                client.log_artifact(run_id, str(run.path / name))
        client.set_terminated(run_id)
    except Exception as exc:  # mlflow raises its own and its HTTP stack's errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GliotlError(f"--mlflow {uri}: logging failed ({first[:200]}); the run itself "
                          f"is complete in {run.path}") from None
    run.update_manifest(mlflow={"tracking_uri": uri, "run_id": run_id})
    return run_id


__all__ = ["ARTIFACTS", "INSTALL_HINT", "config_params", "flatten", "log_run",
           "require_mlflow", "run_metrics"]
