"""Fuzz: images in every PIL mode and many formats, sizes from 1x1 to very wide, EXIF orientations, truncated and
corrupted bytes, random bytes, as files, bytes, base64 and PIL objects. Each loads as an upright RGB image that the
transforms turn into a finite tensor, or raises a DataError naming the image."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from PIL import Image

from ofa.data.images import decode_base64_image, load_image
from ofa.data.transforms import grounding_resize, square_resize

MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "I;16", "I;16B", "LA", "PA",
         "La", "RGBa", "RGBX"]
FORMATS = {"PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"), "JPEG": ("L", "RGB", "CMYK"),
           "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I", "F", "I;16"),
           "BMP": ("1", "L", "P", "RGB"), "GIF": ("L", "P"), "WEBP": ("RGB", "RGBA")}


def _image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    if mode in ("I", "I;16", "I;16B"):
        return Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16)).convert(mode) \
            if mode != "I" else Image.fromarray(rng.integers(-2**20, 2**20, (size[1], size[0]), dtype=np.int32))
    if mode == "F":
        values = rng.random((size[1], size[0]), dtype=np.float32)
        values[rng.random(values.shape) < 0.05] = np.nan
        return Image.fromarray(values, "F")
    if mode in ("PA", "La", "RGBa", "RGBX"):
        base = rgb.convert("RGBA")
        return base.convert(mode) if mode != "PA" else base.convert("P").convert("PA")
    return rgb.convert(mode)


@st.composite
def image_inputs(draw: Any) -> tuple[str, Any, Any]:
    """(kind, value, expected displayed size or None when it may fail)."""
    width = draw(st.one_of(st.integers(1, 64), st.integers(1, 4000)))
    height = draw(st.integers(1, max(1, min(64, 120_000 // width))))
    if draw(st.booleans()):
        width, height = height, width  # very tall as well as very wide
    mode = draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**16))
    image = _image(mode, (width, height), seed)
    kind = draw(st.sampled_from(["pil", "bytes", "file", "base64", "random", "damaged"]))
    if kind == "pil":
        return kind, image, (width, height)
    if kind == "random":
        return kind, draw(st.binary(min_size=0, max_size=256)), None
    fmt = draw(st.sampled_from([f for f, modes in FORMATS.items() if mode in modes] or ["PNG"]))
    if mode not in FORMATS.get(fmt, ()):  # no format stores it: its files are RGB ones (PIL objects cover it)
        image = _image("RGB", (width, height), seed)
    orientation = draw(st.sampled_from([None, 1, 3, 6, 8, 5, 7, 2, 4, 0, 9]))
    buffer = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if orientation is not None and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    image.save(buffer, format=fmt, **kwargs)
    data = buffer.getvalue()
    expected: tuple[int, int] | None = (width, height)
    if orientation in (5, 6, 7, 8) and "exif" in kwargs:
        expected = (height, width)
    if kind == "damaged":
        cut = draw(st.integers(0, len(data)))
        data = bytearray(data[:cut] if draw(st.booleans()) else data)
        for _ in range(draw(st.integers(0 if cut < len(data) else 1, 4))):
            if data:
                data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return kind, bytes(data), None
    return kind, data, expected


def _check(image: Image.Image, expected: Any) -> None:
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    if expected is not None:
        assert image.size == expected
    tensor = square_resize(image, 16)
    assert tensor.shape == (3, 16, 16) and bool(torch.isfinite(tensor).all())
    assert float(tensor.min()) >= -1.0 - 1e-6 and float(tensor.max()) <= 1.0 + 1e-6
    boxed, ratios = grounding_resize(image, 24)
    assert boxed.shape == (3, 24, 24) and all(r > 0 for r in ratios)


def test_images(fuzz: Any, profile: Any, tmp_path: Path) -> None:
    path = tmp_path / "input.img"

    def body(case: tuple[str, Any, Any]) -> None:
        kind, value, expected = case
        try:
            if kind == "file":
                path.write_bytes(value)
                image = load_image(path)
            elif kind == "base64":
                image = decode_base64_image(base64.b64encode(value).decode("ascii"))
            else:
                image = load_image(value)
        except Exception as exc:  # noqa: BLE001 - the property decides
            assert expected is None, f"a valid {kind} image was refused: {exc}"
            fuzz.expect(exc, "image", str(path))
            return
        _check(image, expected)

    fuzz.run("images", profile, 60, image_inputs(), body)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_converts_to_rgb_in_range(mode: str) -> None:
    """Not random: one image per PIL mode, converted without clipping or NaN (the fuzz draws these too)."""
    image = load_image(_image(mode, (7, 5), 0))
    assert image.mode == "RGB" and image.size == (7, 5)
    _check(image, (7, 5))
