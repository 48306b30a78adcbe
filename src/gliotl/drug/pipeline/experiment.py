"""The drug-response experiment: source-drug selection, transfer chains, target CV, baselines.

Stages, each a list of independent jobs run on the core skeleton
(:func:`gliotl.core.runs.experiment.run_experiment`, so ``--resume`` reuses every finished one):

1. source selection (optional): one source model per candidate drug, scored by one-step transfer
   cross-validated on the intermediate step, next to the intermediate-only network;
2. source CV (optional, the paper's experiment 1): each source model cross-validated on its data;
3. upstream models: every chain prefix the methods need, trained step after step, then the
   source linear models and multi-task trunks;
4. target folds: every method on every (repeat, fold) of the shared target splits;
5. label permutations (optional, ``evaluation.n_permutations``): the same target folds refitted
   on permuted targets, one job per (method, permutation), for the test against chance;
6. final models: every method whose kind saves one, refitted on all target samples.

What a method needs and how it is built comes from :mod:`gliotl.drug.methods.registry`. Jobs get
their inputs as one request object (step data location, sub-configs, ids), never the config file.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliotl.core.config import resolve_config_paths
from gliotl.core.io import copy_file, write_csv
from gliotl.core.reporting.model_card import write_model_card
from gliotl.core.runs.experiment import Experiment, run_experiment
from gliotl.core.runs.jobs import Executor, Job, JobsOutcome
from gliotl.core.runs.rundir import RunDir
from gliotl.core.seeding import derive_seed, seed_everything
from gliotl.drug.config import (
    CVConfig,
    ExperimentConfig,
    MethodConfig,
    MethodPreprocessing,
    StepConfig,
    TrainOverride,
)
from gliotl.drug.methods.registry import (
    BuildContext,
    Needs,
    NetworkMethod,
    NetworkParams,
    method_kind,
)
from gliotl.drug.network.model import NetworkConfig, TrainConfig
from gliotl.drug.network.transfer import PaperTransfer
from gliotl.drug.pipeline.batching import fit_predict_many, run_fold_stage
from gliotl.drug.pipeline.data_changes import DATA_CHANGES, record_data_changes
from gliotl.drug.pipeline.model_card import drug_model_card
from gliotl.drug.pipeline.preprocess import StepPreprocessor
from gliotl.drug.pipeline.steps import StepData, prepare_steps, read_step, step_key
from gliotl.errors import GliotlError

# -- job requests and functions (module level: importable by worker processes and Ray) --------


@dataclass(frozen=True)
class StepInput:
    """One prepared step instance (``source@Oxaliplatin``) in the run's data folder."""

    data_dir: str
    key: str
    config: StepConfig

    def read(self) -> StepData:
        return read_step(Path(self.data_dir), self.key)

    def preprocessor(self, X: pd.DataFrame, y: pd.Series,
                     method: MethodPreprocessing | None = None) -> StepPreprocessor:
        """The step's preprocessing fitted on (X, y), with a method's own overrides."""
        scaler, top_k = self.config.scaler, None
        if method is not None:
            scaler = scaler if method.scaler == "step" else method.scaler
            top_k = method.top_k_variance
        return StepPreprocessor(scaler, self.config.response, top_k).fit(X, y)


@dataclass(frozen=True)
class UpstreamRequest:
    step: StepInput
    chain: list[str]
    parent: str | None
    network: NetworkConfig
    train: TrainConfig
    transfer: Any
    seed: int


def upstream_job(job_dir: Path, request: UpstreamRequest) -> dict[str, Any]:
    """Train the last step of a chain on all of its data, starting from ``parent``'s network."""
    from gliotl.drug.network.estimators import NetworkRegressor

    data = request.step.read()
    prep = request.step.preprocessor(data.X, data.y)
    X, y = prep.transform_X(data.X), prep.transform_y(data.y)
    source = NetworkRegressor.load(Path(request.parent)) if request.parent else None
    seed_everything(request.seed)
    start = time.perf_counter()
    model = NetworkRegressor(network=request.network, train=request.train,
                             transfer=request.transfer if source else None, seed=request.seed)
    model.fit(X, y, source=source)
    seconds = time.perf_counter() - start
    model.save(job_dir / "model.pt")
    prep.save(job_dir / "preprocess.json")
    return {
        "chain": request.chain, "samples": int(len(y)), "train_seconds": seconds,
        "useful_flops": float(model.useful_flops_), "model": str(job_dir / "model.pt"),
    }


@dataclass(frozen=True)
class LinearRequest:
    step: StepInput
    seed: int


def source_linear_job(job_dir: Path, request: LinearRequest) -> dict[str, Any]:
    """A linear model of a source step, the prior for prior-centred ElasticNet.

    A compact grid (l1_ratio 0.5, 20 alphas, 3 inner folds): the full default grid costs ~17x
    more on GDSC-sized sources (hundreds of lines x 6,000 genes) for a prior that the target
    model re-tunes anyway."""
    from gliotl.drug.methods.linear_transfer import fit_source_linear_model, save_source_linear

    data = request.step.read()
    prep = request.step.preprocessor(data.X, data.y)
    coef, intercept, _ = fit_source_linear_model(
        prep.transform_X(data.X), prep.transform_y(data.y), l1_ratios=(0.5,), n_alphas=20,
        inner_folds=3, seed=request.seed,
    )
    save_source_linear(job_dir / "linear.npz", coef, intercept)
    return {"step": request.step.key, "nonzero": int(np.count_nonzero(coef))}


@dataclass(frozen=True)
class MultitaskRequest:
    step: StepInput
    dataset: Any
    drugs: list[str]
    network: NetworkConfig
    train: TrainConfig
    seed: int


def multitask_job(job_dir: Path, request: MultitaskRequest) -> dict[str, Any]:
    """Pretrain a shared trunk on many drugs of the source dataset (one head per drug)."""
    from gliotl.drug.data.loaders import load_dataset
    from gliotl.drug.network.estimators import MultiTaskNetworkRegressor

    step_cfg = request.step.config
    source = request.step.read()
    dataset = load_dataset(request.dataset)
    kwargs = {"source": step_cfg.release} if step_cfg.release else {}
    Y = pd.DataFrame({drug: dataset.responses(drug, step_cfg.measure, **kwargs)
                      .reindex(source.X.index) for drug in request.drugs}).astype(float)
    prep = StepPreprocessor(step_cfg.scaler, "none").fit(source.X, source.y)
    lo, hi = Y.min(), Y.max()
    Y = (Y - lo) / (hi - lo).replace(0, 1) * 10.0
    model = MultiTaskNetworkRegressor(network=request.network, train=request.train,
                                      seed=request.seed)
    model.fit(prep.transform_X(source.X), Y.to_numpy(np.float32))
    model.save(job_dir / "model.pt")
    return {"drugs": request.drugs, "samples": int(len(Y)),
            "observed": int(Y.notna().sum().sum()), "useful_flops": float(model.useful_flops_)}


@dataclass(frozen=True)
class FoldRequest:
    """Fit ``method`` on ``train_ids`` of a step, predict ``test_ids``; ``context`` carries the
    job's seed and the upstream artefacts."""

    step: StepInput
    method: MethodConfig
    context: BuildContext
    repeat: int
    fold: int
    train_ids: list[str]
    test_ids: list[str]
    save_model: bool = False


def fold_job(job_dir: Path, request: FoldRequest) -> dict[str, Any]:
    """Fit one method on one training fold of a step and predict its test fold."""
    data = request.step.read()
    seed_everything(request.context.seed)
    start = time.perf_counter()
    estimator, y_pred = _fit_predict(request, data, job_dir)
    seconds = time.perf_counter() - start
    return fold_result(request, data, estimator, y_pred, seconds)


def fold_result(request: FoldRequest, data: StepData, estimator: Any, y_pred: Any,
                seconds: float) -> dict[str, Any]:
    """A fold job's result: test predictions, time, useful FLOPs and what tuning chose."""
    y_test = data.y.loc[request.test_ids]
    predictions = pd.DataFrame({
        "method": request.method.name, "sample_id": list(request.test_ids),
        "repeat": request.repeat, "fold": request.fold, "role": "test",
        "y_true": y_test.to_numpy(float), "y_pred": np.asarray(y_pred, float),
    })
    result = {"method": request.method.name, "repeat": request.repeat, "fold": request.fold,
              "predictions": predictions, "train_seconds": seconds,
              "useful_flops": _training_flops(estimator)}
    selected = getattr(estimator, "selected_", None)
    if selected is not None:  # nested selection: which method the inner CV chose in this fold
        result["selected"] = {"method": selected["method"], "params": selected["params"]}
    tuning = getattr(estimator, "tuning_", None)
    if tuning is not None:  # where a tuned penalty fell on its grid (ElasticNet)
        result["tuning"] = dict(tuning)
    return result


def _fit_predict(request: FoldRequest, data: StepData, job_dir: Path) -> tuple[Any, Any]:
    """Annotation kinds see the raw column and responses; the others preprocessed expression
    (fitted on the training fold only)."""
    method, train, test = request.method, request.train_ids, request.test_ids
    entry = method_kind(method.kind)
    estimator = entry.build(method, request.context)
    if entry.annotation is not None:
        column = entry.annotation(method)
        if column not in data.annotations.columns:
            raise GliotlError(f"method '{method.name}': field 'column': '{column}' not in data")
        status = data.annotations[column].astype(object)
        estimator.fit(status.loc[train].to_numpy().reshape(-1, 1), data.y.loc[train].to_numpy())
        return estimator, estimator.predict(status.loc[test].to_numpy().reshape(-1, 1))
    X_train, y_train = data.X.loc[train], data.y.loc[train]
    prep = request.step.preprocessor(X_train, y_train, method.preprocessing)
    estimator.fit(prep.transform_X(X_train), prep.transform_y(y_train))
    y_pred = prep.inverse_y(estimator.predict(prep.transform_X(data.X.loc[test])))
    if request.save_model:
        prep.save(job_dir / "preprocess.json")
        if hasattr(estimator, "model_"):
            estimator.model_.save(job_dir / "model.pt")
    return estimator, y_pred


@dataclass(frozen=True)
class PermutationRequest:
    """Refit ``method`` on every target fold with the target permuted by ``perm_seed``.

    The same ``perm_seed`` (one per permutation index) permutes the target for every method,
    so the null statistics of two methods are paired."""

    step: StepInput
    method: MethodConfig
    context: BuildContext
    permutation: int
    perm_seed: int
    folds: list[tuple[int, int, list[str], list[str]]] = field(default_factory=list)


def permuted_step(data: StepData, perm_seed: int) -> StepData:
    """``data`` with its responses shuffled over samples (expression and annotations kept)."""
    rng = np.random.default_rng(perm_seed)
    y = pd.Series(rng.permutation(data.y.to_numpy()), index=data.y.index, name=data.y.name)
    return replace(data, y=y)


def mean_pooled_spearman(predictions: pd.DataFrame) -> tuple[float, list[float]]:
    """The headline statistic: each repeat's pooled out-of-fold Spearman, and their mean; NaN
    for a method constant in every fold (as :mod:`gliotl.core.evaluation.evaluate` reports)."""
    from gliotl.core.evaluation.metrics import fast_spearman

    test = predictions[predictions["role"] == "test"]
    spread = test.groupby(["repeat", "fold"])["y_pred"].agg(np.ptp)
    if (spread == 0).all():
        return float("nan"), []
    values = [fast_spearman(part["y_true"].to_numpy(float), part["y_pred"].to_numpy(float))
              for _, part in test.groupby("repeat", sort=True)]
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"), values


def permutation_job(job_dir: Path, request: PermutationRequest) -> dict[str, Any]:
    """The whole target pipeline of one method (in-fold preprocessing, tuning, fit) on one
    permuted target over the saved splits: the engine's own fold fitting, fold by fold."""
    statistic, per_repeat = refit_statistic(request, request.step.read(), job_dir)
    return {"method": request.method.name, "permutation": request.permutation,
            "statistic": statistic, "per_repeat": per_repeat}


def refit_statistic(request: PermutationRequest, data: StepData, job_dir: Path,
                    permute: bool = True) -> tuple[float, list[float]]:
    """Refit ``request.method`` on every fold of ``request.folds`` with ``_fit_predict`` (the
    target folds' own code) on ``data``, its target permuted by ``request.perm_seed`` unless
    ``permute`` is False; returns the mean-over-repeats pooled Spearman and its values."""
    if permute:
        data = permuted_step(data, request.perm_seed)
    frames = []
    fold_requests = [
        FoldRequest(request.step, request.method, replace(request.context, seed=derive_seed(
            request.context.seed, request.method.name, request.permutation, repeat, fold)),
            repeat, fold, train, test)
        for repeat, fold, train, test in request.folds
    ]
    fitted = fit_predict_many(fold_requests, data, job_dir)  # networks stacked (issue 17)
    for (repeat, fold, _, test), (_, y_pred) in zip(request.folds, fitted, strict=True):
        frames.append(pd.DataFrame({"repeat": repeat, "fold": fold, "role": "test",
                                    "y_true": data.y.loc[test].to_numpy(float),
                                    "y_pred": np.asarray(y_pred, float)}))
    return mean_pooled_spearman(pd.concat(frames, ignore_index=True))


def _training_flops(estimator: Any) -> float:
    for obj in (estimator, getattr(estimator, "model_", None),
                getattr(estimator, "best_estimator_", None)):
        if obj is not None and hasattr(obj, "useful_flops_"):
            return float(obj.useful_flops_)
    inner = getattr(estimator, "selected_estimator_", None)
    return _training_flops(inner) if inner is not None and inner is not estimator else 0.0


# -- stages ------------------------------------------------------------------------------------


@dataclass
class Engine:
    """The open experiment, its config, and the source drug chosen so far."""

    exp: Experiment
    config: ExperimentConfig
    selected: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.exp.run.path / "data"

    def step(self, key: str) -> StepInput:
        return StepInput(str(self.data_dir), key, self.config.steps[key.split("@")[0]])

    def resolve(self, step: str) -> str:
        """A method's chain step as trained: the source step carries the selected drug."""
        sel = self.config.source_selection
        if sel is not None and step == sel.step:
            return step_key(step, self.selected)
        return step

    def context(self, artefacts: dict[str, str], methods: list[MethodConfig]) -> BuildContext:
        return BuildContext(self.config.network, self.config.train.preset("finetune"),
                            self.config.seed, artefacts, {m.name: m for m in methods})

    def splits(self, filename: str, step: StepInput, cv: CVConfig) -> pd.DataFrame:
        from gliotl.core.evaluation.splits import kfold_splits

        y = step.read().y
        return self.exp.splits(filename, list(y.index), lambda: kfold_splits(
            list(y.index), y.to_numpy(float), n_splits=cv.n_splits, n_repeats=cv.n_repeats,
            seed=self.config.seed, task="regression"), cv.splits_file)


def _fold_jobs(eng: Engine, prefix: str, step: StepInput, methods: list[MethodConfig],
               splits: pd.DataFrame, context: BuildContext) -> list[Job]:
    from gliotl.core.evaluation.splits import iter_folds

    seed = eng.config.seed
    jobs = []
    for method in methods:
        for fold in iter_folds(splits):
            job_seed = derive_seed(seed, prefix, method.name, fold.repeat, fold.fold)
            request = FoldRequest(step, method, replace(context, seed=job_seed), fold.repeat,
                                  fold.fold, [str(i) for i in fold.train],
                                  [str(i) for i in fold.test])
            jobs.append(Job(f"{prefix}-{method.name}-r{fold.repeat}-f{fold.fold}", fold_job,
                            {"request": request}))
    return jobs


def _predictions(outcome: JobsOutcome) -> pd.DataFrame:
    frames = [r["predictions"] for r in outcome.results.values()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def chain_transfer(config: ExperimentConfig, chain: list[str]) -> Any:
    """Upstream links use the transfer policy of the first network method whose chain starts
    with them (the paper's by default)."""
    plain = [c.split("@")[0] for c in chain]
    for method in config.methods:
        transfer = getattr(method, "transfer", None)
        if (method_kind(method.kind).needs is Needs.NETWORK_CHAIN and transfer is not None
                and method.steps()[: len(chain)] == plain):
            return transfer
    return PaperTransfer()


def _train_chains(eng: Engine, chains: list[list[str]]) -> tuple[dict[str, str], dict]:
    """Train every chain prefix, shortest first, each starting from its parent's network;
    returns each chain's network (by ``a>b`` key) and the job results."""
    networks: dict[str, str] = {}
    results: dict[str, dict] = {}
    prefixes = sorted({tuple(c[: i + 1]) for c in chains for i in range(len(c))}, key=len)
    for length in sorted({len(p) for p in prefixes}):
        jobs = []
        for prefix in (list(p) for p in prefixes if len(p) == length):
            key = ">".join(prefix)
            step = eng.step(prefix[-1])
            job_id = "upstream-" + key.replace(">", "__").replace("@", "_")
            jobs.append(Job(job_id, upstream_job, {"request": UpstreamRequest(
                step, prefix, networks.get(">".join(prefix[:-1])) if length > 1 else None,
                eng.config.network, eng.config.train.preset(step.config.train),
                chain_transfer(eng.config, prefix) if length > 1 else None,
                derive_seed(eng.config.seed, "upstream", key))},
                outputs=("model.pt", "preprocess.json")))
            networks[key] = str(eng.exp.run.job_dir(job_id) / "model.pt")
        results.update(eng.exp.stage(jobs, f"upstream models ({length})").results)
    return networks, results


def _spearman_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Spearman of each repeat's pooled out-of-fold predictions, mean and sd per method."""
    from gliotl.core.evaluation.evaluate import evaluate_predictions

    per_repeat = evaluate_predictions(predictions, "regression", n_boot=0).per_repeat
    return (per_repeat.groupby("method")["spearman"]
            .agg(spearman_mean="mean", spearman_sd="std", repeats="count").reset_index())


def select_source(eng: Engine, extra: dict[str, Any]) -> None:
    """Score each candidate source drug by one-step transfer on ``score_on``; keep the best."""
    sel = eng.config.source_selection
    if sel is None:
        return
    networks, _ = _train_chains(eng, [[step_key(sel.step, drug)] for drug in sel.candidates])
    drugs = {f"from_{drug}": drug for drug in sel.candidates}
    methods: list[MethodConfig] = [NetworkMethod(name=name, kind="network",
                                                 chain=[step_key(sel.step, drug)])
                                   for name, drug in drugs.items()]
    methods.append(NetworkMethod(name=f"{sel.score_on}_only", kind="network"))
    artefacts = {name: networks[step_key(sel.step, drug)] for name, drug in drugs.items()}
    step = eng.step(sel.score_on)
    splits = eng.splits("splits_selection.csv", step, sel.cv)
    jobs = _fold_jobs(eng, "select", step, methods, splits, eng.context(artefacts, methods))
    table = _spearman_table(_predictions(eng.exp.stage(jobs, "source-drug selection")))
    write_csv(eng.exp.run.path / "source_selection.csv", table)
    candidates = table[table["method"].isin(list(drugs))]
    eng.selected = drugs[candidates.sort_values("spearman_mean", ascending=False)
                         .iloc[0]["method"]]
    extra["source_selection"] = {"table": table.to_dict(orient="records"),
                                 "selected": eng.selected}


def source_cv_steps(eng: Engine) -> list[tuple[str, StepInput]]:
    """The (drug, step) pairs whose source models ``source_cv`` cross-validates."""
    config, sel = eng.config, eng.config.source_selection
    src_step = sel.step if sel else config.methods[0].steps()[0]
    drugs = sel.candidates if sel else [config.steps[src_step].drug]
    return [(drug, eng.step(step_key(src_step, drug) if sel else src_step)) for drug in drugs]


def source_cv(eng: Engine, extra: dict[str, Any]) -> None:
    """K-fold CV of each source model (pretraining settings) on its own step."""
    config = eng.config
    if config.source_cv is None:
        return
    pretrain = TrainOverride(**config.train.preset("pretrain").model_dump())
    rows = []
    for drug, step in source_cv_steps(eng):
        splits = eng.splits(f"splits_source_{drug}.csv", step, config.source_cv)
        method = NetworkMethod(name=f"source_{drug}", kind="network",
                               params=NetworkParams(train=pretrain))
        jobs = _fold_jobs(eng, f"sourcecv_{drug}", step, [method], splits,
                          eng.context({}, [method]))
        rows.append(_spearman_table(_predictions(run_fold_stage(eng.exp, jobs,
                                                                f"source CV {drug}"))))
    table = pd.concat(rows, ignore_index=True)
    write_csv(eng.exp.run.path / "source_cv.csv", table)
    extra["source_cv"] = table.to_dict(orient="records")


def _linear_job(eng: Engine, method: MethodConfig) -> Job:
    key = eng.resolve(method.steps()[0])
    return Job("linear-" + key.replace("@", "_"), source_linear_job, {"request": LinearRequest(
        eng.step(key), derive_seed(eng.config.seed, "linear", key))}, outputs=("linear.npz",))


def _multitask_job(eng: Engine, method: Any) -> Job:
    # the configured source step (not the selected drug's): the trunk learns all ``drugs``
    step = eng.step(method.chain[0])
    return Job(f"multitask-{method.name}", multitask_job, {"request": MultitaskRequest(
        step, eng.config.datasets[step.config.dataset], list(method.drugs), eng.config.network,
        eng.config.train.preset("pretrain"),
        derive_seed(eng.config.seed, "multitask", method.name))}, outputs=("model.pt",))


_SOURCE_JOBS = {Needs.SOURCE_LINEAR: (_linear_job, "linear.npz"),
                Needs.MULTITASK_TRUNK: (_multitask_job, "model.pt")}


def train_upstream(eng: Engine) -> tuple[dict[str, str], dict[str, dict]]:
    """Every method's upstream artefact (by method name) and the upstream job results."""
    methods = eng.config.methods
    chained = [m for m in methods
               if method_kind(m.kind).needs is Needs.NETWORK_CHAIN and m.steps()]
    chains = {m.name: [eng.resolve(s) for s in m.steps()] for m in chained}
    networks, results = _train_chains(eng, list(chains.values()))
    artefacts = {name: networks[">".join(chain)] for name, chain in chains.items()}
    jobs: dict[str, Job] = {}
    for needs, (make_job, filename) in _SOURCE_JOBS.items():
        for m in (m for m in methods if method_kind(m.kind).needs is needs):
            job = make_job(eng, m)
            jobs[job.job_id] = job
            artefacts[m.name] = str(eng.exp.run.job_dir(job.job_id) / filename)
    if jobs:
        results.update(eng.exp.stage(list(jobs.values()), "source linear/multitask").results)
    return artefacts, results


def tuning_summary(results: Any) -> pd.DataFrame:
    """Per tuned method over its outer folds: the alpha grid's range, the median chosen alpha,
    how many folds chose the top of the path and how many ended with no gene (a constant
    model, the training mean in disguise)."""
    rows = [{"method": r["method"], **r["tuning"]} for r in results if "tuning" in r]
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    return table.groupby("method", sort=True).agg(
        folds=("alpha", "size"), fixed_alpha=("fixed_alpha", "all"),
        grid_min=("grid_min", "min"), grid_max=("grid_max", "max"),
        alpha_median=("alpha", "median"), folds_at_top=("at_top", "sum"),
        folds_constant=("constant", "sum"), nonzero_median=("n_nonzero", "median"),
    ).reset_index()


def target_folds(eng: Engine, artefacts: dict[str, str], extra: dict[str, Any]
                 ) -> tuple[JobsOutcome, pd.DataFrame]:
    """Every method on every fold of the shared target splits; writes predictions.csv."""
    config = eng.config
    step = eng.step(config.target)
    splits = eng.splits("splits.csv", step, config.target_cv)
    jobs = _fold_jobs(eng, "target", step, config.methods, splits,
                      eng.context(artefacts, config.methods))
    outcome = run_fold_stage(eng.exp, jobs, "target folds")
    predictions = _predictions(outcome)
    write_csv(eng.exp.run.predictions_path, predictions)
    tuning = tuning_summary(outcome.results.values())
    if len(tuning):
        write_csv(eng.exp.run.path / "tuning.csv", tuning)
        extra["tuning"] = tuning.to_dict(orient="records")
    chosen = [{"method": r["method"], "selected": r["selected"]["method"]}
              for r in outcome.results.values() if "selected" in r]
    if chosen:
        counts = pd.DataFrame(chosen).value_counts().rename("outer_folds").reset_index()
        write_csv(eng.exp.run.path / "nested_selection.csv", counts)
        extra["nested_selection"] = counts.to_dict(orient="records")
    return outcome, predictions


def permutation_tests(eng: Engine, artefacts: dict[str, str], extra: dict[str, Any]) -> None:
    """Label permutations of the target for ``evaluation.permutation_methods``; writes
    ``permutation_null.csv`` (method, permutation, statistic). Jobs are seeded by permutation
    index, so ``--resume`` and more permutations reuse the finished ones."""
    from gliotl.core.evaluation.splits import iter_folds

    config = eng.config
    n_perm = config.evaluation.n_permutations
    if n_perm == 0:
        return
    step = eng.step(config.target)
    splits = eng.splits("splits.csv", step, config.target_cv)
    folds = [(f.repeat, f.fold, [str(i) for i in f.train], [str(i) for i in f.test])
             for f in iter_folds(splits)]
    names = config.evaluation.permutation_methods or [m.name for m in config.methods]
    methods = [m for m in config.methods if m.name in names]
    context = eng.context(artefacts, config.methods)
    jobs = [Job(f"perm-{m.name}-p{i}", permutation_job, {"request": PermutationRequest(
        step, m, replace(context, seed=derive_seed(config.seed, "permutation-fit")), i,
        derive_seed(config.seed, "permutation", i), folds)})
        for m in methods for i in range(n_perm)]
    outcome = eng.exp.stage(jobs, "label permutations")
    null = pd.DataFrame([{k: r[k] for k in ("method", "permutation", "statistic")}
                         for r in outcome.results.values()])
    write_csv(eng.exp.run.path / "permutation_null.csv", null)
    extra["permutation_null"] = null.to_dict(orient="records")


def final_models(eng: Engine, artefacts: dict[str, str]) -> None:
    """Refit each method whose kind saves a model on all target samples, for ``predict``."""
    config = eng.config
    step = eng.step(config.target)
    ids = [str(i) for i in step.read().y.index]
    context = eng.context(artefacts, config.methods)
    methods = [m for m in config.methods if method_kind(m.kind).saves_final]
    jobs = [Job(f"final-{m.name}", fold_job, {"request": FoldRequest(
        step, m, replace(context, seed=derive_seed(config.seed, "final", m.name)), -1, -1, ids,
        ids, save_model=True)}, outputs=("model.pt", "preprocess.json")) for m in methods]
    eng.exp.stage(jobs, "final models")
    for method, job in zip(methods, jobs, strict=True):
        job_dir = eng.exp.run.job_dir(job.job_id)
        check_saved_model(job_dir)
        for file in ("model.pt", "preprocess.json"):
            copy_file(job_dir / file, eng.exp.run.checkpoints / method.name / file)


def check_saved_model(job_dir: Path) -> None:
    """A final model left damaged in its job folder (a resumed run reuses it) never becomes a
    finished run's checkpoint: its state and archive must read back."""
    model = job_dir / "model.pt"
    try:
        StepPreprocessor.load(job_dir / "preprocess.json")
        if not zipfile.is_zipfile(model):
            raise GliotlError(f"{model}: not a saved model archive")
    except GliotlError as exc:
        raise GliotlError(f"{str(exc).split(': ')[0]}: damaged job result; delete the folder "
                          f"{job_dir} and rerun with --resume to redo that job") from None


def check_split_files(eng: Engine) -> None:
    """Read the user's split files now (they are saved with the run and read back by their
    stages), so that a bad one fails before a run being replaced is deleted."""
    config, sel = eng.config, eng.config.source_selection
    if sel is not None and sel.cv.splits_file:
        eng.splits("splits_selection.csv", eng.step(sel.score_on), sel.cv)
    if config.target_cv.splits_file:
        eng.splits("splits.csv", eng.step(config.target), config.target_cv)
    if config.source_cv is not None and config.source_cv.splits_file:
        for drug, step in source_cv_steps(eng):
            eng.splits(f"splits_source_{drug}.csv", step, config.source_cv)


def _compute(*results: dict[str, dict]) -> dict[str, float]:
    merged = {k: v for part in results for k, v in part.items()}.values()
    return {"train_seconds": float(sum(r.get("train_seconds", 0.0) for r in merged)),
            "useful_flops": float(sum(r.get("useful_flops", 0.0) for r in merged))}


def _body(config: ExperimentConfig) -> Any:
    def body(exp: Experiment) -> dict[str, Any]:
        from gliotl.drug.pipeline.report import write_drug_outputs

        eng = Engine(exp, config)
        exp.prepare_once(eng.data_dir / "summary.json",
                         lambda: prepare_steps(config, eng.data_dir), lambda: None)
        record_data_changes(eng.data_dir / "summary.json", exp.run.path / DATA_CHANGES)
        check_split_files(eng)
        exp.inputs_checked()  # the data are read and valid: a replaced run may go now
        extra: dict[str, Any] = {}
        select_source(eng, extra)
        source_cv(eng, extra)
        artefacts, upstream_results = train_upstream(eng)
        outcome, predictions = target_folds(eng, artefacts, extra)
        permutation_tests(eng, artefacts, extra)
        final_models(eng, artefacts)
        extra["selected_source_drug"] = eng.selected
        extra["compute"] = _compute(upstream_results, outcome.results)
        write_drug_outputs(exp.run, config, predictions, extra)
        write_model_card(exp.run, drug_model_card(exp.run))
        return {"selected_source_drug": eng.selected}

    return body


def run_drug_experiment(
    config: ExperimentConfig,
    base_dir: Path | None = None,
    out: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    executor: Executor | None = None,
    retries: int = 0,
    progress: bool = True,
    overrides: Sequence[str] = (),
) -> RunDir:
    """Run the whole experiment and write its run directory; returns it. ``base_dir``: the
    folder relative paths of a config validated without one refer to; ``overrides``: the
    ``--set`` values already applied to ``config``, recorded in the manifest."""
    if config.panel is not None:
        raise GliotlError(f"config '{config.name}': field 'panel': a panel block makes this a "
                          "benchmark over drugs; expected no panel block here: run it with "
                          "gliotl drug benchmark CONFIG (run_drug_benchmark)")
    if base_dir is not None:
        config = resolve_config_paths(config, base_dir)
    return run_experiment(config, _body(config), name=config.name, seed=config.seed, out=out,
                          resume=resume, overwrite=overwrite, executor=executor,
                          retries=retries, progress=progress,
                          **({"overrides": list(overrides)} if overrides else {}))
