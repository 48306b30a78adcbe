"""The compared MGMT methods: one registry that the config, the networks and the report ask.

Each method is a transfer strategy of :mod:`gliotl.mgmt.models.finetune` (which parts of a
MedicalNet ResNet train) or a SpotTune mode (:mod:`gliotl.mgmt.models.spottune`), plus whether
it starts from the pretrained weights, training settings it changes by default (a method's
``training`` overrides in the config apply on top) and the label the report shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from gliotl.errors import GliotlError


@dataclass(frozen=True)
class MethodSpec:
    """What one method name means."""

    name: str
    label: str
    strategy: str | None = None
    """Fine-tuning strategy (a key of ``finetune.STRATEGIES``); None for SpotTune."""
    spottune: Literal["adaptive", "global"] | None = None
    pretrained: bool = True
    """Whether the network starts from the pretrained weights."""
    training: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Training settings this method changes by default."""


REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("random_init", "random init", strategy="random_init", pretrained=False),
    MethodSpec("standard", "standard (layer4 + head)", strategy="standard"),
    MethodSpec("full", "full fine-tuning", strategy="full"),
    MethodSpec("linear_probe", "linear probe", strategy="linear_probe"),
    MethodSpec("spottune", "SpotTune", spottune="adaptive"),
    MethodSpec("spottune_global", "SpotTune-global", spottune="global"),
)}

METHODS: tuple[str, ...] = tuple(REGISTRY)
"""Every method name, in the order the paper lists them."""


def method_spec(name: str) -> MethodSpec:
    """The registry entry of ``name``; an unknown name is a one-line error."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise GliotlError(f"method '{name}': expected one of {', '.join(METHODS)}") from None


def method_label(name: str) -> str:
    """The label the report shows for ``name`` (the name itself when it is unknown)."""
    spec = REGISTRY.get(name)
    return spec.label if spec else name


__all__ = ["METHODS", "REGISTRY", "MethodSpec", "method_label", "method_spec"]
