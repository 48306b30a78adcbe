"""Speed options of MGMT training on CPU: bf16 autocast, channels_last_3d, defaults unchanged."""

from __future__ import annotations

import numpy as np
import torch

from gliotl.mgmt.config import TrainingConfig
from gliotl.mgmt.pipeline.acceleration import (
    autocast,
    autocast_dtype,
    needs_grad_scaler,
    place_batch,
    place_model,
)
from gliotl.mgmt.pipeline.training import build_model, fit, predict_proba

CPU = torch.device("cpu")


class _Volumes(torch.utils.data.Dataset):
    """Tiny labelled volumes whose class shows in their mean (learnable in one epoch)."""

    def __init__(self, n: int, seed: int, dtype: torch.dtype = torch.float32) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = np.array([i % 2 for i in range(n)], dtype=float)
        shift = torch.tensor(self.labels, dtype=torch.float32).view(-1, 1, 1, 1, 1)
        self.x = (torch.randn(n, 1, 8, 8, 8, generator=gen) + shift).to(dtype)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.x[i], torch.tensor(self.labels[i])


def _training(**kwargs) -> TrainingConfig:
    return TrainingConfig(epochs=1, batch_size=4, eval_batch_size=4, augment=None,
                          device="cpu", lr_backbone=1e-3, **kwargs)


def _fit(training: TrainingConfig) -> tuple[dict, np.ndarray]:
    torch.manual_seed(0)
    model = build_model("full", 10, None, 1, 0.0, training)
    result = fit(model, _Volumes(8, 1), _Volumes(4, 2), training, CPU, seed=3)
    return result.state_dict, predict_proba(model, _Volumes(4, 4), CPU, 4, training=training)


def test_defaults_keep_fp32_on_cpu_and_fp16_with_scaler_on_cuda():
    training = TrainingConfig()
    assert autocast_dtype(training, CPU) is None
    cuda = torch.device("cuda")
    assert autocast_dtype(training, cuda) is torch.float16
    assert needs_grad_scaler(torch.float16, cuda)
    assert autocast_dtype(TrainingConfig(amp=False), cuda) is None
    bf16 = TrainingConfig(precision="bf16")
    assert autocast_dtype(bf16, CPU) is torch.bfloat16
    assert not needs_grad_scaler(torch.bfloat16, cuda)


def test_bf16_autocast_runs_the_convolutions_in_bfloat16_on_cpu():
    model = build_model("full", 10, None, 1, 0.0, _training()).eval()
    x = torch.randn(2, 1, 12, 12, 12)
    with autocast(CPU, torch.bfloat16):
        features = model.forward_features(x)
    assert features.dtype is torch.bfloat16


def test_channels_last_and_float16_storage_are_placed_per_batch():
    training = _training(channels_last=True)
    x = place_batch(torch.randn(2, 1, 6, 6, 6).half(), training, CPU)
    assert x.dtype is torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last_3d)
    model = place_model(build_model("full", 10, None, 1, 0.0, training), training, CPU)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_channels_last_training_matches_the_default_layout():
    """A layout is not a model change: same seed, same weights and predictions (float32)."""
    torch.manual_seed(0)
    model = build_model("full", 10, None, 1, 0.0, _training()).eval()
    data = _Volumes(4, 4)
    plain = predict_proba(model, data, CPU, 4, training=_training())
    training_cl = _training(channels_last=True)
    laid_out = predict_proba(place_model(model, training_cl, CPU), data, CPU, 4,
                             training=training_cl)
    np.testing.assert_allclose(laid_out, plain, rtol=1e-5, atol=1e-6)
    # Trained: float32 sums reassociate in the other layout, so a few steps of Adam drift a bit.
    _, prob = _fit(_training())
    _, prob_cl = _fit(training_cl)
    np.testing.assert_allclose(prob_cl, prob, atol=1e-3)


def test_bf16_training_runs_and_stays_close_to_fp32():
    _, prob = _fit(_training())
    state_bf16, prob_bf16 = _fit(_training(precision="bf16"))
    assert all(v.dtype is not torch.bfloat16 for v in state_bf16.values())  # master weights
    assert np.isfinite(prob_bf16).all()
    assert np.max(np.abs(prob_bf16 - prob)) < 0.1


def test_spottune_split_batches_comes_from_the_config():
    model = build_model("spottune", 10, None, 1, 0.0, _training(spottune_split_batches="whole"))
    assert model.split_batches == "whole"
    assert build_model("spottune", 10, None, 1, 0.0, _training()).split_batches == "index"


def test_several_trainings_share_a_gpu_by_reserving_a_fraction_of_it():
    from types import SimpleNamespace

    from gliotl.mgmt.pipeline.experiment import job_gpus

    def share(**kwargs) -> float:
        return job_gpus(SimpleNamespace(training=TrainingConfig(**kwargs)))  # type: ignore[arg-type]

    assert share(device="cuda") == 1.0
    assert share(device="cuda", trainings_per_gpu=4) == 0.25
    assert share(device="cpu", trainings_per_gpu=4) == 0.0
    assert share(device="auto", trainings_per_gpu=2) == (0.5 if torch.cuda.is_available() else 0.0)
