"""MGMT methylation from MRI: MedicalNet 3D ResNets and SpotTune adaptive fine-tuning.

Model classes are exported lazily so that importing the CLI does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "medicalnet_resnet": "gliotl.mgmt.resnet",
    "MedicalNetResNet": "gliotl.mgmt.resnet",
    "load_medicalnet_weights": "gliotl.mgmt.resnet",
    "inflate_stem": "gliotl.mgmt.resnet",
    "SpotTune": "gliotl.mgmt.spottune",
    "PolicyNet": "gliotl.mgmt.spottune",
    "configure_strategy": "gliotl.mgmt.finetune",
    "parameter_groups": "gliotl.mgmt.finetune",
    "STRATEGIES": "gliotl.mgmt.finetune",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gliotl.mgmt' has no attribute {name!r}")


__all__ = sorted(_LAZY)
