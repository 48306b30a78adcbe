"""Speed options of MGMT training: numeric precision, memory layout and cuDNN autotuning.

Kept apart from the training loop so the loop only asks three questions: which autocast
context, whether a gradient scaler is needed, and how a batch and the model are laid out.
The defaults (``precision: auto``, ``channels_last: false``, ``cudnn_benchmark: false``)
reproduce the loop as it was: float16 autocast with a gradient scaler on CUDA when ``amp``
is set, float32 everywhere else. ``bf16`` autocasts on any device (CPU included, so the path
is tested without a GPU) and needs no scaler: bfloat16 has float32's exponent range.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from gliotl.mgmt.config import TrainingConfig


def autocast_dtype(training: TrainingConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``training`` on ``device`` (None: plain float32)."""
    if training.precision == "bf16":
        return torch.bfloat16
    if training.precision == "fp16" or (training.precision == "auto" and training.amp):
        return torch.float16 if device.type == "cuda" else None
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """An autocast context for ``dtype`` (a no-op context for float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(dtype: torch.dtype | None, device: torch.device) -> bool:
    """float16 gradients underflow without loss scaling; bfloat16 and float32 do not."""
    return dtype is torch.float16 and device.type == "cuda"


def memory_format(training: TrainingConfig) -> torch.memory_format:
    """channels_last_3d (NDHWC) when asked for: the layout cuDNN's fast 3D kernels use."""
    return torch.channels_last_3d if training.channels_last else torch.contiguous_format


def place_model(model: nn.Module, training: TrainingConfig, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in the configured memory layout; switch cuDNN autotuning."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = training.cudnn_benchmark
    model.to(device)
    if training.channels_last:
        # Module.to accepts memory_format at run time; torch's type stubs omit it.
        model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    return model


def place_batch(x: torch.Tensor, training: TrainingConfig, device: torch.device
                ) -> torch.Tensor:
    """A batch on ``device`` as float32 in the configured layout (a cohort stored as float16
    is converted here, per batch)."""
    x = x.to(device, non_blocking=True)
    if x.dtype != torch.float32:
        x = x.float()
    if x.dim() == 5 and training.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return x


__all__ = ["autocast", "autocast_dtype", "memory_format", "needs_grad_scaler", "place_batch",
           "place_model"]
