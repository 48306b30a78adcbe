"""The drug-response network: paper defaults, Keras regularisers, determinism, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from gliotl.drug.network.estimators import MultiTaskNetworkRegressor, NetworkRegressor
from gliotl.drug.network.model import (
    FINETUNE,
    PRETRAIN,
    DrugResponseNet,
    LayerTraining,
    NetworkConfig,
    TrainConfig,
    _masked_mse,
    regulariser_values,
    train_network,
    useful_flops_per_sample,
)
from gliotl.errors import GliotlError

SMALL = {"hidden": [16, 8], "activations": ["sigmoid", "softplus"], "dropout": [0.3, 0.1]}


def _data(n: int = 60, genes: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, genes)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) + 4.0).astype(np.float32)
    return X, y


def test_defaults_are_the_papers_network():
    cfg = NetworkConfig()
    assert cfg.hidden == [1000, 100] and cfg.activations == ["sigmoid", "softplus"]
    assert cfg.output_activation == "softplus" and cfg.dropout == [0.3, 0.1]
    assert (cfg.l2_weight_first, cfg.l1_activity_first, cfg.init_uniform) == (1e-4, 1e-4, 0.05)
    assert (PRETRAIN.lr, PRETRAIN.epochs, PRETRAIN.batch_size) == (1e-3, 50, 32)
    assert (FINETUNE.lr, FINETUNE.epochs, FINETUNE.batch_size) == (1e-4, 200, 32)
    net = DrugResponseNet(50, cfg)
    net.reset_parameters(torch.Generator().manual_seed(0))
    shapes = [tuple(layer.weight.shape) for layer in net.layers]
    assert shapes == [(1000, 50), (100, 1000), (1, 100)]
    for layer in net.layers:
        assert layer.weight.abs().max() <= 0.05 and layer.weight.abs().max() > 0.04
        assert torch.all(layer.bias == 0)


def test_config_rejects_mismatched_lengths_and_unknown_keys():
    with pytest.raises(ValueError):
        NetworkConfig(hidden=[10, 5], activations=["sigmoid"], dropout=[0.1, 0.1])
    with pytest.raises(GliotlError, match="network: field 'hiden'"):
        NetworkRegressor(network={"hiden": [3]}).fit(*_data(10, 4))


def test_regulariser_values_match_hand_computation():
    net = DrugResponseNet(4, NetworkConfig(hidden=[3], activations=["sigmoid"], dropout=[0.0]))
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.arange(12, dtype=torch.float32).reshape(3, 4) / 10)
    act = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, -0.5]])
    values = regulariser_values(net, act)
    w_sq = sum((i / 10) ** 2 for i in range(12))
    assert values["l2_weight_first"] == pytest.approx(1e-4 * w_sq, rel=1e-6)
    assert values["l1_activity_first"] == pytest.approx(1e-4 * 6.0 / 2, rel=1e-6)


@pytest.mark.parametrize("optimiser", ["sgd", "adamw"])
def test_training_step_equals_autograd_of_the_keras_loss(optimiser):
    """The loop folds the L2 into the gradient; one full-batch step must equal plain autograd
    on MSE + l2*sum(W0^2) + l1*sum(|a0|)/batch."""
    X, y = _data(20, 6)
    cfg = NetworkConfig(hidden=[5, 3], dropout=[0.0, 0.0], l2_weight_first=0.05,
                        l1_activity_first=0.02)
    net = DrugResponseNet(6, cfg)
    net.reset_parameters(torch.Generator().manual_seed(1))
    ref = DrugResponseNet(6, cfg)
    ref.load_state_dict(net.state_dict())
    train = TrainConfig(lr=0.1, epochs=1, batch_size=20, optimiser=optimiser)
    train_network(net, torch.from_numpy(X), torch.from_numpy(y), train, seed=0)

    pred = ref(torch.from_numpy(X))
    act = ref.last_first_activation
    loss = torch.mean((pred - torch.from_numpy(y)) ** 2)
    loss = loss + 0.05 * ref.layers[0].weight.pow(2).sum() + 0.02 * act.abs().sum() / 20
    loss.backward()
    if optimiser == "sgd":
        with torch.no_grad():
            for p in ref.parameters():
                p -= 0.1 * p.grad
    else:
        opt = torch.optim.AdamW(ref.parameters(), lr=0.1, eps=1e-7, weight_decay=0.0)
        opt.step()
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fit_is_deterministic_for_a_seed_and_leaves_global_rng_alone():
    X, y = _data()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = NetworkRegressor(network=SMALL, train={"epochs": 3}, seed=7).fit(X, y)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = NetworkRegressor(network=SMALL, train={"epochs": 3}, seed=7).fit(X, y)
    c = NetworkRegressor(network=SMALL, train={"epochs": 3}, seed=8).fit(X, y)
    for k, v in a.state_dict()["weights"].items():
        assert torch.equal(v, b.state_dict()["weights"][k])
    assert not torch.equal(a.state_dict()["weights"]["layers.0.weight"],
                           c.state_dict()["weights"]["layers.0.weight"])
    assert a.loss_history_ == b.loss_history_ and len(a.loss_history_) == 3


def test_training_learns_and_predict_is_sklearn_like():
    X, y = _data(120)
    model = NetworkRegressor(network=SMALL, train={"epochs": 40, "lr": 1e-2}, seed=0).fit(X, y)
    assert model.loss_history_[-1] < 0.5 * model.loss_history_[0]
    pred = model.predict(X)
    assert pred.shape == (120,) and pred.dtype == np.float64
    assert model.n_features_in_ == 30
    assert np.corrcoef(pred, y)[0, 1] > 0.8
    twin = clone(model)
    assert twin.get_params()["network"] == SMALL and not hasattr(twin, "network_")
    with pytest.raises(ValueError, match="30"):
        model.predict(X[:, :5])


def test_early_stopping_uses_a_validation_set_carved_from_training_data():
    X, y = _data(50)
    train = {"epochs": 30, "lr": 5e-2, "patience": 2, "validation_fraction": 0.2}
    model = NetworkRegressor(network=SMALL, train=train, seed=0).fit(X, y)
    assert len(model.val_loss_history_) == len(model.loss_history_) <= 30
    best = int(np.argmin(model.val_loss_history_))
    assert model.best_epoch_ == best
    assert NetworkRegressor(network=SMALL, train={"epochs": 2}).fit(X, y).val_loss_history_ == []


def test_save_load_round_trip_and_bad_checkpoint(tmp_path):
    X, y = _data()
    model = NetworkRegressor(network=SMALL, train={"epochs": 2}).fit(X, y)
    path = model.save(tmp_path / "model.pt")
    raw = torch.load(path, weights_only=True)  # plain tensors and JSON-able values only
    assert raw["network"]["hidden"] == [16, 8]
    loaded = NetworkRegressor.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    torch.save({"format": "something else"}, tmp_path / "bad.pt")
    with pytest.raises(GliotlError, match="bad.pt"):
        NetworkRegressor.load(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GliotlError, match="junk.pt"):
        NetworkRegressor.load(tmp_path / "junk.pt")


def test_masked_mse_ignores_whatever_sits_in_missing_entries():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[True, False], [True, True]])
    garbage = torch.tensor([[0.0, 1e6], [1.0, 1.0]])
    nans = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
    value = _masked_mse(pred, garbage, mask)
    assert float(value.detach()) == pytest.approx((1 + 4 + 9) / 3)
    (grad_a,) = torch.autograd.grad(value, pred)
    (grad_b,) = torch.autograd.grad(_masked_mse(pred, nans, ~torch.isnan(nans)), pred)
    assert torch.equal(grad_a, grad_b) and grad_a[0, 1] == 0


def test_multitask_fit_with_missing_responses(tmp_path):
    X, y = _data(80)
    rng = np.random.default_rng(3)
    Y = np.stack([y, 2 * y, 10 - y], axis=1)
    Y[rng.random(Y.shape) < 0.4] = np.nan
    Y[0] = np.nan  # a row with no response is dropped, not fatal
    model = MultiTaskNetworkRegressor(network=SMALL, train={"epochs": 30, "lr": 1e-2}).fit(X, Y)
    assert np.all(np.isfinite(model.loss_history_))
    assert model.loss_history_[-1] < model.loss_history_[0]
    pred = model.predict(X)
    assert pred.shape == (80, 3) and np.all(np.isfinite(pred))
    trunk = model.trunk_state()
    expected = [f"layers.{i}.{p}" for i in (0, 1) for p in ("bias", "weight")]
    assert sorted(trunk["weights"]) == expected
    loaded = MultiTaskNetworkRegressor.load(model.save(tmp_path / "mt.pt"))
    np.testing.assert_array_equal(loaded.predict(X), pred)
    Y[:, 2] = np.nan
    with pytest.raises(ValueError, match="column 2"):
        MultiTaskNetworkRegressor(network=SMALL).fit(X, Y)


def test_useful_flops_counts_only_needed_backward_work():
    net = DrugResponseNet(100, NetworkConfig(hidden=[10, 5], dropout=[0.0, 0.0]))
    macs = [1000, 50, 5]
    free = [LayerTraining() for _ in range(3)]
    assert useful_flops_per_sample(net, free) == 2 * (sum(macs) + sum(macs) + 55)
    frozen = [LayerTraining(frozen=True), LayerTraining(), LayerTraining()]
    assert useful_flops_per_sample(net, frozen) == 2 * (sum(macs) + 55 + 5)


def _bench_drug():
    import importlib.util
    from pathlib import Path

    bench_path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_drug.py"
    spec = importlib.util.spec_from_file_location("bench_drug", bench_path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_members_are_rebuilt_identically_and_sequential_time_scales_from_a_prefix():
    bench = _bench_drug()
    build = bench.member_builder(samples=10, genes=12, permutations=True, device="cpu")
    first, again, other = build(3), build(3), build(4)
    for a, b in zip(first.net.parameters(), again.net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(first.y, again.y) and first.seed == again.seed == 3
    assert torch.equal(first.X, other.X)  # permutation refits share one fold's rows
    assert not torch.equal(first.y, other.y)
    assert torch.equal(first.net.dense_layers[0].weight, other.net.dense_layers[0].weight)
    assert not torch.equal(first.net.dense_layers[1].weight, other.net.dense_layers[1].weight)
    stats = bench.stacked_vs_sequential(5, 10, 12, epochs=1, permutations=False,
                                        sequential_fits=2)
    assert stats["sequential_measured"] == 2 and stats["chunk"] >= 5
    assert stats["sequential_s"] > 0 and stats["stacked_s"] > 0


def test_measure_case_study_sums_job_flops_over_run_wall_time(tmp_path):
    import json

    bench = _bench_drug()
    X, y = _data()
    model = NetworkRegressor(network=SMALL, train={"epochs": 2}).fit(X, y)
    macs = [30 * 16, 16 * 8, 8 * 1]
    per_sample = 2 * (sum(macs) + sum(macs) + macs[1] + macs[2])
    assert model.useful_flops_ == per_sample * 60 * 2  # 60 samples x 2 epochs
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:10+00:00"}))
    for job, flops, seconds in (("target-a-r0-f0", model.useful_flops_, 2.0),
                                ("target-a-r0-f1", 0.0, 1.0), ("upstream-source_b", 3e9, 4.0)):
        (tmp_path / "jobs" / job).mkdir(parents=True)
        (tmp_path / "jobs" / job / "result.json").write_text(json.dumps({"useful_flops": flops}))
        (tmp_path / "jobs" / job / "timing.json").write_text(json.dumps({"seconds": seconds}))
    out = bench.measure_case_study(tmp_path, peak_flops=1e9)
    assert out["jobs"] == 3 and out["wall_seconds"] == 10 and out["job_seconds"] == 7.0
    assert out["groups"]["target-a"] == {"jobs": 2, "seconds": 3.0,
                                         "useful_flops": model.useful_flops_}
    assert out["groups"]["upstream"]["useful_flops"] == 3e9
    assert out["useful_flops_per_s"] == pytest.approx((model.useful_flops_ + 3e9) / 10)
    assert out["fraction_of_peak"] == pytest.approx(out["useful_flops_per_s"] / 1e9)
