"""SpotTune adaptive fine-tuning (Guo et al., CVPR 2019) over a MedicalNet 3D ResNet.

Every residual block exists twice: the pretrained block, frozen, and a trainable copy
initialised from it. A policy decides per block which copy processes the input:
``x_{l+1} = a * tuned_l(x_l) + (1 - a) * frozen_l(x_l)`` with ``a in {0, 1}``. Gate index 0 is
the frozen copy, index 1 the tuned copy.

* Training: ``a`` is a hard straight-through Gumbel-softmax sample per sample and block (the
  forward value is exactly 0 or 1, the gradient is that of the soft sample), so both copies are
  computed. The temperature follows an exponential schedule over training forwards.
* Evaluation (``model.eval()``): ``a`` is the argmax of the policy logits, without Gumbel noise,
  so predictions are deterministic (the authors' code sampled noise at test time), and each
  sample runs only through the copy chosen for it.
* With hard samples the temperature does not change which copy is drawn (the Gumbel argmax
  ignores it); it scales the straight-through gradient the policy receives (~1/temperature), so
  Schmitz et al.'s 100 makes the policy learn far more slowly than Guo et al.'s 5.
* ``mode="global"``: one learned policy shared by all inputs (SpotTune-global), optionally with a
  budget of at most ``budget`` tuned blocks (a training penalty from
  :meth:`SpotTune.regularisation_loss`, and a hard top-k cap at evaluation).

The stem (conv1/bn1) stays frozen by default so that the frozen path is exactly the pretrained
network; ``tune_stem=True`` trains it as Guo et al. did. The classification head always trains.
Nothing here assumes CUDA: all tensors follow the input's device.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gliotl.errors import GliotlError
from gliotl.mgmt.models.resnet import BasicBlock, MedicalNetResNet, keep_frozen_batchnorm_in_eval

FORCE_GATES = (None, "frozen", "tuned")
SPLIT_BATCHES = ("index", "whole")
"""How evaluation runs a block whose batch the policy splits (see ``SpotTune.split_batches``)."""


class PolicyNet(nn.Module):
    """A small, randomly initialised 3D ResNet that emits two logits per residual block.

    The input is first average-pooled by ``input_pool`` (the routing decision depends on the
    overall appearance of a scan, not on fine detail), then a strided 3x3x3 stem conv and three
    basic blocks of ``widths`` channels (the last two strided), global average pooling, linear.
    Why so small: the policy runs on every forward, so its cost adds directly to inference
    time; a ResNet-style stem (k7 conv + max-pool at full resolution) cost ~15-40% of a
    ResNet-10 forward on a CPU, this one a few percent.
    """

    def __init__(
        self,
        in_channels: int,
        n_blocks: int,
        widths: tuple[int, int, int] = (16, 32, 64),
        input_pool: int = 2,
    ) -> None:
        super().__init__()
        self.n_blocks = n_blocks
        w1, w2, w3 = widths
        self.stem = nn.Sequential(
            nn.AvgPool3d(input_pool, ceil_mode=True) if input_pool > 1 else nn.Identity(),
            nn.Conv3d(in_channels, w1, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm3d(w1),
            nn.ReLU(inplace=True),
        )

        def down(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(
                nn.Conv3d(cin, cout, kernel_size=1, stride=2, bias=False), nn.BatchNorm3d(cout)
            )

        self.blocks = nn.Sequential(
            BasicBlock(w1, w1),
            BasicBlock(w1, w2, stride=2, downsample=down(w1, w2)),
            BasicBlock(w2, w3, stride=2, downsample=down(w2, w3)),
        )
        self.fc = nn.Linear(w3, 2 * n_blocks)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, n_blocks, 2): [:, l, 0] frozen, [:, l, 1] tuned."""
        h = self.blocks(self.stem(x))
        h = torch.flatten(F.adaptive_avg_pool3d(h, 1), 1)
        return self.fc(h).view(-1, self.n_blocks, 2)


def _check_mode(mode: str) -> None:
    if mode not in ("adaptive", "global"):
        raise GliotlError(
            f"SpotTune: field 'mode': expected 'adaptive' or 'global', got {mode!r}"
        )


def _check_budget_and_temperature(budget: int | None, n_blocks: int, temperature: float,
                                  final_temperature: float | None) -> None:
    if budget is not None and not 0 <= budget <= n_blocks:
        raise GliotlError(f"SpotTune: field 'budget': expected 0..{n_blocks}, got {budget}")
    if temperature <= 0 or (final_temperature is not None and final_temperature <= 0):
        raise GliotlError("SpotTune: field 'temperature': expected a positive number")


def _tuned_copies(backbone: MedicalNetResNet, frozen: list[nn.Module],
                  tune_stem: bool) -> nn.ModuleList:
    """Trainable copies that start equal to the pretrained blocks; the originals freeze."""
    tuned = nn.ModuleList(copy.deepcopy(block) for block in frozen)
    tuned.requires_grad_(True)
    for block in frozen:
        block.requires_grad_(False)
    for stem_part in (backbone.conv1, backbone.bn1):
        stem_part.requires_grad_(tune_stem)
    backbone.head.requires_grad_(True)
    return tuned


class SpotTune(nn.Module):
    """SpotTune wrapper: frozen + tuned copy of every residual block, routed by a policy.

    ``backbone`` is taken over (its blocks become the frozen copies; build it with pretrained
    weights). ``temperature`` anneals exponentially to ``final_temperature`` over
    ``anneal_steps`` training forwards (constant when ``final_temperature`` is None); Guo et al.
    used 5, Schmitz et al. 100. ``policy_usage()`` reports, per block, the fraction of samples
    routed to the tuned copy during evaluation forwards since ``reset_policy_usage()``.
    ``state_dict()`` holds everything needed at test time (frozen and tuned copies, head,
    policy, step); restore into a SpotTune built with the same depth and options.
    """

    # Buffers and optional submodules, typed for what they hold (nn.Module types them loosely).
    step: torch.Tensor
    _usage_tuned: torch.Tensor
    _usage_seen: torch.Tensor
    policy: nn.Module | None
    global_logits: nn.Parameter | None

    def __init__(
        self,
        backbone: MedicalNetResNet,
        policy: nn.Module | None = None,
        mode: str = "adaptive",
        budget: int | None = None,
        budget_weight: float = 1.0,
        temperature: float = 5.0,
        final_temperature: float | None = None,
        anneal_steps: int = 0,
        tune_stem: bool = False,
        force_gate: str | None = None,
    ) -> None:
        super().__init__()
        _check_mode(mode)
        self.backbone = backbone
        frozen = [block for _, block in backbone.residual_blocks()]
        self.block_names = [name for name, _ in backbone.residual_blocks()]
        n_blocks = len(frozen)
        _check_budget_and_temperature(budget, n_blocks, temperature, final_temperature)
        self.mode = mode
        self.budget = budget
        self.budget_weight = budget_weight
        self.temperature = float(temperature)
        self.final_temperature = None if final_temperature is None else float(final_temperature)
        self.anneal_steps = int(anneal_steps)
        self.tune_stem = tune_stem
        self.force_gate = force_gate
        self.split_batches = "index"
        self.tuned_blocks = _tuned_copies(backbone, frozen, tune_stem)
        self._init_routing(policy, n_blocks)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("_usage_tuned", torch.zeros(n_blocks, dtype=torch.long), False)
        self.register_buffer("_usage_seen", torch.zeros((), dtype=torch.long), False)
        self._last_probs: torch.Tensor | None = None
        self._routing_log: list[np.ndarray] = []
        self.train(backbone.training)

    def _init_routing(self, policy: nn.Module | None, n_blocks: int) -> None:
        """A policy network (adaptive) or one learnt pair of logits per block (global)."""
        if self.mode == "adaptive":
            self.policy = policy if policy is not None else PolicyNet(
                self.backbone.in_channels, n_blocks
            )
            self.global_logits = None
            return
        if policy is not None:
            raise GliotlError("SpotTune: field 'policy': a policy network needs mode='adaptive'")
        self.policy = None
        # Zero logits: equal odds in training; argmax ties resolve to the frozen copy.
        self.global_logits = nn.Parameter(torch.zeros(n_blocks, 2))

    # -- configuration -----------------------------------------------------------------------
    @property
    def force_gate(self) -> str | None:
        return self._force_gate

    @force_gate.setter
    def force_gate(self, value: str | None) -> None:
        if value not in FORCE_GATES:
            raise GliotlError(
                f"SpotTune: field 'force_gate': expected None, 'frozen' or 'tuned', got {value!r}"
            )
        self._force_gate = value

    @property
    def split_batches(self) -> str:
        """How evaluation runs a block whose batch the policy splits: ``index`` runs each copy
        on its own samples (least arithmetic), ``whole`` runs both copies on the whole batch
        and selects per sample (no gather/scatter, full-size kernels; faster where small
        batches leave the device idle). Both give the same outputs."""
        return self._split_batches

    @split_batches.setter
    def split_batches(self, value: str) -> None:
        if value not in SPLIT_BATCHES:
            raise GliotlError(
                f"SpotTune: field 'split_batches': expected 'index' or 'whole', got {value!r}"
            )
        self._split_batches = value

    @property
    def n_blocks(self) -> int:
        return len(self.tuned_blocks)

    def frozen_blocks(self) -> list[nn.Module]:
        return [block for _, block in self.backbone.residual_blocks()]

    def current_temperature(self) -> float:
        """Gumbel-softmax temperature at the current training step."""
        if self.final_temperature is None or self.anneal_steps <= 0:
            return self.temperature
        progress = min(int(self.step.item()), self.anneal_steps) / self.anneal_steps
        log_t = (1 - progress) * math.log(self.temperature) + progress * math.log(
            self.final_temperature
        )
        return math.exp(log_t)

    def train(self, mode: bool = True) -> SpotTune:
        super().train(mode)
        if mode:
            keep_frozen_batchnorm_in_eval(self)
        return self

    def parameter_groups(
        self, lr_backbone: float, lr_policy: float, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """Optimiser groups: tuned copies + head (+ stem) at ``lr_backbone``, policy at
        ``lr_policy``. Frozen copies are left out, so nothing can move them."""
        policy_params = (
            list(self.policy.parameters()) if self.policy is not None else [self.global_logits]
        )
        policy_ids = {id(p) for p in policy_params}
        backbone_params = [
            p for p in self.parameters() if p.requires_grad and id(p) not in policy_ids
        ]
        return [
            {"params": backbone_params, "lr": lr_backbone, "weight_decay": weight_decay},
            {"params": policy_params, "lr": lr_policy, "weight_decay": weight_decay},
        ]

    # -- policy --------------------------------------------------------------------------------
    def policy_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits of shape (N, n_blocks, 2)."""
        if self.policy is not None:
            return self.policy(x).float()
        assert self.global_logits is not None  # set whenever there is no policy network
        return self.global_logits.float().unsqueeze(0).expand(x.shape[0], -1, -1)

    def _deterministic_gates(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean (N, n_blocks): argmax of the logits, capped to ``budget`` tuned blocks."""
        tuned = logits[..., 1] > logits[..., 0]
        if self.budget is not None:
            margin = (logits[..., 1] - logits[..., 0]).masked_fill(~tuned, -math.inf)
            keep = torch.zeros_like(tuned)
            if self.budget > 0:
                top = margin.topk(self.budget, dim=1).indices
                keep.scatter_(1, top, True)
            tuned = tuned & keep
        return tuned

    @torch.no_grad()
    def decisions(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation routing for ``x``: boolean (N, n_blocks), True = tuned copy."""
        if self.force_gate is not None:
            return torch.full(
                (x.shape[0], self.n_blocks), self.force_gate == "tuned", device=x.device
            )
        return self._deterministic_gates(self.policy_logits(x))

    def regularisation_loss(self) -> torch.Tensor:
        """Budget penalty of the last training forward (0 without a budget): squared excess of
        the expected number of tuned blocks over ``budget``, times ``budget_weight``."""
        if self.budget is None or self._last_probs is None:
            return torch.zeros((), device=self.step.device)
        expected = self._last_probs[..., 1].sum(dim=1)
        return self.budget_weight * F.relu(expected - self.budget).pow(2).mean()

    # -- usage record --------------------------------------------------------------------------
    def reset_policy_usage(self) -> None:
        self._usage_tuned.zero_()
        self._usage_seen.zero_()
        self._routing_log = []

    def routing_decisions(self) -> np.ndarray:
        """Per sample (in forward order) and block, True = tuned copy, for every evaluation
        forward since ``reset_policy_usage()``: per-patient routing, so it can be split by class."""
        if not self._routing_log:
            return np.zeros((0, self.n_blocks), dtype=bool)
        return np.concatenate(self._routing_log, axis=0)

    def policy_usage(self) -> pd.DataFrame:
        """Per block: samples seen in evaluation and the fraction routed to the tuned copy."""
        seen = int(self._usage_seen.item())
        counts = self._usage_tuned.cpu().numpy()
        fraction = counts / seen if seen else np.full(self.n_blocks, np.nan)
        return pd.DataFrame(
            {"block": self.block_names, "n_samples": seen, "n_tuned": counts,
             "tuned_fraction": fraction}
        )

    # -- forward -------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The layer4 feature map after routing every block."""
        h = self.backbone.stem(x)
        frozen = self.frozen_blocks()
        if self.force_gate is not None:
            blocks = self.tuned_blocks if self.force_gate == "tuned" else frozen
            for block in blocks:
                h = block(h)
            if not self.training:
                self._record(torch.full((x.shape[0], self.n_blocks), self.force_gate == "tuned",
                                        device=x.device))
            return h
        logits = self.policy_logits(x)
        if self.training:
            return self._forward_train(h, logits, frozen)
        gates = self._deterministic_gates(logits)
        self._record(gates)
        return self._forward_routed(h, gates, frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.head(self.forward_features(x))

    def forward_routed(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Logits with a given routing (bool (N, n_blocks), True = tuned), each sample through
        its chosen copies only; for ablations and for timing mixed routings. Eval mode only."""
        if self.training:
            raise RuntimeError("forward_routed needs eval mode (batch statistics would mix)")
        if gates.shape != (x.shape[0], self.n_blocks):
            raise ValueError(f"gates must have shape {(x.shape[0], self.n_blocks)}")
        h = self._forward_routed(self.backbone.stem(x), gates.bool(), self.frozen_blocks())
        return self.backbone.head(h)

    def _forward_train(
        self, h: torch.Tensor, logits: torch.Tensor, frozen: list[nn.Module]
    ) -> torch.Tensor:
        tau = self.current_temperature()
        if self.mode == "global":
            # One decision per block for the whole batch: a single policy for all inputs.
            sample = F.gumbel_softmax(logits[0], tau=tau, hard=True, dim=-1)
            gates = sample[:, 1].unsqueeze(0).expand(h.shape[0], -1)
        else:
            gates = F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)[..., 1]
        self._last_probs = logits.softmax(dim=-1)
        self.step += 1
        for index, (tuned_block, frozen_block) in enumerate(
            zip(self.tuned_blocks, frozen, strict=True)
        ):
            h_tuned = tuned_block(h)
            h_frozen = frozen_block(h)
            a = gates[:, index].view(-1, 1, 1, 1, 1).to(h_tuned.dtype)
            # One fused op; torch.lerp is exact at weights 0 and 1, so the forward value is
            # exactly the chosen copy's output while the gradient w.r.t. a is (tuned - frozen).
            h = torch.lerp(h_frozen.to(h_tuned.dtype), h_tuned, a)
        return h

    def _forward_routed(
        self, h: torch.Tensor, gates: torch.Tensor, frozen: list[nn.Module]
    ) -> torch.Tensor:
        """Run each sample through its chosen copy only (exact: eval BatchNorm is per-sample)."""
        counts = gates.sum(dim=0).tolist()  # one host sync for all blocks
        for index, (tuned_block, frozen_block) in enumerate(
            zip(self.tuned_blocks, frozen, strict=True)
        ):
            chosen = gates[:, index]
            n_tuned = int(counts[index])
            if n_tuned == chosen.numel():
                h = tuned_block(h)
            elif n_tuned == 0:
                h = frozen_block(h)
            elif self.split_batches == "whole":
                out_tuned, out_frozen = tuned_block(h), frozen_block(h)
                dtype = torch.promote_types(out_tuned.dtype, out_frozen.dtype)
                h = torch.where(chosen.view(-1, 1, 1, 1, 1), out_tuned.to(dtype),
                                out_frozen.to(dtype))
            else:
                idx_tuned = chosen.nonzero().squeeze(1)
                idx_frozen = (~chosen).nonzero().squeeze(1)
                out_tuned = tuned_block(h.index_select(0, idx_tuned))
                out_frozen = frozen_block(h.index_select(0, idx_frozen))
                dtype = torch.promote_types(out_tuned.dtype, out_frozen.dtype)
                out = out_tuned.new_empty((h.shape[0], *out_tuned.shape[1:]), dtype=dtype)
                out.index_copy_(0, idx_tuned, out_tuned.to(dtype))
                out.index_copy_(0, idx_frozen, out_frozen.to(dtype))
                h = out
        return h

    def _record(self, gates: torch.Tensor) -> None:
        self._usage_tuned += gates.sum(dim=0).to(self._usage_tuned.device, torch.long)
        self._usage_seen += gates.shape[0]
        self._routing_log.append(gates.detach().cpu().numpy().astype(bool))


__all__ = ["FORCE_GATES", "SPLIT_BATCHES", "PolicyNet", "SpotTune"]
