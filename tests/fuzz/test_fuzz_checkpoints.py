"""Fuzz: checkpoint files. A saved model directory (safetensors, and the pre-0.3 torch zip layout) and an official-layout (fairseq) file are truncated at random
offsets and have random bytes flipped; state dicts get wrong layouts (missing, extra, mis-shaped, non-tensor
entries); pickles carry globals (a class of this module, ``os.system``). ``load_checkpoint`` either returns a model
whose weights equal the saved ones exactly (a flip in bytes nothing reads), or raises a CheckpointError/ConfigError
naming the file or the key. Nothing pickled runs."""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from hypothesis import strategies as st

import ofa

RAN: list[str] = []


class Payload:
    """Unpickling this would record that code ran."""

    def __reduce__(self) -> Any:
        return (RAN.append, ("pickled code ran",))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, small_model: Any) -> dict[str, Any]:
    model = small_model
    root = tmp_path_factory.mktemp("fuzz-ckpt")
    model.save_pretrained(root / "pretrained")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # the pre-0.3 layout: the same config.json with the weights in a torch zip file
    shutil.copytree(root / "pretrained", root / "legacy")
    (root / "legacy" / "model.safetensors").unlink()
    torch.save(model.state_dict(), root / "legacy" / "model.pt")
    torch.save({"model": state, "args": None, "cfg": None, "criterion": None}, root / "fairseq.pt")
    return {"root": root, "state": state, "bytes": (root / "legacy" / "model.pt").read_bytes(),
            "safe_bytes": (root / "pretrained" / "model.safetensors").read_bytes(),
            "fairseq": (root / "fairseq.pt").read_bytes()}


@st.composite
def damage(draw: Any) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["truncate", "flip", "flip", "layout", "pickle", "config", "fairseq_truncate",
                                 "fairseq_flip", "safe_truncate", "safe_flip", "safe_flip", "safe_layout"]))
    if kind.endswith("truncate"):
        return kind, draw(st.floats(0.0, 1.0, exclude_max=True))
    if kind.endswith("flip"):
        return kind, draw(st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)),
                                   min_size=1, max_size=3))
    if kind == "layout":
        return kind, draw(st.sampled_from(["drop", "extra", "shape", "dtype", "non_tensor", "empty", "list",
                                           "nested"])), draw(st.integers(0, 10**6))
    if kind == "safe_layout":
        return kind, draw(st.sampled_from(["drop", "extra", "shape", "dtype", "empty"])), draw(st.integers(0, 10**6))
    if kind == "pickle":
        return kind, draw(st.sampled_from(["payload", "os_system", "namespace_payload"]))
    return kind, draw(st.sampled_from([b"", b"{", b"[]", b'{"format": "ofa-unified"}', b'{"config": 3}',
                                       b'{"format": "ofa-unified", "config": {"vocab_size": -1}}', b"\xff\xfe"]))


def test_checkpoint_files(fuzz: Any, profile: Any, saved: dict[str, Any], tmp_path: Path) -> None:
    directory = tmp_path / "ck"

    def body(case: tuple[Any, ...]) -> None:
        if directory.exists():
            shutil.rmtree(directory)
        kind = case[0]
        safe = kind.startswith("safe") or kind == "config"
        shutil.copytree(saved["root"] / ("pretrained" if safe else "legacy"), directory)
        weights = directory / ("model.safetensors" if safe else "model.pt")
        data = bytearray(saved["fairseq" if kind.startswith("fairseq") else "safe_bytes" if safe else "bytes"])
        target = tmp_path / "fairseq.pt" if kind.startswith("fairseq") else directory
        if kind == "fairseq_truncate":
            target.write_bytes(bytes(data[: int(case[1] * len(data))]))
        elif kind == "fairseq_flip":
            for where, mask in case[1]:
                data[int(where * len(data))] ^= mask
            target.write_bytes(bytes(data))
        elif kind in ("truncate", "safe_truncate"):
            weights.write_bytes(bytes(data[: int(case[1] * len(data))]))
        elif kind in ("flip", "safe_flip"):
            for where, mask in case[1]:
                data[int(where * len(data))] ^= mask
            weights.write_bytes(bytes(data))
        elif kind in ("layout", "safe_layout"):
            state = dict(saved["state"])
            keys = sorted(state)
            key = keys[case[2] % len(keys)]
            how = case[1]
            if how == "drop":
                del state[key]
            elif how == "extra":
                state["encoder.no_such.weight"] = torch.zeros(3)
            elif how == "shape":
                state[key] = torch.zeros(tuple(s + 1 for s in state[key].shape) or (1,))  # 0-dim: one element
            elif how == "dtype":
                state[key] = state[key].to(torch.complex64) if state[key].is_floating_point() else state[key].float()
            elif how == "non_tensor":
                state[key] = "not a tensor"
            elif how == "empty":
                state = {}
            if safe:
                safetensors.torch.save_file(state, str(weights))
            else:
                torch.save([state] if how == "list" else ({"model": {"model": state}} if how == "nested" else state),
                           weights)
        elif kind == "pickle":
            payload = {"payload": Payload(), "os_system": os.system,
                       "namespace_payload": {"args": Payload()}}[case[1]]
            state = dict(saved["state"])
            state["extra"] = payload  # type: ignore[assignment]
            with open(weights, "wb") as f:
                torch.save(state, f, pickle_protocol=pickle.HIGHEST_PROTOCOL)
        else:
            (directory / "config.json").write_bytes(case[1])
        try:
            model = ofa.load_checkpoint(target)
        except Exception as exc:  # noqa: BLE001 - the property decides
            fuzz.expect(exc, str(target), weights.name, "config.json")
            return
        finally:
            assert RAN == [], "loading ran pickled code"
        loaded = model.state_dict()
        assert loaded.keys() == saved["state"].keys()
        changed = [k for k, v in loaded.items() if not torch.equal(v, saved["state"][k])]
        assert changed == [], f"{kind}: loaded silently with changed weights {changed[:5]}"

    fuzz.run("checkpoint_files", profile, 30, damage(), body)


def test_zip_entries_are_all_checked(saved: dict[str, Any], tmp_path: Path) -> None:
    """Every entry of our weights file is covered by the CRC check (no entry torch reads is stored unchecked)."""
    path = tmp_path / "model.pt"
    path.write_bytes(saved["bytes"])
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None and all(info.CRC for info in archive.infolist() if info.file_size)
