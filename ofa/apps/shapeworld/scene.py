"""Shape worlds: a few flat-coloured circles, squares and triangles on a light textured background.

A :class:`Scene` is a pure description (objects with colour, shape, size class and pixel box, plus the background's
parameters); :func:`render` turns it into an image, so the same scene always gives the same pixels. Shapes are
drawn without anti-aliasing, and images are palette based, so PNG keeps every colour exact and the files small.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np
from PIL import Image, ImageDraw

from ofa.errors import ConfigError

__all__ = ["WorldConfig", "WorldObject", "Background", "Scene", "generate_scene", "render", "render_indexed",
           "SHAPES", "BACKGROUNDS", "SizeClass"]

SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = ("noise", "stripes", "checker")
SizeClass = Literal["small", "large"]

_DEFAULT_COLORS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (215, 35, 35)),
    ("green", (35, 160, 60)),
    ("blue", (40, 75, 215)),
    ("yellow", (235, 200, 25)),
    ("purple", (135, 50, 170)),
    ("orange", (240, 125, 25)),
)
# Most objects a scene may hold: count answers are number words, and the VQA normaliser knows "zero" .. "ten".
_MAX_OBJECTS = 10
_PLACEMENT_TRIES = 200


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"WorldConfig.{name} ({value!r}) must be an integer")
    return int(value)


def _range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"WorldConfig.{name} ({value!r}) must be two numbers (low, high)") from exc
    if not 0.0 < lo <= hi < 1.0:
        raise ConfigError(f"WorldConfig.{name} ({value!r}) must satisfy 0 < low <= high < 1 (fractions of the image)")
    return lo, hi


@dataclass(frozen=True)
class WorldConfig:
    """What a shape world may contain, and how its texts are sampled.

    Args:
        image_size: side of the square images, in pixels.
        min_objects, max_objects: objects per image (drawn uniformly in this range; at most 10).
        colors: ``(name, (r, g, b))`` pairs; names and RGB values must be distinct.
        shapes: a subset of ``"circle"``, ``"square"``, ``"triangle"``.
        small_size, large_size: side of small and large objects as fractions of ``image_size``; the two ranges
            must not touch, so the size words stay unambiguous.
        backgrounds: a subset of ``"noise"``, ``"stripes"``, ``"checker"`` (light, low-contrast textures).
        background_contrast: difference (0..255, per channel) between the two tones of a background.
        gap: least number of pixels between two objects (they never overlap).
        margin: least distance of an object from the border, in pixels.
        position_margin: how far apart (fraction of ``image_size``) two centres must be before one object is
            called "left of"/"above" another, or an object "on the left"/"at the top" of the image.
        refs_per_image, questions_per_image, entailments_per_image, regions_per_image: rows per image that
            :func:`ofa.apps.shapeworld.write_world` writes for grounding, VQA, entailment and region captioning (fewer
            when the scene does not allow as many).
        seed: base seed; every image gets its own stream derived from ``(seed, split, index)``.
    """

    image_size: int = 96
    min_objects: int = 1
    max_objects: int = 3
    colors: tuple[tuple[str, tuple[int, int, int]], ...] = _DEFAULT_COLORS
    shapes: tuple[str, ...] = SHAPES
    small_size: tuple[float, float] = (0.12, 0.18)
    large_size: tuple[float, float] = (0.28, 0.38)
    backgrounds: tuple[str, ...] = BACKGROUNDS
    background_contrast: int = 18
    gap: int = 3
    margin: int = 2
    position_margin: float = 0.1
    refs_per_image: int = 2
    questions_per_image: int = 3
    entailments_per_image: int = 3
    regions_per_image: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("image_size", "min_objects", "max_objects", "background_contrast", "gap", "margin",
                     "refs_per_image", "questions_per_image", "entailments_per_image", "regions_per_image", "seed"):
            object.__setattr__(self, name, _int(name, getattr(self, name)))
        for name in ("refs_per_image", "questions_per_image", "entailments_per_image", "regions_per_image", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"WorldConfig.{name} ({getattr(self, name)}) must be >= 0")
        if self.image_size < 32:
            raise ConfigError(f"WorldConfig.image_size ({self.image_size}) must be at least 32")
        if not 1 <= self.min_objects <= self.max_objects <= _MAX_OBJECTS:
            raise ConfigError(f"WorldConfig needs 1 <= min_objects ({self.min_objects}) <= max_objects "
                              f"({self.max_objects}) <= {_MAX_OBJECTS}")
        colors = tuple((str(name), tuple(_int("colors", c) for c in rgb)) for name, rgb in self.colors)
        object.__setattr__(self, "colors", colors)
        names = [name for name, _ in colors]
        if len(colors) < 2 or len(set(names)) != len(names) or len({rgb for _, rgb in colors}) != len(colors):
            raise ConfigError(f"WorldConfig.colors ({self.colors!r}) needs at least two distinct names and RGB values")
        if any(len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb) for _, rgb in colors):
            raise ConfigError(f"WorldConfig.colors ({self.colors!r}): each RGB must be three ints in 0..255")
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "backgrounds", tuple(self.backgrounds))
        for name, allowed in (("shapes", SHAPES), ("backgrounds", BACKGROUNDS)):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values) or not set(values) <= set(allowed):
                raise ConfigError(f"WorldConfig.{name} ({values!r}) must be distinct entries of {allowed}")
        small, large = _range("small_size", self.small_size), _range("large_size", self.large_size)
        object.__setattr__(self, "small_size", small)
        object.__setattr__(self, "large_size", large)
        if small[1] * 1.2 > large[0]:
            raise ConfigError(f"WorldConfig.small_size ({small}) must end at least 20% below large_size ({large})")
        if not 0 <= self.background_contrast <= 60:
            raise ConfigError(f"WorldConfig.background_contrast ({self.background_contrast}) must be in 0..60")
        if self.gap < 0 or self.margin < 0:
            raise ConfigError(f"WorldConfig.gap ({self.gap}) and margin ({self.margin}) must be >= 0")
        if not 0.0 <= float(self.position_margin) < 0.5:
            raise ConfigError(f"WorldConfig.position_margin ({self.position_margin}) must be in [0, 0.5)")
        object.__setattr__(self, "position_margin", float(self.position_margin))
        if self.large_side_range[1] + 2 * self.margin > self.image_size:
            raise ConfigError(f"WorldConfig.large_size ({large}) leaves no room inside image_size ({self.image_size})")

    @property
    def color_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.colors)

    @property
    def small_side_range(self) -> tuple[int, int]:
        """Smallest and largest side of a small object, in pixels."""
        return self._side_range(self.small_size)

    @property
    def large_side_range(self) -> tuple[int, int]:
        """Smallest and largest side of a large object, in pixels."""
        return self._side_range(self.large_size)

    def _side_range(self, fractions: tuple[float, float]) -> tuple[int, int]:
        lo = max(3, round(fractions[0] * self.image_size))
        return lo, max(lo, round(fractions[1] * self.image_size))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :meth:`from_dict` turns back into an equal config."""
        out = dataclasses.asdict(self)
        out["colors"] = [[name, list(rgb)] for name, rgb in self.colors]
        for name in ("shapes", "small_size", "large_size", "backgrounds"):
            out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorldConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown WorldConfig key(s) {unknown}; valid keys: {sorted(valid)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class WorldObject:
    """One shape: its words, its colour and its box ``(x0, y0, x1, y1)`` in pixels (the shape fills the pixels
    ``x0 <= x < x1``, ``y0 <= y < y1``; boxes are square)."""

    color: str
    shape: str
    size: SizeClass
    box: tuple[int, int, int, int]
    rgb: tuple[int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def description(self) -> str:
        """``"small red circle"``: the object's three words."""
        return f"{self.size} {self.color} {self.shape}"


@dataclass(frozen=True)
class Background:
    """A two- or three-tone texture: ``kind`` in :data:`BACKGROUNDS`, ``cell`` its period in pixels,
    ``orientation`` of stripes (``"horizontal"``, ``"vertical"`` or ``"diagonal"``), ``noise_seed`` of the noise."""

    kind: str
    tones: tuple[tuple[int, int, int], ...]
    cell: int
    orientation: str = "horizontal"
    noise_seed: int = 0


@dataclass(frozen=True)
class Scene:
    """An image to be: its size, background and objects (in drawing order; they never overlap)."""

    image_size: int
    background: Background
    objects: tuple[WorldObject, ...]


def _background(rng: np.random.Generator, config: WorldConfig) -> Background:
    kind = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    base = rng.integers(200, 246, size=3)
    dark = np.maximum(base - config.background_contrast, 0)
    levels = [base, (base + dark) // 2, dark] if kind == "noise" else [base, dark]
    tones = tuple((int(r), int(g), int(b)) for r, g, b in levels)
    cell = int(rng.integers(4, 9)) if kind == "noise" else int(rng.integers(6, 17))
    orientation = ("horizontal", "vertical", "diagonal")[int(rng.integers(3))]
    return Background(kind=kind, tones=tones, cell=cell, orientation=orientation,
                      noise_seed=int(rng.integers(2**31)))


def _place(rng: np.random.Generator, config: WorldConfig, sides: list[int]) -> list[tuple[int, int, int, int]] | None:
    """Non-overlapping square boxes of the given sides (at least ``gap`` apart), or None if rejection fails."""
    boxes: list[tuple[int, int, int, int]] = []
    size, margin, gap = config.image_size, config.margin, config.gap
    for side in sides:
        for _ in range(_PLACEMENT_TRIES):
            x0 = int(rng.integers(margin, size - margin - side + 1))
            y0 = int(rng.integers(margin, size - margin - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if all(box[0] >= b[2] + gap or b[0] >= box[2] + gap or box[1] >= b[3] + gap or b[1] >= box[3] + gap
                   for b in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def generate_scene(rng: np.random.Generator, config: WorldConfig) -> Scene:
    """Draw a random scene.

    Objects never overlap and no two share colour, shape *and* size, so each has a unique full description.

    Args:
        rng: the random stream (the scene is a function of its state).
        config: what the world may contain.

    Returns:
        The scene; its objects are in drawing order.

    Raises:
        ConfigError: if the objects cannot be placed (too many or too large for the image).
    """
    background = _background(rng, config)
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    colors = dict(config.colors)
    for _ in range(20):
        attributes: list[tuple[str, str, SizeClass]] = []
        while len(attributes) < count:
            size: SizeClass = "large" if rng.random() < 0.5 else "small"
            item = (config.color_names[int(rng.integers(len(config.colors)))],
                    config.shapes[int(rng.integers(len(config.shapes)))], size)
            if item not in attributes or len(attributes) >= len(config.colors) * len(config.shapes) * 2:
                attributes.append(item)
        # Large objects first: they are the hardest to fit.
        attributes.sort(key=lambda a: a[2] != "large")
        sides = [int(rng.integers(lo, hi + 1)) for lo, hi in
                 (config.large_side_range if a[2] == "large" else config.small_side_range for a in attributes)]
        boxes = _place(rng, config, sides)
        if boxes is not None:
            objects = tuple(WorldObject(color=c, shape=s, size=z, box=b, rgb=colors[c])
                            for (c, s, z), b in zip(attributes, boxes))
            return Scene(image_size=config.image_size, background=background, objects=objects)
    raise ConfigError(f"could not place {count} objects in a {config.image_size}px image; lower max_objects "
                      f"({config.max_objects}) or large_size ({config.large_size})")


def _background_indices(background: Background, size: int) -> np.ndarray:
    """[size, size] uint8 tone index of every pixel."""
    ys, xs = np.mgrid[0:size, 0:size]
    cell = max(1, background.cell)
    if background.kind == "noise":
        cells = -(-size // cell)
        grid = np.random.default_rng(background.noise_seed).integers(0, len(background.tones), size=(cells, cells))
        return grid.repeat(cell, axis=0).repeat(cell, axis=1)[:size, :size].astype(np.uint8)
    if background.kind == "stripes":
        coord = {"horizontal": ys, "vertical": xs}.get(background.orientation, xs + ys)
        return ((coord // cell) % 2).astype(np.uint8)
    if background.kind == "checker":
        return (((xs // cell) + (ys // cell)) % 2).astype(np.uint8)
    raise ConfigError(f"background kind {background.kind!r} is not one of {BACKGROUNDS}")


def render_indexed(scene: Scene) -> Image.Image:
    """The scene as a palette (``"P"``) image: background tones first, then the object colours.

    PNG stores this losslessly in a fraction of the bytes of RGB; :func:`render` is its RGB conversion.
    """
    size = scene.image_size
    palette = list(scene.background.tones)
    for obj in scene.objects:
        if obj.rgb not in palette:
            palette.append(obj.rgb)
    if len(palette) > 256:
        raise ConfigError(f"a scene can use at most 256 colours, this one uses {len(palette)}")
    indices = _background_indices(scene.background, size)
    image = Image.frombytes("P", (size, size), np.ascontiguousarray(indices).tobytes())
    image.putpalette([c for rgb in palette for c in rgb])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        fill = palette.index(obj.rgb)
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif obj.shape == "triangle":  # apex up, base along the bottom edge
            draw.polygon([((x0 + x1 - 1) / 2.0, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
        else:
            raise ConfigError(f"shape {obj.shape!r} is not one of {SHAPES}")
    return image


def render(scene: Scene) -> Image.Image:
    """Draw a scene as an RGB image of ``scene.image_size`` squared pixels (flat colours, no anti-aliasing)."""
    return render_indexed(scene).convert("RGB")
