"""Tests for ofa.checkpoint: our format, HF-format ports, official fairseq files, safe unpickling, bad files."""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

import ofa
from ofa.checkpoint import FORMAT_NAME, read_checkpoint
from ofa.errors import CheckpointError, ConfigError
from ofa.nn.rel_pos import decoder_image_position_ids, image_bucket_index, token_rel_positions
from ofa.serialization import read_weights

PAD = 1


@pytest.fixture
def inputs(test_model: Any) -> dict[str, torch.Tensor]:
    vocab = test_model.config.vocab_size
    src = torch.randint(4, vocab, (2, 6))
    src[1, 4:] = PAD
    prev = torch.randint(4, vocab, (2, 5))
    prev[:, 0] = 0
    return {"src_tokens": src, "prev_output_tokens": prev, "patch_images": torch.randn(2, 3, 32, 48)}


def _logits(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _official_state(model: Any, derived: bool = False) -> dict[str, torch.Tensor]:
    """Our state dict (official key names), plus the 7 buffers real checkpoints carry when ``derived``."""
    state = dict(model.state_dict())
    if derived:
        config = model.config
        pos = torch.arange(1024)
        ids = torch.arange(config.num_image_positions)
        for stack in ("encoder", "decoder"):
            state[f"{stack}.version"] = torch.tensor([3.0])
            state[f"{stack}.token_rp_bucket"] = token_rel_positions(pos, pos, config.token_bucket_size)
            state[f"{stack}.image_rp_bucket"] = image_bucket_index(ids, ids, config.image_bucket_size)
        state["decoder.image_position_idx"] = decoder_image_position_ids(config.code_grid_size,
                                                                         config.image_bucket_size)
    return state


def _save_fairseq(path: Path, state: dict[str, torch.Tensor], **extra: Any) -> Path:
    torch.save({"model": state, "args": None, "cfg": None, "criterion": None, **extra}, path)
    return path


# -- our own format --------------------------------------------------------------------------------------------
def test_from_pretrained_is_a_deprecated_alias_of_load_checkpoint(test_model: Any, tmp_path: Path) -> None:
    test_model.save_pretrained(tmp_path / "run")
    with pytest.warns(DeprecationWarning, match="ofa.load_checkpoint"):
        loaded = ofa.OFAModel.from_pretrained(tmp_path / "run")
    for key, value in test_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_save_pretrained_round_trip_is_bitwise(test_model: Any, inputs: dict, tmp_path: Path) -> None:
    test_model.save_pretrained(tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == ["config.json", "model.safetensors"]
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["format"] == FORMAT_NAME
    loaded = ofa.load_checkpoint(tmp_path / "run")
    assert isinstance(loaded, ofa.OFAModel) and not loaded.training
    assert loaded.config == test_model.config
    assert loaded.decoder.output_projection.weight is loaded.encoder.embed_tokens.weight  # still tied
    assert loaded.decoder.embed_tokens is loaded.encoder.embed_tokens
    assert loaded.num_parameters() == test_model.num_parameters()
    original, reloaded = test_model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[k], reloaded[k]) for k in original)
    assert torch.equal(_logits(loaded, inputs), _logits(test_model, inputs))
    assert read_checkpoint(tmp_path / "run")[2] == FORMAT_NAME


def test_load_options_dtype_backend_and_overrides(test_model: Any, tmp_path: Path) -> None:
    test_model.save_pretrained(tmp_path)
    loaded = ofa.load_checkpoint(tmp_path, dtype=torch.bfloat16, attention_backend="eager", dropout=0.3)
    assert loaded.encoder.embed_tokens.weight.dtype == torch.bfloat16
    assert loaded.attention_backend == "eager"
    assert loaded.config.dropout == 0.3
    with pytest.raises(ConfigError, match="bogus"):
        ofa.load_checkpoint(tmp_path, bogus=1)


# -- HF-format ports (spec §7.4) --------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "model."], ids=["standalone", "wrapped"])
def test_hf_directory_round_trip(test_model: Any, inputs: dict, tmp_path: Path, prefix: str, hf: Any) -> None:
    hf_state = hf.to_hf_names(_official_state(test_model, derived=True), prefix)
    assert prefix + "decoder.layers.0.cross_attn.q_proj.weight" in hf_state
    assert prefix + "decoder.layers.1.cross_attn_layer_norm.bias" in hf_state
    assert prefix + "encoder.layers.0.self_attn_mid_layer_norm.weight" in hf_state
    assert prefix + "decoder.layers.0.ffn_layer_norm.weight" in hf_state
    assert not any("encoder_attn" in k or "ffn_layernorm" in k or k.endswith(".version") for k in hf_state)
    (tmp_path / "config.json").write_text(json.dumps(hf.config(test_model.config)))
    torch.save(hf_state, tmp_path / "pytorch_model.bin")
    assert read_checkpoint(tmp_path)[2] == "hf"
    loaded = ofa.load_checkpoint(tmp_path)
    assert loaded.decoder.output_projection.weight is loaded.encoder.embed_tokens.weight
    assert torch.equal(_logits(loaded, inputs), _logits(test_model, inputs))


def test_hf_state_dict_file_is_recognised(test_model: Any, inputs: dict, tmp_path: Path, hf: Any) -> None:
    path = tmp_path / "ofa_hf.pt"
    torch.save(hf.to_hf_names(_official_state(test_model), "model."), path)
    assert read_checkpoint(path)[2] == "hf"
    assert torch.equal(_logits(ofa.load_checkpoint(path), inputs), _logits(test_model, inputs))


def test_hf_config_contradicting_shapes_raises(test_model: Any, tmp_path: Path, hf: Any) -> None:
    (tmp_path / "config.json").write_text(json.dumps(hf.config(test_model.config, encoder_attention_heads=8)))
    torch.save(hf.to_hf_names(_official_state(test_model)), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="encoder_attention_heads=8"):
        ofa.load_checkpoint(tmp_path)


# -- official fairseq files ---------------------------------------------------------------------------------------
def test_fairseq_file_with_derived_buffers(test_model: Any, inputs: dict, tmp_path: Path) -> None:
    state = _official_state(test_model, derived=True)
    assert len(state) == len(test_model.state_dict()) + 7
    path = _save_fairseq(tmp_path / "ckpt.pt", state, args=argparse.Namespace(dropout=0.0, patch_image_size=64))
    assert read_checkpoint(path)[2] == "fairseq"
    loaded = ofa.load_checkpoint(path)
    assert loaded.config.patch_image_size == 64
    assert torch.equal(_logits(loaded, inputs), _logits(test_model, inputs))


def test_half_precision_file_loads_into_fp32(test_model: Any, inputs: dict, tmp_path: Path) -> None:
    state = {k: v.half() if v.is_floating_point() else v for k, v in _official_state(test_model).items()}
    loaded = ofa.load_checkpoint(_save_fairseq(tmp_path / "fp16.pt", state))
    assert loaded.encoder.embed_tokens.weight.dtype == torch.float32
    assert torch.equal(loaded.encoder.embed_tokens.weight, state["encoder.embed_tokens.weight"].float())
    torch.testing.assert_close(_logits(loaded, inputs), _logits(test_model, inputs), atol=0.1, rtol=0.05)


def test_bare_state_dict_file(test_model: Any, inputs: dict, tmp_path: Path) -> None:
    torch.save(_official_state(test_model), tmp_path / "bare.pt")
    assert torch.equal(_logits(ofa.load_checkpoint(tmp_path / "bare.pt"), inputs), _logits(test_model, inputs))



# -- safe unpickling ----------------------------------------------------------------------------------------------
def _foreign_class(module: str, name: str) -> type:
    cls = type(name, (), {})
    cls.__module__ = module
    cls.__qualname__ = name
    return cls


@contextlib.contextmanager
def _importable(*classes: type) -> Iterator[None]:
    """Make classes of made-up modules picklable (for ``torch.save``), then remove the modules again."""
    added = []
    for cls in classes:
        parts = cls.__module__.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        setattr(sys.modules[cls.__module__], cls.__qualname__, cls)
    try:
        yield
    finally:
        for name in reversed(added):
            del sys.modules[name]


def _require_absent(*modules: str) -> None:
    present = [m for m in modules if m in sys.modules]
    if present:
        pytest.skip(f"the real {present} is imported; the fake classes would shadow it")


def test_fairseq_config_object_loads_without_trust_pickle(test_model: Any, inputs: dict, tmp_path: Path) -> None:
    _require_absent("fairseq")
    config_cls = _foreign_class("fairseq.dataclass.configs", "FairseqConfig")
    backend = enum.Enum("DDP_BACKEND_CHOICES", {"c10d": "c10d", "no_c10d": "no_c10d"},
                        module="fairseq.dataclass.constants")
    backend.__qualname__ = "DDP_BACKEND_CHOICES"
    cfg = config_cls()
    cfg.common = {"seed": 7}
    cfg.distributed_training = {"ddp_backend": backend.c10d}
    cfg.model = {"encoder_attention_heads": 2, "dropout": 0.25, "attn_scale_factor": 2, "resnet_drop_path_rate": 0.0}
    cfg.task = {"patch_image_size": 96, "num_bins": 1000}
    path = tmp_path / "fairseq_cfg.pt"
    with _importable(config_cls, backend):
        _save_fairseq(path, _official_state(test_model, derived=True), cfg=cfg)
    assert "fairseq" not in sys.modules and "fairseq.dataclass.configs" not in sys.modules
    loaded = ofa.load_checkpoint(path)
    assert loaded.config.dropout == 0.25
    assert loaded.config.patch_image_size == 96
    assert torch.equal(_logits(loaded, inputs), _logits(test_model, inputs))
    assert "fairseq" not in sys.modules  # nothing was imported to read it


def test_omegaconf_style_container_loads_without_trust_pickle(test_model: Any, tmp_path: Path) -> None:
    _require_absent("omegaconf")
    dict_config = _foreign_class("omegaconf.dictconfig", "DictConfig")
    any_node = _foreign_class("omegaconf.nodes", "AnyNode")

    def container(data: dict[str, Any], parent: Any = None) -> Any:
        obj = dict_config()
        content = {}
        for key, value in data.items():
            if isinstance(value, dict):
                content[key] = container(value, obj)
            else:
                node = any_node()
                node.__dict__.update({"_val": value, "_metadata": None, "_parent": obj})
                content[key] = node
        obj.__dict__.update({"_content": content, "_metadata": None, "_parent": parent})
        return obj

    cfg = container({"common": {"fp16": True}, "model": {"dropout": 0.15, "encoder_layers": 2},
                     "task": {"patch_image_size": 128}})
    path = tmp_path / "omegaconf_cfg.pt"
    with _importable(dict_config, any_node):
        _save_fairseq(path, _official_state(test_model), cfg=cfg)
    loaded = ofa.load_checkpoint(path)
    assert (loaded.config.dropout, loaded.config.patch_image_size) == (0.15, 128)


class UntrustedConfig:
    """Not from an allowlisted module: unpickling it would import (and may run) this test module's code."""

    def __init__(self) -> None:
        self.dropout = 0.2


def test_non_allowlisted_class_needs_trust_pickle(test_model: Any, inputs: dict, tmp_path: Path) -> None:
    path = _save_fairseq(tmp_path / "untrusted.pt", _official_state(test_model), extra_state=UntrustedConfig())
    with pytest.raises(CheckpointError, match="UntrustedConfig.*trust_pickle=True"):
        ofa.load_checkpoint(path)
    loaded = ofa.load_checkpoint(path, trust_pickle=True)
    assert torch.equal(_logits(loaded, inputs), _logits(test_model, inputs))


def test_legacy_non_zip_file_needs_trust_pickle(test_model: Any, inputs: dict, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"model": _official_state(test_model)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="trust_pickle"):
        ofa.load_checkpoint(path)
    assert torch.equal(_logits(ofa.load_checkpoint(path, trust_pickle=True), inputs), _logits(test_model, inputs))


# -- keys that do not fit -----------------------------------------------------------------------------------------
def test_missing_keys_are_listed(test_model: Any, tmp_path: Path) -> None:
    state = _official_state(test_model)
    del state["decoder.layers.1.fc2.bias"]
    del state["encoder.layers.0.self_attn.c_attn"]
    with pytest.raises(CheckpointError, match="missing keys") as info:
        ofa.load_checkpoint(_save_fairseq(tmp_path / "m.pt", state))
    assert "decoder.layers.1.fc2.bias" in str(info.value)
    assert "encoder.layers.0.self_attn.c_attn" in str(info.value)


def test_unexpected_keys_are_listed(test_model: Any, tmp_path: Path) -> None:
    state = _official_state(test_model)
    state["encoder.adapter.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="unexpected keys: encoder.adapter.weight"):
        ofa.load_checkpoint(_save_fairseq(tmp_path / "u.pt", state))


def test_mis_shaped_keys_are_listed(test_model: Any, tmp_path: Path) -> None:
    state = _official_state(test_model)
    state["decoder.layer_norm.weight"] = torch.ones(31)
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: decoder.layer_norm.weight \(checkpoint \(31,\), "
                                              r"model \(32,\)\)"):
        ofa.load_checkpoint(_save_fairseq(tmp_path / "s.pt", state))


def test_all_three_problems_in_one_message(test_model: Any, tmp_path: Path) -> None:
    state = _official_state(test_model)
    del state["encoder.layer_norm.bias"]
    state["decoder.extra"] = torch.zeros(1)
    state["decoder.layers.0.fc1.bias"] = torch.zeros(65)
    with pytest.raises(CheckpointError) as info:
        ofa.load_checkpoint(_save_fairseq(tmp_path / "all.pt", state))
    message = str(info.value)
    for fragment in ("missing keys: encoder.layer_norm.bias", "unexpected keys: decoder.extra",
                     "mis-shaped keys: decoder.layers.0.fc1.bias"):
        assert fragment in message


def test_num_batches_tracked_may_be_absent(test_model: Any, inputs: dict, tmp_path: Path) -> None:
    state = {k: v for k, v in _official_state(test_model).items() if not k.endswith("num_batches_tracked")}
    loaded = ofa.load_checkpoint(_save_fairseq(tmp_path / "frozen.pt", state))
    assert torch.equal(_logits(loaded, inputs), _logits(test_model, inputs))


def test_classification_heads_are_ignored(test_model: Any, inputs: dict, tmp_path: Path) -> None:
    state = _official_state(test_model)
    state["classification_heads.snli.dense.weight"] = torch.zeros(4, 32)
    loaded = ofa.load_checkpoint(_save_fairseq(tmp_path / "heads.pt", state))
    assert torch.equal(_logits(loaded, inputs), _logits(test_model, inputs))


@pytest.mark.parametrize("key", ["encoder.token_rp_bucket", "decoder.token_rp_bucket", "encoder.image_rp_bucket"])
def test_corrupted_bucket_buffer_raises(test_model: Any, tmp_path: Path, key: str) -> None:
    state = _official_state(test_model, derived=True)
    state[key] = state[key].clone()
    state[key][5, 7] += 1
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        ofa.load_checkpoint(_save_fairseq(tmp_path / "bucket.pt", state))


def test_image_position_idx_of_no_square_grid_raises(test_model: Any, tmp_path: Path) -> None:
    state = _official_state(test_model, derived=True)
    state["decoder.image_position_idx"] = torch.zeros(1000, dtype=torch.long)
    with pytest.raises(CheckpointError, match="image_position_idx has 1000 entries"):
        ofa.load_checkpoint(_save_fairseq(tmp_path / "idx.pt", state))


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"args": argparse.Namespace(encoder_attention_heads=8)}, "encoder_attention_heads=8"),
    ({"args": argparse.Namespace(encoder_embed_dim=768)}, "encoder_embed_dim=768"),
    ({"args": argparse.Namespace(resnet_type="resnet101")}, "resnet_type=resnet101"),
    ({"cfg": {"model": {"encoder_layers": 3}, "task": {}}}, "encoder_layers=3"),
    ({"cfg": {"model": {"decoder_layers": 6}}}, "decoder_layers=6"),
])
def test_stored_config_contradicting_the_shapes_raises(test_model: Any, tmp_path: Path, extra: dict,
                                                       fragment: str) -> None:
    path = _save_fairseq(tmp_path / "contradiction.pt", _official_state(test_model), **extra)
    with pytest.raises(CheckpointError, match=fragment):
        ofa.load_checkpoint(path)


# -- unreadable files ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trust_pickle", [False, True])
def test_truncated_file_raises(test_model: Any, tmp_path: Path, trust_pickle: bool) -> None:
    full = _save_fairseq(tmp_path / "full.pt", _official_state(test_model)).read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        ofa.load_checkpoint(path, trust_pickle=trust_pickle)


def _random_bytes(path: Path) -> None:
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
                     .numpy().tobytes())


@pytest.mark.parametrize(("name", "write", "fragment"), [
    ("random.bin", _random_bytes, "not a torch checkpoint"),
    ("config.json", lambda p: p.write_text(json.dumps({"d_model": 32})), "not a torch checkpoint"),
    ("list.pt", lambda p: torch.save([torch.zeros(2), 3], p), "holds a list"),
    ("tensor.pt", lambda p: torch.save(torch.zeros(2), p), "holds a Tensor"),
    ("other.pt", lambda p: torch.save({"weights": [1, 2]}, p), "not an OFA checkpoint"),
    ("empty.pt", lambda p: torch.save({}, p), "not an OFA checkpoint"),
    ("no_model.pt", lambda p: torch.save({"model": {"foo.weight": torch.zeros(1)}}, p), "encoder.embed_tokens"),
])
def test_foreign_file_raises(tmp_path: Path, name: str, write: Any, fragment: str) -> None:
    path = tmp_path / name
    write(path)
    with pytest.raises(CheckpointError, match=fragment):
        ofa.load_checkpoint(path)


def test_missing_path_and_empty_directory_raise(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        ofa.load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="holds no weights"):
        ofa.load_checkpoint(tmp_path)


def _to_legacy_layout(directory: Path) -> Path:
    """Rewrite a save_pretrained directory in the pre-0.3 layout (``model.pt``); return the weights file."""
    state = read_weights(directory)
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "model.pt")
    return directory / "model.pt"


def test_directory_of_our_format_holding_a_list_raises(test_model: Any, tmp_path: Path) -> None:
    test_model.save_pretrained(tmp_path)
    _to_legacy_layout(tmp_path)
    torch.save([1, 2], tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        ofa.load_checkpoint(tmp_path)


def _flip_tensor_byte(path: Path) -> str:
    """Flip one byte in the middle of the largest entry of a torch zip file; return the entry's name."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return info.filename


@pytest.mark.parametrize("trust_pickle", [False, True])
def test_a_flipped_byte_inside_a_tensor_is_caught_by_the_crc(test_model: Any, tmp_path: Path,
                                                             trust_pickle: bool) -> None:
    """#14 item 7: torch's zip reader checks no CRC, so this used to load silently with one weight changed."""
    test_model.save_pretrained(tmp_path / "ck")
    entry = _flip_tensor_byte(_to_legacy_layout(tmp_path / "ck"))
    with pytest.raises(CheckpointError, match=f"model.pt.*damaged.*{entry}.*CRC"):
        ofa.load_checkpoint(tmp_path / "ck", trust_pickle=trust_pickle)
    path = _save_fairseq(tmp_path / "fairseq.pt", _official_state(test_model))
    _flip_tensor_byte(path)
    with pytest.raises(CheckpointError, match="fairseq.pt.*CRC"):
        ofa.load_checkpoint(path, trust_pickle=trust_pickle)
    from ofa.serialization import read_torch_file

    with pytest.raises(CheckpointError, match="fairseq.pt.*CRC"):
        read_torch_file(path, trust_pickle=trust_pickle)
