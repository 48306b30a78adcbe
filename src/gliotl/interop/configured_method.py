"""One method of a gliotl experiment config as a scikit-learn regressor on any target data.

Other frameworks (drevalpy) hand a model the target's training rows and nothing else. A gliotl
transfer method also needs its upstream steps: :class:`ConfiguredMethodRegressor` loads them
from the config's own datasets, trains the method's chain (or the source linear model) on them
with gliotl's own job functions, then fits the method on the target rows with the target step's
preprocessing, fitted on those rows only. The target's genes decide the gene space: every
upstream dataset must carry each of them (matched by harmonised symbol).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from gliotl.core.io import write_parquet
from gliotl.core.seeding import derive_seed, seed_everything
from gliotl.drug.config import ExperimentConfig, MethodConfig, load_experiment_config
from gliotl.drug.data.harmonise import normalise_gene_symbol, normalise_sample_key
from gliotl.drug.methods.registry import BuildContext, Needs, method_kind
from gliotl.drug.pipeline.preprocess import StepPreprocessor
from gliotl.drug.pipeline.steps import build_step
from gliotl.errors import GliotlError, input_error


def _method(config: ExperimentConfig, name: str, source: Path) -> MethodConfig:
    for method in config.methods:
        if method.name == name:
            return method
    names = ", ".join(m.name for m in config.methods)
    raise input_error(source, "method", f"no method '{name}' in the config (found: {names})")


def _needed(config: ExperimentConfig, method: MethodConfig) -> list[MethodConfig]:
    """The method and every method it is made of (nested selection's candidates)."""
    by_name = {m.name: m for m in config.methods}
    found, todo = [], [method]
    while todo:
        current = todo.pop()
        if current not in found:
            found.append(current)
            todo.extend(by_name[r] for r in current.references())
    return found


class _Upstream:
    """Writes the chain's steps (restricted to the target genes) and trains their models."""

    def __init__(self, config: ExperimentConfig, genes: list[str], target_ids: list[str],
                 work: Path, source: Path):
        self.config, self.genes, self.work, self.source = config, genes, work, source
        self.target_keys = {normalise_sample_key(s) for s in target_ids}
        self.datasets: dict[str, Any] = {}
        self.written: set[str] = set()

    def step(self, name: str) -> Any:
        from gliotl.drug.data.loaders import load_dataset
        from gliotl.drug.pipeline.experiment import StepInput

        step = self.config.steps.get(name)
        if step is None:
            raise input_error(self.source, "chain", f"no step '{name}' in the config")
        if name not in self.written:
            if step.dataset not in self.datasets:
                self.datasets[step.dataset] = load_dataset(self.config.datasets[step.dataset])
            self._write(name, build_step(name, step, self.datasets[step.dataset]))
        return StepInput(str(self.work / "data"), name, step)

    def _write(self, name: str, data: Any) -> None:
        missing = [g for g in self.genes if g not in data.X.columns]
        if missing:
            raise input_error(self.source, f"steps.{name}", f"{len(missing)} target genes are not "
                              f"in this step's dataset (e.g. '{missing[0]}')")
        shared = sorted(self.target_keys & {normalise_sample_key(s) for s in data.X.index})
        if shared:
            raise input_error(self.source, f"steps.{name}.filters", f"{len(shared)} target cell "
                              f"lines are also in this earlier step (e.g. '{shared[0]}')")
        frame = data.X[self.genes].copy()
        frame.insert(0, "__y__", data.y.astype(float))
        write_parquet(self.work / "data" / f"{name}.parquet", frame)
        write_parquet(self.work / "data" / f"{name}.annotations.parquet",
                      data.annotations.astype("string"))
        self.written.add(name)

    def network_chain(self, chain: list[str]) -> str:
        from gliotl.drug.pipeline.experiment import UpstreamRequest, chain_transfer, upstream_job

        parent: str | None = None
        for length in range(1, len(chain) + 1):
            prefix = chain[:length]
            key = ">".join(prefix)
            job_dir = self.work / ("upstream-" + key.replace(">", "__"))
            if not (job_dir / "model.pt").is_file():
                step = self.step(prefix[-1])
                upstream_job(job_dir, UpstreamRequest(
                    step, prefix, parent, self.config.network,
                    self.config.train.preset(step.config.train),
                    chain_transfer(self.config, prefix) if parent else None,
                    derive_seed(self.config.seed, "upstream", key)))
            parent = str(job_dir / "model.pt")
        assert parent is not None
        return parent

    def source_linear(self, step_name: str) -> str:
        from gliotl.drug.pipeline.experiment import LinearRequest, source_linear_job

        job_dir = self.work / f"linear-{step_name}"
        if not (job_dir / "linear.npz").is_file():
            source_linear_job(job_dir, LinearRequest(
                self.step(step_name), derive_seed(self.config.seed, "linear", step_name)))
        return str(job_dir / "linear.npz")


def _artefacts(config: ExperimentConfig, methods: list[MethodConfig], upstream: _Upstream,
               source: Path) -> dict[str, str]:
    artefacts: dict[str, str] = {}
    selection = config.source_selection
    for method in methods:
        needs, chain = method_kind(method.kind).needs, method.steps()
        if selection is not None and selection.step in chain:
            raise input_error(source, "source_selection", "source-drug selection runs only in "
                              "`gliotl drug run`; name the source drug in its step instead")
        if needs is Needs.NETWORK_CHAIN and chain:
            artefacts[method.name] = upstream.network_chain(chain)
        elif needs is Needs.SOURCE_LINEAR:
            artefacts[method.name] = upstream.source_linear(chain[0])
        elif needs is Needs.MULTITASK_TRUNK:
            raise input_error(source, "method", f"'{method.name}' (multitask) needs several "
                              "source drugs; not available outside `gliotl drug run`")
    return artefacts


class ConfiguredMethodRegressor(RegressorMixin, BaseEstimator):
    """Method ``method`` of the experiment config at ``config_path``, fitted on target rows.

    ``X``: samples x genes (gene symbols as columns); upstream models are trained once per
    instance and kept in ``work_dir`` (a temporary folder when not given). ``seed`` is the
    fitting seed (default: the config's); upstream models always use the config's seeds, as in
    ``gliotl drug run``, so the same chain is trained whatever the target folds."""

    def __init__(self, config_path: str | Path = "", method: str = "",
                 work_dir: str | Path | None = None, seed: int | None = None):
        self.config_path = config_path
        self.method = method
        self.work_dir = work_dir
        self.seed = seed

    def fit(self, X: pd.DataFrame, y: Any) -> ConfiguredMethodRegressor:
        source = Path(self.config_path)
        config, _ = load_experiment_config(source)
        method = _method(config, self.method, source)
        if method_kind(method.kind).annotation is not None:
            raise input_error(source, "method", f"'{method.name}' reads an annotation column, "
                              "not expression")
        X = self._genes(X)
        work = Path(self.work_dir) if self.work_dir else Path(tempfile.mkdtemp(prefix="gliotl-"))
        self.work_dir_ = work
        upstream = _Upstream(config, list(X.columns), list(X.index.astype(str)), work, source)
        artefacts = _artefacts(config, _needed(config, method), upstream, source)
        target = config.steps.get(config.target)
        scaler = target.scaler if target is not None else "standard"
        response = target.response if target is not None else "minmax"
        if method.preprocessing.scaler != "step":
            scaler = method.preprocessing.scaler
        self.preprocessor_ = StepPreprocessor(scaler, response,
                                              method.preprocessing.top_k_variance).fit(X, y)
        seed = config.seed if self.seed is None else self.seed
        context = BuildContext(config.network, config.train.preset("finetune"), seed,
                               artefacts, {m.name: m for m in config.methods})
        seed_everything(seed)
        self.estimator_ = context.build(method)
        self.estimator_.fit(self.preprocessor_.transform_X(X),
                            self.preprocessor_.transform_y(np.asarray(y, float)))
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        values = self.estimator_.predict(self.preprocessor_.transform_X(self._genes(X)))
        return np.asarray(self.preprocessor_.inverse_y(values), float)

    @staticmethod
    def _genes(X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise GliotlError("ConfiguredMethodRegressor: field 'X': expected a DataFrame with "
                              "gene symbols as columns")
        return X.set_axis([normalise_gene_symbol(c) for c in X.columns], axis=1).astype(float)
