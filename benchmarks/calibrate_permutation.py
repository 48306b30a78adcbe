"""Calibration of the label-permutation test through the engine's own fold fitting.

Each simulated dataset is a target step of ``--samples`` cell lines x ``--genes`` standard-normal
genes with a response that is independent of them (``--signal 0``, the null) or linear in the
first five genes plus unit noise. The method is the engine's ``elasticnet`` kind with a fixed
alpha, run through :func:`gliotl.drug.pipeline.experiment.refit_statistic` - the same
``_fit_predict`` as the target folds: step preprocessing (per-gene standard scaler, 0-10 response
min-max) fitted in fold, then the model - on 3-fold x 2-repeat splits from
:func:`gliotl.core.evaluation.splits.kfold_splits`. The observed statistic (mean over repeats of
the pooled out-of-fold Spearman) is compared with ``--perms`` refits on permuted targets.

Prints the share of datasets with p <= 0.05 (the false-positive rate on the null; the power
with signal). With 19 permutations p <= 0.05 exactly when the observed statistic beats all 19,
so the expected null rate is 1/20 = 5%.

    PYTHONPATH=src python benchmarks/calibrate_permutation.py --datasets 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.core.evaluation.splits import iter_folds, kfold_splits
from gliotl.core.evaluation.stats import permutation_p_value
from gliotl.core.seeding import derive_seed
from gliotl.drug.config import StepConfig
from gliotl.drug.methods.registry import BuildContext, ElasticNetMethod
from gliotl.drug.network.model import FINETUNE, NetworkConfig
from gliotl.drug.pipeline.experiment import PermutationRequest, StepInput, refit_statistic
from gliotl.drug.pipeline.steps import StepData


def dataset(seed: int, n: int, genes: int, signal: float) -> StepData:
    rng = np.random.default_rng(seed)
    ids = [f"line{i}" for i in range(n)]
    X = pd.DataFrame(rng.normal(size=(n, genes)), index=ids,
                     columns=[f"g{j}" for j in range(genes)])
    y = signal * X.iloc[:, :5].sum(axis=1) / np.sqrt(5) + rng.normal(size=n)
    return StepData("target", X, pd.Series(y, index=ids, name="y"), pd.DataFrame(index=ids))


def p_value(seed: int, args: argparse.Namespace, job_dir: Path) -> float:
    data = dataset(seed, args.samples, args.genes, args.signal)
    ids = list(data.y.index)
    splits = kfold_splits(ids, data.y.to_numpy(), n_splits=3, n_repeats=2, seed=seed,
                          task="regression")
    folds = [(f.repeat, f.fold, [str(i) for i in f.train], [str(i) for i in f.test])
             for f in iter_folds(splits)]
    step = StepInput("in-memory", "target", StepConfig(dataset="sim", drug="x"))
    method = ElasticNetMethod(name="enet", kind="elasticnet",
                              params={"alpha": args.alpha, "l1_ratios": [0.5]})
    context = BuildContext(NetworkConfig(), FINETUNE, seed=seed)

    def statistic(index: int, permute: bool) -> float:
        request = PermutationRequest(step, method, context, index,
                                     derive_seed(seed, "permutation", index), folds)
        return refit_statistic(request, data, job_dir, permute=permute)[0]

    observed = statistic(-1, permute=False)
    null = [statistic(i, permute=True) for i in range(args.perms)]
    return permutation_p_value(observed, null)["p_value"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--perms", type=int, default=19)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--genes", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--signal", type=float, default=0.0)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        p = np.array([p_value(seed, args, Path(tmp)) for seed in range(args.datasets)])
    rate = float(np.mean(p <= 0.05))
    se = float(np.sqrt(rate * (1 - rate) / len(p)))
    print(f"signal {args.signal}: {args.datasets} datasets, {args.perms} permutations: "
          f"p <= 0.05 in {rate:.3f} (binomial se {se:.3f}); "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
