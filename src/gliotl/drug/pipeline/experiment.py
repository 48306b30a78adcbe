"""The drug-response experiment: source-drug selection, transfer chains, target CV, baselines.

Stages, each a list of independent jobs run by :func:`gliotl.core.runs.jobs.run_jobs`
(so ``--resume`` reuses every finished one):

1. source selection (optional): one source model per candidate drug, scored by one-step transfer
   cross-validated on the intermediate step, next to the intermediate-only network;
2. source CV (optional, the paper's experiment 1): each source model cross-validated on its data;
3. upstream models: every chain prefix the methods need, trained step after step;
4. target folds: every method on every (repeat, fold) of the shared target splits;
5. final models: every network method refitted on all target samples, saved for ``predict``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.config import config_to_dict
from gliotl.core.io import copy_file, write_csv
from gliotl.core.runs.jobs import Executor, Job, run_stage
from gliotl.core.runs.rundir import RunDir
from gliotl.core.seeding import derive_seed, seed_everything
from gliotl.drug.config import CVConfig, ExperimentConfig, MethodConfig
from gliotl.drug.methods.registry import (
    Upstream,
    build_estimator,
    chain_id,
    mgmt_status_predictions,
    network_settings,
)
from gliotl.drug.pipeline.preprocess import StepPreprocessor
from gliotl.drug.pipeline.steps import prepare_steps, read_step, step_key
from gliotl.errors import GliotlError

# -- job functions (module level: importable by worker processes and Ray) ----------------------


def _load_config(run_path: str) -> ExperimentConfig:
    run = RunDir(run_path)
    return ExperimentConfig.model_validate(run.config())


def upstream_job(job_dir: Path, run_path: str, chain: list[str], parent: str | None,
                 seed: int) -> dict[str, Any]:
    """Train the last step of ``chain`` on all of its data, starting from ``parent``'s network."""
    from gliotl.drug.network.estimators import NetworkRegressor

    config = _load_config(run_path)
    data_dir = Path(run_path) / "data"
    last = chain[-1]
    step_cfg = config.steps[last.split("@")[0]]
    data = read_step(data_dir, last)
    prep = StepPreprocessor(step_cfg.scaler, step_cfg.response).fit(data.X, data.y)
    X, y = prep.transform_X(data.X), prep.transform_y(data.y)
    network, train = network_settings(config, step_cfg.train)
    transfer = None
    source = None
    if parent is not None:
        source = NetworkRegressor.load(Path(parent))
        transfer = _chain_transfer(config, chain)
    seed_everything(seed)
    start = time.perf_counter()
    model = NetworkRegressor(network=network, train=train, transfer=transfer, seed=seed)
    model.fit(X, y, source=source)
    seconds = time.perf_counter() - start
    model.save(job_dir / "model.pt")
    prep.save(job_dir / "preprocess.json")
    return {
        "chain": chain, "samples": int(len(y)), "train_seconds": seconds,
        "useful_flops": float(model.useful_flops_), "model": str(job_dir / "model.pt"),
    }


def _chain_transfer(config: ExperimentConfig, chain: list[str]) -> dict:
    """Upstream links use the transfer policy of the methods that need them (paper's by default)."""
    for method in config.methods:
        plain = [c.split("@")[0] for c in chain]
        if method.kind == "network" and method.chain[: len(chain)] == plain:
            return method.transfer
    return {"kind": "paper"}


def source_linear_job(job_dir: Path, run_path: str, step: str, seed: int) -> dict[str, Any]:
    """A linear model of a source step, the prior for prior-centred ElasticNet.

    A compact grid (l1_ratio 0.5, 20 alphas, 3 inner folds): the full default grid costs ~17x
    more on GDSC-sized sources (hundreds of lines x 6,000 genes) for a prior that the target
    model re-tunes anyway."""
    from gliotl.drug.methods.linear_transfer import fit_source_linear_model, save_source_linear

    config = _load_config(run_path)
    step_cfg = config.steps[step.split("@")[0]]
    data = read_step(Path(run_path) / "data", step)
    prep = StepPreprocessor(step_cfg.scaler, step_cfg.response).fit(data.X, data.y)
    coef, intercept, _ = fit_source_linear_model(
        prep.transform_X(data.X), prep.transform_y(data.y), l1_ratios=(0.5,), n_alphas=20,
        inner_folds=3, seed=seed,
    )
    save_source_linear(job_dir / "linear.npz", coef, intercept)
    return {"step": step, "nonzero": int(np.count_nonzero(coef))}


def multitask_job(job_dir: Path, run_path: str, method: str, seed: int) -> dict[str, Any]:
    """Pretrain a shared trunk on many drugs of the source dataset (one head per drug)."""
    from gliotl.drug.data.loaders import load_dataset
    from gliotl.drug.network.estimators import MultiTaskNetworkRegressor

    config = _load_config(run_path)
    spec = next(m for m in config.methods if m.name == method)
    step_cfg = config.steps[spec.chain[0]]
    source = read_step(Path(run_path) / "data", spec.chain[0])
    dataset = load_dataset(config.datasets[step_cfg.dataset], base_dir=Path(run_path))
    kwargs = {"source": step_cfg.release} if step_cfg.release else {}
    columns = {}
    for drug in spec.drugs:
        series = dataset.responses(drug, step_cfg.measure, **kwargs)
        columns[drug] = series.reindex(source.X.index)
    Y = pd.DataFrame(columns).astype(float)
    prep = StepPreprocessor(step_cfg.scaler, "none").fit(source.X, source.y)
    lo, hi = Y.min(), Y.max()
    Y = (Y - lo) / (hi - lo).replace(0, 1) * 10.0
    network, train = network_settings(config, "pretrain")
    model = MultiTaskNetworkRegressor(network=network, train=train, seed=seed)
    model.fit(prep.transform_X(source.X), Y.to_numpy(np.float32))
    model.save(job_dir / "model.pt")
    return {"drugs": spec.drugs, "samples": int(len(Y)), "observed": int(Y.notna().sum().sum()),
            "useful_flops": float(model.useful_flops_)}


def fold_job(job_dir: Path, run_path: str, step: str, method: dict, repeat: int, fold: int,
             train_ids: list[str], test_ids: list[str], upstream: dict, seed: int,
             save_model: bool = False) -> dict[str, Any]:
    """Fit one method on one training fold of ``step`` and predict its test fold."""
    config = _load_config(run_path)
    method_cfg = MethodConfig.model_validate(method)
    step_cfg = config.steps[step.split("@")[0]]
    data = read_step(Path(run_path) / "data", step)
    X_train, y_train = data.X.loc[train_ids], data.y.loc[train_ids]
    X_test, y_test = data.X.loc[test_ids], data.y.loc[test_ids]
    seed_everything(seed)
    start = time.perf_counter()
    flops = 0.0
    selected = None
    if method_cfg.kind == "mgmt_status":
        column = method_cfg.column
        if column not in data.annotations.columns:
            raise GliotlError(f"method '{method_cfg.name}': field 'column': '{column}' not in data")
        status = data.annotations[column]
        y_pred = mgmt_status_predictions(
            status.loc[train_ids].to_numpy(), y_train.to_numpy(), status.loc[test_ids].to_numpy()
        )
    else:
        prep = StepPreprocessor(step_cfg.scaler, step_cfg.response).fit(X_train, y_train)
        methods = {m.name: m for m in config.methods}
        estimator = build_estimator(method_cfg, config, Upstream.from_json(upstream), seed,
                                    methods)
        estimator.fit(prep.transform_X(X_train), prep.transform_y(y_train))
        y_pred = prep.inverse_y(estimator.predict(prep.transform_X(X_test)))
        flops = _training_flops(estimator)
        selected = getattr(estimator, "selected_", None)
        if save_model and hasattr(estimator, "model_"):
            estimator.model_.save(job_dir / "model.pt")
            prep.save(job_dir / "preprocess.json")
    seconds = time.perf_counter() - start
    predictions = pd.DataFrame({
        "method": method_cfg.name, "sample_id": list(test_ids), "repeat": repeat, "fold": fold,
        "role": "test", "y_true": y_test.to_numpy(float), "y_pred": np.asarray(y_pred, float),
    })
    result = {"predictions": predictions, "train_seconds": seconds, "useful_flops": flops}
    if selected is not None:  # nested selection: which method the inner CV chose in this fold
        result["selected"] = {"method": selected["method"], "params": selected["params"]}
    return result


def _training_flops(estimator: Any) -> float:
    for obj in (estimator, getattr(estimator, "model_", None),
                getattr(estimator, "best_estimator_", None)):
        if obj is not None and hasattr(obj, "useful_flops_"):
            return float(obj.useful_flops_)
    inner = getattr(estimator, "selected_estimator_", None)
    return _training_flops(inner) if inner is not None and inner is not estimator else 0.0


# -- orchestration -----------------------------------------------------------------------------


def _splits_for(run: RunDir, name: str, step_data, cv: CVConfig, seed: int, base_dir: Path):
    from gliotl.core.evaluation.splits import kfold_splits, load_splits, save_splits

    path = run.path / name
    ids = list(step_data.y.index)
    if path.is_file():
        return load_splits(path, sample_ids=ids)
    if cv.splits_file:
        splits = load_splits(base_dir / cv.splits_file, sample_ids=ids)
    else:
        splits = kfold_splits(
            ids, step_data.y.to_numpy(float), n_splits=cv.n_splits, n_repeats=cv.n_repeats,
            seed=seed, task="regression",
        )
    save_splits(splits, path)
    return splits


def _fold_jobs(prefix: str, run: RunDir, step: str, methods: list[MethodConfig], splits,
               upstream: Upstream, seed: int) -> list[Job]:
    from gliotl.core.evaluation.splits import iter_folds

    up = upstream.to_json()
    jobs = []
    for method in methods:
        for fold in iter_folds(splits):
            job_id = f"{prefix}-{method.name}-r{fold.repeat}-f{fold.fold}"
            jobs.append(Job(job_id, fold_job, dict(
                run_path=str(run.path), step=step, method=method.model_dump(mode="json"),
                repeat=fold.repeat, fold=fold.fold, train_ids=[str(i) for i in fold.train],
                test_ids=[str(i) for i in fold.test], upstream=up,
                seed=derive_seed(seed, prefix, method.name, fold.repeat, fold.fold),
            )))
    return jobs


def _predictions(outcome, prefix: str) -> pd.DataFrame:
    frames = [r["predictions"] for k, r in outcome.results.items() if k.startswith(prefix + "-")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()



def _train_chains(chains: list[list[str]], run: RunDir, upstream: Upstream, seed: int,
                  executor, retries, progress) -> dict[str, dict]:
    """Train every chain prefix, shortest first, each starting from its parent's network."""
    results: dict[str, dict] = {}
    prefixes = sorted({tuple(c[: i + 1]) for c in chains for i in range(len(c))}, key=len)
    for length in sorted({len(p) for p in prefixes}):
        jobs = []
        for prefix in (p for p in prefixes if len(p) == length):
            key = chain_id(list(prefix))
            parent = upstream.networks.get(chain_id(list(prefix[:-1]))) if length > 1 else None
            job_id = "upstream-" + key.replace(">", "__").replace("@", "_")
            jobs.append(Job(job_id, upstream_job, dict(
                run_path=str(run.path), chain=list(prefix),
                parent=str(parent) if parent else None, seed=derive_seed(seed, "upstream", key),
            )))
            upstream.networks[key] = run.job_dir(job_id) / "model.pt"
        outcome = run_stage(jobs, run, executor, retries, progress, f"upstream models ({length})")
        results.update(outcome.results)
    return results


def run_drug_experiment(
    config: ExperimentConfig,
    base_dir: Path,
    out: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Executor | None = None,
    retries: int = 0,
    progress: bool = True,
) -> RunDir:
    """Run the whole experiment and write its run directory; returns it."""
    from gliotl.drug.pipeline.report import write_drug_outputs

    config = resolve_dataset_paths(config, base_dir)
    run = RunDir.open(config.name, config_to_dict(config), config.seed, out=out, resume=resume,
                      overwrite=overwrite)
    if not (run.path / "data" / "summary.json").is_file():
        prepare_steps(config, base_dir, run.path / "data")
    seed = config.seed
    upstream = Upstream()
    extra: dict[str, Any] = {}

    sel = config.source_selection
    selected = None
    if sel is not None:
        chains = [[step_key(sel.step, drug)] for drug in sel.candidates]
        _train_chains(chains, run, upstream, seed, executor, retries, progress)
        score_step = read_step(run.path / "data", sel.score_on)
        splits = _splits_for(run, "splits_selection.csv", score_step, sel.cv, seed, base_dir)
        methods = [MethodConfig(name=f"from_{drug}", kind="network",
                                chain=[step_key(sel.step, drug)]) for drug in sel.candidates]
        methods.append(MethodConfig(name=f"{sel.score_on}_only", kind="network"))
        jobs = _fold_jobs("select", run, sel.score_on, methods, splits, upstream, seed)
        outcome = run_stage(jobs, run, executor, retries, progress, "source-drug selection")
        preds = _predictions(outcome, "select")
        table = _spearman_table(preds)
        write_csv(run.path / "source_selection.csv", table)
        candidates = table[table["method"].str.startswith("from_")]
        selected = candidates.sort_values("spearman_mean", ascending=False).iloc[0]["method"][5:]
        extra["source_selection"] = {"table": table.to_dict(orient="records"),
                                     "selected": selected}

    if config.source_cv is not None:
        drugs = sel.candidates if sel else [config.steps[config.methods[0].chain[0]].drug]
        src_step = sel.step if sel else config.methods[0].chain[0]
        rows = []
        for drug in drugs:
            key = step_key(src_step, drug) if sel else src_step
            data = read_step(run.path / "data", key)
            splits = _splits_for(run, f"splits_source_{drug}.csv", data, config.source_cv,
                                 seed, base_dir)
            method = MethodConfig(name=f"source_{drug}", kind="network",
                                  params={"train": network_settings(config, "pretrain")[1]})
            jobs = _fold_jobs(f"sourcecv_{drug}", run, key, [method], splits, upstream, seed)
            outcome = run_stage(jobs, run, executor, retries, progress, f"source CV {drug}")
            rows.append(_spearman_table(_predictions(outcome, f"sourcecv_{drug}")))
        table = pd.concat(rows, ignore_index=True)
        write_csv(run.path / "source_cv.csv", table)
        extra["source_cv"] = table.to_dict(orient="records")

    def resolve(step: str) -> str:
        if sel is not None and step == sel.step:
            return step_key(step, selected)
        return step

    methods = config.methods
    chains = [[resolve(s) for s in m.chain] for m in methods
              if m.chain and m.kind in ("network", "stacking")]
    upstream_results = _train_chains(chains, run, upstream, seed, executor, retries, progress)
    # Methods name their chain by step (``source>intermediate``); its network was trained under
    # the resolved name (``source@Temozolomide>intermediate``). Make the method's name find it.
    for m in methods:
        resolved = chain_id([resolve(s) for s in m.chain])
        if m.chain and resolved in upstream.networks:
            upstream.networks[chain_id(m.chain)] = upstream.networks[resolved]
    linear_jobs = []
    for m in (m for m in methods if m.kind == "prior_elasticnet"):
        key = resolve(m.chain[0])
        job_id = "linear-" + key.replace("@", "_")
        linear_jobs.append(Job(job_id, source_linear_job, dict(
            run_path=str(run.path), step=key, seed=derive_seed(seed, "linear", key))))
        upstream.linear[chain_id(m.chain)] = run.job_dir(job_id) / "linear.npz"
    for m in (m for m in methods if m.kind == "multitask"):
        job_id = f"multitask-{m.name}"
        linear_jobs.append(Job(job_id, multitask_job, dict(
            run_path=str(run.path), method=m.name, seed=derive_seed(seed, "multitask", m.name))))
        upstream.multitask[m.name] = run.job_dir(job_id) / "model.pt"
    if linear_jobs:
        upstream_results.update(
            run_stage(linear_jobs, run, executor, retries, progress, "source linear/multitask")
            .results)

    target = read_step(run.path / "data", config.target)
    splits = _splits_for(run, "splits.csv", target, config.target_cv, seed, base_dir)
    jobs = _fold_jobs("target", run, config.target, methods, splits, upstream, seed)
    outcome = run_stage(jobs, run, executor, retries, progress, "target folds")
    predictions = _predictions(outcome, "target")
    write_csv(run.predictions_path, predictions)
    chosen = [{"method": key.split("-")[1], "selected": r["selected"]["method"]}
              for key, r in outcome.results.items()
              if key.startswith("target-") and "selected" in r]
    if chosen:
        counts = pd.DataFrame(chosen).value_counts().rename("outer_folds").reset_index()
        write_csv(run.path / "nested_selection.csv", counts)
        extra["nested_selection"] = counts.to_dict(orient="records")

    final_jobs = []
    all_ids = [str(i) for i in target.y.index]
    for m in methods:
        if m.kind not in ("network", "multitask"):
            continue
        job_id = f"final-{m.name}"
        final_jobs.append(Job(job_id, fold_job, dict(
            run_path=str(run.path), step=config.target, method=m.model_dump(mode="json"),
            repeat=-1, fold=-1, train_ids=all_ids, test_ids=all_ids,
            upstream=upstream.to_json(),
            seed=derive_seed(seed, "final", m.name), save_model=True)))
    run_stage(final_jobs, run, executor, retries, progress, "final models")
    for job in final_jobs:
        src = run.job_dir(job.job_id)
        name = job.job_id.removeprefix("final-")
        dest = run.checkpoints / name
        for file in ("model.pt", "preprocess.json"):
            copy_file(src / file, dest / file)

    timings = {
        "train_seconds": float(sum(r.get("train_seconds", 0.0)
                                   for r in {**upstream_results, **outcome.results}.values())),
        "useful_flops": float(sum(r.get("useful_flops", 0.0)
                                 for r in {**upstream_results, **outcome.results}.values())),
    }
    extra["selected_source_drug"] = selected
    extra["compute"] = timings
    write_drug_outputs(run, config, predictions, extra)
    run.finish("finished", selected_source_drug=selected)
    return run


PATH_KEYS = ("path", "paths", "dir", "file", "files")


def resolve_dataset_paths(config: ExperimentConfig, base_dir: Path) -> ExperimentConfig:
    """Dataset paths relative to the config file become absolute, so jobs and ``--resume`` from
    any working directory read the same files (the resolved config is what the run records)."""

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str((base_dir / value).resolve())
        if isinstance(value, list):
            return [absolute(v) for v in value]
        return value

    datasets = {}
    for name, spec in config.datasets.items():
        datasets[name] = {
            key: absolute(value) if key.endswith(PATH_KEYS) else value
            for key, value in spec.items()
        }
    return config.model_copy(update={"datasets": datasets})


def _spearman_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Spearman of each repeat's pooled out-of-fold predictions, mean and sd per method."""
    from scipy.stats import spearmanr

    rows = []
    for (method, repeat), group in predictions.groupby(["method", "repeat"]):
        rho = spearmanr(group["y_true"], group["y_pred"]).statistic
        rows.append({"method": method, "repeat": repeat, "spearman": float(rho)})
    per_repeat = pd.DataFrame(rows)
    return (per_repeat.groupby("method")["spearman"]
            .agg(spearman_mean="mean", spearman_sd="std", repeats="count").reset_index())
