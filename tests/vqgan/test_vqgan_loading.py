"""Tests for ofa.vqgan loading: the released taming layout (keys, shapes, YAML) and our own save format.

The expected key list is generated here by hand from the facts of taming-transformers' Encoder/Decoder and
GumbelVQ, never from the model, so a renamed or mis-shaped module shows up as a difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ofa.errors import CheckpointError, ConfigError
from ofa.vqgan import VQGAN, VQGAN_GUMBEL_F8, VQGAN_TEST, VQGANConfig, build_vqgan, load_vqgan

RELEASED_PARAMETERS = 68_995_971  # sum of the hand-written layout below (the loss.* keys excluded)


def released_layout(*, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 4), num_res_blocks: int = 2,
                    attn_resolutions: tuple[int, ...] = (32,), resolution: int = 256, z_channels: int = 256,
                    embed_dim: int = 256, n_embed: int = 8192) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a taming GumbelVQ ``state_dict`` without the ``loss.*`` keys."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, kernel: int) -> None:
        shapes[f"{name}.weight"] = (cout, cin, kernel, kernel)
        shapes[f"{name}.bias"] = (cout,)

    def norm(name: str, c: int) -> None:
        shapes[f"{name}.weight"] = (c,)
        shapes[f"{name}.bias"] = (c,)

    def resnet(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name: str, c: int) -> None:
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(name: str, c: int) -> None:
        resnet(f"{name}.block_1", c, c)
        attn(f"{name}.attn_1", c)
        resnet(f"{name}.block_2", c, c)

    widths = [ch * m for m in ch_mult]
    last = len(widths) - 1
    conv("encoder.conv_in", 3, ch, 3)
    previous = ch
    for level, width in enumerate(widths):
        for b in range(num_res_blocks):
            resnet(f"encoder.down.{level}.block.{b}", previous if b == 0 else width, width)
            if resolution >> level in attn_resolutions:
                attn(f"encoder.down.{level}.attn.{b}", width)
        if level != last:
            conv(f"encoder.down.{level}.downsample.conv", width, width, 3)
        previous = width
    mid("encoder.mid", widths[-1])
    norm("encoder.norm_out", widths[-1])
    conv("encoder.conv_out", widths[-1], z_channels, 3)

    conv("decoder.conv_in", z_channels, widths[-1], 3)
    mid("decoder.mid", widths[-1])
    previous = widths[-1]
    for level in range(last, -1, -1):
        width = widths[level]
        for b in range(num_res_blocks + 1):
            resnet(f"decoder.up.{level}.block.{b}", previous if b == 0 else width, width)
            if resolution >> level in attn_resolutions:
                attn(f"decoder.up.{level}.attn.{b}", width)
        if level != 0:
            conv(f"decoder.up.{level}.upsample.conv", width, width, 3)
        previous = width
    norm("decoder.norm_out", widths[0])
    conv("decoder.conv_out", widths[0], 3, 3)

    conv("quant_conv", z_channels, embed_dim, 1)
    conv("post_quant_conv", embed_dim, z_channels, 1)
    conv("quantize.proj", z_channels, n_embed, 1)
    shapes["quantize.embed.weight"] = (n_embed, embed_dim)
    return shapes


TINY_LAYOUT = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), resolution=32, z_channels=32,
                   embed_dim=32, n_embed=64)

TINY_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.GumbelVQ
  params:
    kl_weight: 1.0e-08
    embed_dim: 32
    n_embed: 64
    monitor: val/rec_loss
    temperature_scheduler_config:
      target: taming.lr_scheduler.LambdaWarmUpCosineScheduler
      params: {warm_up_steps: 0, max_decay_steps: 1000001, lr_start: 0.9, lr_max: 0.9, lr_min: 1.0e-06}
    ddconfig:
      double_z: false
      z_channels: 32
      resolution: 32
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult: [1, 2]
      num_res_blocks: 1
      attn_resolutions: [16]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.DummyLoss
"""

RELEASED_YAML = TINY_YAML.replace("embed_dim: 32", "embed_dim: 256").replace("n_embed: 64", "n_embed: 8192") \
    .replace("z_channels: 32", "z_channels: 256").replace("resolution: 32", "resolution: 256") \
    .replace("ch: 32", "ch: 128").replace("ch_mult: [1, 2]", "ch_mult: [1, 1, 2, 4]") \
    .replace("num_res_blocks: 1", "num_res_blocks: 2").replace("attn_resolutions: [16]", "attn_resolutions: [32]")

LOSS_KEYS = {"loss.discriminator.main.0.weight": (64, 3, 4, 4), "loss.perceptual_loss.net.slice1.0.bias": (64,),
             "loss.logvar": ()}


class NotATensor:
    """A pickled object of the kind a Lightning checkpoint carries (callbacks, hyper-parameters)."""

    def __init__(self) -> None:
        self.best = 0.5


def _random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=generator) for k, shape in layout.items()}


def _write_release(root: Path, state: dict[str, torch.Tensor], extra: dict | None = None,
                   yaml_text: str = TINY_YAML) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    (root / "configs").mkdir()
    checkpoint = {"epoch": 3, "global_step": 1000, "state_dict": state, **(extra or {})}
    torch.save(checkpoint, root / "checkpoints" / "last.ckpt")
    (root / "configs" / "model.yaml").write_text(yaml_text)
    return root


# ---------------------------------------------------------------------------------------------------------------
# The released geometry, on the meta device
# ---------------------------------------------------------------------------------------------------------------
def test_released_preset_has_every_released_key_with_its_shape() -> None:
    with torch.device("meta"):
        model = build_vqgan(VQGAN_GUMBEL_F8)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = released_layout()
    assert sorted(set(ours) - set(expected)) == [] and sorted(set(expected) - set(ours)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    assert sum(p.numel() for p in model.parameters()) == RELEASED_PARAMETERS
    assert sum(torch.Size(s).numel() for s in expected.values()) == RELEASED_PARAMETERS


def test_released_layout_spot_checks() -> None:
    layout = released_layout()
    assert layout["encoder.down.2.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert layout["encoder.down.3.attn.1.q.weight"] == (512, 512, 1, 1)
    assert layout["encoder.conv_out.weight"] == (256, 512, 3, 3)
    assert layout["decoder.up.3.attn.2.proj_out.weight"] == (512, 512, 1, 1)
    assert layout["decoder.up.2.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)
    assert layout["decoder.up.1.block.0.conv1.weight"] == (128, 256, 3, 3)
    assert layout["decoder.up.0.block.0.conv1.weight"] == (128, 128, 3, 3)
    assert layout["decoder.up.1.upsample.conv.weight"] == (128, 128, 3, 3)
    assert layout["quantize.proj.weight"] == (8192, 256, 1, 1)
    assert "decoder.up.0.upsample.conv.weight" not in layout and "encoder.down.3.downsample.conv.weight" not in layout
    assert "decoder.up.3.block.0.nin_shortcut.weight" not in layout and "encoder.down.2.attn.0.q.weight" not in layout


def test_released_yaml_reads_as_the_preset(tmp_path: Path) -> None:
    from ofa.vqgan import read_taming_yaml

    (tmp_path / "model.yaml").write_text(RELEASED_YAML)
    assert read_taming_yaml(tmp_path / "model.yaml") == VQGAN_GUMBEL_F8


# ---------------------------------------------------------------------------------------------------------------
# A synthetic checkpoint in the released layout (tiny geometry)
# ---------------------------------------------------------------------------------------------------------------
def test_synthetic_release_loads_strictly_every_way(tmp_path: Path) -> None:
    state = _random_state(released_layout(**TINY_LAYOUT))
    root = _write_release(tmp_path / "vqgan", {**state, **{k: torch.zeros(s) for k, s in LOSS_KEYS.items()}})
    checkpoint = root / "checkpoints" / "last.ckpt"
    yaml_path = root / "configs" / "model.yaml"
    for model in (load_vqgan(root), load_vqgan(checkpoint), load_vqgan(checkpoint, yaml_path),
                  load_vqgan(checkpoint, VQGAN_TEST)):
        assert model.config == VQGAN_TEST and not model.training
        loaded = model.state_dict()
        assert set(loaded) == set(state)
        assert all(torch.equal(loaded[k], v) for k, v in state.items())
    codes = model.encode(torch.zeros(1, 3, 8, 8))
    assert model.decode(codes).shape == (1, 3, 8, 8)


def test_bare_state_dict_file_with_explicit_config(tmp_path: Path) -> None:
    state = _random_state(released_layout(**TINY_LAYOUT))
    torch.save(state, tmp_path / "weights.pth")
    model = load_vqgan(tmp_path / "weights.pth", config=VQGAN_TEST)
    assert torch.equal(model.quantize.embed.weight, state["quantize.embed.weight"])
    with pytest.raises(CheckpointError, match="pass config="):
        load_vqgan(tmp_path / "weights.pth")


def test_extra_and_missing_keys_fail_when_strict(tmp_path: Path) -> None:
    state = _random_state(released_layout(**TINY_LAYOUT))
    extra = {**state, "encoder.down.0.block.0.temb_proj.weight": torch.zeros(32, 512)}
    _write_release(tmp_path / "extra", extra)
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder\.down\.0\.block\.0\.temb_proj\.weight"):
        load_vqgan(tmp_path / "extra")
    assert torch.equal(load_vqgan(tmp_path / "extra", strict=False).quant_conv.weight, state["quant_conv.weight"])

    missing = {k: v for k, v in state.items() if not k.startswith("decoder.mid.attn_1.")}
    _write_release(tmp_path / "missing", missing)
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.mid\.attn_1\.k\.bias"):
        load_vqgan(tmp_path / "missing")
    partial = load_vqgan(tmp_path / "missing", strict=False)
    assert torch.equal(partial.decoder.conv_in.weight, state["decoder.conv_in.weight"])
    assert partial.decoder.mid.attn_1.q.weight.device.type == "cpu"  # freshly initialised, not meta


@pytest.mark.parametrize(("layout", "names"), [
    ({**TINY_LAYOUT, "n_embed": 128}, ["quantize.embed.weight (checkpoint (128, 32), model (64, 32))",
                                       "quantize.proj.bias", "quantize.proj.weight"]),
    ({**TINY_LAYOUT, "ch": 64}, ["decoder.conv_in.bias (checkpoint (128,), model (64,))", "(128 more)"]),
])
def test_another_geometry_lists_mis_shaped_keys(tmp_path: Path, layout: dict, names: list[str]) -> None:
    _write_release(tmp_path / "other", _random_state(released_layout(**layout)))
    for strict in (True, False):
        with pytest.raises(CheckpointError, match="mis-shaped keys") as info:
            load_vqgan(tmp_path / "other", strict=strict)
        for name in names:
            assert name in str(info.value)


def test_pickled_objects_need_trust_pickle(tmp_path: Path) -> None:
    state = _random_state(released_layout(**TINY_LAYOUT))
    _write_release(tmp_path / "lightning", state, extra={"callbacks": {"checkpoint": NotATensor()}})
    with pytest.raises(CheckpointError, match=r"NotATensor.*trust_pickle=True"):
        load_vqgan(tmp_path / "lightning")
    model = load_vqgan(tmp_path / "lightning", trust_pickle=True)
    assert torch.equal(model.quantize.proj.weight, state["quantize.proj.weight"])


def test_unreadable_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vqgan(tmp_path / "nothing.ckpt", VQGAN_TEST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="last.ckpt"):
        load_vqgan(tmp_path / "empty")
    state = _random_state(released_layout(**TINY_LAYOUT))
    torch.save(state, tmp_path / "good.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "good.ckpt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_vqgan(tmp_path / "cut.ckpt", VQGAN_TEST)
    torch.save({"weights": [1, 2]}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="neither a 'state_dict'"):
        load_vqgan(tmp_path / "foreign.ckpt", VQGAN_TEST)


@pytest.mark.parametrize(("edit", "match"), [
    (("taming.models.vqgan.GumbelVQ", "taming.models.vqgan.VQModel"), r"VQModel.*GumbelVQ"),
    (("    n_embed: 64\n", "    n_embed: 64\n    remap: data/used.npy\n"), r"remap"),
    (("      dropout: 0.0\n", "      dropout: 0.0\n      tanh_out: true\n"), r"tanh_out"),
    (("      dropout: 0.0\n", "      dropout: 0.0\n      use_timestep: true\n"), r"use_timestep"),
    (("ch: 32", "ch: 48"), r"channels \(48\)"),
])
def test_unsupported_yaml_raises_config_error(tmp_path: Path, edit: tuple[str, str], match: str) -> None:
    assert edit[0] in TINY_YAML
    _write_release(tmp_path / "bad", _random_state(released_layout(**TINY_LAYOUT)),
                   yaml_text=TINY_YAML.replace(*edit))
    with pytest.raises(ConfigError, match=match):
        load_vqgan(tmp_path / "bad")


# ---------------------------------------------------------------------------------------------------------------
# Our own format
# ---------------------------------------------------------------------------------------------------------------
def test_save_pretrained_round_trip_is_bitwise(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_vqgan(VQGAN_TEST).eval()
    model.save_pretrained(tmp_path / "mine")
    payload = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert payload["format"] == "ofa-vqgan" and VQGANConfig.from_dict(payload["config"]) == VQGAN_TEST
    for loaded in (VQGAN.from_pretrained(tmp_path / "mine"), load_vqgan(tmp_path / "mine")):
        assert loaded.config == VQGAN_TEST
        original, restored = model.state_dict(), loaded.state_dict()
        assert set(original) == set(restored)
        assert all(torch.equal(original[k], restored[k]) for k in original)
        assert all(p.requires_grad for p in loaded.parameters())
    images = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode(images), model.encode(images))
        codes = model.encode(images)
        assert torch.equal(loaded.decode(codes), model.decode(codes))


def test_from_pretrained_rejects_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="config.json"):
        VQGAN.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else", "config": {}}))
    with pytest.raises(CheckpointError, match="something-else"):
        VQGAN.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "ofa-vqgan", "config": VQGAN_TEST.to_dict()}))
    with pytest.raises(CheckpointError, match="weights.pt"):
        VQGAN.from_pretrained(tmp_path)
