"""Train K independent drug networks of one architecture as one stacked model (issue 17).

CV folds, repeats, label permutations and seeds each fit a small network; fitted one after
another they leave the machine idle between tiny kernels. Here the K models' weights are stacked
(layer ``l``: ``K x in x out``, the genes x hidden layout of the first layer for every layer), a
step is one ``baddbmm``/``bmm`` per layer and direction with gradients written into
preallocated buffers (autograd over stacked weights re-maps its large tensors every step and is
slower than sequential fits), and Adam is PyTorch's own fused kernel applied to each model's
slices, so every model keeps its own moments and step count.

Each model replays exactly the random stream of :func:`gliotl.drug.network.model.train_network`
with its seed: the validation carve-out, the per-epoch shuffles and the dropout masks (drawn per
model from a generator seeded as the sequential fit seeds the global one). Folds of unequal size
are padded and masked: a padded row adds nothing to any loss or gradient, and a model with fewer
mini-batches in an epoch (or one stopped early) takes no optimiser step while the others do.
Predictions therefore equal the sequential fits' within float32 rounding (GEMM summation
order); ``tests/drug/network/test_batched.py`` states and checks the tolerance. On CUDA the
dropout masks come from per-model CUDA generators, so they differ from a sequential CUDA fit's
(reproducible, not identical); the epoch loop makes no host synchronisation unless early
stopping needs the validation losses.

Whether to stack is ``TrainConfig.stacking`` (:func:`stacking_chosen`: by default on CUDA only,
measured slower than sequential fits on CPU). What cannot be stacked runs sequentially, and
:func:`batch_refusal` says why: optimisers other than Adam, multi-task responses, and members
whose architecture or per-layer rules differ.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from gliotl.drug.network.model import (
    _ACTIVATIONS,
    DrugResponseNet,
    LayerTraining,
    TrainConfig,
    TrainResult,
    split_validation,
    train_network,
    useful_flops_per_sample,
)

#: Memory for one chunk's stacked weights, gradients, moments, anchors and best copies on the
#: CPU; on CUDA a chunk may take half of the device memory free when training starts.
DEFAULT_CHUNK_BYTES = 2 * 1024**3

Backward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# The elementwise backward of each activation: autograd's own kernels, (grad, z, a) -> dz.
_BACKWARDS: dict[str, Backward] = {
    "sigmoid": lambda g, z, a: torch.ops.aten.sigmoid_backward(g, a),
    "softplus": lambda g, z, a: torch.ops.aten.softplus_backward(g, z, 1.0, 20.0),
    "relu": lambda g, z, a: torch.ops.aten.threshold_backward(g, a, 0.0),
    "tanh": lambda g, z, a: torch.ops.aten.tanh_backward(g, a),
    "elu": lambda g, z, a: torch.ops.aten.elu_backward(g, 1.0, 1.0, 1.0, False, z),
    "gelu": lambda g, z, a: torch.ops.aten.gelu_backward(g, z, approximate="none"),
    "linear": lambda g, z, a: g,
}


@dataclass
class BatchMember:
    """One model of a batch: its freshly initialised network, its rows, rules and seed."""

    net: DrugResponseNet
    X: torch.Tensor
    y: torch.Tensor
    rules: list[LayerTraining]
    seed: int


def _rule_key(rule: LayerTraining) -> tuple:
    return (rule.frozen, rule.lr_multiplier, rule.anchor is not None, rule.anchor_alpha,
            rule.zero_l2)


def stacking_chosen(train: TrainConfig, device: torch.device) -> bool:
    """Whether fits with ``train`` on ``device`` are stacked (``train.stacking``).

    ``auto`` stacks on CUDA only. On CPU a step of the paper network is bound by the memory
    traffic of each model's own weights, gradients and Adam moments, which stacking cannot
    share: 30 stacked fine-tunes measured 0.73x the speed of the same fits one after another
    (``benchmarks/bench_drug.py``, RESULTS.md), and sequential fits leave a run's workers
    free to take folds in parallel.
    """
    if train.stacking == "auto":
        return device.type == "cuda"
    return train.stacking == "always"


def batch_refusal(members: Sequence[BatchMember], train: TrainConfig) -> str | None:
    """Why these members cannot be trained as one stacked model (None: they can)."""
    if train.optimiser != "adam":
        return f"optimiser '{train.optimiser}' (only adam is stacked)"
    first = members[0]
    if all(rule.frozen for rule in first.rules):
        return "every layer frozen"
    for member in members:
        reason = _member_mismatch(first, member)
        if reason is not None:
            return reason
    return None


def _member_mismatch(first: BatchMember, member: BatchMember) -> str | None:
    """Why ``member`` cannot share a stack with ``first`` (None: it can)."""
    if member.y.dim() != 1:
        return "multi-task responses"
    if member.net.config != first.net.config or member.net.n_genes != first.net.n_genes:
        return "different architectures"
    if member.net.n_outputs != first.net.n_outputs:
        return "different layer shapes"
    if [_rule_key(r) for r in member.rules] != [_rule_key(r) for r in first.rules]:
        return "different per-layer transfer rules"
    if member.X.device != first.X.device:
        return "members on different devices"
    return None


def members_per_chunk(net: DrugResponseNet, rules: Sequence[LayerTraining], train: TrainConfig,
                      chunk_bytes: int) -> int:
    """How many models like ``net`` one stacked chunk of ``chunk_bytes`` holds: each needs its
    weights, gradient and both Adam moments, plus an anchor and a best copy when used."""
    n_params = sum(p.numel() for p in net.parameters())
    copies = 4 + (1 if any(r.anchor is not None for r in rules) else 0)
    copies += 1 if train.patience is not None else 0
    return max(1, chunk_bytes // (4 * n_params * copies))


def chunk_budget(device: torch.device) -> int:
    """Bytes one stacked chunk may hold on ``device``: :data:`DEFAULT_CHUNK_BYTES` on the CPU,
    half the free memory of a GPU (an H200 fits hundreds of the paper's networks at once)."""
    if device.type != "cuda":
        return DEFAULT_CHUNK_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    return int(free // 2)


def train_networks(
    members: Sequence[BatchMember], train: TrainConfig, chunk_bytes: int | None = None,
) -> list[TrainResult]:
    """Train every member as :func:`train_network` would, stacked where ``train.stacking``
    chooses it (:func:`stacking_chosen`) and the members allow it (:func:`batch_refusal`).

    Members are trained in place (their ``net`` ends fitted, in eval mode); results come back
    in the members' order. ``seconds`` of a stacked member is its share of its chunk's time.
    """
    if not members:
        return []
    if not stacking_chosen(train, members[0].X.device) or batch_refusal(members, train) is not None:
        return [train_network(m.net, m.X, m.y, train, m.rules, seed=m.seed) for m in members]
    budget = chunk_budget(members[0].X.device) if chunk_bytes is None else chunk_bytes
    size = members_per_chunk(members[0].net, members[0].rules, train, budget)
    results: list[TrainResult] = []
    for begin in range(0, len(members), size):
        results.extend(_StackedFit(members[begin: begin + size], train).run())
    return results


@dataclass
class _MemberStream:
    """One member's rows and random streams, drawn in the order ``train_network`` draws them."""

    X: torch.Tensor
    y: torch.Tensor
    val_X: torch.Tensor | None
    val_y: torch.Tensor | None
    shuffle: torch.Generator
    dropout: torch.Generator
    stopper_best: float = math.inf
    waited: int = 0
    stopped: bool = False
    result: TrainResult = field(default_factory=TrainResult)

    @classmethod
    def open(cls, member: BatchMember, train: TrainConfig) -> _MemberStream:
        gen = torch.Generator(device="cpu").manual_seed(member.seed)
        train_idx, val_idx = split_validation(member.X.shape[0], train, gen)
        device = member.X.device
        torch_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        dropout = torch.Generator(device=device).manual_seed(torch_seed)
        rows = train_idx.to(device)
        val = val_idx.to(device) if val_idx is not None else None
        return cls(member.X[rows], member.y[rows],
                   member.X[val] if val is not None else None,
                   member.y[val] if val is not None else None, gen, dropout)


@dataclass
class _Activations:
    """What the backward pass of one step needs from its forward pass."""

    inputs: list[torch.Tensor]  # inputs[i]: what layer i reads (after dropout)
    z: list[torch.Tensor]
    a: list[torch.Tensor]  # before dropout; a[-1] is the prediction
    masks: list[torch.Tensor | None]


class _StackedFit:
    """The stacked weights, their gradient and Adam buffers, and the epoch loop."""

    def __init__(self, members: Sequence[BatchMember], train: TrainConfig):
        self.members = list(members)
        self.train = train
        self.net0 = members[0].net
        self.rules = members[0].rules
        self.device = members[0].X.device
        self.K = len(members)
        self.n_layers = len(self.net0.layers)
        cfg = self.net0.config
        self.acts = [*cfg.activations, cfg.output_activation]
        self.dropout = [*cfg.dropout, 0.0]
        self.l1 = cfg.l1_activity_first if any(not r.frozen for r in self.rules) else 0.0
        trainable = [not r.frozen for r in self.rules]
        self.lowest = trainable.index(True)
        self.W = [self._stack(index, "weight") for index in range(self.n_layers)]
        self.b = [self._stack(index, "bias") for index in range(self.n_layers)]
        self.anchors = self._anchors()
        self._init_adam()
        self.streams = [_MemberStream.open(m, train) for m in self.members]
        self.best: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if train.patience is not None:
            self.best = [(w.clone(), b.clone()) for w, b in zip(self.W, self.b, strict=True)]
        self.best_epoch: list[int | None] = [None] * self.K

    def _stack(self, index: int, name: str) -> torch.Tensor:
        """Layer ``index``'s weights (in x out) or biases of every member, stacked."""
        parts = []
        for member in self.members:
            layer = member.net.dense_layers[index]
            part = layer.weight.detach().t() if name == "weight" else layer.bias.detach()
            parts.append(part.to(self.device))
        return torch.stack(parts).contiguous()

    def _anchors(self) -> list[tuple[torch.Tensor, torch.Tensor, float] | None]:
        out: list[tuple[torch.Tensor, torch.Tensor, float] | None] = []
        for index, rule in enumerate(self.rules):
            if rule.anchor is None or rule.frozen or rule.anchor_alpha <= 0:
                out.append(None)
                continue
            w_src = torch.stack([m.rules[index].anchor[0].t().to(self.device)  # type: ignore[index]
                                 for m in self.members]).contiguous()
            b_src = torch.stack([m.rules[index].anchor[1].to(self.device)  # type: ignore[index]
                                 for m in self.members]).contiguous()
            out.append((w_src, b_src, 2.0 * rule.anchor_alpha))
        return out

    def _init_adam(self) -> None:
        """Per trainable layer: gradient buffers, both moments and per-model step counters,
        with the learning rate and the coupled weight decay ``train_network`` gives it."""
        self.gW = [torch.zeros_like(w) if not r.frozen else w[:0]
                   for w, r in zip(self.W, self.rules, strict=True)]
        self.gb = [torch.zeros_like(b) if not r.frozen else b[:0]
                   for b, r in zip(self.b, self.rules, strict=True)]
        self.moments: dict[int, list[torch.Tensor]] = {}
        self.steps: dict[int, list[torch.Tensor]] = {}
        self.groups: dict[int, tuple[float, float, float]] = {}
        first_l2 = self.net0.config.l2_weight_first
        for index, rule in enumerate(self.rules):
            if rule.frozen:
                continue
            self.moments[index] = [torch.zeros_like(self.W[index]), torch.zeros_like(self.W[index]),
                                   torch.zeros_like(self.b[index]), torch.zeros_like(self.b[index])]
            self.steps[index] = [torch.zeros((), dtype=torch.float32, device=self.device)
                                 for _ in range(2 * self.K)]
            zero_pull = rule.zero_l2 + (first_l2 if index == 0 and rule.anchor is None else 0.0)
            self.groups[index] = (self.train.lr * rule.lr_multiplier,
                                  self.train.weight_decay + 2.0 * zero_pull,
                                  self.train.weight_decay)

    # -- one step ----------------------------------------------------------------------------
    def _gather(self, batches: list[torch.Tensor | None]) -> tuple[torch.Tensor, ...]:
        """The step's rows, padded to the largest batch: X, y, row weights 1/b_k (0: padding)."""
        width = max(int(idx.shape[0]) for idx in batches if idx is not None)
        genes = self.W[0].shape[1]
        X = torch.zeros(self.K, width, genes, device=self.device)
        y = torch.zeros(self.K, width, device=self.device)
        weight = torch.zeros(self.K, width, device=self.device)
        for k, idx in enumerate(batches):
            if idx is None:
                continue
            n = int(idx.shape[0])
            torch.index_select(self.streams[k].X, 0, idx, out=X[k, :n])
            torch.index_select(self.streams[k].y, 0, idx, out=y[k, :n])
            weight[k, :n] = 1.0 / n
        return X, y, weight

    def _forward(self, X: torch.Tensor, batches: list[torch.Tensor | None], training: bool
                 ) -> _Activations:
        """Inputs of every layer, pre-activations, activations before dropout and the dropout
        masks (each K x rows x units)."""
        out = _Activations([X], [], [], [])
        h = X
        for index in range(self.n_layers):
            z = torch.baddbmm(self.b[index].unsqueeze(1), h, self.W[index])
            a = _activation(self.acts[index], z)
            out.z.append(z)
            out.a.append(a)
            mask = None
            rate = self.dropout[index]
            if training and rate > 0.0:
                mask = torch.zeros_like(a)
                for k, idx in enumerate(batches):
                    if idx is not None:
                        gen = self.streams[k].dropout
                        mask[k, : idx.shape[0]].bernoulli_(1 - rate, generator=gen).div_(1 - rate)
                h = a * mask
            else:
                h = a
            out.masks.append(mask)
            out.inputs.append(h)
        return out

    def _step(self, batches: list[torch.Tensor | None]) -> torch.Tensor:
        """One optimiser step for every member with a batch; returns each member's summed
        loss over the batch's rows (loss x rows, as ``train_network`` accumulates it)."""
        X, y, weight = self._gather(batches)
        fwd = self._forward(X, batches, training=True)
        diff = fwd.a[-1].squeeze(-1) - y
        loss = (diff.pow(2) * weight).sum(1)
        if self.l1:
            loss = loss + self.l1 * (fwd.a[0].abs().sum(2) * weight).sum(1)
        grad = (2.0 * diff * weight).unsqueeze(-1)
        for index in range(self.n_layers - 1, self.lowest - 1, -1):
            mask = fwd.masks[index]
            if mask is not None:
                grad = grad * mask
            if index == 0 and self.l1:
                grad = grad + self.l1 * torch.sign(fwd.a[0]) * weight.unsqueeze(-1)
            dz = _BACKWARDS[self.acts[index]](grad, fwd.z[index], fwd.a[index])
            if not self.rules[index].frozen:
                torch.bmm(fwd.inputs[index].transpose(1, 2), dz, out=self.gW[index])
                torch.sum(dz, dim=1, out=self.gb[index])
            if index > self.lowest:
                grad = torch.bmm(dz, self.W[index].transpose(1, 2))
        self._update([k for k, idx in enumerate(batches) if idx is not None])
        rows = torch.tensor([0 if idx is None else idx.shape[0] for idx in batches],
                            dtype=torch.float32).to(self.device)
        return loss.detach() * rows

    @torch.no_grad()
    def _update(self, active: list[int]) -> None:
        for index, anchor in enumerate(self.anchors):
            if anchor is not None:
                self.gW[index].add_(self.W[index] - anchor[0], alpha=anchor[2])
                self.gb[index].add_(self.b[index] - anchor[1], alpha=anchor[2])
        for index, (lr, wd_weight, wd_bias) in self.groups.items():
            m_w, v_w, m_b, v_b = self.moments[index]
            steps = self.steps[index]
            for params, grads, m, v, wd, offset in (
                (self.W[index], self.gW[index], m_w, v_w, wd_weight, 0),
                (self.b[index], self.gb[index], m_b, v_b, wd_bias, self.K),
            ):
                own_steps = [steps[offset + k] for k in active]
                torch._foreach_add_(own_steps, 1)
                torch._fused_adam_(
                    [params[k] for k in active], [grads[k] for k in active],
                    [m[k] for k in active], [v[k] for k in active], [], own_steps,
                    lr=lr, beta1=0.9, beta2=0.999, weight_decay=wd, eps=1e-7,
                    amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
                )

    # -- epochs ------------------------------------------------------------------------------
    def _epoch(self) -> torch.Tensor:
        """One pass of every running member over its rows in its own shuffled order."""
        orders: list[torch.Tensor | None] = []
        for stream in self.streams:
            if stream.stopped:
                orders.append(None)
                continue
            n = stream.X.shape[0]
            orders.append(torch.randperm(n, generator=stream.shuffle).to(self.device))
        size = self.train.batch_size
        n_steps = max((math.ceil(o.shape[0] / size) for o in orders if o is not None), default=0)
        total = torch.zeros(self.K, device=self.device)
        for step in range(n_steps):
            begin = step * size
            batches = [o[begin: begin + size] if o is not None and begin < o.shape[0] else None
                       for o in orders]
            total += self._step(batches)
        return total

    @torch.no_grad()
    def _validation_losses(self) -> list[float]:
        losses = []
        for k, stream in enumerate(self.streams):
            if stream.val_X is None or stream.val_y is None:
                losses.append(math.nan)
                continue
            h = stream.val_X.unsqueeze(0)
            for index in range(self.n_layers):
                z = torch.baddbmm(self.b[index][k: k + 1].unsqueeze(1), h,
                                  self.W[index][k: k + 1])
                h = _activation(self.acts[index], z)
            losses.append(float(torch.mean((h[0, :, 0] - stream.val_y) ** 2)))
        return losses

    def _early_stopping(self, epoch: int) -> None:
        assert self.best is not None and self.train.patience is not None
        for k, val_loss in enumerate(self._validation_losses()):
            stream = self.streams[k]
            if stream.stopped:
                continue
            stream.result.val_loss_history.append(val_loss)
            if val_loss < stream.stopper_best - 1e-12:
                stream.stopper_best, stream.waited, self.best_epoch[k] = val_loss, 0, epoch
                for (w_best, b_best), w, b in zip(self.best, self.W, self.b, strict=True):
                    w_best[k].copy_(w[k])
                    b_best[k].copy_(b[k])
                continue
            stream.waited += 1
            stream.stopped = stream.waited >= self.train.patience

    def run(self) -> list[TrainResult]:
        start = time.perf_counter()
        history: list[torch.Tensor] = []
        running: list[list[bool]] = []
        for epoch in range(self.train.epochs):
            if all(s.stopped for s in self.streams):
                break
            running.append([not s.stopped for s in self.streams])
            history.append(self._epoch())
            for stream, ran in zip(self.streams, running[-1], strict=True):
                stream.result.samples_seen += stream.X.shape[0] if ran else 0
            if self.best is not None:
                self._early_stopping(epoch)
        self._write_back(history, running)
        seconds = (time.perf_counter() - start) / self.K
        per_sample = useful_flops_per_sample(self.net0, self.rules)
        for stream in self.streams:
            stream.result.seconds = seconds
            stream.result.useful_flops = per_sample * stream.result.samples_seen
        return [s.result for s in self.streams]

    @torch.no_grad()
    def _write_back(self, history: list[torch.Tensor], running: list[list[bool]]) -> None:
        """Each member's loss history, and its final (or best) weights into its network."""
        losses = torch.stack(history).cpu().tolist() if history else []
        for k, (member, stream) in enumerate(zip(self.members, self.streams, strict=True)):
            n = stream.X.shape[0]
            stream.result.loss_history = [row[k] / n for row, ran in zip(losses, running,
                                                                          strict=True) if ran[k]]
            use_best = self.best is not None and self.best_epoch[k] is not None
            source = self.best if use_best and self.best is not None else list(
                zip(self.W, self.b, strict=True))
            for layer, (w, b) in zip(member.net.dense_layers, source, strict=True):
                layer.weight.copy_(w[k].t())
                layer.bias.copy_(b[k])
            stream.result.best_epoch = self.best_epoch[k] if use_best else None
            member.net.eval()
            for layer, rule in zip(member.net.dense_layers, member.rules, strict=True):
                layer.weight.requires_grad_(not rule.frozen)
                layer.bias.requires_grad_(not rule.frozen)


def _activation(name: str, z: torch.Tensor) -> torch.Tensor:
    return _ACTIVATIONS[name](z)


__all__ = ["BatchMember", "batch_refusal", "chunk_budget", "members_per_chunk", "stacking_chosen",
           "train_networks"]
