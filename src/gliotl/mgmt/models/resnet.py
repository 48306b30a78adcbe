"""MedicalNet-compatible 3D ResNets (Chen et al. 2019, "Med3D") with a classification head.

The architecture and parameter names follow MedicalNet exactly so that its published
checkpoints load *strictly* (every backbone tensor accounted for). Three defects of the
SpotTune-MGMT authors' code are deliberately not repeated here:

* every block of layer3 / layer4 is dilated (2 / 4), not only the first one;
* the BatchNorm of a type-B shortcut (``downsample.1``) is applied in ``forward``;
* weights load strictly: a missing, unexpected or mis-shaped backbone tensor is an error.

The type-A shortcut is parameter-free (sub-sampling + zero channel padding) like MedicalNet's,
but keeps the gradient flowing through the identity part (MedicalNet detached it via ``.data``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from gliotl.core.io import load_torch
from gliotl.errors import GliotlError, input_error

DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
"""Block type and blocks per stage for each MedicalNet depth."""

DEFAULT_SHORTCUT: dict[int, str] = {
    10: "B", 18: "A", 34: "A", 50: "B", 101: "B", 152: "B", 200: "B"
}
"""Shortcut type of MedicalNet's published checkpoints (resnet_18 / resnet_34 use type A)."""

_STAGE_SPECS = (  # (planes, stride, dilation) of layer1..layer4
    (64, 1, 1),
    (128, 2, 1),
    (256, 1, 2),
    (512, 1, 4),
)
_IGNORED_CHECKPOINT_PREFIXES = ("conv_seg.",)  # MedicalNet's segmentation decoder


def _conv3x3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    # padding = dilation keeps the spatial size for stride 1, as in MedicalNet.
    return nn.Conv3d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        bias=False,
    )


class ShortcutA(nn.Module):
    """Parameter-free shortcut: spatial sub-sampling then zero-padding of the new channels."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
        extra = self.out_channels - x.shape[1]
        if extra > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, extra))
        return x


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions (ResNet-10/18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3x3(inplanes, planes, stride=stride, dilation=dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1x1 -> 3x3x3 (strided, dilated) -> 1x1x1 with 4x expansion (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3x3x3(planes, planes, stride=stride, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ClassificationHead(nn.Module):
    """Global average pooling, optional dropout, linear layer (our own; not in MedicalNet)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(self.pool(features), 1)
        return self.fc(self.dropout(pooled))


def keep_frozen_batchnorm_in_eval(module: nn.Module) -> None:
    """Put every BatchNorm whose affine parameters are all frozen into eval mode.

    Why: a frozen (pretrained) layer must stay a fixed function. In train mode BatchNorm would
    normalise with the statistics of each small batch and overwrite its pretrained running
    statistics, so a "frozen" layer would silently change, and behave differently at test time.
    """
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            params = list(sub.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                sub.eval()


class MedicalNetResNet(nn.Module):
    """MedicalNet 3D ResNet backbone (``conv1`` ... ``layer4``) plus a classification ``head``.

    Parameters whose ``requires_grad`` is False are treated as frozen: ``train()`` keeps their
    BatchNorm layers in eval mode (see :func:`keep_frozen_batchnorm_in_eval`).
    """

    def __init__(
        self,
        depth: int,
        in_channels: int = 1,
        num_classes: int = 1,
        dropout: float = 0.0,
        shortcut_type: str | None = None,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise GliotlError(
                f"medicalnet_resnet: field 'depth': expected one of {sorted(DEPTHS)}, got {depth!r}"
            )
        shortcut = (shortcut_type or DEFAULT_SHORTCUT[depth]).upper()
        if shortcut not in ("A", "B"):
            raise GliotlError(
                f"medicalnet_resnet: field 'shortcut_type': expected 'A' or 'B', got {shortcut!r}"
            )
        if in_channels < 1 or num_classes < 1 or not 0.0 <= dropout < 1.0:
            raise GliotlError(
                "medicalnet_resnet: fields 'in_channels', 'num_classes', 'dropout': expected "
                f"in_channels >= 1, num_classes >= 1, 0 <= dropout < 1 "
                f"(got {in_channels}, {num_classes}, {dropout})"
            )
        kind, layers = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.shortcut_type = shortcut
        self.in_channels = in_channels
        self.inplanes = 64
        self.conv1 = nn.Conv3d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        stages = []
        for n_blocks, (planes, stride, dilation) in zip(layers, _STAGE_SPECS, strict=True):
            stages.append(self._make_layer(block, planes, n_blocks, shortcut, stride, dilation))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = 512 * block.expansion
        self.head = ClassificationHead(self.feature_dim, num_classes, dropout)
        self._init_weights()

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        n_blocks: int,
        shortcut: str,
        stride: int,
        dilation: int,
    ) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample: nn.Module | None = None
        if stride != 1 or self.inplanes != out_planes:
            if shortcut == "A":
                downsample = ShortcutA(out_planes, stride)
            else:
                downsample = nn.Sequential(
                    nn.Conv3d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm3d(out_planes),
                )
        blocks = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = out_planes
        # Every block of the stage carries the stage's dilation (the authors' code dropped it).
        blocks += [block(self.inplanes, planes, dilation=dilation) for _ in range(1, n_blocks)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # -- structure ---------------------------------------------------------------------------
    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 -> bn1 -> ReLU -> max-pool (downsamples by 4 in every axis)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def residual_blocks(self) -> list[tuple[str, nn.Module]]:
        """All residual blocks in execution order, named like their state-dict prefix."""
        return [
            (f"{stage}.{index}", block)
            for stage in ("layer1", "layer2", "layer3", "layer4")
            for index, block in enumerate(getattr(self, stage))
        ]

    def backbone_state_keys(self) -> list[str]:
        """State-dict keys that a MedicalNet checkpoint must provide (everything but the head)."""
        return [key for key in self.state_dict() if not key.startswith("head.")]

    # -- forward -----------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The layer4 feature map, shape (N, feature_dim, D/8, H/8, W/8) (rounded up)."""
        x = self.stem(x)
        for _, block in self.residual_blocks():
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classification logits, shape (N, num_classes)."""
        return self.head(self.forward_features(x))

    def train(self, mode: bool = True) -> MedicalNetResNet:
        super().train(mode)
        if mode:
            keep_frozen_batchnorm_in_eval(self)
        return self


def _checkpoint_state(raw: Any, source: str | Path) -> dict[str, torch.Tensor]:
    """Accept ``{"state_dict": {...}}`` or a bare state dict; strip DataParallel prefixes."""
    state = raw.get("state_dict", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise input_error(
            source, "state_dict", "expected a MedicalNet checkpoint: a state dict of tensors or "
            "a dict with key 'state_dict'"
        )
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise input_error(
                source, "state_dict", f"expected string keys and tensor values, got entry {key!r}"
            )
        name = key
        while name.startswith("module."):
            name = name[len("module."):]
        cleaned[name] = value
    return cleaned


def _summarise(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return f"{len(items)} ({shown}{', ...' if len(items) > limit else ''})"


def load_medicalnet_state(
    model: MedicalNetResNet, state: Mapping[str, torch.Tensor], source: str | Path = "<state>"
) -> MedicalNetResNet:
    """Load a (cleaned) MedicalNet state dict into the backbone, strictly; the head is untouched.

    ``conv_seg.*`` (the segmentation decoder) is ignored. A missing ``num_batches_tracked``
    counter is tolerated (older PyTorch checkpoints lack it; it does not affect eval or the
    default momentum update); any other missing, unexpected or mis-shaped tensor is an error.
    """
    state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_CHECKPOINT_PREFIXES)}
    own = model.state_dict()
    expected = model.backbone_state_keys()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in expected
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys {_summarise(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_summarise(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches {_summarise(mismatched, 3)}")
        raise input_error(
            source,
            "state_dict",
            f"does not match a MedicalNet ResNet-{model.depth} (shortcut "
            f"{model.shortcut_type}, in_channels {model.in_channels}) backbone: "
            + "; ".join(problems),
        )
    model.load_state_dict(dict(state), strict=False)  # only head / counters may be absent
    return model


def load_medicalnet_weights(model: MedicalNetResNet, path: str | Path) -> MedicalNetResNet:
    """Load a MedicalNet checkpoint file (``weights_only=True``) strictly into ``model``."""
    return load_medicalnet_state(model, _checkpoint_state(load_torch(path), path), path)


def inflate_stem(model: MedicalNetResNet, in_channels: int) -> MedicalNetResNet:
    """Give the stem ``in_channels`` inputs, each with the summed pretrained kernel / in_channels.

    Why: a single-channel pretrained stem then maps a stack of identical copies of a volume to
    exactly what it gave for the volume alone, so stacked-modality input starts from the
    pretrained function and fine-tuning learns how the channels differ.
    """
    if in_channels < 1:
        raise GliotlError(f"inflate_stem: field 'in_channels': expected >= 1, got {in_channels}")
    old = model.conv1
    if old.in_channels == in_channels:
        return model
    kernel = old.weight.detach().sum(dim=1, keepdim=True) / in_channels
    new = nn.Conv3d(
        in_channels,
        old.out_channels,
        kernel_size=cast(tuple[int, int, int], old.kernel_size),
        stride=cast(tuple[int, int, int], old.stride),
        padding=cast(tuple[int, int, int], old.padding),
        bias=False,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(kernel.expand(-1, in_channels, -1, -1, -1))
    new.weight.requires_grad_(old.weight.requires_grad)
    model.conv1 = new
    model.in_channels = in_channels
    return model


def medicalnet_resnet(
    depth: int,
    weights: str | Path | None = None,
    in_channels: int = 1,
    num_classes: int = 1,
    dropout: float = 0.0,
    shortcut_type: str | None = None,
) -> MedicalNetResNet:
    """Build a MedicalNet 3D ResNet, optionally loading a MedicalNet checkpoint strictly.

    With ``weights`` and ``in_channels > 1`` the checkpoint's single-channel stem is inflated
    (:func:`inflate_stem`). For the paper's multi-modal setup build one single-channel network
    per modality instead and fuse their outputs.
    """
    if weights is None:
        return MedicalNetResNet(depth, in_channels, num_classes, dropout, shortcut_type)
    state = _checkpoint_state(load_torch(weights), weights)
    stem = state.get("conv1.weight")
    stem_channels = int(stem.shape[1]) if stem is not None and stem.ndim == 5 else 1
    model = MedicalNetResNet(depth, stem_channels, num_classes, dropout, shortcut_type)
    load_medicalnet_state(model, state, weights)
    if in_channels != stem_channels:
        if stem_channels != 1:
            raise input_error(
                weights, "conv1.weight", f"a single-channel stem to inflate to {in_channels} "
                f"channels, found {stem_channels} channels"
            )
        inflate_stem(model, in_channels)
    return model


__all__ = [
    "DEFAULT_SHORTCUT",
    "DEPTHS",
    "BasicBlock",
    "Bottleneck",
    "ClassificationHead",
    "MedicalNetResNet",
    "ShortcutA",
    "inflate_stem",
    "keep_frozen_batchnorm_in_eval",
    "load_medicalnet_state",
    "load_medicalnet_weights",
    "medicalnet_resnet",
]
