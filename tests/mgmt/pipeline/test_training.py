"""Unit tests of the MGMT training loop, balancing, checkpoint metric, fusion and pretraining."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from gliotl.core.evaluation.evaluate import fold_ensemble
from gliotl.core.evaluation.metrics import choose_threshold
from gliotl.errors import GliotlError
from gliotl.mgmt.config import MGMTExperimentConfig, TrainingConfig, load_mgmt_config
from gliotl.mgmt.pipeline.fusion import evaluate_table, fuse_groups, holdout_metrics
from gliotl.mgmt.pipeline.training import (
    build_model,
    checkpoint_score,
    epoch_indices,
    fit,
    make_scheduler,
    positive_weight,
    predict_proba,
    undersample_indices,
    validation_log_loss,
)


class TinySet(torch.utils.data.Dataset):
    """(x, y) items with a ``labels`` array, like MRIDataset."""

    def __init__(self, n: int, seed: int, shift: float = 1.5):
        gen = torch.Generator().manual_seed(seed)
        self.labels = np.array([i % 2 for i in range(n)], dtype=float)
        self.x = torch.randn(n, 1, 16, 16, 16, generator=gen)
        self.x += shift * torch.as_tensor(self.labels, dtype=torch.float32).view(-1, 1, 1, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.x[i], float(self.labels[i])


def test_scheduler_maximises_the_validation_metric():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0)
    sched = make_scheduler(opt, TrainingConfig(plateau_patience=1, plateau_factor=0.5))
    assert sched.mode == "max"
    for score in (0.1, 0.2, 0.3, 0.4):  # improving: the LR must stay
        sched.step(score)
    assert opt.param_groups[0]["lr"] == 1.0
    for score in (0.3, 0.2, 0.1):  # getting worse: the LR drops after `patience` epochs
        sched.step(score)
    assert opt.param_groups[0]["lr"] < 1.0


def test_undersampling_balances_the_training_fold_only():
    labels = np.array([1] * 3 + [0] * 9)
    idx = undersample_indices(labels, np.random.default_rng(0))
    assert len(idx) == 6 and labels[idx].sum() == 3
    assert set(idx) <= set(range(len(labels))) and len(set(idx)) == 6
    assert set(np.flatnonzero(labels == 1)) <= set(idx)
    # seeded by (seed, epoch): reproducible, but a new majority subset each epoch
    a, b = epoch_indices(labels, "undersample", 7, 0), epoch_indices(labels, "undersample", 7, 0)
    assert np.array_equal(a, b)
    draws = {tuple(sorted(epoch_indices(labels, "undersample", 7, e))) for e in range(5)}
    assert len(draws) > 1
    assert sorted(epoch_indices(labels, "weighted_loss", 7, 0)) == list(range(12))
    assert positive_weight(labels) == 3.0
    with pytest.raises(GliotlError):
        undersample_indices(np.zeros(4), np.random.default_rng(0))


def test_checkpoint_score_uses_validation_youden_threshold():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.4, 0.7, 0.9])
    score, threshold, metrics = checkpoint_score(y, p)
    assert threshold == choose_threshold(y, p)
    sens, spec = metrics["sensitivity"], metrics["specificity"]
    assert score == pytest.approx(0.6 * sens + 0.4 * spec)


def test_validation_log_loss_matches_sklearn():
    from sklearn.metrics import log_loss

    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.2, 0.7, 0.9, 0.4, 0.55])
    assert validation_log_loss(y, p) == pytest.approx(log_loss(y, p))
    # a saturated AUC still tells a confident model from an undecided one
    assert validation_log_loss(y, np.where(y == 1, 0.9, 0.1)) < validation_log_loss(
        y, np.where(y == 1, 0.51, 0.49))


@pytest.mark.parametrize("method", ["spottune", "full"])
def test_fit_keeps_best_epoch_and_eval_is_deterministic(method):
    torch.manual_seed(0)
    training = TrainingConfig(epochs=3, batch_size=4, lr_backbone=1e-3, lr_policy=1e-2,
                              augment=None, temperature=5.0, plateau_patience=0)
    model = build_model(method, 10, None, 1, 0.0, training, steps_per_epoch=3)
    train, val = TinySet(12, 0), TinySet(8, 1)
    result = fit(model, train, val, training, torch.device("cpu"), seed=3)
    history = result.history
    assert len(history) == 3
    keys = list(zip(history["val_score"], history["val_auc"].fillna(-1.0), -history["val_loss"],
                    -history["epoch"], strict=True))
    # best score, then best AUC, then lowest validation log-loss, then earliest
    assert result.best_epoch == -max(keys)[3]
    assert set(history["train_items"]) == {12}  # balanced fold: undersampling keeps all 6+6
    # the returned model holds the best epoch's weights
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), result.state_dict[key])
    first = predict_proba(model, val, torch.device("cpu"), batch_size=3)
    second = predict_proba(model, val, torch.device("cpu"), batch_size=8)
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    assert np.array_equal(first, predict_proba(model, val, torch.device("cpu"), batch_size=3))


def test_fusion_thresholds_come_from_validation_only():
    rows = []
    rng = np.random.default_rng(0)
    for fold in range(3):
        for i in range(10):  # shared hold-out patients, predicted by every fold model
            rows.append(("m", "T1", f"t{i}", fold, "test", i % 2, rng.random()))
        for i in range(4):  # out-of-fold validation patients, one fold each
            rows.append(("m", "T1", f"v{fold}{i}", fold, "val", i % 2, 0.2 + 0.2 * (i % 2)))
    raw = pd.DataFrame(rows, columns=["method", "modality", "sample_id", "fold", "role",
                                      "y_true", "y_pred"]).assign(repeat=0)
    ens = fold_ensemble(raw, ["method", "modality"])
    test = ens[ens["role"] == "test"].set_index("sample_id")
    expected = raw[raw["role"] == "test"].groupby("sample_id")["y_pred"].mean()
    np.testing.assert_allclose(test.loc[expected.index, "y_pred"], expected)
    assert set(test["n_models"]) == {3}
    fused = fuse_groups(ens, {"struct": ["T1"]})
    table = holdout_metrics(fused, evaluate_table(fused, "group"), "group")
    val = fused[fused["role"] == "val"]
    assert table["threshold"].iloc[0] == choose_threshold(val["y_true"], val["y_pred"])


def test_fusion_complete_versus_available():
    ens = pd.DataFrame({
        "method": "m", "modality": ["T1", "T2", "T1"], "repeat": 0, "role": "test",
        "sample_id": ["a", "a", "b"], "y_true": [1, 1, 0], "y_pred": [0.2, 0.6, 0.3],
    })
    complete = fuse_groups(ens, {"s": ["T1", "T2"]}, "complete")
    assert complete["sample_id"].tolist() == ["a"]
    assert complete["y_pred"].iloc[0] == pytest.approx(0.4)
    available = fuse_groups(ens, {"s": ["T1", "T2"]}, "available")
    assert sorted(available["sample_id"]) == ["a", "b"]


def test_config_errors_are_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ncohort: {kind: phantom}\ntraining: {epochz: 3}\n")
    with pytest.raises(GliotlError) as info:
        load_mgmt_config(path)
    message = str(info.value)
    assert "\n" not in message and "training.epochz" in message and str(path) in message
    path.write_text("name: x\ncohort: {kind: phantom}\nmethods: [{name: full, "
                    "training: {lr: 1}}]\nreference: full\n")
    with pytest.raises(GliotlError, match="unknown training key 'lr'"):
        load_mgmt_config(path)
    path.write_text("name: x\ncohort: {kind: upenn}\n")
    with pytest.raises(GliotlError, match="cohort.upenn.root': Field required"):
        load_mgmt_config(path)
    path.write_text("name: x\ncohort: {kind: phantom, root: data}\n")  # each kind its own keys
    with pytest.raises(GliotlError, match="cohort.phantom.root': unknown config key"):
        load_mgmt_config(path)


def test_config_defaults_follow_the_paper():
    config = MGMTExperimentConfig(name="x", cohort={"kind": "phantom"},
                                  modalities=["struct", "DSC_ap-rCBV"])
    assert config.preprocessing.intensity == "zscore"
    assert config.training.lr_backbone == 1e-5 and config.training.balancing == "undersample"
    groups = config.fusion_groups()
    assert groups["struct"] == ["T1", "T1GD", "T2", "FLAIR"]
    assert groups["dsc"] == ["DSC_ap-rCBV"] and "dti" not in groups
    assert "all" not in groups  # same members as struct+dsc: kept once
    method = MGMTExperimentConfig(name="x", cohort={"kind": "phantom"},
                                  methods=["spottune", {"name": "random_init",
                                                        "training": {"lr_backbone": 1e-3}}])
    assert method.training_for("random_init").lr_backbone == 1e-3


def test_pretrained_checkpoint_has_medicalnet_format(tmp_path):
    from gliotl.core.io import load_torch
    from gliotl.mgmt.models.resnet import MedicalNetResNet, medicalnet_resnet
    from gliotl.mgmt.pipeline.pretrain import SegmentationNetwork, save_medicalnet_checkpoint

    torch.manual_seed(0)
    net = SegmentationNetwork(MedicalNetResNet(10))
    x = torch.randn(2, 1, 16, 16, 16)
    assert net(x).shape == (2, 2, 16, 16, 16)
    path = save_medicalnet_checkpoint(net, tmp_path / "w.pth")
    raw = load_torch(path)
    assert set(raw) == {"state_dict"}
    keys = list(raw["state_dict"])
    assert all(k.startswith("module.") for k in keys)
    assert any(k.startswith("module.conv_seg.") for k in keys)
    assert not any(k.startswith("module.head.") for k in keys)
    loaded = medicalnet_resnet(10, weights=path).eval()
    net.eval()
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), net.backbone.forward_features(x))
