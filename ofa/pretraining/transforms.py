"""Image transforms of OFA's pretraining examples (spec §5.7), at a configurable patch size.

OFA's scripts use a 384 px patch for image-text pairs (random resize of the short side in [384, 480], long side at
most 672, centre crop, ``RandomAugment(2, 7)``), an object-centred crop of the same size for grounding, and 256 px for image infilling and
detection (random horizontal flip, then large-scale jitter: scale 1.0-1.5 and a random 256 crop). Here ``size``
replaces 384 / 256 and the other numbers scale with it. Randomness comes from ``generator`` (default torch's
global generator).
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from ofa.data.transforms import RandomAugment, normalize, square_resize, to_tensor
from ofa.errors import DataError

__all__ = ["Box", "random_resize", "image_text_transform", "pretraining_augment", "grounding_transform", "detection_transform",
           "infilling_transform", "middle_box"]

Box = tuple[float, float, float, float]

_RESIZE_RANGE = 480 / 384  # the short side is drawn from [size, 1.25 * size]
_MAX_SIDE = 672 / 384  # ... and the long side capped at 1.75 * size


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_resize(image: Image.Image, size: int, generator: torch.Generator | None = None) -> Image.Image:
    """Resize so the short side is uniform in ``[size, 1.25 * size]`` and the long side at most ``1.75 * size``
    (never below ``size``)."""
    width, height = image.size
    short = _uniform(size, _RESIZE_RANGE * size, generator)
    scale = min(short / min(width, height), _MAX_SIDE * size / max(width, height))
    scale = max(scale, size / min(width, height))
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image.resize(new, Image.Resampling.BICUBIC)


def image_text_transform(image: Image.Image, size: int, generator: torch.Generator | None = None,
                         augment: RandomAugment | None = None) -> torch.Tensor:
    """Caption / ITM / VQA images: random resize, centre crop ``size``, ``augment`` (OFA: ``RandomAugment(2, 7)``,
    see :func:`pretraining_augment`), normalise to [-1, 1]."""
    resized = random_resize(image, size, generator)
    width, height = resized.size
    left, top = (width - size) // 2, (height - size) // 2
    crop = resized.crop((left, top, left + size, top + size))
    if augment is not None:
        crop = augment(crop, generator)
    return normalize(to_tensor(crop), (0.5,) * 3, (0.5,) * 3)


def pretraining_augment(size: int) -> RandomAugment:
    """OFA's image-text augmentation, ``RandomAugment(2, 7)`` over all ten ops, translations scaled from 10 px at
    384 px to ``size``."""
    return RandomAugment(2, 7, translate=10.0 * size / 384)


def grounding_transform(image: Image.Image, box: Sequence[float], size: int,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, Box]:
    """Random resize, then a ``size`` crop centred on the box (shifted to stay inside the image); returns the
    image and the box in crop pixels (clipped to the crop)."""
    width, height = image.size
    resized = random_resize(image, size, generator)
    sx, sy = resized.width / width, resized.height / height
    x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(min(max(round(cx - size / 2), 0), resized.width - size))
    top = int(min(max(round(cy - size / 2), 0), resized.height - size))
    crop = resized.crop((left, top, left + size, top + size))
    clipped = (min(max(x0 - left, 0.0), size), min(max(y0 - top, 0.0), size),
               min(max(x1 - left, 0.0), size), min(max(y1 - top, 0.0), size))
    return normalize(to_tensor(crop), (0.5,) * 3, (0.5,) * 3), clipped


def detection_transform(image: Image.Image, boxes: Sequence[Sequence[float]], size: int,
                        generator: torch.Generator | None = None,
                        scale_range: tuple[float, float] = (1.0, 1.5)) -> tuple[torch.Tensor, list[int], list[Box]]:
    """Random horizontal flip, then large-scale jitter: resize the image to ``scale * size`` (square), take a
    random ``size`` crop. Returns the image, the indices of the boxes still visible and their boxes in crop
    pixels (clipped)."""
    width, height = image.size
    if float(torch.rand((), generator=generator)) < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        boxes = [(width - b[2], b[1], width - b[0], b[3]) for b in boxes]
    scaled = max(size, round(_uniform(*scale_range, generator) * size))
    resized = image.resize((scaled, scaled), Image.Resampling.BICUBIC)
    left = int(torch.randint(0, scaled - size + 1, (), generator=generator))
    top = int(torch.randint(0, scaled - size + 1, (), generator=generator))
    crop = resized.crop((left, top, left + size, top + size))
    sx, sy = scaled / width, scaled / height
    kept: list[int] = []
    out: list[Box] = []
    for index, b in enumerate(boxes):
        x0, x1 = (min(max(b[0] * sx - left, 0.0), size), min(max(b[2] * sx - left, 0.0), size))
        y0, y1 = (min(max(b[1] * sy - top, 0.0), size), min(max(b[3] * sy - top, 0.0), size))
        if x1 - x0 >= 1.0 and y1 - y0 >= 1.0:  # at least a pixel left in the crop
            kept.append(index)
            out.append((x0, y0, x1, y1))
    return normalize(to_tensor(crop), (0.5,) * 3, (0.5,) * 3), kept, out


def middle_box(size: int) -> tuple[int, int, int, int]:
    """The masked middle of an infilling image: ``[size/4, 3*size/4)`` on both axes (OFA: 64..192 of 256)."""
    if size % 4:
        raise DataError(f"the image-infilling image size ({size}) must be a multiple of 4")
    return size // 4, size // 4, 3 * size // 4, 3 * size // 4


def infilling_transform(image: Image.Image, size: int) -> torch.Tensor:
    """Image infilling: resize to ``size`` square, normalise, then zero the middle (grey after normalisation)."""
    tensor = square_resize(image, size)
    x0, y0, x1, y1 = middle_box(size)
    tensor[:, y0:y1, x0:x1] = 0.0
    return tensor
