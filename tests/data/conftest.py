"""Fixtures of the data tests: small real images (Pillow) and their base64 text."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
from PIL import Image

from ofa.data.images import encode_image_base64


def make_image(width: int = 24, height: int = 16, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A deterministic noisy image (noise makes PNG/JPEG round trips meaningful)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB").convert(mode)


@pytest.fixture
def image_factory() -> Callable[..., Image.Image]:
    """``image_factory(width, height, seed, mode)`` -> a PIL image."""
    return make_image


@pytest.fixture
def b64_factory() -> Callable[..., str]:
    """``b64_factory(width, height, seed)`` -> URL-safe base64 PNG text of a real image."""

    def make(width: int = 24, height: int = 16, seed: int = 0) -> str:
        return encode_image_base64(make_image(width, height, seed), format="PNG")

    return make
