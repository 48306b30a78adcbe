"""The stacked trainer (issue 17): each model equals its sequential fit within float32 rounding.

Tolerance: predictions agree to 2e-5 absolute on responses of order 1-10 (the GEMMs sum in a
different order; the random streams - carve-out, shuffles, dropout masks - are identical).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from gliotl.drug.network import batched
from gliotl.drug.network.batched import (
    CPU_STACKING_MAX_PARAMETERS,
    DEFAULT_CHUNK_BYTES,
    BatchMember,
    batch_refusal,
    chunk_budget,
    hashed_keep_mask,
    stacking_chosen,
    train_networks,
)
from gliotl.drug.network.model import (
    DrugResponseNet,
    LayerTraining,
    NetworkConfig,
    TrainConfig,
    parameter_count,
    train_network,
)
from gliotl.drug.network.transfer import apply_policy, parse_policy

TOLERANCE = 2e-5
_NET = NetworkConfig(hidden=[24, 8], dropout=[0.3, 0.1])


def _data(n: int = 80, genes: int = 37) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, genes)).astype(np.float32)
    y = (X[:, 0] - 0.5 * X[:, 1] + 5 + rng.normal(0, 0.3, n)).astype(np.float32)
    return torch.as_tensor(X), torch.as_tensor(y)


def _members(policy: str | None, sizes: list[int]) -> list[BatchMember]:
    X, y = _data()
    source = DrugResponseNet(X.shape[1], _NET, generator=torch.Generator().manual_seed(99))
    src = [(lay.weight.detach().clone(), lay.bias.detach().clone())
           for lay in source.dense_layers]
    members = []
    for k, n in enumerate(sizes):
        rows = torch.as_tensor(np.random.default_rng(k).permutation(X.shape[0])[:n])
        net = DrugResponseNet(X.shape[1], _NET)
        gen = torch.Generator().manual_seed(k)
        if policy is None:
            net.reset_parameters(gen)
            rules = [LayerTraining() for _ in net.layers]
        else:
            rules = apply_policy(parse_policy(policy), net, src, gen)
        members.append(BatchMember(net, X[rows], y[rows], rules, seed=10 + k))
    return members


def _sequential(members: list[BatchMember], train: TrainConfig) -> list:
    fitted = []
    for member in members:
        net = copy.deepcopy(member.net)
        rules = copy.deepcopy(member.rules)
        result = train_network(net, member.X, member.y, train, rules, seed=member.seed)
        fitted.append((net, result))
    return fitted


@pytest.mark.parametrize("policy", [None, "paper", "all", "l2sp", "freeze_first_k",
                                    "discriminative_lr"])
def test_each_stacked_model_equals_its_sequential_fit(policy):
    # unequal sizes: 29 and 28 rows fill one padded batch; 45 rows take two steps an epoch
    members = _members(policy, [29, 28, 45, 29])
    train = TrainConfig(lr=1e-2, epochs=15, batch_size=32, stacking="always")
    assert batch_refusal(members, train) is None
    expected = _sequential(members, train)
    results = train_networks(members, train)
    X, _ = _data()
    spread = []
    for member, result, (net, seq) in zip(members, results, expected, strict=True):
        with torch.no_grad():
            got, want = member.net(X), net(X)
        assert float((got - want).abs().max()) <= TOLERANCE
        np.testing.assert_allclose(result.loss_history, seq.loss_history, rtol=1e-4)
        assert result.samples_seen == seq.samples_seen
        assert not member.net.training
        spread.append(want)
    # the models really differ from one another (own data, init, shuffles and dropout)
    assert float((spread[0] - spread[1]).abs().max()) > 100 * TOLERANCE


def test_early_stopping_is_per_model_and_restores_each_best_epoch():
    members = _members("paper", [40, 33, 50])
    train = TrainConfig(lr=3e-3, epochs=40, batch_size=16, patience=2, stacking="always")
    expected = _sequential(members, train)
    results = train_networks(members, train)
    X, _ = _data()
    for member, result, (net, seq) in zip(members, results, expected, strict=True):
        assert result.best_epoch == seq.best_epoch
        assert len(result.loss_history) == len(seq.loss_history)
        np.testing.assert_allclose(result.val_loss_history, seq.val_loss_history, rtol=1e-4)
        with torch.no_grad():
            assert float((member.net(X) - net(X)).abs().max()) <= TOLERANCE
    assert len({len(r.loss_history) for r in results}) > 1  # they stopped at different epochs


def test_small_chunks_give_the_same_models_and_refused_batches_fall_back():
    members = _members(None, [29, 30, 31])
    train = TrainConfig(lr=1e-3, epochs=5, stacking="always")
    whole = copy.deepcopy(members)
    train_networks(whole, train)
    train_networks(members, train, chunk_bytes=1)  # one model per chunk
    X, _ = _data()
    with torch.no_grad():
        for a, b in zip(members, whole, strict=True):
            assert float((a.net(X) - b.net(X)).abs().max()) <= TOLERANCE
    sgd = TrainConfig(lr=1e-3, epochs=3, optimiser="sgd", stacking="always")
    assert "optimiser" in (batch_refusal(members, sgd) or "")
    fallback = _members(None, [29, 30])
    expected = _sequential(fallback, sgd)
    train_networks(fallback, sgd)
    with torch.no_grad():
        for member, (net, _) in zip(fallback, expected, strict=True):
            assert torch.equal(member.net(X), net(X))  # the sequential path itself


def test_auto_stacks_on_cuda_and_small_cpu_networks_and_never_falls_back_to_sequential_fits(
        monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    paper = parameter_count(6163, NetworkConfig())
    assert paper == 6_264_201 and paper == sum(
        p.numel() for p in DrugResponseNet(6163, NetworkConfig()).parameters())
    assert not stacking_chosen(TrainConfig(), cpu) and stacking_chosen(TrainConfig(), cuda)
    assert not stacking_chosen(TrainConfig(), cpu, paper)
    assert stacking_chosen(TrainConfig(), cuda, paper)
    assert stacking_chosen(TrainConfig(), cpu, CPU_STACKING_MAX_PARAMETERS)
    assert not stacking_chosen(TrainConfig(), cpu, CPU_STACKING_MAX_PARAMETERS + 1)
    assert stacking_chosen(TrainConfig(stacking="always"), cpu, paper)
    assert not stacking_chosen(TrainConfig(stacking="never"), cuda, 100)
    assert chunk_budget(cpu) == DEFAULT_CHUNK_BYTES  # on CUDA: half the free device memory
    X, _ = _data()
    # a CPU network above the bound (here: every network) under auto, and any under never:
    # the sequential path itself, bitwise
    monkeypatch.setattr(batched, "CPU_STACKING_MAX_PARAMETERS", 0)
    for stacking in ("auto", "never"):
        members = _members("paper", [29, 30])
        train = TrainConfig(lr=1e-3, epochs=3, stacking=stacking)
        expected = _sequential(members, train)
        train_networks(members, train)
        with torch.no_grad():
            for member, (net, _) in zip(members, expected, strict=True):
                assert torch.equal(member.net(X), net(X))


def test_hashed_dropout_masks_are_each_members_own_whatever_shares_the_chunk():
    keys = torch.tensor([3, 2**62 - 7, 11, 12], dtype=torch.int64)
    steps = torch.tensor([0, 5, 5, 9], dtype=torch.int64)
    mask = hashed_keep_mask(keys, steps, layer=0, rows=29, units=500, keep=0.7)
    assert mask.shape == (4, 29, 500)
    assert torch.unique(mask).tolist() == [0.0, pytest.approx(1 / 0.7)]
    kept = (mask > 0).float().mean(dim=(1, 2))
    assert float((kept - 0.7).abs().max()) < 0.01  # 14,500 draws a member
    # a member's masks depend on its key and step alone, not on the chunk around it
    assert torch.equal(hashed_keep_mask(keys[1:3], steps[1:3], 0, 29, 500, 0.7), mask[1:3])
    assert torch.equal(hashed_keep_mask(keys, steps, 0, 29, 500, 0.7), mask)
    for other in (hashed_keep_mask(keys, steps + 1, 0, 29, 500, 0.7),
                  hashed_keep_mask(keys, steps, 1, 29, 500, 0.7)):
        agree = float(((other > 0) == (mask > 0)).float().mean())
        assert 0.5 < agree < 0.65  # independent draws agree on 0.7^2 + 0.3^2 = 0.58
    # neighbouring rows and units are not correlated
    flat = (mask[0] > 0).float()
    assert abs(float((flat[:, 1:] * flat[:, :-1]).mean()) - 0.49) < 0.02


def test_stacked_fits_with_hashed_dropout_do_not_depend_on_the_chunking(monkeypatch):
    import gliotl.drug.network.batched as batched

    monkeypatch.setattr(batched, "HASHED_DROPOUT_DEVICES", frozenset({"cpu"}))  # as on CUDA
    members = _members("paper", [29, 28, 45])
    train = TrainConfig(lr=1e-2, epochs=8, batch_size=32, stacking="always")
    whole, one_by_one, drawn = (copy.deepcopy(members) for _ in range(3))
    train_networks(whole, train)
    train_networks(one_by_one, train, chunk_bytes=1)
    monkeypatch.setattr(batched, "HASHED_DROPOUT_DEVICES", frozenset())
    train_networks(drawn, train)  # each member's own generator, as its sequential fit
    X, _ = _data()
    with torch.no_grad():
        for a, b, c in zip(whole, one_by_one, drawn, strict=True):
            assert float((a.net(X) - b.net(X)).abs().max()) <= TOLERANCE
            assert float((a.net(X) - c.net(X)).abs().max()) > 100 * TOLERANCE  # other masks
