"""Tests for ofa.nn.resnet: OFA's ResNet stem truncated after stage 3 (stride 16, 16 * width channels)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ofa.config import ResNetConfig
from ofa.nn.resnet import Bottleneck, build_resnet

SMALL = ResNetConfig(layers=(1, 2, 1), width=8)


@pytest.mark.parametrize(("height", "width"), [(64, 48), (16, 16), (50, 33), (96, 17)])
def test_output_is_stride_16_with_16_times_width_channels(seed: int, height: int, width: int) -> None:
    stem = build_resnet(SMALL).eval()
    with torch.no_grad():
        out = stem(torch.randn(2, 3, height, width))
    assert out.shape == (2, 16 * 8, -(-height // 16), -(-width // 16))  # ceil(H / 16) x ceil(W / 16)
    assert SMALL.out_channels == 128


@pytest.mark.parametrize(("name", "blocks"), [("resnet50", (3, 4, 6)), ("resnet101", (3, 4, 23)),
                                              ("resnet152", (3, 8, 36))])
def test_named_backbones_have_three_stages_and_no_head(name: str, blocks: tuple[int, int, int]) -> None:
    with torch.device("meta"):
        stem = build_resnet(ResNetConfig.named(name))
    assert tuple(len(getattr(stem, f"layer{i}")) for i in (1, 2, 3)) == blocks
    assert not hasattr(stem, "layer4") and not hasattr(stem, "fc") and not hasattr(stem, "avgpool")
    for stage in (stem.layer1, stem.layer2, stem.layer3):
        assert stage[0].downsample is not None  # projection shortcut only on block 0
        assert all(block.downsample is None for block in list(stage)[1:])
    assert stem.layer3[-1].conv3.out_channels == 1024


def test_resnet50_parameter_count_equals_reference() -> None:
    # The golden README: 8,543,296 of the tiny model's parameters are the ResNet-50 stem.
    with torch.device("meta"):
        stem = build_resnet(ResNetConfig.named("resnet50"))
    assert sum(p.numel() for p in stem.parameters()) == 8_543_296


def test_stride_sits_on_the_3x3_conv() -> None:
    stem = build_resnet(SMALL)
    block = stem.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)  # ResNet v1.5
    assert block.downsample[0].stride == (2, 2)
    assert all(not conv.bias for conv in stem.modules() if isinstance(conv, nn.Conv2d))
    assert all(bn.eps == 1e-5 for bn in stem.modules() if isinstance(bn, nn.BatchNorm2d))


def test_eval_mode_uses_running_statistics(seed: int) -> None:
    stem = build_resnet(SMALL).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        batch = stem(images)
        single = stem(images[1:2])
    torch.testing.assert_close(single[0], batch[1], atol=1e-5, rtol=0)


def test_batch_norm_updates_running_statistics_in_training(seed: int) -> None:
    stem = build_resnet(SMALL).train()
    before = stem.bn1.running_mean.clone()
    with torch.no_grad():
        stem(torch.randn(2, 3, 32, 32) + 3.0)
    assert not torch.equal(stem.bn1.running_mean, before)
    assert stem.bn1.num_batches_tracked.item() == 1


def test_frozen_batch_norm_option(seed: int) -> None:
    stem = build_resnet(ResNetConfig(layers=(1, 1, 1), width=8, frozen_bn=True))
    norms = [m for m in stem.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert {n.rsplit(".", 1)[-1] for n, _ in stem.named_parameters()} == {"weight"}  # convs only
    assert not any(k.endswith("num_batches_tracked") for k in stem.state_dict())
    images = torch.randn(2, 3, 32, 32)
    state = {k: v.clone() for k, v in stem.state_dict().items()}
    stem.train()
    with torch.no_grad():
        train_out = stem(images)
    stem.eval()
    with torch.no_grad():
        eval_out = stem(images)
    assert all(torch.equal(v, stem.state_dict()[k]) for k, v in state.items())  # nothing updated
    torch.testing.assert_close(train_out, eval_out)  # same statistics in both modes


def test_drop_path_rates_per_stage() -> None:
    stem = build_resnet(ResNetConfig(layers=(1, 3, 5), width=8, drop_path_rate=0.2))
    assert stem.layer1[0].drop_path.p == 0.0
    assert [b.drop_path.p for b in stem.layer2] == pytest.approx([0.0, 0.1, 0.2])
    assert [b.drop_path.p for b in stem.layer3] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_bottleneck_shortcut(seed: int) -> None:
    block = Bottleneck(in_channels=16, planes=4, stride=1, norm=nn.BatchNorm2d).eval()
    assert block.downsample is None  # 16 -> 4 * 4 channels at stride 1: identity shortcut
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        for conv in (block.conv1, block.conv2, block.conv3):
            conv.weight.zero_()
        out = block(x)
    torch.testing.assert_close(out, torch.relu(x))  # a zero branch leaves ReLU(shortcut)
