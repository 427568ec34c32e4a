"""Fixtures of the task-layer tests: the tiny tokenizer, an ``ofa-test`` model sized for it, real images and
a checkpoint directory (model + tokenizer) as ``ofa predict --checkpoint`` takes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

import ofa

GRID_SIZE = 2  # image_gen code grid of the test model (code_image_size = 8 * GRID_SIZE)


def make_image(seed: int, size: tuple[int, int] = (80, 48)) -> Image.Image:
    """A noise image (width, height) without pure red pixels, so drawn boxes can be found."""
    pixels = np.random.RandomState(seed).randint(0, 200, size=(size[1], size[0], 3)).astype("uint8")
    return Image.fromarray(pixels, "RGB")


@pytest.fixture(scope="session")
def tok() -> Any:
    """The tiny test tokenizer (809 ids: 64 image codes, 100 location bins)."""
    return ofa.OFATokenizer.from_test_assets()


@pytest.fixture(scope="session")
def task_model(tok: Any) -> Any:
    """An ``ofa-test`` model (random, fixed seed) whose vocabulary matches ``tok``, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ofa.build_model("ofa-test", vocab_size=len(tok), code_image_size=8 * GRID_SIZE)
    return model.eval()


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory, task_model: Any, tok: Any) -> Path:
    """A directory holding both the model and the tokenizer files (``save_pretrained`` of each)."""
    directory = tmp_path_factory.mktemp("checkpoint")
    task_model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


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
