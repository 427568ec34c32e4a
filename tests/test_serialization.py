"""Our checkpoint directory layout (issue #16 item 1): ``model.safetensors``, sharded with an index past
``max_shard_size``, read without unpickling; the pre-0.3 ``model.pt`` layout still loads."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch

import ofa
from ofa.errors import CheckpointError
from ofa.serialization import SAFE_INDEX_NAME, read_weights, write_weights


def _assert_same_model(a: Any, b: Any) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        assert torch.equal(sb[key], value), key


def _nbytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.state_dict().values())


def test_the_tied_embedding_is_stored_once_and_comes_back_tied(test_model: Any, tmp_path: Path) -> None:
    test_model.save_pretrained(tmp_path)
    with safetensors.safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    aliases = json.loads(metadata["ofa.aliases"])
    assert aliases == {"decoder.embed_tokens.weight": "encoder.embed_tokens.weight",
                       "decoder.output_projection.weight": "encoder.embed_tokens.weight"}
    assert not keys & set(aliases) and metadata["format"] == "pt"
    state = read_weights(tmp_path)
    assert state["decoder.output_projection.weight"] is state["encoder.embed_tokens.weight"]
    loaded = ofa.load_checkpoint(tmp_path)
    assert loaded.decoder.output_projection.weight is loaded.encoder.embed_tokens.weight
    _assert_same_model(test_model, loaded)


def test_loading_a_safetensors_directory_never_unpickles(test_model: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    test_model.save_pretrained(tmp_path / "single")
    test_model.save_pretrained(tmp_path / "sharded", max_shard_size=_nbytes(test_model) // 3)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch.serialization, "load", refuse)
    for name in ("single", "sharded"):
        _assert_same_model(test_model, ofa.load_checkpoint(tmp_path / name))


def test_sharded_save_writes_an_index_like_transformers(test_model: Any, tmp_path: Path) -> None:
    limit = _nbytes(test_model) // 4
    test_model.save_pretrained(tmp_path, max_shard_size=limit)
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 4 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (tmp_path / "model.safetensors").exists()
    index = json.loads((tmp_path / SAFE_INDEX_NAME).read_text())
    assert set(index["weight_map"]) == set(test_model.state_dict())  # aliases listed too, as transformers does
    assert set(index["weight_map"].values()) == set(shards)
    stored = 0
    for name in shards:
        with safetensors.safe_open(str(tmp_path / name), framework="pt") as f:
            sizes = [f.get_slice(k).get_shape() for k in f.keys()]
            dtypes = [f.get_slice(k).get_dtype() for k in f.keys()]
        nbytes = sum(4 * torch.Size(s).numel() if d == "F32" else 8 * torch.Size(s).numel()
                     for s, d in zip(sizes, dtypes))
        assert nbytes <= limit or len(sizes) == 1  # a tensor larger than the limit gets a shard of its own
        stored += nbytes
    assert index["metadata"]["total_size"] == stored
    _assert_same_model(test_model, ofa.load_checkpoint(tmp_path))
    # saving again unsharded removes the shards and the index: never two disagreeing copies
    test_model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_a_missing_or_foreign_shard_is_named(test_model: Any, tmp_path: Path) -> None:
    test_model.save_pretrained(tmp_path, max_shard_size=_nbytes(test_model) // 3)
    second = tmp_path / "model-00002-of-00003.safetensors"
    data = second.read_bytes()
    second.unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors.*does not exist"):
        ofa.load_checkpoint(tmp_path)
    safetensors.torch.save_file({"other.weight": torch.zeros(2)}, str(second))
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors.*does not hold what"):
        ofa.load_checkpoint(tmp_path)
    second.write_bytes(data)
    index = tmp_path / SAFE_INDEX_NAME
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match="index.json.*not a readable safetensors index"):
        ofa.load_checkpoint(tmp_path)
    index.write_text(json.dumps({"weight_map": {"encoder.embed_tokens.weight": "../elsewhere.safetensors"}}))
    with pytest.raises(CheckpointError, match="elsewhere.*not a file in the directory"):
        ofa.load_checkpoint(tmp_path)


def test_damage_is_caught(test_model: Any, tmp_path: Path) -> None:
    test_model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    intact = path.read_bytes()
    flipped = bytearray(intact)
    flipped[-len(intact) // 3] ^= 0x04  # inside the tensor bytes, which safetensors itself does not check
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="model.safetensors.*damaged.*sha256"):
        ofa.load_checkpoint(tmp_path)
    path.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
        ofa.load_checkpoint(tmp_path)


def test_the_pre_0_3_layout_still_loads(test_model: Any, tmp_path: Path) -> None:
    test_model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(test_model.state_dict(), tmp_path / "model.pt")
    _assert_same_model(test_model, ofa.load_checkpoint(tmp_path))
    # saving over it replaces model.pt
    test_model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_a_safetensors_file_without_our_metadata_loads(test_model: Any, tmp_path: Path) -> None:
    """As another tool would write it: every key stored (the tied ones as copies), only ``format`` metadata."""
    test_model.save_pretrained(tmp_path)
    state = {k: v.clone() for k, v in test_model.state_dict().items()}
    safetensors.torch.save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    _assert_same_model(test_model, ofa.load_checkpoint(tmp_path))


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "5GB"])
def test_bad_shard_sizes_are_refused(test_model: Any, tmp_path: Path, size: Any) -> None:
    with pytest.raises(CheckpointError, match=f"max_shard_size must be a positive number of bytes, got {size!r}"):
        test_model.save_pretrained(tmp_path, max_shard_size=size)


def test_non_tensors_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="step \\(int\\)"):
        write_weights(tmp_path, {"w": torch.ones(2), "step": 3})  # type: ignore[dict-item]
