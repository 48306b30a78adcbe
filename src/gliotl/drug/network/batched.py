"""Train K independent drug networks of one architecture as one stacked model (issue 17).

CV folds, repeats, label permutations and seeds each fit a small network; fitted one after
another they leave the machine idle between tiny kernels. Here the K models' weights are stacked
(layer ``l``: ``K x in x out``, the genes x hidden layout of the first layer for every layer), a
step is one ``baddbmm``/``bmm`` per layer and direction with gradients written into
preallocated buffers (autograd over stacked weights re-maps its large tensors every step and is
slower than sequential fits), and Adam is PyTorch's own fused kernel applied to each model's
slices, so every model keeps its own moments and step count.

Each model replays exactly the random stream of :func:`gliotl.drug.network.model.train_network`
with its seed: the validation carve-out, the per-epoch shuffles and, on CPU, the dropout masks
(drawn per model from a generator seeded as the sequential fit seeds the global one). Folds of
unequal size are padded and masked: a padded row adds nothing to any loss or gradient, and a
model with fewer mini-batches in an epoch (or one stopped early) takes no optimiser step while
the others do. Predictions therefore equal the sequential fits' within float32 rounding (GEMM
summation order); ``tests/drug/network/test_batched.py`` states and checks the tolerance.

The loop makes no host synchronisation inside an epoch: every model's rows sit padded on the
device, an epoch's orders and row counts are built on the host and sent in one copy, and a step
gathers all batches with one indexing kernel. On CUDA the dropout masks are one hashed draw for
the chunk (:func:`hashed_keep_mask`: a function of each model's own seed and step count, so
reproducible and independent of the chunking, but not a sequential CUDA fit's masks), so a
step's kernel count does not grow with the number of models (Adam's multi-tensor launches
aside). Early stopping reads all validation losses from one stacked forward pass.

Whether to stack is ``TrainConfig.stacking`` (:func:`stacking_chosen`: by default on CUDA, and
on CPU for networks small enough that shared launch and Python overhead outweighs each model's
own memory traffic, :data:`CPU_STACKING_MAX_PARAMETERS`). What cannot be stacked runs
sequentially, and :func:`batch_refusal` says why: optimisers other than Adam, multi-task
responses, and members whose architecture or per-layer rules differ.
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
    parameter_count,
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


#: The largest network (weights and biases) that ``stacking: auto`` stacks on a CPU. 30 stacked
#: fine-tunes measured 2.0-2.3x the speed of the same fits one by one at 130 k parameters and
#: 1.65-1.9x at 194 k (1 thread; 2.95x and 2.65x at 2 threads), 1.1x at 397 k and 0.47x at the
#: paper's 6.3 M (``bench_drug.py --stack-sizes``, RESULTS.md): below this bound a stacked batch
#: job on one worker is about as fast as its folds spread over two, or faster.
CPU_STACKING_MAX_PARAMETERS = 150_000


def stacking_chosen(train: TrainConfig, device: torch.device,
                    n_parameters: int | None = None) -> bool:
    """Whether fits with ``train`` of a network of ``n_parameters`` on ``device`` are stacked
    (``train.stacking``).

    ``auto`` stacks on CUDA, and on CPU when the network is known to have at most
    :data:`CPU_STACKING_MAX_PARAMETERS`. On CPU a step of the paper network is bound by the
    memory traffic of each model's own weights, gradients and Adam moments, which stacking
    cannot share: 30 stacked fine-tunes measured 0.73x the speed of the same fits one after
    another, and sequential fits leave a run's workers free to take folds in parallel; a small
    network's step is launch and Python overhead, which stacking shares.
    """
    if train.stacking == "auto":
        if device.type == "cuda":
            return True
        return n_parameters is not None and n_parameters <= CPU_STACKING_MAX_PARAMETERS
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
    net = members[0].net  # counted as the fold planner counts it, before any network existed
    n_parameters = parameter_count(net.n_genes, net.config, net.n_outputs)
    if (not stacking_chosen(train, members[0].X.device, n_parameters)
            or batch_refusal(members, train) is not None):
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

    rows: torch.Tensor  # the member's training rows (indices into its X)
    val_rows: torch.Tensor | None
    shuffle: torch.Generator
    dropout: torch.Generator
    dropout_key: int  # the seed of the member's dropout stream, for the hashed masks
    stopper_best: float = math.inf
    waited: int = 0
    stopped: bool = False
    result: TrainResult = field(default_factory=TrainResult)

    @classmethod
    def open(cls, member: BatchMember, train: TrainConfig) -> _MemberStream:
        gen = torch.Generator(device="cpu").manual_seed(member.seed)
        train_idx, val_idx = split_validation(member.X.shape[0], train, gen)
        torch_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        dropout = torch.Generator(device=member.X.device).manual_seed(torch_seed)
        return cls(train_idx, val_idx, gen, dropout, torch_seed)

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])


def _padded_rows(members: Sequence[BatchMember], rows: Sequence[torch.Tensor | None],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Each member's chosen rows of X and y, zero-padded to the longest: [K, n, genes], [K, n]
    and the lengths."""
    lengths = [0 if r is None else int(r.shape[0]) for r in rows]
    width = max(lengths, default=0)
    genes = members[0].X.shape[1]
    X = torch.zeros(len(members), width, genes, device=device)
    y = torch.zeros(len(members), width, device=device)
    for k, (member, idx) in enumerate(zip(members, rows, strict=True)):
        if idx is not None and lengths[k]:
            idx = idx.to(device)
            X[k, : lengths[k]] = member.X[idx]
            y[k, : lengths[k]] = member.y[idx]
    return X, y, lengths


#: Devices on which each step's dropout masks are one hashed draw for the whole chunk rather
#: than a draw per member from its own generator (exactly the sequential fit's masks on CPU).
HASHED_DROPOUT_DEVICES = frozenset({"cuda"})


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (two's-complement wrap-around, logical shifts)."""
    def shift(v: torch.Tensor, bits: int) -> torch.Tensor:
        return (v >> bits) & ((1 << (64 - bits)) - 1)

    x = x ^ shift(x, 30)
    x = x * -4658895280553007687  # 0xBF58476D1CE4E5B9 as a signed 64-bit integer
    x = x ^ shift(x, 27)
    x = x * -7723592293110705685  # 0x94D049BB133111EB
    return x ^ shift(x, 31)


def hashed_keep_mask(keys: torch.Tensor, steps: torch.Tensor, layer: int, rows: int,
                     units: int, keep: float) -> torch.Tensor:
    """Inverted-dropout masks [K, rows, units] (0 or 1/keep), each member's a function of its
    own key and step count alone (a counter-based hash), so one pass draws them for every
    member and they do not depend on which other members share the chunk."""
    device = keys.device
    cell = (torch.arange(rows, device=device).view(1, rows, 1) * units
            + torch.arange(units, device=device).view(1, 1, units))
    stream = _mix(_mix(_mix(keys) + steps) + layer)  # one stream per model, step and layer
    bits = _mix(stream.view(-1, 1, 1) + cell * -7046029254386353131)  # 0x9E3779B97F4A7C15
    uniform = ((bits >> 40) & ((1 << 24) - 1)).to(torch.float32) * (1.0 / (1 << 24))
    return (uniform < keep).to(torch.float32).div_(keep)


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
        self.X_rows, self.y_rows, _ = _padded_rows(
            self.members, [s.rows for s in self.streams], self.device)
        self.X_val, self.y_val, self.n_val = _padded_rows(
            self.members, [s.val_rows for s in self.streams], self.device)
        self.val_counts = torch.tensor(self.n_val, dtype=torch.float32,
                                       device=self.device).view(-1, 1)
        self.member_index = torch.arange(self.K, device=self.device).view(-1, 1)
        self.hashed_dropout = self.device.type in HASHED_DROPOUT_DEVICES
        self.dropout_keys = torch.tensor([s.dropout_key for s in self.streams],
                                         dtype=torch.int64, device=self.device)
        self.member_steps = torch.zeros(self.K, dtype=torch.int64, device=self.device)
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
        self._slices: dict[int, list[list[list[torch.Tensor]]]] = {}
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
    def _forward(self, X: torch.Tensor, counts: list[int]) -> _Activations:
        """Inputs of every layer, pre-activations, activations before dropout and the dropout
        masks (each K x rows x units) of a training step whose member ``k`` has ``counts[k]``
        real rows."""
        out = _Activations([X], [], [], [])
        h = X
        for index in range(self.n_layers):
            z = torch.baddbmm(self.b[index].unsqueeze(1), h, self.W[index])
            a = _activation(self.acts[index], z)
            out.z.append(z)
            out.a.append(a)
            mask = None
            rate = self.dropout[index]
            if rate > 0.0:
                mask = self._dropout_mask(a, index, counts, 1.0 - rate)
                h = a * mask
            else:
                h = a
            out.masks.append(mask)
            out.inputs.append(h)
        return out

    def _dropout_mask(self, a: torch.Tensor, layer: int, counts: list[int], keep: float
                      ) -> torch.Tensor:
        """On CPU each member's rows from its own generator, exactly as its sequential fit
        draws them; on a GPU one hashed draw for the chunk (:func:`hashed_keep_mask`)."""
        if self.hashed_dropout:
            return hashed_keep_mask(self.dropout_keys, self.member_steps, layer, a.shape[1],
                                    a.shape[2], keep)
        mask = torch.zeros_like(a)
        for k, n in enumerate(counts):
            if n:
                mask[k, :n].bernoulli_(keep, generator=self.streams[k].dropout).div_(keep)
        return mask

    def _step(self, idx: torch.Tensor, counts: list[int], inverse: torch.Tensor,
              rows: torch.Tensor) -> torch.Tensor:
        """One optimiser step for every member with rows in this step (``counts[k]`` of them,
        at positions ``idx[k]`` of its own rows; ``inverse``: 1 / count, 0 without rows);
        returns each member's summed loss over its rows (loss x rows, as ``train_network``
        accumulates it)."""
        X = self.X_rows[self.member_index, idx]
        y = self.y_rows[self.member_index, idx]
        valid = torch.arange(idx.shape[1], device=self.device).view(1, -1) < rows.view(-1, 1)
        weight = valid * inverse.view(-1, 1)
        fwd = self._forward(X, counts)
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
        active = [k for k, n in enumerate(counts) if n]
        self._update(active)
        self.member_steps += (rows > 0).to(torch.int64)
        return loss.detach() * rows

    @torch.no_grad()
    def _update(self, active: list[int]) -> None:
        for index, anchor in enumerate(self.anchors):
            if anchor is not None:
                self.gW[index].add_(self.W[index] - anchor[0], alpha=anchor[2])
                self.gb[index].add_(self.b[index] - anchor[1], alpha=anchor[2])
        everyone = len(active) == self.K
        for index, (lr, wd_weight, wd_bias) in self.groups.items():
            for slices, wd in zip(self._adam_slices(index), (wd_weight, wd_bias), strict=True):
                params, grads, m, v, steps = (slices if everyone else
                                              [[part[k] for k in active] for part in slices])
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(
                    params, grads, m, v, [], steps,
                    lr=lr, beta1=0.9, beta2=0.999, weight_decay=wd, eps=1e-7,
                    amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
                )

    def _adam_slices(self, index: int) -> list[list[list[torch.Tensor]]]:
        """Layer ``index``'s per-member views (weights, gradients, both moments, step counts),
        for the weights and for the biases: made once, since they stay valid in place."""
        if index not in self._slices:
            m_w, v_w, m_b, v_b = self.moments[index]
            steps = self.steps[index]
            self._slices[index] = [
                [list(self.W[index].unbind(0)), list(self.gW[index].unbind(0)),
                 list(m_w.unbind(0)), list(v_w.unbind(0)), steps[: self.K]],
                [list(self.b[index].unbind(0)), list(self.gb[index].unbind(0)),
                 list(m_b.unbind(0)), list(v_b.unbind(0)), steps[self.K:]],
            ]
        return self._slices[index]

    # -- epochs ------------------------------------------------------------------------------
    def _epoch(self) -> torch.Tensor:
        """One pass of every running member over its rows in its own shuffled order. The
        orders, row counts and 1/count of every step are made on the host and sent in one
        copy, so the steps themselves make no host synchronisation."""
        lengths = [0 if s.stopped else s.n for s in self.streams]
        order = torch.zeros(self.K, max(1, self.X_rows.shape[1]), dtype=torch.int64)
        for k, stream in enumerate(self.streams):
            if lengths[k]:
                order[k, : lengths[k]] = torch.randperm(lengths[k], generator=stream.shuffle)
        size = self.train.batch_size
        n_steps = max((math.ceil(n / size) for n in lengths if n), default=0)
        counts = [[max(0, min(size, n - step * size)) for n in lengths]
                  for step in range(n_steps)]
        inverse = torch.tensor([[1.0 / c if c else 0.0 for c in row] for row in counts],
                               dtype=torch.float32).view(n_steps, self.K)
        rows = torch.tensor(counts, dtype=torch.float32).view(n_steps, self.K)
        order, inverse, rows = (_to_device(t, self.device) for t in (order, inverse, rows))
        total = torch.zeros(self.K, device=self.device)
        for step in range(n_steps):
            begin = step * size
            idx = order[:, begin: begin + max(counts[step])]
            total += self._step(idx, counts[step], inverse[step], rows[step])
        return total

    @torch.no_grad()
    def _validation_losses(self) -> list[float]:
        """Every member's validation MSE, from one stacked forward pass (one host copy)."""
        h = self.X_val
        for index in range(self.n_layers):
            h = _activation(self.acts[index],
                            torch.baddbmm(self.b[index].unsqueeze(1), h, self.W[index]))
        valid = torch.arange(h.shape[1], device=self.device).view(1, -1) < self.val_counts
        squared = torch.where(valid, (h[..., 0] - self.y_val) ** 2, 0.0)
        losses = (squared.sum(1) / self.val_counts[:, 0].clamp_min(1)).tolist()
        return [loss if n else math.nan for loss, n in zip(losses, self.n_val, strict=True)]

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
                stream.result.samples_seen += stream.n if ran else 0
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
            n = stream.n
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


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``: through pinned memory without waiting, on a GPU."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


__all__ = ["CPU_STACKING_MAX_PARAMETERS", "HASHED_DROPOUT_DEVICES", "BatchMember", "batch_refusal",
           "chunk_budget", "hashed_keep_mask", "members_per_chunk", "stacking_chosen",
           "train_networks"]
