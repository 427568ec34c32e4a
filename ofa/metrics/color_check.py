"""An objective check of generated shape-world images: do they show the colours their caption names?

The shape world (:mod:`ofa.apps.shapeworld`) draws flat objects in a few known colours on a light background, so the
colours an image shows can be read off its pixels: a pixel belongs to an object colour when it lies within
``max_distance`` (RGB) of it, and a colour is *present* when at least ``min_fraction`` of the pixels belong to
it. Background tones (all channels >= 182) are far from every object colour of the default world, and blurred
edges between two colours fall outside the radius, so neither counts.

:meth:`ColorCheck.matches` asks for the exact set: every colour the caption names is present and no other one
is. :meth:`ColorCheck.left_to_right` checks the order of two named colours (canonical captions list objects
left to right). Used by ``ofa quickstart-image`` (:mod:`ofa.apps.quickstart_image`).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ofa.errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["ColorCheck"]

_WORD = re.compile(r"[a-z]+")


class ColorCheck:
    """Which of a world's object colours an image shows, and whether they are the ones a caption names.

    Args:
        colors: ``(name, (r, g, b))`` pairs, e.g. :attr:`ofa.apps.shapeworld.WorldConfig.colors`.
        max_distance: a pixel belongs to the nearest colour when it is at most this far from it (RGB, 0..441).
        min_fraction: a colour is present when at least this fraction of the pixels belongs to it (0.008 is
            8 pixels of a 32 px image; the smallest object of the quickstart world covers about 17).

    Raises:
        ConfigError: for fewer than one colour, malformed RGB values or out-of-range thresholds.
    """

    def __init__(self, colors: Sequence[tuple[str, Sequence[int]]], *, max_distance: float = 60.0,
                 min_fraction: float = 0.008) -> None:
        pairs = [(str(name).lower(), tuple(rgb)) for name, rgb in colors]
        if not pairs:
            raise ConfigError("ColorCheck needs at least one colour")
        for name, rgb in pairs:
            if len(rgb) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in rgb):
                raise ConfigError(f"colour {name!r}: {rgb!r} is not three ints in 0..255")
        if not isinstance(max_distance, (int, float)) or not 0 < max_distance < math.inf:
            raise ConfigError(f"max_distance ({max_distance!r}) must be a positive number")
        if not isinstance(min_fraction, (int, float)) or not 0 < min_fraction <= 1:
            raise ConfigError(f"min_fraction ({min_fraction!r}) must be in (0, 1]")
        self.names = tuple(name for name, _ in pairs)
        self.rgb = np.asarray([rgb for _, rgb in pairs], dtype=np.float32)  # [c, 3]
        self.max_distance = float(max_distance)
        self.min_fraction = float(min_fraction)

    def _assign(self, image: "Image.Image") -> tuple[np.ndarray, int]:
        """Colour index of every pixel (``-1``: none) as ``[h, w]``, and the image width."""
        if not hasattr(image, "convert"):
            raise InputError(f"expected a PIL image, got {type(image).__name__}")
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)  # [h, w, 3]
        distance = np.linalg.norm(pixels[:, :, None, :] - self.rgb[None, None], axis=-1)  # [h, w, c]
        nearest = distance.argmin(axis=-1)
        close = np.take_along_axis(distance, nearest[..., None], axis=-1)[..., 0] <= self.max_distance
        return np.where(close, nearest, -1), pixels.shape[1]

    def fractions(self, image: "Image.Image") -> dict[str, float]:
        """Fraction of the pixels that belong to each colour."""
        assigned, _ = self._assign(image)
        counts = np.bincount(assigned[assigned >= 0].ravel(), minlength=len(self.names))
        return {name: float(counts[i]) / max(assigned.size, 1) for i, name in enumerate(self.names)}

    def present(self, image: "Image.Image") -> list[str]:
        """The colours covering at least ``min_fraction`` of the image, in table order."""
        return [name for name, f in self.fractions(image).items() if f >= self.min_fraction]

    def named(self, caption: str) -> list[str]:
        """The table colours a caption names, in order of mention (each once)."""
        out: list[str] = []
        for word in _WORD.findall(caption.lower()):
            if word in self.names and word not in out:
                out.append(word)
        return out

    def matches(self, image: "Image.Image", caption: str) -> bool:
        """True when the image shows exactly the colours the caption names (no missing, no extra one)."""
        return set(self.present(image)) == set(self.named(caption))

    def left_to_right(self, image: "Image.Image", caption: str) -> bool | None:
        """For a caption naming two colours: is the first one's centroid left of the second one's?

        Returns:
            None unless the caption names exactly two colours and the image shows both.
        """
        named = self.named(caption)
        if len(named) != 2:
            return None
        assigned, _ = self._assign(image)
        centres = []
        for name in named:
            ys, xs = np.nonzero(assigned == self.names.index(name))
            if xs.size < self.min_fraction * assigned.size:
                return None
            centres.append(float(xs.mean()))
        return centres[0] < centres[1]
