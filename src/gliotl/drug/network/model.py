"""The drug-response network of Ju et al. (2025) and the lean loop that trains it.

Default architecture (the paper's Keras model): Dense(1000, sigmoid, L2 1e-4 on the kernel,
L1 1e-4 on the activity) -> Dropout 0.3 -> Dense(100, softplus) -> Dropout 0.1 ->
Dense(1, softplus), uniform(+-0.05) kernels, zero biases, Adam, MSE, batch 32.

Keras semantics reproduced here, because the regularisers change what is learned:
* kernel L2: ``l2 * sum(W**2)`` added to the loss (gradient ``2 * l2 * W``);
* activity L1: ``l1 * sum(|a|) / batch_size`` on the first layer's activations (after the
  activation function, before dropout), as ``tf.keras`` divides activity losses by the batch size;
* Adam with ``eps = 1e-7`` (Keras' default) and the last partial batch kept.

The training loop indexes tensors with a permutation (no DataLoader) and folds the kernel L2 and
any L2-SP pull into the gradient in place, so a step is three matmuls, one activation pass and
one fused optimiser update.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from gliotl.core.config import StrictModel

ActivationName = Literal["sigmoid", "softplus", "relu", "tanh", "elu", "gelu", "linear"]

def _identity(x: torch.Tensor) -> torch.Tensor:
    """The linear activation; a named function so that fitted models pickle."""
    return x


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "softplus": nn.functional.softplus,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "elu": nn.functional.elu,
    "gelu": nn.functional.gelu,
    "linear": _identity,
}


def _default_activations() -> list[ActivationName]:
    return ["sigmoid", "softplus"]


class NetworkConfig(StrictModel):
    """Layer sizes, activations, dropout and Keras-style regularisers of the network."""

    hidden: list[int] = Field(default_factory=lambda: [1000, 100], min_length=1)
    activations: list[ActivationName] = Field(default_factory=_default_activations)
    output_activation: ActivationName = "softplus"
    dropout: list[float] = Field(default_factory=lambda: [0.3, 0.1])
    l2_weight_first: float = Field(default=1e-4, ge=0.0)
    l1_activity_first: float = Field(default=1e-4, ge=0.0)
    init_uniform: float = Field(default=0.05, gt=0.0)

    @model_validator(mode="after")
    def _lengths_agree(self) -> NetworkConfig:
        n = len(self.hidden)
        if len(self.activations) != n:
            raise ValueError(f"activations must have one entry per hidden layer ({n})")
        if len(self.dropout) != n:
            raise ValueError(f"dropout must have one entry per hidden layer ({n})")
        if any(size < 1 for size in self.hidden):
            raise ValueError("hidden layer sizes must be positive")
        if any(not 0.0 <= rate < 1.0 for rate in self.dropout):
            raise ValueError("dropout rates must lie in [0, 1)")
        return self


class TrainConfig(StrictModel):
    """Optimiser settings. Early stopping is off unless ``patience`` is set; its validation set
    is always carved from the training data given to ``fit`` (never from a test fold)."""

    lr: float = Field(default=1e-3, gt=0.0)
    epochs: int = Field(default=50, ge=1)
    batch_size: int = Field(default=32, ge=1)
    optimiser: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    patience: int | None = Field(default=None, ge=1)
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    stacking: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="train independent fits of these settings as one stacked model "
                    "(gliotl.drug.network.batched): 'auto' stacks on CUDA, where a small "
                    "fit leaves the device idle, and on CPU for networks of at most "
                    "150,000 parameters; the paper network's CPU fits measured faster one "
                    "after another (benchmarks/RESULTS.md). Either way each model equals its "
                    "sequential fit within float32 rounding.",
    )


#: The paper's pretraining settings (source models).
PRETRAIN = TrainConfig(lr=1e-3, epochs=50, batch_size=32)
#: The paper's fine-tuning settings (every step after a transfer).
FINETUNE = TrainConfig(lr=1e-4, epochs=200, batch_size=32)


def _store_genes_by_hidden(layer: nn.Linear) -> None:
    """Keep the first layer's (hidden x genes) weight in genes x hidden storage.

    With 6,163 genes the rows of a (hidden x genes) matrix are not 64-byte aligned and the
    weight-gradient GEMM slows by about half; stored transposed, ``F.linear`` multiplies by a
    contiguous matrix and autograd writes the gradient in the same layout, bit-identical.
    The logical shape (and so every state dict and checkpoint) stays (hidden x genes); loading
    an old checkpoint copies it into this layout.
    """
    storage = torch.empty(layer.in_features, layer.out_features).t()
    layer.weight = nn.Parameter(storage, requires_grad=layer.weight.requires_grad)


def is_genes_by_hidden(weight: torch.Tensor) -> bool:
    """True when a (hidden x genes) weight is stored genes x hidden (see above)."""
    return weight.dim() == 2 and weight.stride() == (1, weight.shape[0])


class DrugResponseNet(nn.Module):
    """A stack of Dense layers; ``layers[0]`` is the first Dense, ``layers[-1]`` the output.

    ``n_outputs > 1`` gives the multi-task variant: each output unit reads the shared trunk
    through its own weight row and bias, i.e. one independent linear head per drug.
    """

    def __init__(
        self,
        n_genes: int,
        config: NetworkConfig | None = None,
        n_outputs: int = 1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.config = config or NetworkConfig()
        sizes = [n_genes, *self.config.hidden, n_outputs]
        # skip_init: torch's own init would draw from (and disturb) the global RNG.
        self.layers = nn.ModuleList(
            nn.utils.skip_init(nn.Linear, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        _store_genes_by_hidden(self.dense_layers[0])
        self._acts = [_ACTIVATIONS[name] for name in self.config.activations]
        self._out_act = _ACTIVATIONS[self.config.output_activation]
        self.n_genes = n_genes
        self.n_outputs = n_outputs
        self.last_first_activation: torch.Tensor | None = None
        self.reset_parameters(generator or torch.Generator().manual_seed(0))

    @property
    def dense_layers(self) -> list[nn.Linear]:
        """The Dense layers, input to output (``layers`` typed for what it holds)."""
        return [cast(nn.Linear, layer) for layer in self.layers]

    @property
    def hidden_layers(self) -> list[nn.Linear]:
        return self.dense_layers[:-1]

    def reset_layer(self, index: int, generator: torch.Generator | None = None) -> None:
        """Keras-style initialisation: uniform(+-init_uniform) kernel, zero bias."""
        layer = self.dense_layers[index]
        bound = self.config.init_uniform
        with torch.no_grad():
            weight = torch.empty(layer.weight.shape).uniform_(-bound, bound, generator=generator)
            layer.weight.copy_(weight)
            layer.bias.zero_()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for index in range(len(self.layers)):
            self.reset_layer(index, generator)

    def hidden(self, x: torch.Tensor, upto: int = -1) -> torch.Tensor:
        """Activations of hidden layer ``upto`` (default: the last); dropout only in training."""
        n_hidden = len(self.layers) - 1
        stop = upto % n_hidden if n_hidden else 0
        for index, layer in enumerate(self.dense_layers[: stop + 1]):
            x = self._acts[index](layer(x))
            if index == 0:
                self.last_first_activation = x
            rate = self.config.dropout[index]
            if rate > 0.0 and self.training:
                x = nn.functional.dropout(x, rate, training=True)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._out_act(self.dense_layers[-1](self.hidden(x)))
        return out.squeeze(-1) if self.n_outputs == 1 else out


def parameter_count(n_genes: int, config: NetworkConfig | None = None, n_outputs: int = 1) -> int:
    """Weights and biases of a :class:`DrugResponseNet` of this shape, without building it
    (the stacking choice reads it before any network exists)."""
    sizes = [n_genes, *(config or NetworkConfig()).hidden, n_outputs]
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def regulariser_values(net: DrugResponseNet, first_activation: torch.Tensor) -> dict[str, float]:
    """The Keras regularisation terms, as numbers (the loop applies them through gradients)."""
    cfg = net.config
    l2 = cfg.l2_weight_first * float(net.dense_layers[0].weight.detach().pow(2).sum())
    batch = max(first_activation.shape[0], 1)
    l1 = cfg.l1_activity_first * float(first_activation.detach().abs().sum()) / batch
    return {"l2_weight_first": l2, "l1_activity_first": l1}


# -- training -----------------------------------------------------------------------------------
@dataclass
class LayerTraining:
    """Per-Dense-layer training rules set by a transfer policy."""

    frozen: bool = False
    lr_multiplier: float = 1.0
    anchor: tuple[torch.Tensor, torch.Tensor] | None = None  # L2-SP: pull towards these
    anchor_alpha: float = 0.0
    zero_l2: float = 0.0  # extra L2 towards zero (L2-SP's beta on new layers)


@dataclass
class TrainResult:
    loss_history: list[float] = field(default_factory=list)
    val_loss_history: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    samples_seen: int = 0
    seconds: float = 0.0
    useful_flops: float = 0.0


def useful_flops_per_sample(net: DrugResponseNet, rules: Sequence[LayerTraining]) -> float:
    """FLOPs a training step really needs per sample: forward 2*MACs for every layer; backward
    2*MACs for the weight gradient of each trainable layer plus 2*MACs for the input gradient of
    every layer above the lowest trainable one (nothing flows into the input data)."""
    macs = [layer.in_features * layer.out_features for layer in net.dense_layers]
    trainable = [not rule.frozen for rule in rules]
    if not any(trainable):
        return 2.0 * sum(macs)
    lowest = trainable.index(True)
    weight_grads = sum(m for m, t in zip(macs, trainable, strict=True) if t)
    input_grads = sum(macs[lowest + 1 :])
    return 2.0 * (sum(macs) + weight_grads + input_grads)


def _masked_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    if mask is None:
        return torch.mean((pred - target) ** 2)
    diff = torch.where(mask, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return diff.pow(2).sum() / mask.sum().clamp_min(1)


def _make_optimiser(
    net: DrugResponseNet, rules: Sequence[LayerTraining], train: TrainConfig, device: torch.device
) -> tuple[ContiguousStepOptimiser | None, list[tuple[torch.Tensor, float]]]:
    """Parameter groups per layer; returns the optimiser and the in-place gradient additions
    (parameter, coefficient) that cannot be folded into the optimiser's own weight decay."""
    groups: list[dict] = []
    manual_l2: list[tuple[torch.Tensor, float]] = []
    for index, (layer, rule) in enumerate(zip(net.dense_layers, rules, strict=True)):
        layer.weight.requires_grad_(not rule.frozen)
        layer.bias.requires_grad_(not rule.frozen)
        if not rule.frozen:
            first_l2 = net.config.l2_weight_first if index == 0 else 0.0
            _add_layer_groups(layer, rule, first_l2, train, groups, manual_l2)
    if not groups:
        return None, manual_l2
    return _build_optimiser(groups, train, device), manual_l2


def _add_layer_groups(
    layer: nn.Linear, rule: LayerTraining, first_l2: float, train: TrainConfig,
    groups: list[dict], manual_l2: list[tuple[torch.Tensor, float]],
) -> None:
    """One trainable layer's parameter groups; its L2 towards zero goes into the optimiser's
    weight decay where that decay is coupled (adam, sgd add ``wd * W`` to the gradient)."""
    # d/dW of c * sum(W^2) is 2c W. L2-SP replaces decay towards zero on transferred layers.
    zero_pull = rule.zero_l2 if rule.anchor is not None else rule.zero_l2 + first_l2
    lr = train.lr * rule.lr_multiplier
    if train.optimiser in ("adam", "sgd"):
        groups.append({"params": [layer.weight], "lr": lr,
                       "weight_decay": train.weight_decay + 2.0 * zero_pull})
        groups.append({"params": [layer.bias], "lr": lr, "weight_decay": train.weight_decay})
        return
    groups.append({"params": [layer.weight, layer.bias], "lr": lr})
    if zero_pull > 0:
        manual_l2.append((layer.weight, 2.0 * zero_pull))


class ContiguousStepOptimiser:
    """An optimiser that updates genes x hidden weights through contiguous aliases.

    The first layer's weight is a transposed view of contiguous storage (see
    :func:`_store_genes_by_hidden`). PyTorch's fused CPU Adam is elementwise but about 3.6x
    slower on such a view (24.8 ms against 6.9 ms per step at 6,163 genes, torch 2.13), so the
    optimiser here holds ``weight.t()``, a contiguous alias of the same storage, and is handed
    ``weight.grad.t()`` (gradients keep their parameter's strides) before each step. The update
    is bit-identical to updating the view (``tests/drug/network/test_first_layer_layout.py``).
    """

    def __init__(self, groups: list[dict], build: Callable[[list[dict]], torch.optim.Optimizer]):
        self._pairs: list[tuple[torch.Tensor, nn.Parameter]] = []
        aliased = []
        for group in groups:
            params = []
            for param in group["params"]:
                if is_genes_by_hidden(param):
                    alias = nn.Parameter(param.detach().t(), requires_grad=param.requires_grad)
                    self._pairs.append((param, alias))
                    params.append(alias)
                else:
                    params.append(param)
            aliased.append({**group, "params": params})
        self.optimiser = build(aliased)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimiser.zero_grad(set_to_none=set_to_none)
        for param, _ in self._pairs:
            param.grad = None

    def step(self) -> None:
        for param, alias in self._pairs:
            alias.grad = param.grad.t() if param.grad is not None else None
        self.optimiser.step()


def _build_optimiser(groups: list[dict], train: TrainConfig,
                     device: torch.device) -> ContiguousStepOptimiser:
    fused = device.type in ("cpu", "cuda")

    def build(params: list[dict]) -> torch.optim.Optimizer:
        if train.optimiser == "adam":
            return torch.optim.Adam(params, lr=train.lr, eps=1e-7, fused=fused)
        if train.optimiser == "adamw":
            return torch.optim.AdamW(params, lr=train.lr, eps=1e-7,
                                     weight_decay=train.weight_decay, fused=fused)
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, fused=fused)

    return ContiguousStepOptimiser(groups, build)


def split_validation(
    n: int, train: TrainConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Training and validation row indices; the validation set exists only for early stopping
    and is the first draw from ``gen``."""
    if train.patience is None:
        return torch.arange(n), None
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(round(train.validation_fraction * n)))
    if n - n_val < 1:
        raise ValueError("too few samples to carve out a validation set for early stopping")
    return perm[n_val:].sort().values, perm[:n_val].sort().values


@dataclass
class _Rows:
    """The tensors of one subset of rows (``mask`` marks observed responses, multi-task)."""

    X: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None

    @classmethod
    def take(cls, X: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> _Rows:
        idx = idx.to(X.device)
        mask = ~torch.isnan(y) if y.dim() == 2 else None
        return cls(X[idx], y[idx], mask[idx] if mask is not None else None)


@dataclass
class _Penalties:
    """The loss and gradient terms beyond MSE: Keras' activity L1 on the first layer (in the
    loss), and the L2 pulls applied to gradients in place (towards zero where the optimiser
    cannot fold them into its decay, and L2-SP towards source weights)."""

    l1: float  # 0.0: off
    manual_l2: list[tuple[torch.Tensor, float]]
    anchors: list[tuple[nn.Linear, tuple[torch.Tensor, torch.Tensor], float]]

    @classmethod
    def build(cls, net: DrugResponseNet, rules: Sequence[LayerTraining],
              manual_l2: list[tuple[torch.Tensor, float]]) -> _Penalties:
        anchors = [
            (layer, rule.anchor, 2.0 * rule.anchor_alpha)
            for layer, rule in zip(net.dense_layers, rules, strict=True)
            if rule.anchor is not None and not rule.frozen and rule.anchor_alpha > 0
        ]
        l1 = net.config.l1_activity_first
        active = l1 > 0 and any(not r.frozen for r in rules)
        return cls(l1 if active else 0.0, manual_l2, anchors)

    def add_to_loss(self, loss: torch.Tensor, net: DrugResponseNet) -> torch.Tensor:
        if not self.l1:
            return loss
        act = cast(torch.Tensor, net.last_first_activation)  # set by the forward pass
        return loss + self.l1 * act.abs().sum() / act.shape[0]

    @torch.no_grad()
    def add_to_grads(self) -> None:
        for param, coef in self.manual_l2:
            cast(torch.Tensor, param.grad).add_(param, alpha=coef)
        for layer, (w_src, b_src), coef in self.anchors:
            cast(torch.Tensor, layer.weight.grad).add_(layer.weight - w_src, alpha=coef)
            cast(torch.Tensor, layer.bias.grad).add_(layer.bias - b_src, alpha=coef)


@dataclass
class _EarlyStopping:
    """Keeps the best validation loss and a copy of the weights that reached it."""

    patience: int
    best_val: float = math.inf
    waited: int = 0
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None

    def should_stop(self, val_loss: float, epoch: int, net: nn.Module) -> bool:
        if val_loss < self.best_val - 1e-12:
            self.best_val, self.waited, self.best_epoch = val_loss, 0, epoch
            self.best_state = copy.deepcopy(net.state_dict())
            return False
        self.waited += 1
        return self.waited >= self.patience


def _run_epoch(net: DrugResponseNet, rows: _Rows, order: torch.Tensor, batch_size: int,
               opt: ContiguousStepOptimiser | None, penalties: _Penalties) -> float:
    """One pass over ``rows`` in ``order``; returns the mean training loss."""
    net.train()
    n = rows.X.shape[0]
    total = torch.zeros((), device=rows.X.device)
    for begin in range(0, n, batch_size):
        idx = order[begin : begin + batch_size]
        pred = net(rows.X[idx])
        mask = rows.mask[idx] if rows.mask is not None else None
        loss = penalties.add_to_loss(_masked_mse(pred, rows.y[idx], mask), net)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            penalties.add_to_grads()
            opt.step()
        total += loss.detach() * idx.shape[0]
    return float(total) / n


def _restore_requires_grad(net: DrugResponseNet, rules: Sequence[LayerTraining]) -> None:
    """Leave trainable layers with gradients on and frozen ones off, as after a transfer."""
    for layer, rule in zip(net.layers, rules, strict=True):
        layer.weight.requires_grad_(not rule.frozen)
        layer.bias.requires_grad_(not rule.frozen)


def _validate(net: DrugResponseNet, val: _Rows, epoch: int, stopper: _EarlyStopping | None,
              result: TrainResult) -> bool:
    """Record the validation loss; True when early stopping says to stop."""
    val_loss = _eval_loss(net, val.X, val.y)
    result.val_loss_history.append(val_loss)
    return stopper is not None and stopper.should_stop(val_loss, epoch, net)


def train_network(
    net: DrugResponseNet,
    X: torch.Tensor,
    y: torch.Tensor,
    train: TrainConfig,
    rules: Sequence[LayerTraining] | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> TrainResult:
    """Minimise MSE (+ Keras regularisers, + transfer penalties) with mini-batches.

    ``y`` may be 2-D with NaNs (multi-task): missing responses are masked out of the loss.
    Randomness (the validation carve-out, then shuffling and dropout) comes only from ``seed``.
    """
    device = X.device
    rules = list(rules) if rules is not None else [LayerTraining() for _ in net.layers]
    if len(rules) != len(net.layers):
        raise ValueError("one LayerTraining rule per Dense layer is required")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    train_idx, val_idx = split_validation(X.shape[0], train, gen)
    rows = _Rows.take(X, y, train_idx)
    val = _Rows.take(X, y, val_idx) if val_idx is not None else None
    opt, manual_l2 = _make_optimiser(net, rules, train, device)
    penalties = _Penalties.build(net, rules, manual_l2)
    stopper = _EarlyStopping(train.patience) if train.patience is not None else None
    result = TrainResult()
    start = time.perf_counter()
    torch_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(torch_seed)  # dropout masks; isolated from the caller's RNG state
        for epoch in range(train.epochs):
            order = torch.randperm(rows.X.shape[0], generator=gen).to(device)
            result.loss_history.append(_run_epoch(net, rows, order, train.batch_size, opt,
                                                  penalties))
            result.samples_seen += rows.X.shape[0]
            if val is not None and _validate(net, val, epoch, stopper, result):
                break
            if verbose:
                print(f"epoch {epoch + 1}/{train.epochs} loss {result.loss_history[-1]:.5f}")
    if stopper is not None and stopper.best_state is not None:
        net.load_state_dict(stopper.best_state)
        result.best_epoch = stopper.best_epoch
    net.eval()
    _restore_requires_grad(net, rules)
    result.seconds = time.perf_counter() - start
    result.useful_flops = useful_flops_per_sample(net, rules) * result.samples_seen
    return result


@torch.no_grad()
def _eval_loss(net: DrugResponseNet, X: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = net(X)
    mask = ~torch.isnan(y) if y.dim() == 2 else None
    return float(_masked_mse(pred, y, mask))


@torch.no_grad()
def predict_network(
    fn: Callable[[torch.Tensor], torch.Tensor], net: nn.Module, X: np.ndarray,
    device: torch.device, batch_size: int = 4096,
) -> np.ndarray:
    """Apply ``fn`` (the net or a part of it) in eval mode, in batches, without autograd."""
    net.eval()
    outs = []
    for begin in range(0, X.shape[0], batch_size):
        xb = torch.as_tensor(X[begin : begin + batch_size], dtype=torch.float32, device=device)
        outs.append(fn(xb).float().cpu())
    if not outs:
        return np.zeros((0,), dtype=np.float32)
    return torch.cat(outs).numpy()


__all__ = [
    "FINETUNE",
    "PRETRAIN",
    "DrugResponseNet",
    "LayerTraining",
    "NetworkConfig",
    "TrainConfig",
    "TrainResult",
    "parameter_count",
    "predict_network",
    "regulariser_values",
    "split_validation",
    "train_network",
    "is_genes_by_hidden",
    "useful_flops_per_sample",
]
