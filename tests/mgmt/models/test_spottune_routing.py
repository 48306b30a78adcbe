"""Per-patient routing: SpotTune records each evaluation sample's gates, in forward order, so
the run can save routing.csv and the report can split the policy by MGMT class."""

from __future__ import annotations

import numpy as np
import torch

from gliotl.mgmt.models.resnet import MedicalNetResNet
from gliotl.mgmt.models.spottune import SpotTune
from gliotl.mgmt.pipeline.jobs import routing_table


def _model() -> SpotTune:
    torch.manual_seed(0)
    model = SpotTune(MedicalNetResNet(10).eval())
    with torch.no_grad():  # blocks 2 and 3 always tuned, 1 always frozen, 0 and 4.. mixed
        model.policy.fc.bias.copy_(torch.tensor([0.0, 0.0, -5.0, 5.0, 5.0, -5.0, 0.0, 0.0]))
    return model.eval()


def test_routing_decisions_are_per_sample_in_forward_order_and_reset():
    model = _model()
    x = torch.randn(5, 1, 16, 24, 24, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        model(x[:3])
        model(x[3:])
        expected = model.decisions(x).numpy()
    decisions = model.routing_decisions()
    assert decisions.shape == (5, model.n_blocks) and decisions.dtype == bool
    assert np.array_equal(decisions, expected)
    assert decisions[:, 1].all() and not decisions[:, 2].any()
    usage = model.policy_usage()  # the counts agree with the per-sample record
    assert np.array_equal(usage["n_tuned"].to_numpy(), decisions.sum(axis=0))
    model.reset_policy_usage()
    assert model.routing_decisions().shape == (0, model.n_blocks)


def test_routing_table_names_patient_label_and_block():
    model = _model()
    x = torch.randn(3, 1, 16, 24, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        model(x)
    dataset = _Dataset(["p1", "p2", "p3"], np.array([0, 1, 1]))
    table = routing_table(model, dataset)
    assert len(table) == 3 * model.n_blocks
    first = table[table["sample_id"] == "p2"]
    assert first["y_true"].eq(1).all()
    assert first["block"].tolist() == list(model.block_names)
    assert first["tuned"].tolist() == model.routing_decisions()[1].astype(int).tolist()
    # a record that does not match the dataset (no evaluation pass) gives no rows, not wrong ones
    model.reset_policy_usage()
    assert routing_table(model, dataset).empty


class _Dataset:
    """What routing_table reads of an MRIDataset: ids and labels in order, and its length."""

    def __init__(self, patient_ids: list[str], labels: np.ndarray) -> None:
        self.patient_ids = patient_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.patient_ids)
