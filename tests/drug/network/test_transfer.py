"""Transfer policies: each one's defining property, tested directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold

from gliotl.drug.network.estimators import MultiTaskNetworkRegressor, NetworkRegressor
from gliotl.drug.network.model import DrugResponseNet, NetworkConfig
from gliotl.drug.network.transfer import (
    DiscriminativeLRTransfer,
    FreezeFirstKTransfer,
    L2SPTransfer,
    PaperTransfer,
    apply_policy,
    parse_policy,
    source_layers,
)
from gliotl.errors import GliotlError

NET = {"hidden": [16, 8], "activations": ["sigmoid", "softplus"], "dropout": [0.2, 0.1]}


def _data(n: int = 60, genes: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, genes)).astype(np.float32)
    y = (np.tanh(X[:, :4].sum(axis=1)) * 2 + 3).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def source() -> NetworkRegressor:
    X, y = _data(100, seed=1)
    return NetworkRegressor(network=NET, train={"epochs": 10, "lr": 1e-2}, seed=5).fit(X, y)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict()["weights"].items()}


def test_paper_policy_copies_first_layer_reinitialises_rest_and_all_train(source):
    src = source_layers(source.state_dict())
    net = DrugResponseNet(20, NetworkConfig(**NET))
    rules = apply_policy(PaperTransfer(), net, src, torch.Generator().manual_seed(0))
    assert torch.equal(net.layers[0].weight, src[0][0])
    assert torch.equal(net.layers[0].bias, src[0][1])
    for index in (1, 2):
        weight = net.layers[index].weight
        assert not torch.allclose(weight, src[index][0])
        assert weight.abs().max() <= 0.05 and torch.all(net.layers[index].bias == 0)
    assert not any(rule.frozen for rule in rules)

    X, y = _data(40)
    before = _weights(source)
    target = NetworkRegressor(network=NET, transfer="paper", train={"epochs": 3, "lr": 1e-2})
    target.fit(X, y, source=source)
    init = {f"layers.{i}.weight": w for i, w in enumerate(
        layer.weight for layer in net.layers)}  # same seed -> same fresh init as inside fit
    after = _weights(target)
    for index, layer in enumerate(target.network_.layers):
        assert layer.weight.requires_grad and layer.bias.requires_grad
        assert not torch.equal(after[f"layers.{index}.weight"], init[f"layers.{index}.weight"])
    assert not torch.equal(after["layers.0.weight"], src[0][0])
    for k, v in _weights(source).items():  # the source model is never modified
        assert torch.equal(v, before[k])


def test_freeze_first_k_leaves_those_layers_bitwise_unchanged(source):
    X, y = _data(40)
    src = _weights(source)
    target = NetworkRegressor(network=NET, transfer={"kind": "freeze_first_k", "k": 2},
                              train={"epochs": 3, "lr": 1e-2}).fit(X, y, source=source)
    after = _weights(target)
    for key in ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"):
        assert torch.equal(after[key], src[key])
    assert not torch.equal(after["layers.2.weight"], src["layers.2.weight"])
    with pytest.raises(GliotlError, match="'k'"):
        NetworkRegressor(network=NET, transfer=FreezeFirstKTransfer(k=3)).fit(X, y, source=source)


def test_copy_all_and_discriminative_lr_rules(source):
    src = source_layers(source.state_dict())
    net = DrugResponseNet(20, NetworkConfig(**NET))
    rules = apply_policy(DiscriminativeLRTransfer(factor=0.5), net, src, torch.Generator())
    for layer, (w, b) in zip(net.layers, src, strict=True):
        assert torch.equal(layer.weight, w) and torch.equal(layer.bias, b)
    assert [r.lr_multiplier for r in rules] == [0.25, 0.5, 1.0]
    X, y = _data(40)
    fitted = NetworkRegressor(network=NET, transfer="discriminative_lr",
                              train={"epochs": 2}).fit(X, y, source=source)
    assert fitted.transfer_policy_.kind == "discriminative_lr"


def test_l2sp_with_huge_alpha_returns_the_source_weights(source):
    X, y = _data(40)
    src = _weights(source)
    train = {"epochs": 5, "lr": 1e-3}
    pinned = NetworkRegressor(network=NET, transfer=L2SPTransfer(alpha=1e6), train=train)
    free = NetworkRegressor(network=NET, transfer=L2SPTransfer(alpha=0.0), train=train)
    pinned.fit(X, y, source=source)
    free.fit(X, y, source=source)
    for key, value in src.items():
        torch.testing.assert_close(_weights(pinned)[key], value, atol=2e-3, rtol=0)
    moved = max(float((_weights(free)[k] - v).abs().max()) for k, v in src.items())
    stuck = max(float((_weights(pinned)[k] - v).abs().max()) for k, v in src.items())
    assert moved > 3 * stuck


def test_feature_extraction_fits_a_cv_ridge_head_and_leaves_source_untouched(source, tmp_path):
    X, y = _data(40)
    before = _weights(source)
    model = NetworkRegressor(transfer={"kind": "feature_extraction", "cv": 4}, seed=3)
    model.fit(X, y, source=source)
    for k, v in _weights(source).items():
        assert torch.equal(v, before[k])
    feats = source.hidden_activations(X).astype(np.float64)
    ridge = RidgeCV(alphas=list(np.logspace(-3, 5, 17)),
                    cv=KFold(4, shuffle=True, random_state=3)).fit(feats, y)
    np.testing.assert_allclose(model.predict(X), ridge.predict(feats), rtol=1e-5, atol=1e-5)
    loaded = NetworkRegressor.load(model.save(tmp_path / "fe.pt"))
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-6)
    enet = NetworkRegressor(transfer={"kind": "feature_extraction", "head": "elasticnet",
                                      "cv": 3, "layer": 0}).fit(X, y, source=source)
    assert enet.predict(X).shape == (40,)
    with pytest.raises(GliotlError, match="needs a source"):
        NetworkRegressor(transfer="feature_extraction").fit(X, y)


def test_multitask_trunk_transfers_to_a_single_drug_network():
    X, y = _data(80, seed=2)
    Y = np.stack([y, 5 - y], axis=1)
    Y[::3, 1] = np.nan
    multi = MultiTaskNetworkRegressor(network=NET, train={"epochs": 3}).fit(X, Y)
    trunk = multi.trunk_state()
    target = NetworkRegressor(network=NET, transfer={"kind": "freeze_first_k", "k": 2},
                              train={"epochs": 2}).fit(X[:30], y[:30], source=multi)
    after = _weights(target)
    for key, value in trunk["weights"].items():
        assert torch.equal(after[key], value)
    copied = NetworkRegressor(network=NET, transfer="all", train={"epochs": 1})
    copied.fit(X[:30], y[:30], source=trunk)  # a state dict works as a source too
    assert copied.predict(X).shape == (80,)


def test_policy_parsing_and_mismatched_sources(source):
    assert parse_policy(None).kind == "paper"
    assert parse_policy("all").kind == "all"
    assert parse_policy({"kind": "l2sp", "alpha": 3}).alpha == 3
    with pytest.raises(GliotlError, match="transfer"):
        parse_policy({"kind": "nonsense"})
    with pytest.raises(GliotlError, match="facto"):
        parse_policy({"kind": "discriminative_lr", "facto": 2})
    X, y = _data(30, genes=12)
    with pytest.raises(GliotlError, match="20 genes"):
        NetworkRegressor(network=NET).fit(X, y, source=source)
    with pytest.raises(GliotlError, match="shape"):
        NetworkRegressor(network={**NET, "hidden": [16, 4]}, transfer="all").fit(
            _data(30)[0], _data(30)[1], source=source)


def test_transfer_from_a_related_source_beats_training_from_scratch():
    """Source and target share a latent response program over 10 of 200 genes (same direction,
    other scale and offset); with 24 target samples the transferred first layer already knows
    where to look, while the network trained from scratch overfits noise genes."""
    rng = np.random.default_rng(0)
    genes = 200
    program = np.zeros(genes, dtype=np.float32)
    program[rng.choice(genes, 10, replace=False)] = rng.normal(size=10)
    program /= np.linalg.norm(program)

    def task(n: int, slope: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
        X = rng.normal(size=(n, genes)).astype(np.float32)
        z = X @ program
        return X, (offset + slope * np.tanh(z) + 0.1 * rng.normal(size=n)).astype(np.float32)

    Xs, ys = task(400, 2.0, 4.0)
    Xt, yt = task(24, 1.5, 3.0)
    Xtest, ytest = task(300, 1.5, 3.0)
    net = {"hidden": [32, 8], "activations": ["sigmoid", "softplus"], "dropout": [0.1, 0.0]}
    src = NetworkRegressor(network=net, train={"epochs": 20, "lr": 1e-2}).fit(Xs, ys)
    finetune = {"epochs": 60, "lr": 3e-3, "batch_size": 8}
    scores = {}
    for name, policy, source in [
        ("scratch", None, None),
        ("paper", "paper", src),
        ("l2sp", {"kind": "l2sp", "alpha": 1e-2}, src),
    ]:
        fitted = NetworkRegressor(network=net, train=finetune, transfer=policy, seed=1)
        pred = fitted.fit(Xt, yt, source=source).predict(Xtest)
        scores[name] = float(np.mean((pred - ytest) ** 2))
    assert scores["paper"] < 0.5 * scores["scratch"], scores
    assert scores["l2sp"] < 0.5 * scores["scratch"], scores
