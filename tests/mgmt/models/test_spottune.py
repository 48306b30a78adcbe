"""SpotTune: exact frozen/tuned paths, no updates to frozen copies, deterministic routed eval."""

from __future__ import annotations

import copy

import pytest
import torch

from gliotl.errors import GliotlError
from gliotl.mgmt.models.resnet import MedicalNetResNet
from gliotl.mgmt.models.spottune import PolicyNet, SpotTune

SHAPE = (4, 1, 16, 24, 24)


def _pretrained() -> MedicalNetResNet:
    """A ResNet-10 standing in for pretrained weights: random, with non-trivial BN statistics."""
    torch.manual_seed(0)
    net = MedicalNetResNet(10)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def pretrained() -> MedicalNetResNet:
    return _pretrained()


def _spottune(pretrained: MedicalNetResNet, **kwargs) -> SpotTune:
    return SpotTune(copy.deepcopy(pretrained), **kwargs)


def _inputs(seed: int = 2) -> torch.Tensor:
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(seed))


def test_forced_frozen_reproduces_pretrained_exactly(pretrained):
    model = _spottune(pretrained, force_gate="frozen").eval()
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x), pretrained(x))
        assert torch.equal(model.forward_features(x), pretrained.forward_features(x))
    usage = model.policy_usage()
    assert list(usage["tuned_fraction"]) == [0.0] * 4
    assert list(usage["n_samples"]) == [8] * 4  # two evaluation forwards


def test_forced_tuned_gives_tuned_copy(pretrained):
    model = _spottune(pretrained, force_gate="tuned").eval()
    with torch.no_grad():
        for block in model.tuned_blocks:
            block.conv1.weight.mul_(1.5)
            block.bn1.bias.add_(0.2)
    # The same network built from the tuned copies, by hand.
    manual = copy.deepcopy(pretrained)
    for (name, _), tuned in zip(manual.residual_blocks(), model.tuned_blocks, strict=True):
        stage, index = name.split(".")
        getattr(manual, stage)[int(index)].load_state_dict(tuned.state_dict())
    manual.eval()
    x = _inputs()
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, manual(x))
        assert not torch.allclose(out, pretrained(x))


def test_optimiser_step_leaves_frozen_copies_bitwise_unchanged(pretrained):
    model = _spottune(pretrained, temperature=1.0)
    frozen_before = {k: v.clone() for k, v in model.backbone.state_dict().items()
                     if not k.startswith("head.")}
    tuned_before = {k: v.clone() for k, v in model.tuned_blocks.state_dict().items()}
    optimiser = torch.optim.Adam(model.parameter_groups(1e-3, 1e-2, weight_decay=1e-4))
    model.train()
    frozen_bns = [m for b in model.frozen_blocks() for m in b.modules()
                  if isinstance(m, torch.nn.BatchNorm3d)]
    assert all(not bn.training for bn in frozen_bns) and not model.backbone.bn1.training
    assert model.tuned_blocks[0].bn1.training
    x, y = _inputs(), torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    for _ in range(2):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimiser.step()
    frozen_after = {k: v for k, v in model.backbone.state_dict().items()
                    if not k.startswith("head.")}
    assert all(torch.equal(frozen_before[k], frozen_after[k]) for k in frozen_before)
    tuned_after = model.tuned_blocks.state_dict()
    changed = [k for k in tuned_before if not torch.equal(tuned_before[k], tuned_after[k])]
    assert any(k.endswith("conv1.weight") for k in changed)
    assert int(model.step) == 2
    frozen_ids = {id(p) for b in model.frozen_blocks() for p in b.parameters()}
    grouped = {id(p) for g in model.parameter_groups(1.0, 1.0) for p in g["params"]}
    assert not frozen_ids & grouped


def test_straight_through_gradient_reaches_policy(pretrained):
    model = _spottune(pretrained, temperature=1.0).train()
    model(_inputs()).sum().backward()
    assert model.policy.fc.weight.grad is not None
    assert model.policy.fc.weight.grad.abs().sum() > 0
    assert model.policy.stem[1].weight.grad.abs().sum() > 0


def test_training_gates_are_hard_and_mix_exactly(pretrained, monkeypatch):
    model = _spottune(pretrained, temperature=1.0)
    with torch.no_grad():
        for block in model.tuned_blocks:
            block.conv2.weight.mul_(2.0)
    model.train()
    gumbel = torch.nn.functional.gumbel_softmax
    seen = []

    def recording(logits, **kwargs):
        sample = gumbel(logits, **kwargs)
        seen.append(sample.detach())
        return sample

    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", recording)
    x = _inputs()
    torch.manual_seed(5)
    with torch.no_grad():
        out = model.forward_features(x)
        (sample,) = seen
        assert set(sample.unique().tolist()) <= {0.0, 1.0} and torch.all(sample.sum(-1) == 1)
        h = model.backbone.stem(x)
        for b, (frozen, tuned) in enumerate(
            zip(model.frozen_blocks(), model.tuned_blocks, strict=True)
        ):
            a = sample[:, b, 1].view(-1, 1, 1, 1, 1)
            h = a * tuned(h) + (1 - a) * frozen(h)
    assert torch.equal(out, h)


def test_eval_is_deterministic_and_matches_manual_routing(pretrained):
    model = _spottune(pretrained)
    torch.manual_seed(3)
    with torch.no_grad():
        for block in model.tuned_blocks:
            block.conv1.weight.add_(0.05 * torch.randn_like(block.conv1.weight))
        # Make the routing mixed within the batch for some blocks.
        model.policy.fc.bias.copy_(torch.tensor([0.0, 0.0, -5.0, 5.0, 5.0, -5.0, 0.0, 0.0]))
    model.eval()
    x = _inputs()
    with torch.no_grad():
        first, second = model(x), model(x)
        gates = model.decisions(x)
        # By hand: every sample alone, through the copy its argmax picked.
        manual = []
        for i in range(x.shape[0]):
            h = model.backbone.stem(x[i:i + 1])
            for b, (frozen, tuned) in enumerate(
                zip(model.frozen_blocks(), model.tuned_blocks, strict=True)
            ):
                h = tuned(h) if gates[i, b] else frozen(h)
            manual.append(model.backbone.head(h))
    assert torch.equal(first, second)
    assert gates[:, 1].all() and not gates[:, 2].any()
    torch.testing.assert_close(first, torch.cat(manual), rtol=1e-5, atol=1e-6)
    usage = model.policy_usage()
    assert usage["n_samples"].iloc[0] == 8
    expected = gates.float().mean(0).numpy()
    assert usage["tuned_fraction"].to_numpy() == pytest.approx(expected)
    model.reset_policy_usage()
    assert usage.shape[0] == 4 and model.policy_usage()["tuned_fraction"].isna().all()


def test_global_mode_with_budget(pretrained):
    model = _spottune(pretrained, mode="global", budget=1, temperature=1.0)
    assert model.policy is None
    with torch.no_grad():
        model.global_logits.copy_(torch.tensor([[0.0, 3.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0]]))
    model.eval()
    x = _inputs()
    gates = model.decisions(x)
    assert gates.tolist() == [[True, False, False, False]] * 4  # top-1 of three tuned picks
    model.train()
    model(x).sum().backward()
    assert model.global_logits.grad.abs().sum() > 0
    penalty = model.regularisation_loss()
    assert penalty.item() > 0  # expected tuned blocks exceed the budget of 1
    penalty.backward()


def test_temperature_schedule_and_validation(pretrained):
    model = _spottune(pretrained, temperature=100.0, final_temperature=1.0, anneal_steps=10)
    assert model.current_temperature() == pytest.approx(100.0)
    model.step.fill_(5)
    assert model.current_temperature() == pytest.approx(10.0)
    model.step.fill_(50)
    assert model.current_temperature() == pytest.approx(1.0)
    with pytest.raises(GliotlError, match="force_gate"):
        model.force_gate = "both"
    with pytest.raises(GliotlError, match="mode"):
        SpotTune(copy.deepcopy(pretrained), mode="local")


def test_policy_net_shape():
    policy = PolicyNet(in_channels=2, n_blocks=5)
    assert policy(torch.randn(3, 2, 16, 24, 24)).shape == (3, 5, 2)


def test_state_dict_round_trip_restores_policy_and_tuned_copies(pretrained, tmp_path):
    from gliotl.core.io import load_torch, save_torch

    model = _spottune(pretrained)
    with torch.no_grad():
        model.policy.fc.bias.copy_(torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]))
        model.tuned_blocks[0].conv1.weight.mul_(1.1)
    save_torch(tmp_path / "spottune.pt", model.state_dict())
    restored = _spottune(pretrained)
    restored.load_state_dict(load_torch(tmp_path / "spottune.pt"))
    x = _inputs()
    model.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored.decisions(x), model.decisions(x))
        assert torch.equal(restored(x), model(x))


def test_forward_routed_matches_policy_routing(pretrained):
    model = _spottune(pretrained).eval()
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(model.forward_routed(x, model.decisions(x)), model(x))
        gates = torch.tensor([[True, False, True, False]] * 2 + [[False, True, False, True]] * 2)
        mixed = model.forward_routed(x, gates)
        alone = model.forward_routed(x[:1], gates[:1])
    torch.testing.assert_close(mixed[:1], alone, rtol=1e-5, atol=1e-6)


def test_whole_batch_split_gives_the_per_sample_routing_outputs(pretrained):
    """split_batches='whole' (both copies on the whole batch, selected per sample) must give
    what per-sample routing gives, block by block, for every split the policy can make."""
    model = _spottune(pretrained).eval()
    with torch.no_grad():
        for block in model.tuned_blocks:  # make the copies differ, so a wrong pick shows
            block.conv1.weight.mul_(1.5)
    x = _inputs()
    gates = torch.tensor([[True, False, True, False], [False, False, True, True],
                          [True, True, False, False], [False, True, False, True]])
    with torch.no_grad():
        by_index = model.forward_routed(x, gates)
        model.split_batches = "whole"
        whole = model.forward_routed(x, gates)
        whole_policy = model(x)
        model.split_batches = "index"
        index_policy = model(x)
    torch.testing.assert_close(whole, by_index, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(whole_policy, index_policy, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(by_index, model.forward_routed(x, ~gates))
    with pytest.raises(GliotlError, match="split_batches"):
        model.split_batches = "both"
