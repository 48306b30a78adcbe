"""Conventional transfer strategies for a MedicalNet ResNet: which parts are trained.

Strategies (the paper's baselines and two common references):

* ``random_init``: the caller builds the network *without* weights; everything trains.
* ``standard``: the paper's MedicalNet baseline: only ``layer4`` and the head train.
* ``full``: every parameter trains from the pretrained start.
* ``linear_probe``: only the head trains on fixed pretrained features.

Frozen parts get ``requires_grad=False`` and their BatchNorm layers stay in eval mode while
the model trains (``MedicalNetResNet.train`` enforces this). Why: with the small batches of a
3D MRI study, train-mode BatchNorm would normalise each batch by its own statistics and
overwrite the pretrained running averages, so a "frozen" layer would drift and behave
differently at test time than during training.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gliotl.errors import GliotlError
from gliotl.mgmt.models.resnet import MedicalNetResNet

STRATEGIES: dict[str, tuple[str, ...]] = {
    "random_init": ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head"),
    "standard": ("layer4", "head"),
    "full": ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head"),
    "linear_probe": ("head",),
}
"""Top-level modules trained by each strategy."""


def configure_strategy(model: MedicalNetResNet, strategy: str) -> MedicalNetResNet:
    """Set ``requires_grad`` for ``strategy`` and put frozen BatchNorm layers into eval mode."""
    if strategy not in STRATEGIES:
        raise GliotlError(
            f"configure_strategy: field 'strategy': expected one of {sorted(STRATEGIES)}, "
            f"got {strategy!r}"
        )
    trained = STRATEGIES[strategy]
    for name, child in model.named_children():
        child.requires_grad_(name in trained)
    model.train(model.training)  # re-applies the frozen-BatchNorm rule for the current mode
    return model


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    head_lr: float | None = None,
) -> list[dict[str, Any]]:
    """Optimiser groups over trainable parameters only, the head optionally at its own rate.

    Frozen parameters are left out so that an optimiser with weight decay cannot move them.
    """
    backbone: list[nn.Parameter] = []
    head: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (head if name.startswith("head.") and head_lr is not None else backbone).append(param)
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": lr, "weight_decay": weight_decay})
    if head:
        groups.append({"params": head, "lr": head_lr, "weight_decay": weight_decay})
    if not groups:
        raise GliotlError("parameter_groups: the model has no trainable parameters")
    return groups


__all__ = ["STRATEGIES", "configure_strategy", "parameter_groups", "trainable_parameter_count"]
