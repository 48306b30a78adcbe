"""The torch device a config or estimator asks for, checked once for both systems.

A device name that torch would accept but this machine cannot serve (``cuda`` without CUDA, a
GPU index beyond the count) is a user error here, not a silent fall-back to the CPU: a run that
was meant for a GPU should say so rather than take a hundred times longer.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from gliotl.errors import input_error

#: What a ``device`` field accepts; ``auto`` takes the first GPU when there is one.
DEVICE_CHOICES = "'auto', 'cpu', 'cuda' or 'cuda:<index>'"
_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(name: str = "auto", source: str | Path = "training") -> torch.device:
    """The device for ``name``; ``source`` (the config file or section) prefixes errors."""
    if not isinstance(name, str) or not _PATTERN.fullmatch(name):
        raise input_error(source, "device", f"expected {DEVICE_CHOICES}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise input_error(source, "device", f"'{name}' requested but no CUDA device found")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise input_error(source, "device", f"'{name}' requested but only "
                              f"{torch.cuda.device_count()} CUDA device(s) found")
    return device


__all__ = ["DEVICE_CHOICES", "resolve_device"]
