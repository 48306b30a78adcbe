"""Transfer policies: how a target network starts from a source network and how it may move.

Every policy is a small pydantic config, chosen by ``kind``:

* ``paper`` - Ju et al.: copy only the first Dense layer, re-initialise the rest, freeze nothing.
* ``all`` - copy every hidden layer (and the output layer when its shape matches).
* ``freeze_first_k`` - copy all, keep the first ``k`` Dense layers fixed.
* ``discriminative_lr`` - copy all; layer ``i`` of ``L`` learns at ``lr * factor**(L-1-i)``, so
  general lower layers move less than task-specific upper ones.
* ``l2sp`` - copy all; pull transferred layers towards the source weights with
  ``alpha * ||W - W_src||^2`` (Li et al. 2018) and new layers towards zero with ``beta * ||W||^2``.
* ``feature_extraction`` - keep the source's hidden layers fixed and fit a ridge / elastic-net
  head on their activations, its penalty chosen by CV inside the training data.

A source is given as a list of ``(weight, bias)`` pairs, lowest layer first (see
:func:`source_layers`), so networks, saved checkpoints and multi-task trunks all transfer alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, TypeAdapter, ValidationError

from gliotl.core.config import StrictModel, format_validation_error
from gliotl.drug.network.model import DrugResponseNet, LayerTraining
from gliotl.errors import GliotlError

SourceLayers = list[tuple[torch.Tensor, torch.Tensor]]


class PaperTransfer(StrictModel):
    kind: Literal["paper"] = "paper"


class CopyAllTransfer(StrictModel):
    kind: Literal["all"] = "all"


class FreezeFirstKTransfer(StrictModel):
    kind: Literal["freeze_first_k"] = "freeze_first_k"
    k: int = Field(default=1, ge=1)


class DiscriminativeLRTransfer(StrictModel):
    kind: Literal["discriminative_lr"] = "discriminative_lr"
    factor: float = Field(default=0.3, gt=0.0, le=1.0)


class L2SPTransfer(StrictModel):
    kind: Literal["l2sp"] = "l2sp"
    alpha: float = Field(default=1e-2, ge=0.0)
    beta: float = Field(default=1e-4, ge=0.0)


class FeatureExtractionTransfer(StrictModel):
    kind: Literal["feature_extraction"] = "feature_extraction"
    head: Literal["ridge", "elasticnet"] = "ridge"
    alphas: list[float] | None = None  # None: a log grid (ridge) / the path (elastic net)
    l1_ratio: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])
    cv: int = Field(default=5, ge=2)
    layer: int = -1  # which hidden layer's activations feed the head (-1: the last)


TransferPolicy = Annotated[
    PaperTransfer
    | CopyAllTransfer
    | FreezeFirstKTransfer
    | DiscriminativeLRTransfer
    | L2SPTransfer
    | FeatureExtractionTransfer,
    Field(discriminator="kind"),
]
_POLICY_ADAPTER: TypeAdapter[Any] = TypeAdapter(TransferPolicy)
_POLICY_TYPES = (
    PaperTransfer, CopyAllTransfer, FreezeFirstKTransfer, DiscriminativeLRTransfer,
    L2SPTransfer, FeatureExtractionTransfer,
)


def parse_policy(policy: Any, source: str = "transfer") -> Any:
    """A policy object from a policy, a dict with ``kind``, a bare kind name, or None (paper)."""
    if policy is None:
        return PaperTransfer()
    if isinstance(policy, _POLICY_TYPES):
        return policy
    if isinstance(policy, str):
        policy = {"kind": policy}
    try:
        return _POLICY_ADAPTER.validate_python(policy)
    except ValidationError as exc:
        raise format_validation_error(exc, source) from None


def _check_shape(index: int, layer: torch.nn.Linear, w: torch.Tensor, b: torch.Tensor) -> bool:
    return tuple(w.shape) == tuple(layer.weight.shape) and tuple(b.shape) == tuple(
        layer.bias.shape
    )


def _copy(net: DrugResponseNet, index: int, src: SourceLayers) -> None:
    layer = net.dense_layers[index]
    w, b = src[index]
    if not _check_shape(index, layer, w, b):
        raise GliotlError(
            f"transfer: layer {index} of the source has shape {tuple(w.shape)}, the target "
            f"expects {tuple(layer.weight.shape)}; use the same gene set and hidden sizes"
        )
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)


def _copy_all(net: DrugResponseNet, src: SourceLayers) -> list[bool]:
    """Copy every hidden layer; the output layer only when the source has a matching one."""
    n_hidden = len(net.layers) - 1
    if len(src) < n_hidden:
        raise GliotlError(
            f"transfer: the source has {len(src)} Dense layers, the target needs {n_hidden} "
            "hidden layers to copy"
        )
    copied = []
    for index in range(len(net.layers)):
        if index < n_hidden:
            _copy(net, index, src)
            copied.append(True)
        elif index < len(src) and _check_shape(index, net.dense_layers[index], *src[index]):
            _copy(net, index, src)
            copied.append(True)
        else:
            copied.append(False)
    return copied


def _freeze_first_k(policy: FreezeFirstKTransfer, net: DrugResponseNet,
                    rules: list[LayerTraining], copied: list[bool]) -> None:
    n_layers = len(net.layers)
    if policy.k >= n_layers:
        raise GliotlError(
            f"transfer: field 'k' = {policy.k} would freeze every layer; "
            f"expected 1..{n_layers - 1}"
        )
    for index in range(policy.k):
        rules[index].frozen = True


def _discriminative_lr(policy: DiscriminativeLRTransfer, net: DrugResponseNet,
                       rules: list[LayerTraining], copied: list[bool]) -> None:
    n_layers = len(net.layers)
    for index in range(n_layers):
        rules[index].lr_multiplier = policy.factor ** (n_layers - 1 - index)


def _l2sp(policy: L2SPTransfer, net: DrugResponseNet, rules: list[LayerTraining],
          copied: list[bool]) -> None:
    for index, was_copied in enumerate(copied):
        layer = net.dense_layers[index]
        if was_copied:
            rules[index].anchor = (layer.weight.detach().clone(), layer.bias.detach().clone())
            rules[index].anchor_alpha = policy.alpha
        else:
            rules[index].zero_l2 = policy.beta


def _no_rules(policy: CopyAllTransfer, net: DrugResponseNet, rules: list[LayerTraining],
              copied: list[bool]) -> None:
    """Copy all: every layer trains as usual."""


RuleSetter = Callable[[Any, DrugResponseNet, list[LayerTraining], list[bool]], None]
# The per-layer rules of each copy-all policy, set after every layer has been copied.
_RULE_SETTERS: dict[type, RuleSetter] = {
    CopyAllTransfer: _no_rules,
    FreezeFirstKTransfer: _freeze_first_k,
    DiscriminativeLRTransfer: _discriminative_lr,
    L2SPTransfer: _l2sp,
}


def _check_source_width(net: DrugResponseNet, src: SourceLayers) -> None:
    """The source's first layer must read as many genes as the target network."""
    if src and src[0][0].shape[1] != net.layers[0].in_features:
        raise GliotlError(
            f"transfer: the source network reads {src[0][0].shape[1]} genes, the target data has "
            f"{net.layers[0].in_features}; harmonise both to the same gene list"
        )


def apply_policy(
    policy: Any, net: DrugResponseNet, src: SourceLayers, generator: torch.Generator
) -> list[LayerTraining]:
    """Initialise ``net`` from the source as the policy says; return the per-layer rules.

    ``net`` must be freshly built; layers a policy does not copy are re-initialised from
    ``generator`` (the paper's "re-initialise the rest").
    """
    if isinstance(policy, FeatureExtractionTransfer):
        raise GliotlError(
            "transfer: feature_extraction fits a linear head, not a network; "
            "use NetworkRegressor, which handles it"
        )
    net.reset_parameters(generator)
    _check_source_width(net, src)
    rules = [LayerTraining() for _ in range(len(net.layers))]
    if isinstance(policy, PaperTransfer):
        _copy(net, 0, src)
        return rules
    copied = _copy_all(net, src)
    setter = next((fn for kind, fn in _RULE_SETTERS.items() if isinstance(policy, kind)), None)
    if setter is None:
        raise GliotlError(f"transfer: unknown policy {policy!r}")
    setter(policy, net, rules, copied)
    return rules


def source_layers(state: dict[str, Any]) -> SourceLayers:
    """(weight, bias) pairs, lowest first, from a ``state_dict()`` / ``trunk_state()`` dict."""
    weights = state.get("weights")
    if not isinstance(weights, dict):
        raise GliotlError("transfer: source state has no 'weights' mapping of tensors")
    pairs: SourceLayers = []
    index = 0
    while f"layers.{index}.weight" in weights:
        pairs.append((weights[f"layers.{index}.weight"], weights[f"layers.{index}.bias"]))
        index += 1
    if not pairs:
        raise GliotlError("transfer: source state holds no Dense layers ('layers.0.weight')")
    return pairs


__all__ = [
    "CopyAllTransfer",
    "DiscriminativeLRTransfer",
    "FeatureExtractionTransfer",
    "FreezeFirstKTransfer",
    "L2SPTransfer",
    "PaperTransfer",
    "SourceLayers",
    "TransferPolicy",
    "apply_policy",
    "parse_policy",
    "source_layers",
]
