"""Tests for ofa.vqgan: config checks, blocks, encode/decode/forward of the tiny preset, input validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ofa.errors import ConfigError, InputError
from ofa.vqgan import VQGAN_GUMBEL_F8, VQGAN_TEST, VQGANConfig, build_vqgan, images_from_pil, images_to_pil
from ofa.vqgan.blocks import AttnBlock, Downsample, ResnetBlock, Upsample


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_vqgan(VQGAN_TEST).eval()


def _images(batch: int = 2, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------
def test_presets_geometry() -> None:
    assert VQGAN_GUMBEL_F8.downsample_factor == 8 and VQGAN_GUMBEL_F8.grid_size == 32
    assert VQGAN_GUMBEL_F8.level_resolutions == (256, 128, 64, 32)
    assert (VQGAN_GUMBEL_F8.num_codes, VQGAN_GUMBEL_F8.embed_dim, VQGAN_GUMBEL_F8.kl_weight) == (8192, 256, 1e-8)
    assert VQGAN_GUMBEL_F8.temperature == 0.9 and VQGAN_GUMBEL_F8.straight_through
    assert VQGAN_TEST.downsample_factor == 2 and VQGAN_TEST.grid_size == 16


@pytest.mark.parametrize(("overrides", "match"), [
    ({"channels": 48}, r"channels \(48\).*divisible by 32"),
    ({"resolution": 33, "attn_resolutions": ()}, r"resolution \(33\).*factor 2"),
    ({"attn_resolutions": (8,)}, r"attn_resolutions \[8\]"),
    ({"embed_dim": 16}, r"embed_dim \(16\).*z_channels \(32\)"),
    ({"double_z": True}, r"double_z"),
    ({"channel_mult": ()}, r"channel_mult"),
    ({"num_codes": 0}, r"num_codes \(0\)"),
    ({"num_res_blocks": True}, r"num_res_blocks \(True\)"),
    ({"dropout": 1.0}, r"dropout \(1.0\)"),
    ({"temperature": 0.0}, r"temperature \(0.0\)"),
    ({"channel_mult": "12"}, r"channel_mult \('12'\)"),
])
def test_bad_configs_raise_naming_the_value(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(VQGAN_TEST, **overrides)


def test_config_dict_round_trip_and_unknown_keys() -> None:
    data = VQGAN_TEST.to_dict()
    assert data["channel_mult"] == [1, 2]
    assert VQGANConfig.from_dict(data) == VQGAN_TEST
    with pytest.raises(ConfigError, match="n_embed"):
        VQGANConfig.from_dict({**data, "n_embed": 8})


# ---------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------
def test_downsample_pads_bottom_right_only() -> None:
    torch.manual_seed(0)
    block = Downsample(channels=32)
    x = torch.randn(1, 32, 6, 6)
    padded = torch.zeros(1, 32, 7, 7)
    padded[..., :6, :6] = x
    expected = F.conv2d(padded, block.conv.weight, block.conv.bias, stride=2)
    assert torch.allclose(block(x), expected, atol=1e-6) and block(x).shape == (1, 32, 3, 3)


def test_upsample_is_nearest_then_conv() -> None:
    torch.manual_seed(0)
    block = Upsample(channels=32)
    x = torch.randn(1, 32, 3, 4)
    repeated = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    expected = F.conv2d(repeated, block.conv.weight, block.conv.bias, padding=1)
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_attention_block_matches_plain_softmax_attention() -> None:
    torch.manual_seed(0)
    block = AttnBlock(channels=32)
    x = torch.randn(2, 32, 3, 5)
    h = block.norm(x)
    q, k, v = (conv(h).flatten(2) for conv in (block.q, block.k, block.v))  # [b, c, n]
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * 32**-0.5, dim=-1)  # softmax over keys j
    attended = torch.einsum("bij,bcj->bci", weights, v).reshape(2, 32, 3, 5)
    assert torch.allclose(block(x), x + block.proj_out(attended), atol=1e-5)


def test_resnet_block_shortcut_only_when_widths_differ() -> None:
    torch.manual_seed(0)
    same, wider = ResnetBlock(in_channels=32, out_channels=32), ResnetBlock(in_channels=32, out_channels=64)
    assert same.nin_shortcut is None and wider.nin_shortcut is not None
    x = torch.randn(1, 32, 4, 4)
    h = same.conv2(F.silu(same.norm2(same.conv1(F.silu(same.norm1(x))))))
    assert torch.allclose(same(x), x + h, atol=1e-6)
    assert wider(x).shape == (1, 64, 4, 4)
    assert same.norm1.num_groups == 32 and same.norm1.eps == 1e-6


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------
def test_released_preset_is_f8_on_meta() -> None:
    with torch.device("meta"):
        model = build_vqgan(VQGAN_GUMBEL_F8)
        codes = model.encode(torch.empty(2, 3, 256, 192))
        images = model.decoder(model.post_quant_conv(model.quantize.lookup(codes)))
    assert codes.shape == (2, 32, 24) and codes.dtype == torch.long
    assert images.shape == (2, 3, 256, 192)


def test_encode_decode_shapes_and_range(tiny: torch.nn.Module) -> None:
    images = _images(2, 16)
    codes = tiny.encode(images)
    assert codes.shape == (2, 8, 8) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < VQGAN_TEST.num_codes
    decoded = tiny.decode(codes)
    assert decoded.shape == (2, 3, 16, 16)
    flat = tiny.decode(codes.flatten(1))  # square grid inferred
    assert torch.equal(flat, decoded)
    rect = tiny.encode(_images(1, 16)[..., :12])
    assert rect.shape == (1, 8, 6)
    assert tiny.decode(rect.flatten(1), grid_size=(8, 6)).shape == (1, 3, 16, 12)


def test_eval_is_deterministic_and_forward_matches_decode_of_encode(tiny: torch.nn.Module) -> None:
    images = _images(2, 16, seed=1)
    with torch.no_grad():
        codes = tiny.encode(images)
        assert torch.equal(tiny.encode(images), codes)
        first, second = tiny.decode(codes), tiny.decode(codes)
        reconstruction, forward_codes, losses = tiny(images)
    assert torch.equal(first, second)
    assert torch.equal(forward_codes, codes)
    assert torch.allclose(reconstruction, first, atol=1e-6)
    assert set(losses) == {"kl", "l1", "loss"}


def test_training_forward_backpropagates_through_reconstruction_and_kl() -> None:
    torch.manual_seed(0)
    model = build_vqgan(VQGAN_TEST).train()
    images = _images(1, 16)
    reconstruction, codes, losses = model(images, temperature=0.9)
    assert reconstruction.shape == images.shape and codes.shape == (1, 8, 8)
    assert torch.isfinite(losses["kl"]) and losses["kl"] != 0
    assert torch.allclose(losses["loss"], losses["l1"] + losses["kl"])
    losses["loss"].backward()
    for name in ("encoder.conv_in.weight", "quant_conv.weight", "quantize.proj.weight", "quantize.embed.weight",
                 "post_quant_conv.weight", "decoder.conv_out.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    # The KL term alone reaches the encoder through the logits.
    model.zero_grad()
    model(images)[2]["kl"].backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.decoder.conv_out.weight.grad is None


def test_training_codes_are_one_hot_samples_with_straight_through() -> None:
    torch.manual_seed(0)
    model = build_vqgan(VQGAN_TEST).train()
    h = torch.randn(1, 32, 2, 2)
    z_q, _, codes = model.quantize(h, temperature=0.5)
    # hard samples: each cell's vector is exactly one codebook row
    rows = model.quantize.embed.weight[codes].permute(0, 3, 1, 2)
    assert torch.allclose(z_q, rows, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("images", "match"), [
    (torch.zeros(1, 3, 15, 16), r"15x16.*factor 2"),
    (torch.zeros(1, 4, 16, 16), r"\[b, 3, H, W\], got \[1, 4, 16, 16\]"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), r"torch.uint8"),
    (torch.zeros(3, 16, 16), r"got \[3, 16, 16\]"),
    ([[0.0]], r"got list"),
])
def test_bad_images_raise(tiny: torch.nn.Module, images: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        tiny.encode(images)
    with pytest.raises(InputError, match=match):
        tiny(images)


@pytest.mark.parametrize(("codes", "grid", "match"), [
    (torch.full((1, 2, 2), 64), None, r"code 64 is out of range \[0, 64\)"),
    (torch.tensor([[[0, -1], [2, 3]]]), None, r"code -1 is out of range \[0, 64\)"),
    (torch.zeros(1, 2, 2), None, r"integer dtype"),
    (torch.zeros(1, 6, dtype=torch.long), None, r"6 codes per image do not form a square grid"),
    (torch.zeros(1, 6, dtype=torch.long), (2, 4), r"6 codes per image do not fill grid_size \(2, 4\)"),
    (torch.zeros(1, 2, 3, dtype=torch.long), 2, r"code grid \(2, 3\) does not match grid_size 2"),
    (torch.zeros(4, dtype=torch.long), None, r"\[b, h, w\] or \[b, h\*w\]"),
    (torch.zeros(1, 4, dtype=torch.long), 0, r"grid_size \(0\) must be positive"),
])
def test_bad_codes_raise(tiny: torch.nn.Module, codes: torch.Tensor, grid: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        tiny.decode(codes, grid_size=grid)


def test_bad_temperature_raises(tiny: torch.nn.Module) -> None:
    with pytest.raises(InputError, match=r"temperature \(0.0\)"):
        tiny(_images(1, 4), temperature=0.0)


# ---------------------------------------------------------------------------------------------------------------
# PIL helpers
# ---------------------------------------------------------------------------------------------------------------
def test_pil_round_trip_helpers(tiny: torch.nn.Module) -> None:
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    gray = Image.new("L", (10, 10), 0)
    batch = images_from_pil([red, gray], 16)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.float32
    assert torch.allclose(batch[0, 0], torch.ones(16, 16)) and torch.allclose(batch[0, 1], -torch.ones(16, 16))
    assert torch.allclose(batch[1], -torch.ones(3, 16, 16))
    assert images_from_pil([red], (8, 12)).shape == (1, 3, 8, 12)
    back = images_to_pil(torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5))
    assert back[0].mode == "RGB" and [back[0].getpixel((i, 0))[0] for i in range(5)] == [0, 0, 127, 255, 255]
    pictures = tiny.codes_to_pil(tiny.encode(batch))
    assert len(pictures) == 2 and pictures[0].size == (16, 16) and pictures[0].mode == "RGB"
    with pytest.raises(InputError, match="PIL"):
        images_from_pil([batch], 16)
    with pytest.raises(InputError, match=r"size \(0\)"):
        images_from_pil([red], 0)
