"""Fixtures of the task-layer tests: real image files. The tiny tokenizer, ``small_model`` and ``checkpoint_dir``
come from ``tests/conftest.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image


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
