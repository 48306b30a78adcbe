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
