"""Fixtures of the text-to-image tests: a tiny VQGAN whose codebook matches the test tokenizer (64 codes), its
checkpoint folder and a few shape-world images. The tokenizer, ``small_model`` (2x2 code grid) and their
``checkpoint_dir`` come from ``tests/conftest.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from ofa.apps.shapeworld import WorldConfig, write_world
from ofa.vqgan import VQGANConfig, build_vqgan

GRID = 2  # code grid side of the test model: code_image_size = 8 * GRID
# Factor 2 (16 px -> 8x8 codes), no attention: a forward/backward pass takes a few tens of milliseconds.
TINY_VQGAN = VQGANConfig(num_codes=64, embed_dim=32, z_channels=32, channels=32, channel_mult=(1, 2),
                         num_res_blocks=1, attn_resolutions=(), resolution=16)


@pytest.fixture(scope="session")
def tiny_vqgan_config() -> VQGANConfig:
    """The tiny VQGAN's config (test modules cannot import this conftest under importlib mode)."""
    return TINY_VQGAN


@pytest.fixture(scope="session")
def grid() -> int:
    """Code grid side of ``small_model``."""
    return GRID


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run single-threaded: the small convolutions here are slower on two shared cores than on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def vqgan() -> Any:
    """A random tiny VQGAN with the tokenizer's 64 codes, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_vqgan(TINY_VQGAN).eval()


@pytest.fixture(scope="session")
def vqgan_dir(tmp_path_factory: pytest.TempPathFactory, vqgan: Any) -> Path:
    """The tiny VQGAN saved with ``save_pretrained``."""
    return vqgan.save_pretrained(tmp_path_factory.mktemp("vqgan"))


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six training and two validation images of 32 px (one object each), in the world's TSV layouts."""
    out = tmp_path_factory.mktemp("world")
    write_world(out, num_train=6, num_valid=2, config=WorldConfig(image_size=32, max_objects=1, seed=0),
                progress=False)
    return out
