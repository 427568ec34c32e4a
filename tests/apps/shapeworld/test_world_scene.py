"""Shape-world scenes: config checks, determinism, placement, and pixels that match the described objects."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ofa.apps.shapeworld import WorldConfig, generate_scene, render, render_indexed, scene_rng
from ofa.data.images import decode_base64_image, encode_image_base64
from ofa.errors import ConfigError


@pytest.mark.parametrize("overrides", [
    {"image_size": 16},
    {"min_objects": 0},
    {"min_objects": 3, "max_objects": 2},
    {"max_objects": 11},
    {"colors": (("red", (255, 0, 0)),)},
    {"colors": (("red", (255, 0, 0)), ("red", (0, 255, 0)))},
    {"colors": (("red", (255, 0, 0)), ("crimson", (255, 0, 0)))},
    {"colors": (("red", (300, 0, 0)), ("green", (0, 255, 0)))},
    {"shapes": ("circle", "star")},
    {"shapes": ()},
    {"backgrounds": ("plaid",)},
    {"small_size": (0.2, 0.3), "large_size": (0.3, 0.4)},
    {"small_size": (0.3, 0.2)},
    {"large_size": (0.5, 1.2)},
    {"seed": -1},
    {"questions_per_image": -1},
    {"image_size": 96.0},
])
def test_bad_config_raises(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        WorldConfig(**overrides)


def test_config_dict_round_trip() -> None:
    config = WorldConfig(image_size=64, seed=7, shapes=("square", "circle"))
    assert WorldConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown"):
        WorldConfig.from_dict({"colours": []})


def test_impossible_placement_raises() -> None:
    config = WorldConfig(image_size=32, min_objects=10, max_objects=10, small_size=(0.3, 0.35),
                         large_size=(0.5, 0.6))
    with pytest.raises(ConfigError, match="could not place"):
        generate_scene(np.random.default_rng(0), config)


def test_same_stream_same_scene() -> None:
    config = WorldConfig()
    assert generate_scene(scene_rng(config, "train", 5), config) == generate_scene(scene_rng(config, "train", 5),
                                                                                   config)
    assert generate_scene(scene_rng(config, "train", 5), config) != generate_scene(scene_rng(config, "valid", 5),
                                                                                   config)
    other = WorldConfig(seed=1)
    assert generate_scene(scene_rng(config, "train", 5), config) != generate_scene(scene_rng(other, "train", 5), other)
    with pytest.raises(ConfigError):
        scene_rng(config, "test", 0)


def test_objects_inside_image_apart_and_sized(wh: Any) -> None:
    config = wh.config
    small, large = config.small_side_range, config.large_side_range
    counts = set()
    for scene, _ in wh.random_scenes(300):
        counts.add(len(scene.objects))
        assert config.min_objects <= len(scene.objects) <= config.max_objects
        for i, o in enumerate(scene.objects):
            x0, y0, x1, y1 = o.box
            assert config.margin <= x0 < x1 <= scene.image_size - config.margin
            assert config.margin <= y0 < y1 <= scene.image_size - config.margin
            lo, hi = small if o.size == "small" else large
            assert lo <= x1 - x0 == y1 - y0 <= hi
            assert o.rgb == wh.rgb[o.color]
            for p in scene.objects[i + 1:]:  # separated along x or along y by at least the gap
                assert (x0 >= p.box[2] + config.gap or p.box[0] >= x1 + config.gap
                        or y0 >= p.box[3] + config.gap or p.box[1] >= y1 + config.gap)
        triples = [(o.color, o.shape, o.size) for o in scene.objects]
        assert len(set(triples)) == len(triples)
    assert counts == {1, 2, 3}


def test_pixels_match_objects(wh: Any) -> None:
    for scene, _ in wh.random_scenes(200):
        pixels = np.asarray(render(scene))
        assert pixels.shape == (scene.image_size, scene.image_size, 3)
        for o in scene.objects:
            x0, y0, x1, y1 = o.box
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            if o.shape == "triangle":  # the centre row is half the base wide; look a little lower
                cy = y0 + (3 * (y1 - y0)) // 4
            assert tuple(pixels[cy, cx]) == o.rgb, (o, scene.background.kind)
            # The shape reaches the box's bottom edge and (circles, squares) its left edge.
            assert (pixels[y1 - 1, x0:x1] == o.rgb).all(axis=-1).any()
            if o.shape != "triangle":
                assert (pixels[y0:y1, x0] == o.rgb).all(axis=-1).any()
        # Every pixel of an object colour lies in a box of an object of that colour; the background uses none.
        for name, rgb in wh.config.colors:
            mask = (pixels == rgb).all(axis=-1)
            for o in scene.objects:
                if o.color == name:
                    mask[o.box[1]:o.box[3], o.box[0]:o.box[2]] = False
            assert not mask.any(), (name, scene)


def test_background_is_light_and_low_contrast(wh: Any) -> None:
    kinds = set()
    for scene, _ in wh.random_scenes(60):
        kinds.add(scene.background.kind)
        tones = np.array(scene.background.tones)
        assert tones.min() >= 200 - wh.config.background_contrast
        assert (tones.max(axis=0) - tones.min(axis=0)).max() <= wh.config.background_contrast
    assert kinds == {"noise", "stripes", "checker"}


def test_png_round_trip_is_exact_and_small(wh: Any) -> None:
    sizes = []
    for scene, _ in wh.random_scenes(50):
        text = encode_image_base64(render_indexed(scene), "PNG")
        sizes.append(len(text))
        assert np.array_equal(np.asarray(decode_base64_image(text)), np.asarray(render(scene)))
    assert np.mean(sizes) < 3000  # base64 characters: 1000 images stay around a few MB


def test_hand_built_scene_renders_its_boxes(wh: Any) -> None:
    scene = wh.hand_scene(wh.obj("red", "square", "large", (10, 10, 40, 40)),
                          wh.obj("blue", "circle", "small", (60, 60, 75, 75)))
    pixels = np.asarray(render(scene))
    red = (pixels == wh.rgb["red"]).all(axis=-1)
    assert red.sum() == 30 * 30 and red[10:40, 10:40].all()
    blue = (pixels == wh.rgb["blue"]).all(axis=-1)
    ys, xs = np.nonzero(blue)
    assert xs.min() >= 60 and xs.max() <= 74 and ys.min() >= 60 and ys.max() <= 74
