"""scikit-learn style estimators around the drug-response network.

``NetworkRegressor`` trains one network (from scratch, or from a source through a transfer
policy); ``MultiTaskNetworkRegressor`` trains a shared trunk with one head per drug on a response
matrix with missing entries, and hands its trunk to a ``NetworkRegressor`` (issue 9, method 4).
Both work on numpy arrays (X: samples x genes, float32) so the experiment engine, CV and
stacking code can treat them like any other regressor; ``sklearn.base.clone`` works.

Checkpoints are plain dicts of JSON-able values and tensors (loadable with ``weights_only``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import ElasticNetCV, RidgeCV
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted, validate_data

from gliotl.core.config import format_validation_error
from gliotl.core.device import resolve_device
from gliotl.core.io import load_torch, save_torch
from gliotl.drug.network.batched import BatchMember, train_networks
from gliotl.drug.network.model import (
    FINETUNE,
    PRETRAIN,
    DrugResponseNet,
    LayerTraining,
    NetworkConfig,
    TrainConfig,
    TrainResult,
    predict_network,
    train_network,
)
from gliotl.drug.network.transfer import (
    FeatureExtractionTransfer,
    apply_policy,
    parse_policy,
    source_layers,
)
from gliotl.errors import GliotlError, input_error

STATE_FORMAT = "gliotl.drug.network"
STATE_VERSION = 1


def _network_config(value: Any, where: str = "network") -> NetworkConfig:
    if value is None:
        return NetworkConfig()
    if isinstance(value, NetworkConfig):
        return value
    try:
        return NetworkConfig.model_validate(value)
    except ValidationError as exc:
        raise format_validation_error(exc, where) from None


def _train_config(value: Any, default: TrainConfig, where: str = "train") -> TrainConfig:
    if value is None:
        return default
    if isinstance(value, TrainConfig):
        return value
    try:
        return TrainConfig.model_validate(value)
    except ValidationError as exc:
        raise format_validation_error(exc, where) from None


class _NetworkEstimator(BaseEstimator):
    """Shared plumbing: device, tensors, state dicts and checkpoint files."""

    _state_kind = "network"

    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def _check_features(self, X: Any) -> np.ndarray:
        """Finite float32 samples x the genes seen in fit (scikit-learn's own checks)."""
        check_is_fitted(self, "network_")
        return validate_data(self, X, dtype=np.float32, reset=False)

    def _base_state(self) -> dict[str, Any]:
        check_is_fitted(self, "network_")
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "kind": self._state_kind,
            "network": self.network_config_.model_dump(mode="json"),
            "train": self.train_config_.model_dump(mode="json"),
            "seed": int(self.seed),
            "n_features_in": int(self.n_features_in_),
            "n_outputs": int(self.network_.n_outputs),
            # contiguous: files keep the (hidden x genes) layout whatever the storage in memory
            "weights": {k: v.detach().cpu().contiguous().clone()
                        for k, v in self.network_.state_dict().items()},
            "loss_history": [float(v) for v in self.loss_history_],
        }

    def _load_base_state(self, state: dict[str, Any], source: str = "state") -> None:
        for key in ("format", "network", "n_features_in", "weights"):
            if key not in state:
                raise input_error(source, key, "missing from the checkpoint")
        if state["format"] != STATE_FORMAT:
            raise input_error(source, "format", f"expected '{STATE_FORMAT}'")
        self.network_config_ = _network_config(state["network"], f"{source}: network")
        self.train_config_ = _train_config(state.get("train"), PRETRAIN, f"{source}: train")
        self.n_features_in_ = int(state["n_features_in"])
        n_outputs = int(state.get("n_outputs", 1))
        net = DrugResponseNet(self.n_features_in_, self.network_config_, n_outputs)
        weights = state["weights"]
        missing = [k for k in net.state_dict() if k not in weights]
        if missing and state.get("kind") != "feature_extraction":
            raise input_error(source, f"weights.{missing[0]}", "tensor missing from checkpoint")
        try:
            net.load_state_dict(weights, strict=state.get("kind") != "feature_extraction")
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            expected = f"do not fit the network config ({first})"
            raise input_error(source, "weights", expected) from None
        self.network_ = net.to(self._device()).eval()
        self.loss_history_ = list(state.get("loss_history", []))
        self.val_loss_history_: list[float] = []

    def save(self, path: str | Path) -> Path:
        """Write the fitted model (config + tensors, weights-only loadable) atomically."""
        return save_torch(path, self.state_dict())

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Any:
        """Read a model written by :meth:`save` (never unpickles arbitrary objects)."""
        state = load_torch(path)
        if not isinstance(state, dict):
            raise input_error(path, None, "expected a gliotl drug-network checkpoint")
        model = cls(device=device, seed=int(state.get("seed", 0)))
        model.load_state_dict(state, source=str(path))
        return model


class NetworkRegressor(RegressorMixin, _NetworkEstimator):
    """The drug-response network as a regressor, optionally initialised from a source model.

    ``train=None`` means the paper's presets: PRETRAIN without a source, FINETUNE with one.
    ``transfer=None`` with a source means the paper's rule (copy the first layer).
    """

    def __init__(
        self,
        network: NetworkConfig | dict | None = None,
        train: TrainConfig | dict | None = None,
        transfer: Any = None,
        device: str = "auto",
        seed: int = 0,
        verbose: bool = False,
    ):
        self.network = network
        self.train = train
        self.transfer = transfer
        self.device = device
        self.seed = seed
        self.verbose = verbose

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, source: Any = None) -> NetworkRegressor:
        """Train on (X, y); with ``source`` (a fitted regressor, multi-task model or state
        dict) the transfer policy first initialises the network from it."""
        member = self.begin_fit(X, y, source)
        if member is not None:
            result = train_network(member.net, member.X, member.y, self.train_config_,
                                   member.rules, seed=member.seed, verbose=self.verbose)
            self.end_fit(member, result)
        return self

    def begin_fit(self, X: Any, y: Any, source: Any = None) -> BatchMember | None:
        """Everything of :meth:`fit` before training: checks, configs and the initialised
        network, as a member for :func:`gliotl.drug.network.batched.train_networks` (None:
        the fit is already complete, as for feature extraction, which trains no network)."""
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True)
        y = y.astype(np.float32)
        self.network_config_ = _network_config(self.network)
        self.train_config_ = _train_config(self.train, FINETUNE if source is not None else PRETRAIN)
        seed = self.train_config_.seed if self.train_config_.seed is not None else int(self.seed)
        policy = parse_policy(self.transfer) if (source is not None or self.transfer) else None
        self.transfer_policy_ = policy
        self.head_: dict[str, Any] | None = None
        device = self._device()
        generator = torch.Generator().manual_seed(seed)
        src = source_layers(_source_state(source)) if source is not None else None
        if isinstance(policy, FeatureExtractionTransfer):
            if src is None:
                raise GliotlError(
                    "transfer: field 'kind' = feature_extraction needs a source model to fit"
                )
            self._fit_feature_extraction(X, y, source, src, policy, seed)
            return None
        if policy is not None and src is None:
            policy = self.transfer_policy_ = None  # nothing to transfer from: train from scratch
        net, rules = self._initial_network(X.shape[1], policy, src, generator, device)
        return BatchMember(net, torch.as_tensor(X, device=device),
                           torch.as_tensor(y, device=device), rules, seed)

    def end_fit(self, member: BatchMember, result: TrainResult) -> NetworkRegressor:
        """Keep the network ``member`` trained and what its training reported."""
        self.network_ = member.net
        self.loss_history_ = result.loss_history
        self.val_loss_history_ = result.val_loss_history
        self.best_epoch_ = result.best_epoch
        self.fit_seconds_ = result.seconds
        self.useful_flops_ = result.useful_flops
        return self

    def _initial_network(self, n_genes: int, policy: Any, src: list | None,
                         generator: torch.Generator, device: torch.device) -> tuple[Any, list]:
        """A new network and its per-layer training rules: initialised from ``src`` by the
        transfer policy, or at random; the L2-SP anchors on ``device``."""
        net = DrugResponseNet(n_genes, self.network_config_)
        if src is not None:
            src = [(w.detach().cpu().float(), b.detach().cpu().float()) for w, b in src]
            rules = apply_policy(policy, net, src, generator)
        else:
            net.reset_parameters(generator)
            rules = [LayerTraining() for _ in net.layers]
        net = net.to(device)
        for rule in rules:
            if rule.anchor is not None:
                rule.anchor = (rule.anchor[0].to(device), rule.anchor[1].to(device))
        return net, rules

    def _fit_feature_extraction(
        self, X: np.ndarray, y: np.ndarray, source: Any, src: list, policy: Any, seed: int
    ) -> NetworkRegressor:
        """Frozen source trunk + linear head chosen by CV on the training data only."""
        import time

        state = _source_state(source)
        self.network_config_ = _network_config(state["network"], "source: network")
        n_hidden = len(self.network_config_.hidden)
        if not -n_hidden <= policy.layer < n_hidden:
            raise GliotlError(
                f"transfer: field 'layer' = {policy.layer}; the source has {n_hidden} hidden layers"
            )
        net = DrugResponseNet(X.shape[1], self.network_config_)
        if src[0][0].shape[1] != X.shape[1]:
            raise GliotlError(
                f"transfer: the source network reads {src[0][0].shape[1]} genes, the target data "
                f"has {X.shape[1]}; harmonise both to the same gene list"
            )
        with torch.no_grad():  # copies: the source's own tensors are never touched
            for index in range(n_hidden):
                net.dense_layers[index].weight.copy_(src[index][0])
                net.dense_layers[index].bias.copy_(src[index][1])
        for param in net.parameters():
            param.requires_grad_(False)
        start = time.perf_counter()
        net = net.to(self._device()).eval()
        layer = policy.layer % n_hidden
        features = predict_network(lambda xb: net.hidden(xb, layer), net, X, self._device())
        folds = KFold(n_splits=min(policy.cv, X.shape[0]), shuffle=True, random_state=seed % 2**32)
        if policy.head == "ridge":
            alphas = policy.alphas or list(np.logspace(-3, 5, 17))
            head = RidgeCV(alphas=alphas, cv=folds)
        else:
            head = ElasticNetCV(
                l1_ratio=policy.l1_ratio, alphas=policy.alphas or 100, cv=folds,
                random_state=seed % 2**32, max_iter=10000,
            )
        head.fit(features.astype(np.float64), y.astype(np.float64))
        self.head_ = {
            "coef": torch.as_tensor(np.asarray(head.coef_, dtype=np.float64)),
            "intercept": torch.as_tensor(np.float64(head.intercept_)),
            "layer": int(layer),
            "alpha": float(head.alpha_),
        }
        self.network_ = net
        self.loss_history_ = []
        self.val_loss_history_: list[float] = []
        self.best_epoch_ = None
        self.fit_seconds_ = time.perf_counter() - start
        self.useful_flops_ = 0.0
        return self

    # -- inference ----------------------------------------------------------------------------
    def predict(self, X: Any) -> np.ndarray:
        X = self._check_features(X)
        if self.head_ is not None:
            feats = self.hidden_activations(X, self.head_["layer"]).astype(np.float64)
            return feats @ self.head_["coef"].numpy() + float(self.head_["intercept"])
        return predict_network(self.network_, self.network_, X, self._device()).astype(np.float64)

    def hidden_activations(self, X: Any, layer: int = -1) -> np.ndarray:
        """Activations of a hidden layer (eval mode): features for stacking or inspection."""
        X = self._check_features(X)
        net = self.network_
        return predict_network(lambda xb: net.hidden(xb, layer), net, X, self._device())

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = self._base_state()
        policy = self.transfer_policy_
        state["transfer"] = policy.model_dump(mode="json") if policy is not None else None
        if self.head_ is not None:
            state["kind"] = "feature_extraction"
            n_hidden = len(self.network_config_.hidden)
            state["weights"] = {
                k: v for k, v in state["weights"].items()
                if int(k.split(".")[1]) < n_hidden
            }
            state["head"] = dict(self.head_)
        return state

    def load_state_dict(self, state: dict[str, Any], source: str = "state") -> NetworkRegressor:
        self._load_base_state(state, source)
        transfer = state.get("transfer")
        self.transfer_policy_ = parse_policy(transfer, source) if transfer else None
        head = state.get("head")
        if state.get("kind") == "feature_extraction":
            if not isinstance(head, dict) or "coef" not in head or "intercept" not in head:
                raise input_error(source, "head", "a feature-extraction model needs its head")
            self.head_ = {
                "coef": torch.as_tensor(head["coef"], dtype=torch.float64),
                "intercept": torch.as_tensor(head["intercept"], dtype=torch.float64),
                "layer": int(head.get("layer", -1)),
                "alpha": float(head.get("alpha", float("nan"))),
            }
        else:
            self.head_ = None
        self.best_epoch_ = None
        return self


class MultiTaskNetworkRegressor(_NetworkEstimator):
    """Shared trunk, one output head per drug, trained on all drugs at once.

    ``Y`` is samples x drugs with NaN where a cell line was not screened; those entries are
    masked out of the MSE, so every observed response counts once.
    """

    _state_kind = "multitask"

    def __init__(
        self,
        network: NetworkConfig | dict | None = None,
        train: TrainConfig | dict | None = None,
        device: str = "auto",
        seed: int = 0,
        verbose: bool = False,
    ):
        self.network = network
        self.train = train
        self.device = device
        self.seed = seed
        self.verbose = verbose

    def fit(self, X: Any, Y: Any) -> MultiTaskNetworkRegressor:
        X = validate_data(self, X, dtype=np.float32)  # Y may hold NaN: checked below
        Y = np.asarray(Y, dtype=np.float32)
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"Y must be samples x drugs with {X.shape[0]} rows; got {Y.shape}")
        if np.isinf(Y).any():
            raise ValueError("Y contains infinite responses")
        observed = ~np.isnan(Y)
        if not observed.any(axis=0).all():
            empty = int(np.flatnonzero(~observed.any(axis=0))[0])
            raise ValueError(f"drug column {empty} of Y has no observed response")
        keep = observed.any(axis=1)  # rows without any response carry no signal
        X, Y = X[keep], Y[keep]
        self.network_config_ = _network_config(self.network)
        self.train_config_ = _train_config(self.train, PRETRAIN)
        seed = self.train_config_.seed if self.train_config_.seed is not None else int(self.seed)
        self.n_tasks_ = Y.shape[1]
        device = self._device()
        net = DrugResponseNet(X.shape[1], self.network_config_, n_outputs=Y.shape[1])
        net.reset_parameters(torch.Generator().manual_seed(seed))
        net = net.to(device)
        result = train_network(
            net, torch.as_tensor(X, device=device), torch.as_tensor(Y, device=device),
            self.train_config_, seed=seed, verbose=self.verbose,
        )
        self.network_ = net
        self.loss_history_ = result.loss_history
        self.val_loss_history_ = result.val_loss_history
        self.fit_seconds_ = result.seconds
        self.useful_flops_ = result.useful_flops
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for every drug: samples x drugs."""
        X = self._check_features(X)
        out = predict_network(self.network_, self.network_, X, self._device())
        return out.reshape(X.shape[0], -1).astype(np.float64)

    def trunk_state(self) -> dict[str, Any]:
        """The shared hidden layers only, in the format every transfer policy reads."""
        state = self._base_state()
        n_hidden = len(self.network_config_.hidden)
        state["kind"] = "trunk"
        state["n_outputs"] = 0
        state["weights"] = {
            k: v for k, v in state["weights"].items() if int(k.split(".")[1]) < n_hidden
        }
        return state

    def state_dict(self) -> dict[str, Any]:
        return self._base_state()

    def load_state_dict(
        self, state: dict[str, Any], source: str = "state"
    ) -> MultiTaskNetworkRegressor:
        self._load_base_state(state, source)
        self.n_tasks_ = self.network_.n_outputs
        return self


def fit_network_regressors(
    models: list[NetworkRegressor], data: list[tuple[Any, Any]], sources: list[Any],
) -> list[NetworkRegressor]:
    """Fit each model on its (X, y) from its source, the networks trained as one stacked
    model where they can be (:mod:`gliotl.drug.network.batched`); each ends as ``fit`` would
    leave it, within float32 rounding."""
    members: list[tuple[NetworkRegressor, BatchMember]] = []
    for model, (X, y), source in zip(models, data, sources, strict=True):
        member = model.begin_fit(X, y, source)
        if member is not None:
            members.append((model, member))
    by_train: dict[str, list[tuple[NetworkRegressor, BatchMember]]] = {}
    for model, member in members:
        by_train.setdefault(model.train_config_.model_dump_json(), []).append((model, member))
    for group in by_train.values():
        results = train_networks([member for _, member in group], group[0][0].train_config_)
        for (model, member), result in zip(group, results, strict=True):
            model.end_fit(member, result)
    return models


def _source_state(source: Any) -> dict[str, Any]:
    """Normalise a transfer source to a state dict (a trunk for multi-task models)."""
    if isinstance(source, MultiTaskNetworkRegressor):
        return source.trunk_state()
    if isinstance(source, NetworkRegressor):
        return source.state_dict()
    if isinstance(source, dict):
        if "network" not in source or "weights" not in source:
            raise GliotlError(
                "transfer: a source state dict needs 'network' and 'weights' "
                "(from state_dict() or trunk_state())"
            )
        return source
    raise GliotlError(
        f"transfer: source must be a fitted NetworkRegressor, MultiTaskNetworkRegressor or its "
        f"state dict, not {type(source).__name__}"
    )


__all__ = ["MultiTaskNetworkRegressor", "NetworkRegressor", "fit_network_regressors"]
