"""The first Dense layer is stored genes x hidden (issue 17 item 0): same numbers, old
checkpoints still load."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gliotl.drug.network.estimators import NetworkRegressor
from gliotl.drug.network.model import DrugResponseNet, NetworkConfig, is_genes_by_hidden

_NET = {"hidden": [16, 8], "activations": ["sigmoid", "softplus"], "dropout": [0.3, 0.1]}


def _data(n: int = 40, genes: int = 37) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, genes)).astype(np.float32)
    return X, (X[:, 0] - X[:, 1] + 5).astype(np.float32)


def test_first_layer_is_stored_genes_by_hidden_and_trains_like_a_plain_linear():
    net = DrugResponseNet(37, NetworkConfig(**_NET))
    first = net.dense_layers[0]
    assert tuple(first.weight.shape) == (16, 37) and is_genes_by_hidden(first.weight)
    plain = nn.Linear(37, 16)
    with torch.no_grad():
        plain.weight.copy_(first.weight)
        plain.bias.copy_(first.bias)
    x = torch.randn(29, 37)
    assert torch.equal(first(x), plain(x))
    first(x).pow(2).sum().backward()
    plain(x).pow(2).sum().backward()
    assert first.weight.grad is not None and is_genes_by_hidden(first.weight.grad)
    assert torch.equal(first.weight.grad, plain.weight.grad)


def test_checkpoint_in_the_old_layout_loads_into_the_aligned_one(tmp_path):
    X, y = _data()
    model = NetworkRegressor(network=_NET, train={"epochs": 3}, device="cpu", seed=1).fit(X, y)
    state = model.state_dict()
    assert state["weights"]["layers.0.weight"].is_contiguous()  # files keep (hidden x genes)
    old = dict(state, weights={k: v.contiguous() for k, v in state["weights"].items()})
    torch.save(old, tmp_path / "old.pt")
    loaded = NetworkRegressor.load(tmp_path / "old.pt", device="cpu")
    assert is_genes_by_hidden(loaded.network_.dense_layers[0].weight)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    model.save(tmp_path / "new.pt")
    model.save(tmp_path / "again.pt")
    assert (tmp_path / "new.pt").read_bytes() == (tmp_path / "again.pt").read_bytes()


def _fit_weights(X: np.ndarray, y: np.ndarray, **fit) -> list[torch.Tensor]:
    model = NetworkRegressor(network=_NET, device="cpu", seed=2, **fit).fit(X, y)
    return [t.detach().clone() for t in model.network_.state_dict().values()]


def test_optimiser_steps_the_aligned_weight_through_a_contiguous_alias(monkeypatch):
    """Fused Adam is slow on a transposed view; stepping its contiguous alias instead gives the
    same weights bit for bit (Adam with coupled L2, and SGD with momentum)."""
    from gliotl.drug.network import model as model_module

    X, y = _data(n=60)
    settings = [{"train": {"epochs": 4, "batch_size": 16}},
                {"train": {"epochs": 4, "batch_size": 16, "weight_decay": 0.01}},
                {"train": {"epochs": 4, "batch_size": 16, "optimiser": "sgd", "momentum": 0.9}}]
    aliased = [_fit_weights(X, y, **s) for s in settings]
    with monkeypatch.context() as patch:
        patch.setattr(model_module, "is_genes_by_hidden", lambda weight: False)
        direct = [_fit_weights(X, y, **s) for s in settings]
    for a, b in zip(aliased, direct, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    net = DrugResponseNet(37, NetworkConfig(**_NET))
    opt = model_module._build_optimiser([{"params": [p]} for p in net.parameters()],
                                        model_module.TrainConfig(), torch.device("cpu"))
    first = net.dense_layers[0].weight
    held = [p for group in opt.optimiser.param_groups for p in group["params"]]
    assert held[0].is_contiguous() and held[0].data_ptr() == first.data_ptr()
