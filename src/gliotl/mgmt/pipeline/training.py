"""Training and inference of one MGMT classifier (one method, one modality or stack, one fold).

What the paper's code got wrong and this module does not:

* the LR scheduler is ``ReduceLROnPlateau(mode="max")`` on the validation checkpoint metric
  (0.6 * sensitivity + 0.4 * specificity), a metric to MAXIMISE;
* inference is ``model.eval()``: no dropout, frozen BatchNorm statistics, and for SpotTune the
  trained policy's argmax without Gumbel noise, so predicting twice gives identical numbers;
* the trained policy network is part of the saved state and is what evaluation uses;
* every tensor follows the chosen device (CPU or CUDA); float16 mixed precision only on CUDA,
  bfloat16 (``precision: bf16``) on either (:mod:`gliotl.mgmt.pipeline.acceleration`).

Class balance is restored on the training fold only: random undersampling of the majority
class (redrawn each epoch from a seeded generator, so every majority patient is eventually
seen) or a positive-class weight in the loss computed from the training fold's counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gliotl.core.evaluation.metrics import choose_threshold, classification_metrics
from gliotl.core.seeding import derive_seed
from gliotl.errors import GliotlError
from gliotl.mgmt.config import TrainingConfig

SENSITIVITY_WEIGHT = 0.6
"""Checkpoint metric of the paper: 0.6 * sensitivity + 0.4 * specificity on validation."""


# ---------------------------------------------------------------------------- models


def build_model(method: str, depth: int, weights: str | None, in_channels: int, dropout: float,
                training: TrainingConfig, steps_per_epoch: int = 1,
                shortcut_type: str | None = None) -> nn.Module:
    """The network of ``method`` (see :mod:`gliotl.mgmt.methods`): a MedicalNet ResNet with a
    transfer strategy, or SpotTune.

    A method that is not ``pretrained`` never loads weights; every other one needs pretrained
    ``weights`` to mean what its name says, but also runs without them (random start).
    """
    from gliotl.mgmt.methods import method_spec
    from gliotl.mgmt.models.finetune import configure_strategy
    from gliotl.mgmt.models.resnet import medicalnet_resnet
    from gliotl.mgmt.models.spottune import SpotTune

    spec = method_spec(method)
    backbone = medicalnet_resnet(depth, weights=weights if spec.pretrained else None,
                                 in_channels=in_channels, dropout=dropout,
                                 shortcut_type=shortcut_type)
    if spec.spottune is None:
        assert spec.strategy is not None  # every non-SpotTune method names its strategy
        return configure_strategy(backbone, spec.strategy)
    anneal = training.epochs * max(1, steps_per_epoch)
    spottune = SpotTune(
        backbone, mode=spec.spottune,
        budget=training.spottune_budget if spec.spottune == "global" else None,
        temperature=training.temperature, final_temperature=training.final_temperature,
        anneal_steps=anneal if training.final_temperature is not None else 0,
    )
    spottune.split_batches = training.spottune_split_batches
    return spottune


def optimiser_for(model: nn.Module, training: TrainingConfig) -> torch.optim.Optimizer:
    """Adam over trainable parameters only (frozen copies cannot drift by weight decay);
    SpotTune's policy gets its own learning rate."""
    from gliotl.mgmt.models.finetune import parameter_groups
    from gliotl.mgmt.models.spottune import SpotTune

    if isinstance(model, SpotTune):
        groups = model.parameter_groups(training.lr_backbone, training.lr_policy,
                                        training.weight_decay)
    else:
        groups = parameter_groups(model, training.lr_backbone, training.weight_decay)
    return torch.optim.Adam(groups)


def make_scheduler(optimiser: torch.optim.Optimizer, training: TrainingConfig
                   ) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Plateau scheduler on the validation checkpoint metric, which is MAXIMISED."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, mode="max", factor=training.plateau_factor,
        patience=training.plateau_patience,
    )


# ---------------------------------------------------------------------------- balancing


def undersample_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All minority-class indices plus an equal-sized random subset of the majority class,
    shuffled. Only ever applied to training-fold indices."""
    labels = np.asarray(labels)
    positive = np.flatnonzero(labels == 1)
    negative = np.flatnonzero(labels == 0)
    if len(positive) == 0 or len(negative) == 0:
        raise GliotlError("training fold has a single class; cannot balance or learn MGMT status")
    minority, majority = sorted((positive, negative), key=len)
    chosen = rng.choice(majority, size=len(minority), replace=False)
    return rng.permutation(np.concatenate([minority, chosen]))


def positive_weight(labels: np.ndarray) -> float:
    """n_negative / n_positive of the training fold (BCE ``pos_weight``)."""
    labels = np.asarray(labels)
    n_pos = int((labels == 1).sum())
    n_neg = int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise GliotlError("training fold has a single class; cannot balance or learn MGMT status")
    return n_neg / n_pos


def epoch_indices(labels: np.ndarray, balancing: str, seed: int, epoch: int) -> np.ndarray:
    """The training items of one epoch, in order (seeded by seed and epoch only)."""
    rng = np.random.default_rng(derive_seed(seed, "epoch", epoch))
    if balancing == "undersample":
        return undersample_indices(labels, rng)
    return rng.permutation(len(labels))


# ---------------------------------------------------------------------------- metrics


def checkpoint_score(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[float, float, dict]:
    """(0.6 * sensitivity + 0.4 * specificity, threshold, metrics) on validation; the threshold
    is chosen on these same validation predictions by Youden's J (0.5 when val has one class)."""
    y_true = np.asarray(y_true, dtype=float)
    if len(np.unique(y_true)) == 2:
        threshold = choose_threshold(y_true, y_prob, "youden")
    else:
        threshold = 0.5
    metrics = classification_metrics(y_true, y_prob, threshold, source="validation",
                                      allow_single_class=True)
    sens = 0.0 if np.isnan(metrics["sensitivity"]) else metrics["sensitivity"]
    spec = 0.0 if np.isnan(metrics["specificity"]) else metrics["specificity"]
    score = SENSITIVITY_WEIGHT * sens + (1 - SENSITIVITY_WEIGHT) * spec
    return float(score), float(threshold), metrics


def validation_log_loss(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Unweighted binary cross-entropy of validation probabilities (clipped away from 0/1)."""
    y_true = np.asarray(y_true, dtype=float)
    p = np.clip(np.asarray(y_prob, dtype=float), 1e-7, 1 - 1e-7)
    if len(p) == 0:
        return float("inf")
    return float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)))


# ---------------------------------------------------------------------------- loops


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type="cpu", enabled=False)


@torch.no_grad()
def predict_proba(model: nn.Module, dataset: Any, device: torch.device, batch_size: int = 8,
                  amp: bool = False, num_workers: int = 0,
                  training: TrainingConfig | None = None) -> np.ndarray:
    """Sigmoid probabilities in dataset order, in eval mode (deterministic). With ``training``
    its speed options (precision, layout) apply and ``amp`` is ignored."""
    from torch.utils.data import DataLoader

    from gliotl.mgmt.pipeline import acceleration

    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        **_loading(dataset, num_workers, device))
    out = []
    for x, _ in loader:
        if training is None:
            with _autocast(device, amp):
                logits = model(x.to(device, non_blocking=True))
            out.append(torch.sigmoid(logits.float()).view(-1).cpu().numpy())
            continue
        with acceleration.autocast(device, acceleration.autocast_dtype(training, device)):
            logits = model(acceleration.place_batch(x, training, device))
        out.append(torch.sigmoid(logits.float()).view(-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class FitResult:
    """The best epoch's weights (CPU copies), its validation threshold, and the history."""

    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    threshold: float
    history: pd.DataFrame
    seconds: float


@dataclass
class _Loop:
    """What one training run keeps across epochs."""

    optimiser: torch.optim.Optimizer
    scaler: Any
    loss_fn: nn.Module
    device: torch.device
    use_amp: bool
    generator: torch.Generator
    training: TrainingConfig
    dtype: torch.dtype | None


def _make_loop(model: nn.Module, labels: np.ndarray, training: TrainingConfig,
               device: torch.device, seed: int) -> _Loop:
    pos_weight = None
    if training.balancing == "weighted_loss":
        pos_weight = torch.tensor([positive_weight(labels)], device=device)
    from gliotl.mgmt.pipeline.acceleration import autocast_dtype, needs_grad_scaler

    dtype = autocast_dtype(training, device)
    use_amp = dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(dtype, device))
    return _Loop(optimiser_for(model, training), scaler,
                 nn.BCEWithLogitsLoss(pos_weight=pos_weight), device, use_amp,
                 torch.Generator().manual_seed(derive_seed(seed, "loader")), training, dtype)


def _epoch_loader(train_set: Any, labels: np.ndarray, training: TrainingConfig, seed: int,
                  epoch: int, loop: _Loop) -> Any:
    from torch.utils.data import DataLoader, Subset

    if hasattr(train_set, "set_epoch"):
        train_set.set_epoch(epoch)
    order = epoch_indices(labels, training.balancing, seed, epoch)
    if len(order) > 1 and len(order) % training.batch_size == 1:
        # A batch of one breaks train-mode BatchNorm wherever features are 1x1x1 (the
        # policy network on small volumes); the dropped item changes with each epoch.
        order = order[:-1]
    return DataLoader(Subset(train_set, order.tolist()), batch_size=training.batch_size,
                      shuffle=False, generator=loop.generator,
                      **_loading(train_set, training.num_workers, loop.device, pin=True))


def _loading(dataset: Any, num_workers: int, device: Any, pin: bool = False) -> dict[str, Any]:
    """Loader workers and pinned memory for ``dataset`` on ``device``: none of either when its
    items are already on a GPU (a resident cohort); pinned host memory (``pin``) only for a
    GPU fed from the host."""
    on_gpu = bool(getattr(dataset, "resident_on_cuda", False))
    return {"num_workers": 0 if on_gpu else num_workers,
            "pin_memory": pin and device.type == "cuda" and not on_gpu}


def _train_epoch(model: nn.Module, loader: Any, loop: _Loop) -> tuple[float, int]:
    """One pass over ``loader``; returns (summed loss, items seen)."""
    from gliotl.mgmt.models.spottune import SpotTune
    from gliotl.mgmt.pipeline import acceleration

    model.train()
    total, seen = 0.0, 0
    for x, y in loader:
        x = acceleration.place_batch(x, loop.training, loop.device)
        y = y.to(loop.device, dtype=torch.float32).view(-1, 1)
        loop.optimiser.zero_grad(set_to_none=True)
        with acceleration.autocast(loop.device, loop.dtype):
            logits = model(x)
            loss = loop.loss_fn(logits.float(), y)
            if isinstance(model, SpotTune):
                loss = loss + model.regularisation_loss()
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.optimiser)
        loop.scaler.update()
        total += float(loss.detach()) * len(y)
        seen += len(y)
    return total, seen


def fit(model: nn.Module, train_set: Any, val_set: Any, training: TrainingConfig,
        device: torch.device, seed: int, progress: Any = None) -> FitResult:
    """Train ``model`` on ``train_set``; keep the state of the epoch with the best validation
    checkpoint metric (ties: higher validation AUC, then lower validation log-loss, then the
    earlier epoch).
    ``progress(epoch, row)`` is called per epoch."""
    from gliotl.mgmt.pipeline.acceleration import place_model

    labels = np.asarray(train_set.labels, dtype=float)
    place_model(model, training, device)
    loop = _make_loop(model, labels, training, device, seed)
    scheduler = make_scheduler(loop.optimiser, training)
    y_val = np.asarray(val_set.labels, dtype=float)

    best: tuple[tuple[float, float, float], int, float, dict] | None = None
    rows = []
    start = time.perf_counter()
    for epoch in range(training.epochs):
        loader = _epoch_loader(train_set, labels, training, seed, epoch, loop)
        total, seen = _train_epoch(model, loader, loop)
        prob = predict_proba(model, val_set, device, training.eval_batch_size,
                             num_workers=training.num_workers, training=training)
        score, threshold, metrics = checkpoint_score(y_val, prob)
        val_loss = validation_log_loss(y_val, prob)
        scheduler.step(score)
        row = {
            "epoch": epoch, "train_loss": total / max(seen, 1), "train_items": seen,
            "val_score": score, "val_threshold": threshold, "val_auc": metrics["roc_auc"],
            "val_sensitivity": metrics["sensitivity"], "val_specificity": metrics["specificity"],
            "val_loss": val_loss,
            "lr": float(loop.optimiser.param_groups[0]["lr"]),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        if progress is not None:
            progress(epoch, row)
        best = _keep_best(best, model, epoch, threshold, (score, metrics["roc_auc"], val_loss))
    assert best is not None
    model.load_state_dict(best[3])
    return FitResult(state_dict=best[3], best_epoch=best[1], best_score=best[0][0],
                     threshold=best[2], history=pd.DataFrame(rows),
                     seconds=time.perf_counter() - start)


def _keep_best(best: Any, model: nn.Module, epoch: int, threshold: float,
               scores: tuple[float, float, float]) -> Any:
    """The better of ``best`` and this epoch (a CPU copy of its state when it wins).

    Small validation folds saturate the 0.6/0.4 metric and even the AUC (1.0 from epoch 0,
    when an almost untrained network ranks a few patients right by tiny margins). Ties are
    broken by AUC, then by log-loss, which keeps improving as the network separates the
    classes more confidently, so an untrained epoch does not win by being first.
    """
    score, auc, val_loss = scores
    key = (score, auc if np.isfinite(auc) else -1.0, -val_loss)
    if best is not None and not key > best[0]:
        return best
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return (key, epoch, threshold, state)


__all__ = [
    "SENSITIVITY_WEIGHT",
    "FitResult",
    "build_model",
    "checkpoint_score",
    "epoch_indices",
    "fit",
    "make_scheduler",
    "optimiser_for",
    "positive_weight",
    "predict_proba",
    "undersample_indices",
    "validation_log_loss",
]
