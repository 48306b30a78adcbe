"""MGMT methylation from MRI: MedicalNet 3D ResNets and SpotTune adaptive fine-tuning.

Model classes are exported lazily so that importing the CLI does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "medicalnet_resnet": "gliotl.mgmt.models.resnet",
    "MedicalNetResNet": "gliotl.mgmt.models.resnet",
    "load_medicalnet_weights": "gliotl.mgmt.models.resnet",
    "inflate_stem": "gliotl.mgmt.models.resnet",
    "SpotTune": "gliotl.mgmt.models.spottune",
    "PolicyNet": "gliotl.mgmt.models.spottune",
    "configure_strategy": "gliotl.mgmt.models.finetune",
    "parameter_groups": "gliotl.mgmt.models.finetune",
    "STRATEGIES": "gliotl.mgmt.models.finetune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gliotl.mgmt' has no attribute {name!r}")


__all__ = sorted(_LAZY)
