"""Build each configured method as a scikit-learn style estimator with ``fit(X, y)`` / ``predict``.

Upstream artifacts (a pretrained network, a source linear model, a multi-task trunk) are bound
into the estimator here, so the fold job treats every method alike and nested selection can
choose among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from gliotl.drug.config import ExperimentConfig, MethodConfig


@dataclass
class Upstream:
    """Paths of what earlier stages trained, keyed by chain (``"source@Drug>intermediate"``)."""

    networks: dict[str, Path] = field(default_factory=dict)
    linear: dict[str, Path] = field(default_factory=dict)
    multitask: dict[str, Path] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, str]]:
        """Plain strings, for job kwargs that cross process and Ray boundaries."""
        return {kind: {key: str(path) for key, path in paths.items()}
                for kind, paths in vars(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, dict[str, str]]) -> Upstream:
        return cls(**{kind: {key: Path(path) for key, path in paths.items()}
                      for kind, paths in data.items()})


def chain_id(chain: list[str]) -> str:
    return ">".join(chain)


def network_settings(config: ExperimentConfig, stage: str) -> tuple[dict, dict]:
    """The network config and the training preset (``pretrain`` / ``finetune``) with overrides."""
    from gliotl.drug.network.model import FINETUNE, PRETRAIN

    base = (PRETRAIN if stage == "pretrain" else FINETUNE).model_dump()
    base.update(config.train.get(stage, {}))
    return dict(config.network), base


class SourceNetworkFineTuner(BaseEstimator, RegressorMixin):
    """Fine-tune a network on the target, initialised from an upstream network by a policy."""

    def __init__(self, network=None, train=None, transfer=None, source_path=None, seed=0):
        self.network = network
        self.train = train
        self.transfer = transfer
        self.source_path = source_path
        self.seed = seed

    def fit(self, X, y):
        from gliotl.drug.network.estimators import NetworkRegressor

        source = NetworkRegressor.load(self.source_path) if self.source_path else None
        transfer = self.transfer if source is not None else None
        self.model_ = NetworkRegressor(
            network=self.network, train=self.train, transfer=transfer, seed=self.seed
        ).fit(X, y, source=source)
        return self

    def predict(self, X):
        return self.model_.predict(X)


class SourcePredictor:
    """A frozen upstream network used as a predictor (for prediction-level transfer)."""

    def __init__(self, path: Path):
        from gliotl.drug.network.estimators import NetworkRegressor

        self.model = NetworkRegressor.load(path)

    def predict(self, X):
        return self.model.predict(X)


def build_estimator(
    method: MethodConfig, config: ExperimentConfig, upstream: Upstream, seed: int,
    methods: dict[str, MethodConfig] | None = None,
) -> Any:
    """The estimator for ``method`` (``mgmt_status`` is handled by the fold job, not here)."""
    params = dict(method.params)
    network, finetune = network_settings(config, "finetune")
    network.update(params.pop("network", {}))
    finetune.update(params.pop("train", {}))
    key = chain_id(method.chain)
    if method.kind == "network":
        return SourceNetworkFineTuner(
            network=network, train=finetune, transfer=method.transfer,
            source_path=str(upstream.networks[key]) if method.chain else None, seed=seed,
        )
    if method.kind == "multitask":
        return SourceNetworkFineTuner(
            network=network, train=finetune, transfer=method.transfer,
            source_path=str(upstream.multitask[method.name]), seed=seed,
        )
    if method.kind == "mean":
        from gliotl.drug.methods.baselines import TrainingMeanRegressor

        return TrainingMeanRegressor()
    if method.kind == "elasticnet":
        from gliotl.drug.methods.baselines import TunedElasticNet

        return TunedElasticNet(seed=seed, **params)
    if method.kind == "random_forest":
        from gliotl.drug.methods.baselines import RandomForestBaseline

        return RandomForestBaseline(seed=seed, **params)
    if method.kind == "prior_elasticnet":
        from gliotl.drug.methods.linear_transfer import (
            TunedPriorCenteredElasticNet,
            load_source_linear,
        )

        coef, intercept = load_source_linear(upstream.linear[key])
        return TunedPriorCenteredElasticNet(
            source_coef=coef, source_intercept=intercept, seed=seed, **params
        )
    if method.kind == "stacking":
        from gliotl.drug.methods.stacking import SourcePredictionOffset, SourcePredictionStacker

        source = SourcePredictor(upstream.networks[key])
        cls = SourcePredictionOffset if method.mode == "offset" else SourcePredictionStacker
        return cls(source=source, **params)
    if method.kind == "nested":
        from gliotl.drug.methods.selection import Candidate, NestedSelector

        assert methods is not None
        candidates = []
        for name in method.candidates:
            candidate = methods[name]
            grid = candidate.params.get("grid", {}) if isinstance(candidate.params, dict) else {}
            inner = candidate.model_copy(update={"params": {
                k: v for k, v in candidate.params.items() if k != "grid"}})
            candidates.append(
                Candidate(name, build_estimator(inner, config, upstream, seed, methods), grid)
            )
        return NestedSelector(candidates, seed=seed, **params)
    raise ValueError(f"method kind '{method.kind}' has no estimator")


def mgmt_status_predictions(
    train_status: np.ndarray, y_train: np.ndarray, test_status: np.ndarray
) -> np.ndarray:
    """Predict each test sample by the training mean of its MGMT status group."""
    from gliotl.drug.methods.baselines import MGMTStatusRegressor

    model = MGMTStatusRegressor().fit(train_status.astype(object).reshape(-1, 1), y_train)
    return model.predict(test_status.astype(object).reshape(-1, 1))
