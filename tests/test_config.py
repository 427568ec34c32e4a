"""Tests for ofa.config and the size presets of ofa.builders: sizes against the spec, round trips, validation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import ofa
from ofa.builders import OFA_TEST, PRESETS
from ofa.config import OFAConfig, ResNetConfig, with_overrides
from ofa.errors import ConfigError, OFAError
from ofa.nn.rel_pos import decoder_image_position_ids, image_bucket_index, token_rel_positions

SPEC_KEYS = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "OFA_base_state_dict_keys.tsv"

# The 7 buffers official checkpoints carry but our modules derive from the config (spec §7.2).
DERIVED_BUFFERS = ("encoder.version", "encoder.token_rp_bucket", "encoder.image_rp_bucket", "decoder.version",
                   "decoder.token_rp_bucket", "decoder.image_rp_bucket", "decoder.image_position_idx")

# Spec §1.1, "Params, computed" (millions, tied embedding counted once, no buffers); base is exact.
SPEC_PARAMS_M = {"ofa-tiny": 33.49, "ofa-medium": 92.89, "ofa-large": 472.98, "ofa-huge": 929.49}
SPEC_RESNET_M = {"ofa-tiny": 8.54, "ofa-medium": 27.54, "ofa-base": 27.54, "ofa-large": 43.18, "ofa-huge": 43.18}
SPEC_EMBED_M = {"ofa-tiny": 15.22, "ofa-medium": 30.44, "ofa-base": 45.66, "ofa-large": 60.88, "ofa-huge": 76.10}
SPEC_KEY_COUNTS = {"ofa-tiny": 543, "ofa-medium": 849, "ofa-base": 967, "ofa-large": 1627, "ofa-huge": 1903}


def _meta_model(name: str) -> ofa.OFAModel:
    with torch.device("meta"):
        return ofa.build_model(name)


def test_ofa_base_parameter_count_is_exact() -> None:
    assert _meta_model("ofa-base").num_parameters() == 182_238_536


@pytest.mark.parametrize("name", sorted(SPEC_PARAMS_M))
def test_preset_parameter_counts_match_spec(name: str) -> None:
    # The spec prints millions with 2 decimals (4-5 significant figures); compare at that precision.
    assert round(_meta_model(name).num_parameters() / 1e6, 2) == SPEC_PARAMS_M[name]


@pytest.mark.parametrize("name", sorted(SPEC_RESNET_M))
def test_preset_resnet_and_embedding_sizes_match_spec(name: str) -> None:
    model = _meta_model(name)
    resnet = sum(p.numel() for p in model.encoder.embed_images.parameters())
    assert round(resnet / 1e6, 2) == SPEC_RESNET_M[name]
    assert round(model.encoder.embed_tokens.weight.numel() / 1e6, 2) == SPEC_EMBED_M[name]


@pytest.mark.parametrize("name", sorted(SPEC_KEY_COUNTS))
def test_preset_state_dict_key_counts_match_spec(name: str) -> None:
    keys = _meta_model(name).state_dict().keys()
    assert not set(keys) & set(DERIVED_BUFFERS)
    assert len(keys) + len(DERIVED_BUFFERS) == SPEC_KEY_COUNTS[name]


def test_build_under_meta_device_allocates_nothing() -> None:
    model = _meta_model("ofa-huge")
    assert all(t.is_meta for t in model.parameters())
    assert all(t.is_meta for t in model.buffers())
    # share_all_embeddings: one [V, D] matrix for encoder input, decoder input and output projection.
    assert model.decoder.embed_tokens.weight is model.encoder.embed_tokens.weight
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight
    assert model.decoder.output_projection.bias is None


def _derived_buffer_shapes(config: OFAConfig) -> dict[str, tuple[int, ...]]:
    pos = torch.arange(1024)  # the reference always builds the text table for 1024 positions
    ids = torch.arange(config.num_image_positions)
    token = tuple(token_rel_positions(pos, pos, config.token_bucket_size).shape)
    image = tuple(image_bucket_index(ids, ids, config.image_bucket_size).shape)
    index = tuple(decoder_image_position_ids(config.code_grid_size, config.image_bucket_size).shape)
    shapes = {}
    for stack in ("encoder", "decoder"):
        shapes[f"{stack}.version"] = (1,)
        shapes[f"{stack}.token_rp_bucket"] = token
        shapes[f"{stack}.image_rp_bucket"] = image
    shapes["decoder.image_position_idx"] = index
    return shapes


def _spec_shape(text: str) -> tuple[int, ...]:
    return () if text == "scalar" else tuple(int(n) for n in text.split("x"))


def test_ofa_base_keys_and_shapes_equal_spec_tsv() -> None:
    if not SPEC_KEYS.is_file():
        pytest.skip(f"{SPEC_KEYS} is absent")
    with SPEC_KEYS.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    spec = {row["key"]: _spec_shape(row["shape"]) for row in rows}
    assert len(spec) == 967
    model = _meta_model("ofa-base")
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    ours.update(_derived_buffer_shapes(model.config))
    assert sorted(set(spec) - set(ours)) == []
    assert sorted(set(ours) - set(spec)) == []
    assert {k: (ours[k], spec[k]) for k in spec if ours[k] != spec[k]} == {}
    # dtypes: every learned weight is float, BatchNorm counters are int64.
    state = model.state_dict()
    for row in rows:
        if row["key"] in state:
            expected = torch.int64 if row["dtype"] == "int64" else torch.float32
            assert state[row["key"]].dtype == expected, row["key"]


@pytest.mark.parametrize("name", list(PRESETS))
def test_to_dict_from_dict_round_trip(name: str) -> None:
    config = PRESETS[name]
    data = json.loads(json.dumps(config.to_dict()))  # must survive JSON (config.json)
    assert OFAConfig.from_dict(data) == config


def test_round_trip_without_image_stem() -> None:
    config = with_overrides(OFA_TEST, {"resnet": None})
    assert config.resnet is None
    assert OFAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    model = ofa.build_model("ofa-test", resnet=None)
    assert model.encoder.embed_images is None


def test_list_models_and_name_normalisation() -> None:
    assert set(ofa.list_models()) == {"ofa-test", "ofa-tiny", "ofa-medium", "ofa-base", "ofa-large", "ofa-huge"}
    with torch.device("meta"):
        assert ofa.build_model("OFA_Tiny").config == PRESETS["ofa-tiny"]


@pytest.mark.parametrize("build", [
    lambda: OFAConfig.from_dict({"embed_dim": 64, "num_heads": 4, "bogus_key": 1}),
    lambda: with_overrides(OFA_TEST, {"bogus_key": 1}),
    lambda: ofa.build_model("ofa-test", bogus_key=1),
], ids=["from_dict", "with_overrides", "build_model"])
def test_unknown_config_key_is_named_with_the_valid_ones(build) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert "bogus_key" in message
    assert "valid keys" in message
    for valid in ("embed_dim", "num_heads", "dropout", "resnet"):
        assert valid in message


def test_unknown_resnet_key_is_named() -> None:
    with pytest.raises(ConfigError, match="depth.*valid keys.*width"):
        ofa.build_model("ofa-test", resnet={"depth": 3})
    with pytest.raises(ConfigError, match="depth"):
        OFAConfig(resnet={"depth": 3})


def test_unknown_model_name_lists_presets() -> None:
    with pytest.raises(ConfigError, match="ofa-gigantic.*ofa-base"):
        ofa.build_model("ofa-gigantic")


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"embed_dim": 30, "num_heads": 4}, r"embed_dim \(30\) must be divisible by num_heads \(4\)"),
    ({"dropout": -0.1}, r"dropout \(-0.1\)"),
    ({"attention_dropout": 1.0}, r"attention_dropout \(1.0\)"),
    ({"encoder_drop_path_rate": 1.5}, r"encoder_drop_path_rate \(1.5\)"),
    ({"resnet": "resnet18"}, r"resnet18.*resnet50"),
    ({"num_heads": 0}, r"num_heads \(0\)"),
    ({"encoder_layers": 0}, r"encoder_layers \(0\)"),
    ({"vocab_size": -5}, r"vocab_size \(-5\)"),
    ({"pad_id": 5000}, r"pad_id \(5000\)"),
    ({"code_image_size": 100}, r"code_image_size \(100\)"),
    ({"token_bucket_size": 4096}, r"token_bucket_size \(4096\)"),
    ({"attn_scale_factor": 0.0}, r"attn_scale_factor \(0.0\)"),
    ({"share_all_embeddings": False}, r"share_all_embeddings"),
    ({"activation_fn": "relu"}, r"activation_fn"),
    ({"embed_dim": "32"}, r"embed_dim \('32'\) must be an integer"),
    ({"embed_dim": 32.0}, r"embed_dim \(32.0\) must be an integer"),
    ({"num_heads": True}, r"num_heads \(True\) must be an integer"),
    ({"dropout": "0.1"}, r"dropout \('0.1'\) must be a number"),
    ({"scale_attn": "yes"}, r"scale_attn \('yes'\) must be True or False"),
    ({"resnet": 50}, r"resnet \(50\)"),
    ({"resnet": {"layers": (3, 4)}}, r"layers"),
    ({"resnet": {"width": 0}}, r"width \(0\)"),
    ({"resnet": {"drop_path_rate": -1.0}}, r"drop_path_rate \(-1.0\)"),
    ({"resnet": {"layers": (1, 1, 1.5)}}, r"layers \(1.5\) must be an integer"),
])
def test_invalid_values_raise_config_error_naming_them(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        with_overrides(OFA_TEST, overrides)


def test_config_error_is_a_value_error_and_an_ofa_error() -> None:
    with pytest.raises(ValueError):
        with_overrides(OFA_TEST, {"dropout": 2.0})
    with pytest.raises(OFAError):
        with_overrides(OFA_TEST, {"dropout": 2.0})


def test_resnet_dict_override_keeps_the_preset_backbone() -> None:
    config = with_overrides(OFA_TEST, {"resnet": {"drop_path_rate": 0.2}})
    assert config.resnet == ResNetConfig(layers=(1, 1, 1), width=8, drop_path_rate=0.2)
    assert with_overrides(OFA_TEST, {"resnet": "resnet152"}).resnet.layers == (3, 8, 36)


def test_config_is_frozen_and_derived_sizes() -> None:
    config = PRESETS["ofa-base"]
    with pytest.raises(AttributeError):
        config.embed_dim = 1  # type: ignore[misc]
    assert config.head_dim == 64
    assert config.scaling == pytest.approx(128**-0.5)  # (head_dim * attn_scale_factor) ** -0.5
    assert config.code_grid_size == 16
    assert config.num_image_positions == 1765
    assert config.max_image_size == 672
    assert config.resnet.out_channels == 1024
    assert ResNetConfig.named("resnet101").layers == (3, 4, 23)
    assert PRESETS["ofa-huge"].head_dim == 80
