"""One device resolver for both systems: no silent CPU fall-back, one-line errors."""

from __future__ import annotations

import pytest
import torch

from gliotl.core.device import resolve_device
from gliotl.errors import GliotlError


def test_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_auto_takes_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(GliotlError, match=r"field 'device': 'cuda:2' requested but only 2"):
        resolve_device("cuda:2")


def test_cuda_without_cuda_is_an_error_not_a_silent_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GliotlError, match=r"^training: field 'device': 'cuda' requested but no "
                                          r"CUDA device found$"):
        resolve_device("cuda")
    with pytest.raises(GliotlError, match="no CUDA device"):
        resolve_device("cuda:0", source="run.yaml")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:x", "", "mps:0", None])
def test_a_bad_name_names_the_field_and_the_allowed_values(name):
    with pytest.raises(GliotlError) as info:
        resolve_device(name, source="cfg.yaml")
    message = str(info.value)
    assert message.startswith("cfg.yaml: field 'device': expected 'auto', 'cpu', 'cuda' or "
                              "'cuda:<index>', got ")
    assert "\n" not in message
