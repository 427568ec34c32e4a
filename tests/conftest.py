"""Shared fixtures: a fixed seed, the golden reference file, small OFA models with lively weights, and the tiny
test tokenizer with a seed-0 ``ofa-test`` model sized for it (and both saved as one checkpoint folder), and real
image files."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

import ofa

# The suite calls `ofa predict` / `ofa evaluate` in-process, and their allocator setting (ofa.runtime) is
# process-wide: it made small-model training steps slower (0.30 -> 0.38 s), which would slow every later test of
# this process. The test process keeps glibc's default; tests/test_runtime.py and the CLI's subprocess runs check
# the setting itself.
os.environ["OFA_SYSTEM_MALLOC"] = "1"

# The README's test command runs the suite in pytest-xdist workers, one per core. torch's default of one intra-op
# thread per core in every worker would put two threads on each core; each worker (and, through OMP_NUM_THREADS, each
# process it starts) gets its share of the cores instead.
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _XDIST_WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _THREADS = max(1, _CORES // _XDIST_WORKERS)
    torch.set_num_threads(_THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))

GOLDEN_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "golden_tiny.pt"


@pytest.fixture
def seed() -> int:
    """Seed torch's global generator so random inputs are the same on every run."""
    torch.manual_seed(0)
    return 0


@pytest.fixture
def golden_path() -> Path:
    """Path of the reference tensors from the original OFA (skips when the shared folder is absent)."""
    if not GOLDEN_PATH.is_file():
        pytest.skip(f"golden file {GOLDEN_PATH} is absent")
    return GOLDEN_PATH


@pytest.fixture(scope="session")
def golden_data() -> dict[str, Any]:
    """The golden file, loaded once per session (about a second)."""
    if not GOLDEN_PATH.is_file():
        pytest.skip(f"golden file {GOLDEN_PATH} is absent")
    return torch.load(GOLDEN_PATH, map_location="cpu", weights_only=True)


def lively_init_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every parameter at O(1) scale (in place) and return the model.

    The BERT init (std 0.02) makes logits nearly constant, so a wrong position index or mask would move them
    by less than the 1e-5 tolerances the equivalence tests use. Like the golden file's init: matrices
    N(0, 1/fan_in), biases N(0, 0.1^2), norm weights and per-head gains U(0.5, 1.5). Buffers are untouched.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():  # the tied embedding appears once
            if param.dim() >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
            else:
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
    return model


@pytest.fixture
def make_model(seed: int) -> Callable[..., Any]:
    """Factory: ``make_model(**overrides)`` builds an ``ofa-test`` model in eval mode with lively weights."""

    def make(name: str = "ofa-test", attention_backend: str = "sdpa", **overrides: Any) -> Any:
        model = ofa.build_model(name, attention_backend=attention_backend, **overrides)
        return lively_init_(model).eval()

    return make


@pytest.fixture
def test_model(make_model: Callable[..., Any]) -> Any:
    """``ofa.build_model("ofa-test")`` in eval mode (2+2 layers, width 32, vocab 1024, tiny ResNet)."""
    return make_model()


SMALL_GRID = 2  # image_gen code grid of ``small_model`` (code_image_size = 8 * SMALL_GRID)


@pytest.fixture(scope="session")
def tok() -> Any:
    """The tiny test tokenizer (809 ids: 640 text, 64 image codes, 100 location bins)."""
    return ofa.OFATokenizer.from_test_assets()


@pytest.fixture(scope="session")
def small_model(tok: Any) -> Any:
    """A random ``ofa-test`` model (seed 0, default init) for ``tok``'s vocabulary with a 2x2 code grid, eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ofa.build_model("ofa-test", vocab_size=len(tok), code_image_size=8 * SMALL_GRID)
    return model.eval()


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory, small_model: Any, tok: Any) -> Path:
    """``small_model`` and ``tok`` saved in one folder (what ``ofa predict --checkpoint`` takes)."""
    directory = tmp_path_factory.mktemp("checkpoint")
    small_model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def make_image(seed: int, size: tuple[int, int] = (80, 48)) -> Image.Image:
    """A noise image (width, height) without pure red pixels, so drawn boxes can be found."""
    pixels = np.random.RandomState(seed).randint(0, 200, size=(size[1], size[0], 3)).astype("uint8")
    return Image.fromarray(pixels, "RGB")


@pytest.fixture
def image_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``image_file(seed)`` writes :func:`make_image` as a PNG in ``tmp_path`` and returns its path."""

    def write(seed: int = 0, size: tuple[int, int] = (80, 48), name: str | None = None) -> Path:
        path = tmp_path / (name or f"image_{seed}.png")
        make_image(seed, size).save(path)
        return path

    return write


@pytest.fixture(scope="session")
def pil_image() -> Callable[..., Image.Image]:
    """:func:`make_image` as a fixture (test modules cannot import a conftest under importlib mode)."""
    return make_image


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """``free_port()``: a TCP port nobody listens on now (for MASTER_PORT / ``--master_port``); test modules
    cannot import this conftest by name under importlib mode."""
    return _free_port



# -- HF-format ports (spec §7.4) --------------------------------------------------------------------------------
def _to_hf_names(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """fairseq -> HF key names, as the OFA-Sys port renames them (spec §7.4; ``*.version`` dropped)."""
    renamed = {}
    for key, value in state.items():
        if key in ("encoder.version", "decoder.version"):
            continue
        if key.startswith("decoder."):
            for old, new in ((".self_attn_ln.", ".self_attn_mid_layer_norm."),
                             (".ffn_layernorm.", ".ffn_layer_norm."),
                             (".cross_attn_ln.", ".cross_attn_mid_layer_norm."),
                             (".encoder_attn.", ".cross_attn."),
                             (".encoder_attn_layer_norm.", ".cross_attn_layer_norm.")):
                key = key.replace(old, new)
        else:
            for old, new in ((".ffn_layernorm.", ".ffn_layer_norm."), (".attn_ln.", ".self_attn_mid_layer_norm.")):
                key = key.replace(old, new)
        renamed[prefix + key] = value
    return renamed


def _hf_config(config: Any, **changes: Any) -> dict[str, Any]:
    hf = {"architectures": ["OFAModel"], "model_type": "ofa", "vocab_size": config.vocab_size,
          "d_model": config.embed_dim, "encoder_layers": config.encoder_layers,
          "decoder_layers": config.decoder_layers, "encoder_attention_heads": config.num_heads,
          "decoder_attention_heads": config.num_heads, "encoder_ffn_dim": config.ffn_dim,
          "decoder_ffn_dim": config.ffn_dim, "normformer": True, "attn_scale_factor": 2.0, "dropout": 0.0,
          "token_bucket_size": 256, "image_bucket_size": 42, "code_image_size": 128, "pad_token_id": 1,
          "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 0, "scale_embedding": False}
    hf.update(changes)
    return hf


def _write_hf_port(directory: Path, model: Any, tok: Any) -> Path:
    """An HF-format port of ``model`` as the OFA-Sys hub repos lay it out: ``config.json``, ``pytorch_model.bin``
    (HF key names) and BART-style ``vocab.json`` + ``merges.txt`` whose ids are the dictionary's (no dict.txt)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(_hf_config(model.config)))
    torch.save(_to_hf_names(dict(model.state_dict())), directory / "pytorch_model.bin")
    token_of = {gpt2_id: token for token, gpt2_id in tok.bpe.encoder.items()}
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for index in range(4, tok.vocab.num_text + 4):
        vocab[token_of[int(tok.vocab.symbol(index))]] = index
    vocab["<mask>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in tok.bpe.merges) + "\n")
    return directory


@pytest.fixture(scope="session")
def hf() -> Any:
    """HF-port helpers: ``to_hf_names(state, prefix)``, ``config(ofa_config, **changes)`` and
    ``write_port(directory, model, tok)`` (test modules cannot import this conftest under importlib mode)."""

    class HF:
        to_hf_names = staticmethod(_to_hf_names)
        config = staticmethod(_hf_config)
        write_port = staticmethod(_write_hf_port)

    return HF


# The fuzz suite counts its cases per worker (tests/fuzz/conftest.py hands them over when the worker ends); the
# controller of an xdist run adds them up and prints them, as a single process prints its own.
_WORKER_FUZZ_CASES: dict[str, int] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    for surface, count in getattr(node, "workeroutput", {}).get("fuzz_cases", {}).items():
        _WORKER_FUZZ_CASES[surface] = _WORKER_FUZZ_CASES.get(surface, 0) + count


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _WORKER_FUZZ_CASES:
        counts = ", ".join(f"{surface}={n}" for surface, n in sorted(_WORKER_FUZZ_CASES.items()))
        terminalreporter.write_line(f"fuzz cases tried: {counts} (total {sum(_WORKER_FUZZ_CASES.values())})")
