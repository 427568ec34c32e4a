"""Bad inputs to the public model API raise a clear ``ofa.errors`` exception that names the bad value.

Covers OFAModel.encode / decode / init_cache / decode_step, build_model and load_checkpoint. (Bad boxes belong
to the tokenization tests.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import ofa
from ofa.errors import CheckpointError, ConfigError, InputError, OFAError

V = 1024  # vocab_size of ofa-test
B = 2


@pytest.fixture(scope="module")
def model() -> Any:
    torch.manual_seed(0)
    return ofa.build_model("ofa-test").eval()


def _src(rows: int = B, length: int = 5) -> torch.Tensor:
    return torch.randint(4, V, (rows, length))


def _images(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype) if dtype == torch.uint8 else torch.randn(shape, dtype=dtype)


def _encoded(model: Any) -> Any:
    return model.encode(_src())


Case = Callable[[Any], Any]

CASES: dict[str, tuple[Case, type[Exception], str]] = {
    # images
    "image 8x8": (lambda m: m.encode(_src(), _images(B, 3, 8, 8)), InputError, r"8x8 pixels.*16\.\.672"),
    "image 1024x1024": (lambda m: m.encode(_src(), _images(B, 3, 1024, 1024)), InputError, "1024x1024"),
    "image 688 wide": (lambda m: m.encode(_src(), _images(B, 3, 32, 688)), InputError, "32x688"),
    "image uint8": (lambda m: m.encode(_src(), _images(B, 3, 32, 32, dtype=torch.uint8)), InputError, "uint8"),
    "image 1 channel": (lambda m: m.encode(_src(), _images(B, 1, 32, 32)), InputError, r"\(2, 1, 32, 32\)"),
    "image 4 channels": (lambda m: m.encode(_src(), _images(B, 4, 32, 32)), InputError, r"\(2, 4, 32, 32\)"),
    "image 3-D": (lambda m: m.encode(_src(), _images(3, 32, 32)), InputError, r"\(3, 32, 32\)"),
    "image list": (lambda m: m.encode(_src(), [[0.0]]), InputError, "list"),
    # token ids
    "src id negative": (lambda m: m.encode(torch.tensor([[0, -1, 2]])), InputError, r"token id -1.*\[0, 1024\)"),
    "src id == vocab": (lambda m: m.encode(torch.tensor([[0, V, 2]])), InputError, r"token id 1024.*\[0, 1024\)"),
    "src id huge": (lambda m: m.encode(torch.tensor([[0, 10**9]])), InputError, "token id 1000000000"),
    "src float": (lambda m: m.encode(_src().float()), InputError, "float32"),
    "src bool": (lambda m: m.encode(torch.ones(1, 3, dtype=torch.bool)), InputError, "bool"),
    "src list": (lambda m: m.encode([[0, 5, 2]]), InputError, "list"),
    "src 1-D": (lambda m: m.encode(torch.tensor([0, 5, 2])), InputError, r"2-D.*\(3,\)"),
    "src 3-D": (lambda m: m.encode(_src().unsqueeze(0)), InputError, r"2-D.*\(1, 2, 5\)"),
    "src empty [1, 0]": (lambda m: m.encode(torch.zeros(1, 0, dtype=torch.long)), InputError, r"empty.*\(1, 0\)"),
    "src empty [0, 5]": (lambda m: m.encode(torch.zeros(0, 5, dtype=torch.long)), InputError, r"empty.*\(0, 5\)"),
    "src too long": (lambda m: m.encode(_src(1, 1025)), InputError, r"length 1025.*1024"),
    "prev id negative": (lambda m: m.decode(torch.tensor([[0, -3]] * B), _encoded(m)), InputError, "token id -3"),
    "prev id == vocab": (lambda m: m.decode(torch.tensor([[0, V]] * B), _encoded(m)), InputError, "token id 1024"),
    "prev float": (lambda m: m.decode(torch.zeros(B, 3), _encoded(m)), InputError, "float32"),
    "prev 1-D": (lambda m: m.decode(torch.zeros(4, dtype=torch.long), _encoded(m)), InputError, r"2-D.*\(4,\)"),
    "prev empty [2, 0]": (lambda m: m.decode(torch.zeros(B, 0, dtype=torch.long), _encoded(m)), InputError,
                          r"empty.*\(2, 0\)"),
    "prev empty [0, 5]": (lambda m: m.decode(torch.zeros(0, 5, dtype=torch.long), _encoded(m)), InputError,
                          r"empty.*\(0, 5\)"),
    # batch sizes
    "images vs tokens": (lambda m: m.encode(_src(), _images(3, 3, 32, 32)), InputError,
                         "patch_images has batch size 3 but src_tokens has 2"),
    "patch_masks length": (lambda m: m.encode(_src(), _images(B, 3, 32, 32), torch.tensor([True])), InputError,
                           r"patch_masks must have shape \[2\].*\(1,\)"),
    "patch_masks 2-D": (lambda m: m.encode(_src(), _images(B, 3, 32, 32), torch.ones(1, B, dtype=torch.bool)),
                        InputError, r"patch_masks.*\(1, 2\)"),
    "patch_masks float": (lambda m: m.encode(_src(), _images(B, 3, 32, 32), torch.ones(B)), InputError,
                          "patch_masks.*float32"),
    "patch_masks without images": (lambda m: m.encode(_src(), None, torch.tensor([True, False])), InputError,
                                   "patch_images is None"),
    "patch_masks list without images": (lambda m: m.encode(_src(), None, [True, True]), InputError,
                                        "patch_masks.*list"),
    "code_masks length": (lambda m: m.decode(_src(), _encoded(m), code_masks=torch.tensor([True])), InputError,
                          r"code_masks must have shape \[2\].*\(1,\)"),
    "decoder rows not a multiple": (lambda m: m.decode(_src(3), _encoded(m)), InputError,
                                    "3 rows.*multiple of the encoder batch size 2"),
    "init_cache rows": (lambda m: m.init_cache(_encoded(m), num_rows=3), InputError,
                        r"num_rows \(3\).*multiple of the encoder batch size 2"),
    "init_cache code_masks": (lambda m: m.init_cache(_encoded(m), num_rows=4, code_masks=torch.tensor([True, False])),
                              InputError, r"code_masks must have shape \[4\]"),
    "decode_step rows": (lambda m: m.decode_step(torch.zeros(3, 1, dtype=torch.long), m.init_cache(_encoded(m))),
                         InputError, r"\[2, t\].*\(3, 1\)"),
    "decode_step 1-D": (lambda m: m.decode_step(torch.zeros(B, dtype=torch.long), m.init_cache(_encoded(m))),
                        InputError, r"\[2, t\].*\(2,\)"),
    "decode_step empty": (lambda m: m.decode_step(torch.zeros(B, 0, dtype=torch.long), m.init_cache(_encoded(m))),
                          InputError, r"empty.*\(2, 0\)"),
    "decode_step id": (lambda m: m.decode_step(torch.full((B, 1), V), m.init_cache(_encoded(m))), InputError,
                       "token id 1024"),
    # configuration
    "unknown config key": (lambda m: ofa.build_model("ofa-test", num_layers=3), ConfigError,
                           r"num_layers.*valid keys"),
    "unknown backend": (lambda m: m.set_attention_backend("flash"), ConfigError, "flash"),
    "unknown model": (lambda m: ofa.build_model("ofa-mega"), ConfigError, "ofa-mega"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_raises_a_clear_error(model: Any, name: str) -> None:
    call, error, fragment = CASES[name]
    with pytest.raises(error, match=fragment) as info:
        with torch.no_grad():
            call(model)
    assert isinstance(info.value, OFAError) and isinstance(info.value, ValueError)


def test_decode_step_past_the_last_position(model: Any) -> None:
    cache = model.init_cache(_encoded(model))
    with torch.no_grad():
        model.decode_step(torch.zeros(B, 1000, dtype=torch.long), cache)
        with pytest.raises(InputError, match="at most 24 positions"):
            model.decode_step(torch.zeros(B, 25, dtype=torch.long), cache)


def test_truncated_checkpoint(model: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": model.state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.pt.*truncated"):
        ofa.load_checkpoint(path)


@pytest.mark.parametrize("content", [b"\x00\x01garbage" * 100, b'{"model": "ofa-base"}'], ids=["bytes", "json"])
def test_foreign_checkpoint_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="foreign.bin.*not a torch checkpoint"):
        ofa.load_checkpoint(path)


def test_valid_inputs_still_work(model: Any) -> None:
    # The checks above must not reject the edge of what is accepted.
    with torch.no_grad():
        enc = model.encode(torch.tensor([[0, V - 1]] * B), _images(B, 3, 16, 672), torch.tensor([1, 0]))
        out = model.decode(torch.tensor([[0, V - 1]] * B * 2), enc, code_masks=torch.tensor([0, 1, 1, 0]))
    assert out.logits.shape == (2 * B, 2, V)
    assert enc.hidden.shape == (B, 42 + 2, 32)
