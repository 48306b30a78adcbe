"""Segmentation pretraining: a stand-in for MedicalNet weights where they cannot be downloaded.

MedicalNet (Chen et al. 2019) pretrained its 3D ResNets on tumour / organ SEGMENTATION: the
backbone's layer4 features feed a small decoder (``conv_seg``: a stride-2 transposed convolution,
a 3x3x3 convolution, a 1x1x1 classifier), whose output is upsampled to the input. This module
does the same on a cohort's images and automated tumour segmentations (whole tumour vs
background, Dice + cross-entropy). MGMT labels are never read, so pretraining on the experiment's
own patients would not leak the outcome; the shipped configs still use a separate cohort.

The result is saved in MedicalNet's exact checkpoint format (``{"state_dict": {"module.<key>":
tensor}}`` with the backbone keys and ``conv_seg.*``), so ``medicalnet_resnet(depth,
weights=path)`` loads it like an original MedicalNet file.

Inputs: every available modality of every patient is one single-channel training volume (the
backbone learns modality-agnostic features, like MedicalNet's mixture of datasets): cropped to
the brain's bounding box, resized to ``shape`` (D, H, W), z-scored over non-zero voxels, by the
functions of :mod:`gliotl.mgmt.data.preprocess`; the mask is resized with nearest neighbours.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gliotl.core.io import save_torch
from gliotl.core.seeding import derive_seed, seed_everything
from gliotl.errors import GliotlError
from gliotl.mgmt.data.cohort import Cohort
from gliotl.mgmt.data.modalities import MODALITIES
from gliotl.mgmt.data.preprocess import (
    bounding_box,
    normalise,
    open_nifti,
    read_voxels,
    resize_stack,
)
from gliotl.mgmt.models.resnet import MedicalNetResNet


class SegmentationNetwork(nn.Module):
    """MedicalNet backbone + its segmentation decoder ``conv_seg`` (MedicalNet's key names)."""

    def __init__(self, backbone: MedicalNetResNet, n_classes: int = 2) -> None:
        super().__init__()
        self.backbone = backbone
        self.conv_seg = nn.Sequential(
            nn.ConvTranspose3d(backbone.feature_dim, 32, kernel_size=2, stride=2),
            nn.BatchNorm3d(32),
            nn.ReLU(inplace=True),
            nn.Conv3d(32, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm3d(32),
            nn.ReLU(inplace=True),
            nn.Conv3d(32, n_classes, kernel_size=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.conv_seg(self.backbone.forward_features(x))
        return F.interpolate(logits, size=x.shape[2:], mode="trilinear", align_corners=False)

    def medicalnet_state_dict(self) -> dict[str, torch.Tensor]:
        """Backbone (no classification head) + conv_seg, keys prefixed with ``module.`` as in
        MedicalNet's DataParallel-saved checkpoints."""
        state = {k: v for k, v in self.backbone.state_dict().items() if not k.startswith("head.")}
        state.update({f"conv_seg.{k}": v for k, v in self.conv_seg.state_dict().items()})
        return {f"module.{k}": v.detach().cpu().clone() for k, v in state.items()}


def save_medicalnet_checkpoint(network: SegmentationNetwork, path: str | Path) -> Path:
    return save_torch(path, {"state_dict": network.medicalnet_state_dict()})


def load_pair(image_path: str, seg_path: str, shape: tuple[int, int, int]
              ) -> tuple[np.ndarray, np.ndarray]:
    """One (image, whole-tumour mask) pair as (D, H, W) arrays of ``shape``: the brain's
    bounding box, resized (the mask with nearest neighbours), z-scored over non-zero voxels."""
    image = read_voxels(open_nifti(image_path), image_path).astype(np.float32).transpose(2, 1, 0)
    seg = read_voxels(open_nifti(seg_path), seg_path).transpose(2, 1, 0) > 0
    if image.shape != seg.shape:
        raise GliotlError(f"{seg_path}: segmentation shape {seg.shape} differs from image "
                          f"{image.shape}")
    brain = image != 0
    if not brain.any():
        raise GliotlError(f"{image_path}: volume is empty (all zero)")
    box = bounding_box(brain, margin=0)
    image = resize_stack(image[box][None], shape, "trilinear")[0]
    mask = resize_stack(seg[box].astype(np.float32)[None], shape, "nearest")[0] > 0.5
    return normalise(image, "zscore"), mask.astype(np.int64)


def load_pretraining_volumes(cohort: Cohort, shape: tuple[int, int, int],
                             modalities: list[str] | None = None,
                             max_patients: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, D, H, W) float32 and masks (N, 1, D, H, W) int64 of every patient's
    available modalities (in memory: pretraining volumes are small)."""
    modalities = list(modalities or MODALITIES)
    images, masks = [], []
    rows = cohort.table.to_dict("records")[: max_patients or None]
    for row in rows:
        seg = row.get("segmentation")
        if not isinstance(seg, str) or not seg:
            continue
        for modality in modalities:
            path = row.get(modality)
            if isinstance(path, str) and path:
                image, mask = load_pair(path, seg, shape)
                images.append(image)
                masks.append(mask)
    if not images:
        raise GliotlError(f"{cohort.source or 'cohort'}: no patient has both a segmentation and "
                          f"one of {modalities}; nothing to pretrain on")
    return np.stack(images)[:, None], np.stack(masks)[:, None]


def dice_score(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of the foreground (class 1) over a batch."""
    pred = logits.argmax(dim=1, keepdim=True) == 1
    truth = target == 1
    inter = float((pred & truth).sum())
    denom = float(pred.sum() + truth.sum())
    return 1.0 if denom == 0 else 2 * inter / denom


def _pretrain_epoch(network: SegmentationNetwork, data: tuple[np.ndarray, np.ndarray],
                    batch_size: int, rng: np.random.Generator, optimiser: torch.optim.Optimizer,
                    loss_fn: nn.Module, dev: torch.device) -> tuple[float, float, int]:
    """One shuffled pass with seeded flips; returns (summed loss, summed Dice, volumes seen)."""
    images, masks = data
    network.train()
    order = rng.permutation(len(images))
    total, dice, n = 0.0, 0.0, 0
    for begin in range(0, len(order), batch_size):
        idx = order[begin: begin + batch_size]
        if len(idx) < 2 and len(order) > 1:  # BatchNorm needs more than one sample
            continue
        x = torch.from_numpy(images[idx]).to(dev)
        y = torch.from_numpy(masks[idx]).to(dev)
        flip = rng.random(3) < 0.5  # cheap seeded flips, same for image and mask
        dims = [2 + a for a in range(3) if flip[a]]
        if dims:
            x, y = x.flip(dims), y.flip(dims)
        optimiser.zero_grad(set_to_none=True)
        logits = network(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(idx)
        dice += dice_score(logits.detach(), y) * len(idx)
        n += len(idx)
    return total, dice, n


def pretrain_segmentation(  # noqa: PLR0913  (keyword settings of one pretraining run)
    cohort: Cohort,
    out: str | Path,
    depth: int = 10,
    modalities: list[str] | None = None,
    shape: tuple[int, int, int] = (32, 40, 40),
    epochs: int = 10,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    shortcut_type: str | None = None,
    max_patients: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Pretrain a MedicalNet backbone on tumour segmentation and save it in MedicalNet format.

    Returns a summary (volumes, seconds, per-epoch loss and Dice). ``progress(epoch, row)`` is
    called after each epoch.
    """
    from monai.losses import DiceCELoss

    from gliotl.core.device import resolve_device

    seed_everything(seed)
    dev = resolve_device(device)
    images, masks = load_pretraining_volumes(cohort, shape, modalities, max_patients)
    network = SegmentationNetwork(MedicalNetResNet(depth, 1, shortcut_type=shortcut_type)).to(dev)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(derive_seed(seed, "pretrain"))
    rows = []
    start = time.perf_counter()
    for epoch in range(epochs):
        total, dice, n = _pretrain_epoch(network, (images, masks), batch_size, rng, optimiser,
                                         loss_fn, dev)
        row = {"epoch": epoch, "loss": total / max(n, 1), "dice": dice / max(n, 1),
               "seconds": time.perf_counter() - start}
        rows.append(row)
        if progress is not None:
            progress(epoch, row)
    network.cpu()
    save_medicalnet_checkpoint(network, out)
    return {
        "weights": str(out), "depth": depth, "volumes": int(len(images)),
        "patients": int(min(len(cohort.table), max_patients or len(cohort.table))),
        "shape": list(shape), "epochs": epochs, "seconds": time.perf_counter() - start,
        "history": pd.DataFrame(rows),
    }


__all__ = [
    "SegmentationNetwork",
    "dice_score",
    "load_pair",
    "load_pretraining_volumes",
    "pretrain_segmentation",
    "save_medicalnet_checkpoint",
]
