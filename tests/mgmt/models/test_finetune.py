"""Transfer strategies: the right parameters train, frozen parts (and their BN) never move."""

from __future__ import annotations

import copy

import pytest
import torch

from gliotl.errors import GliotlError
from gliotl.mgmt.models.finetune import (
    configure_strategy,
    parameter_groups,
    trainable_parameter_count,
)
from gliotl.mgmt.models.resnet import MedicalNetResNet


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return MedicalNetResNet(10)


def _model(base) -> MedicalNetResNet:
    return copy.deepcopy(base)  # much cheaper than re-initialising 14M parameters


def _trained_prefixes(model) -> set[str]:
    return {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("random_init", {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head"}),
        ("full", {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head"}),
        ("standard", {"layer4", "head"}),
        ("linear_probe", {"head"}),
    ],
)
def test_strategy_selects_trainable_parts(state, strategy, expected):
    model = configure_strategy(_model(state), strategy)
    assert _trained_prefixes(model) == expected
    model.train()
    bn_training = {name.split(".")[0] for name, m in model.named_modules()
                   if isinstance(m, torch.nn.BatchNorm3d) and m.training}
    assert bn_training == expected - {"head", "conv1"}


def test_standard_step_changes_only_layer4_and_head(state):
    model = configure_strategy(_model(state), "standard").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.Adam(parameter_groups(model, 1e-3, weight_decay=1e-2, head_lr=1e-2))
    x = torch.randn(3, 1, 16, 24, 24, generator=torch.Generator().manual_seed(1))
    loss = model(x).pow(2).mean()
    loss.backward()
    optimiser.step()
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"layer4", "head"}  # frozen weights AND frozen BN statistics unchanged


def test_parameter_groups_cover_trainable_only(state):
    model = configure_strategy(_model(state), "linear_probe")
    groups = parameter_groups(model, 1e-4, head_lr=1e-3)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3
    assert sum(p.numel() for p in groups[0]["params"]) == trainable_parameter_count(model) == 513
    with pytest.raises(GliotlError, match="strategy"):
        configure_strategy(model, "partial")
    model.requires_grad_(False)
    with pytest.raises(GliotlError, match="no trainable"):
        parameter_groups(model, 1e-4)
