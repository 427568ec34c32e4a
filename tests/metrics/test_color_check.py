"""Tests for ofa.metrics.color_check: the colour check of generated shape-world images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ofa.apps.quickstart_image import ImageQuickstartConfig
from ofa.apps.shapeworld import captions, generate_scene, render
from ofa.errors import ConfigError, InputError
from ofa.metrics.color_check import ColorCheck

WORLD = ImageQuickstartConfig().world_config()  # the text-to-image quickstart's world: 32 px, 1-2 objects


def _two_squares(left: tuple[int, int, int], right: tuple[int, int, int]) -> Image.Image:
    pixels = np.full((32, 32, 3), 230, dtype=np.uint8)
    pixels[10:20, 2:12] = left
    pixels[10:20, 20:30] = right
    return Image.fromarray(pixels)


def test_rendered_scenes_match_their_canonical_caption() -> None:
    check = ColorCheck(WORLD.colors)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scene = generate_scene(rng, WORLD)
        caption = captions(scene, rng, WORLD)[0]
        image = render(scene)
        assert check.matches(image, caption), (caption, check.fractions(image))
        assert sorted(check.present(image)) == sorted({o.color for o in scene.objects})


def test_missing_and_extra_colours_do_not_match() -> None:
    check = ColorCheck(WORLD.colors)
    red, blue = dict(WORLD.colors)["red"], dict(WORLD.colors)["blue"]
    image = _two_squares(red, blue)
    assert check.present(image) == ["red", "blue"]
    assert check.matches(image, "a large red square and a small blue square")
    assert not check.matches(image, "a large red square")  # blue is extra
    assert not check.matches(image, "a red square and a green circle")  # blue extra, green missing
    assert not check.matches(Image.new("RGB", (32, 32), (230, 230, 230)), "a red square")
    # A caption without colour words asks for an image without object colours.
    assert check.matches(Image.new("RGB", (32, 32), (230, 230, 230)), "an empty picture")


def test_colour_order_left_to_right() -> None:
    check = ColorCheck(WORLD.colors)
    red, blue = dict(WORLD.colors)["red"], dict(WORLD.colors)["blue"]
    assert check.left_to_right(_two_squares(red, blue), "a red square and a blue square") is True
    assert check.left_to_right(_two_squares(blue, red), "a red square and a blue square") is False
    assert check.left_to_right(_two_squares(red, blue), "a red square") is None  # one colour named
    assert check.left_to_right(_two_squares(red, red), "a red square and a blue square") is None  # blue absent
    assert check.named("a Red circle and a red square and a BLUE one") == ["red", "blue"]


def test_small_specks_and_far_colours_are_not_present() -> None:
    check = ColorCheck(WORLD.colors, min_fraction=0.008)
    pixels = np.full((32, 32, 3), 230, dtype=np.uint8)
    pixels[0:2, 0:3] = dict(WORLD.colors)["green"]  # 6 pixels < 8.2
    pixels[20:30, 20:30] = (120, 120, 120)  # grey: near no object colour
    image = Image.fromarray(pixels)
    assert check.present(image) == []
    assert check.fractions(image)["green"] == pytest.approx(6 / 1024)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"colors": []}, "at least one colour"),
    ({"colors": [("red", (300, 0, 0))]}, "three ints in 0..255"),
    ({"max_distance": 0}, "max_distance"),
    ({"min_fraction": 1.5}, "min_fraction"),
])
def test_bad_settings_raise(kwargs: dict, match: str) -> None:
    args = {"colors": WORLD.colors, **kwargs}
    with pytest.raises(ConfigError, match=match):
        ColorCheck(**args)


def test_non_images_raise() -> None:
    with pytest.raises(InputError, match="PIL image"):
        ColorCheck(WORLD.colors).present(np.zeros((4, 4, 3)))  # type: ignore[arg-type]
