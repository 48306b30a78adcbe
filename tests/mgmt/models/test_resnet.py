"""MedicalNet ResNet: exact architecture, strict checkpoint loading, stem inflation."""

from __future__ import annotations

import pytest
import torch

from gliotl.errors import GliotlError
from gliotl.mgmt import medicalnet_resnet
from gliotl.mgmt.models.resnet import MedicalNetResNet, inflate_stem, load_medicalnet_weights

SHAPE = (1, 1, 16, 24, 24)
LAYERS = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
    200: ("bottleneck", [3, 24, 36, 3]),
}
SHORTCUT = {10: "B", 18: "A", 34: "A", 50: "B", 101: "B", 152: "B", 200: "B"}


def _bn(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{s}": (n,) for s in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def expected_medicalnet_shapes(depth: int) -> dict[str, tuple[int, ...]]:
    """MedicalNet's backbone state dict (names and shapes), written from its specification."""
    kind, layers = LAYERS[depth]
    shapes = {"conv1.weight": (64, 1, 7, 7, 7), **_bn("bn1", 64)}
    inplanes = 64
    stages = zip([64, 128, 256, 512], layers, strict=True)
    for stage, (planes, n_blocks) in enumerate(stages, start=1):
        out = planes * (4 if kind == "bottleneck" else 1)
        for i in range(n_blocks):
            p = f"layer{stage}.{i}"
            if kind == "basic":
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3, 3)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3, 3)
                shapes |= _bn(f"{p}.bn1", planes) | _bn(f"{p}.bn2", planes)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1, 1)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3, 3)
                shapes[f"{p}.conv3.weight"] = (out, planes, 1, 1, 1)
                shapes |= _bn(f"{p}.bn1", planes) | _bn(f"{p}.bn2", planes) | _bn(f"{p}.bn3", out)
            needs_shortcut = i == 0 and (stage == 2 or inplanes != out)
            if needs_shortcut and SHORTCUT[depth] == "B":
                shapes[f"{p}.downsample.0.weight"] = (out, inplanes, 1, 1, 1)
                shapes |= _bn(f"{p}.downsample.1", out)
            inplanes = out
    return shapes


@pytest.mark.parametrize("depth", [10, 18, 34, 50, 101, 152, 200])
def test_parameter_names_and_shapes_match_medicalnet(depth):
    with torch.device("meta"):  # no memory, no initialisation cost for the deep ones
        model = medicalnet_resnet(depth)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert got == expected_medicalnet_shapes(depth)
    assert model.shortcut_type == SHORTCUT[depth]
    assert model.head.fc.in_features == model.feature_dim == (2048 if depth >= 50 else 512)


def test_resnet50_backbone_parameter_count():
    with torch.device("meta"):
        model = medicalnet_resnet(50)
    n = sum(p.numel() for k, p in model.named_parameters() if not k.startswith("head."))
    assert n == 46_155_072  # MedicalNet resnet_50 backbone, ~46.2M


@pytest.mark.parametrize("depth", [18, 50])
def test_every_layer3_layer4_block_is_dilated(depth):
    with torch.device("meta"):
        model = medicalnet_resnet(depth)
    for stage, dilation in (("layer3", 2), ("layer4", 4)):
        for block in getattr(model, stage):
            convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv3d)]
            three = [c for c in convs if c.kernel_size == (3, 3, 3)]
            assert three and all(c.dilation == (dilation,) * 3 for c in three)
            assert all(c.padding == (dilation,) * 3 and c.stride == (1, 1, 1) for c in three)
    assert model.layer2[0].stride == 2 and model.layer1[0].stride == 1
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == (
        (7, 7, 7), (2, 2, 2), (3, 3, 3))


def _randomise_bn_stats(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def _write_medicalnet_checkpoint(model: MedicalNetResNet, path, wrap=True, prefix="module."):
    state = {
        prefix + k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")
    }
    # MedicalNet's segmentation decoder, which classification must ignore.
    state[prefix + "conv_seg.0.weight"] = torch.randn(32, model.feature_dim, 2, 2, 2)
    state[prefix + "conv_seg.1.weight"] = torch.randn(32)
    torch.save({"state_dict": state} if wrap else state, path)
    return path


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    model = MedicalNetResNet(10).eval()
    _randomise_bn_stats(model, 1)
    return model


def test_checkpoint_round_trip_gives_the_original_layer4_features(reference, tmp_path):
    path = _write_medicalnet_checkpoint(reference, tmp_path / "resnet_10.pth")
    torch.manual_seed(123)  # a different random start, overwritten by the checkpoint
    loaded = medicalnet_resnet(10, weights=path).eval()
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), reference.forward_features(x))
        assert loaded(x).shape == (1, 1)
    bare = _write_medicalnet_checkpoint(reference, tmp_path / "bare.pth", wrap=False, prefix="")
    again = load_medicalnet_weights(MedicalNetResNet(10).eval(), bare)
    with torch.no_grad():
        assert torch.equal(again.forward_features(x), reference.forward_features(x))


def test_downsample_batchnorm_is_applied(reference):
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        before = reference.forward_features(x).clone()
        bn = reference.layer2[0].downsample[1]
        saved = bn.running_mean.clone()
        bn.running_mean.add_(5.0)
        after = reference.forward_features(x)
        bn.running_mean.copy_(saved)
    assert not torch.allclose(before, after)


def test_strict_loading_lists_missing_and_unexpected_keys(reference, tmp_path):
    state = {
        "module." + k: v for k, v in reference.state_dict().items() if not k.startswith("head")
    }
    del state["module.layer3.0.conv2.weight"]
    state["module.layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(GliotlError) as info:
        medicalnet_resnet(10, weights=path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "missing keys 1 (layer3.0.conv2.weight)" in message
    assert "unexpected keys 1 (layer5.0.conv1.weight)" in message


def test_wrong_depth_reports_shape_mismatches_and_counts(reference, tmp_path):
    path = _write_medicalnet_checkpoint(reference, tmp_path / "resnet_10.pth")
    with pytest.raises(GliotlError, match=r"missing keys \d+ \(.*, \.\.\.\)"):
        medicalnet_resnet(18, weights=path, shortcut_type="B")
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 1, 3, 3, 3)}}, tmp_path / "s.pth")
    with pytest.raises(GliotlError, match="shape mismatches 1 .*conv1.weight"):
        load_medicalnet_weights(MedicalNetResNet(10), tmp_path / "s.pth")


def test_unreadable_or_malformed_checkpoints_are_user_errors(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(GliotlError, match="junk.pth"):
        medicalnet_resnet(10, weights=tmp_path / "junk.pth")
    torch.save({"state_dict": {"conv1.weight": [1, 2]}}, tmp_path / "lists.pth")
    with pytest.raises(GliotlError, match="tensor values"):
        medicalnet_resnet(10, weights=tmp_path / "lists.pth")
    with pytest.raises(GliotlError, match="not found"):
        medicalnet_resnet(10, weights=tmp_path / "absent.pth")
    with pytest.raises(GliotlError, match="depth"):
        medicalnet_resnet(11)


def test_checkpoint_without_batch_counters_loads(reference, tmp_path):
    state = {
        k: v for k, v in reference.state_dict().items()
        if not k.startswith("head.") and not k.endswith("num_batches_tracked")
    }
    torch.save({"state_dict": state}, tmp_path / "old.pth")
    loaded = medicalnet_resnet(10, weights=tmp_path / "old.pth").eval()
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), reference.forward_features(x))


def test_inflated_stem_gives_same_output_for_stacked_copies(reference, tmp_path):
    path = _write_medicalnet_checkpoint(reference, tmp_path / "resnet_10.pth")
    stacked = medicalnet_resnet(10, weights=path, in_channels=4).eval()
    assert stacked.conv1.weight.shape == (64, 4, 7, 7, 7) and stacked.in_channels == 4
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(
            stacked.forward_features(x.repeat(1, 4, 1, 1, 1)),
            reference.forward_features(x), rtol=1e-4, atol=1e-5)
    inflate_stem(stacked, 4)  # no-op when already the right width
    assert stacked.conv1.weight.shape[1] == 4


def test_head_structure_and_residual_block_order():
    model = medicalnet_resnet(18, num_classes=3, dropout=0.5)
    names = [name for name, _ in model.residual_blocks()]
    assert names == [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]
    assert isinstance(model.head.dropout, torch.nn.Dropout) and model.head.fc.out_features == 3
    x = torch.randn(2, 1, 16, 24, 24, requires_grad=True)
    model(x).sum().backward()  # type-A shortcut keeps the gradient path (no .data detaching)
    assert x.grad is not None and model.conv1.weight.grad.abs().sum() > 0
