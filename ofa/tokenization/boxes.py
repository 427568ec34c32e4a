"""Box ↔ location-bin conversion (spec §4.4). Pure functions; token ids are :class:`UnifiedVocab`'s business.

OFA writes a box ``(x0, y0, x1, y1)`` as four location tokens ``<bin_k>``:

1. the task transform resizes the image to the patch size and scales the box by the resize ratios
   ``w_ratio = patch_w / w``, ``h_ratio = patch_h / h`` (RefCOCO: 512 / w and 512 / h);
2. each coordinate is divided by ``max_image_size`` (512 for RefCOCO; note: not the patch size), giving
   ``x̂`` in [0, 1] when the patch size equals ``max_image_size``;
3. ``bin = round(x̂ · (num_bins − 1))``.

Rounding: the reference does steps 1–3 on float32 tensors and rounds with ``torch.round`` (half to even).
This module does the same float32 arithmetic in the same order, so it reproduces the reference bins
exactly, including ties such as ``x̂ · 999 = 2.5 → 2``. Bins are then clipped into ``[0, num_bins − 1]``
(coordinates slightly outside the image are common in detection data).

The inverse is ``x = bin / (num_bins − 1) · max_image_size / w_ratio`` (``h_ratio`` for y), computed in
Python floats. Two levels of API:

* :func:`quantize_coords` / :func:`dequantize_coords` (alias :func:`quantize_box` / :func:`dequantize_box`):
  the box is already in patch-image pixels;
* :func:`box_to_bins` / :func:`bins_to_box`: the box is in original-image pixels and the resize to the patch
  size is applied (or undone) too.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import torch

from ofa.errors import TokenizationError

__all__ = [
    "quantize_coords",
    "dequantize_coords",
    "quantize_box",
    "dequantize_box",
    "box_to_bins",
    "bins_to_box",
    "resize_ratios",
]

Box = Sequence[float]
Size = int | float | Sequence[float]  # one side (square) or (width, height)


def _box(box_xyxy: object) -> tuple[float, float, float, float]:
    """Validates a box: 4 finite real numbers with x0 <= x1 and y0 <= y1."""
    if isinstance(box_xyxy, torch.Tensor):
        values = box_xyxy.detach().flatten().tolist() if box_xyxy.dim() <= 1 else None
    elif isinstance(box_xyxy, (str, bytes)):
        values = None
    else:
        try:
            values = list(box_xyxy)  # type: ignore[call-overload]
        except TypeError:
            values = None
    if values is None or len(values) != 4:
        raise TokenizationError(f"box {box_xyxy!r} must be 4 numbers (x0, y0, x1, y1)")
    out: list[float] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TokenizationError(f"box {box_xyxy!r} has a non-numeric coordinate {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise TokenizationError(f"box {box_xyxy!r} has a non-finite coordinate {v!r}; coordinates must be finite")
        out.append(f)
    x0, y0, x1, y1 = out
    if x0 > x1 or y0 > y1:
        raise TokenizationError(f"box {box_xyxy!r} must satisfy x0 <= x1 and y0 <= y1 (xyxy order)")
    return x0, y0, x1, y1


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(float(value)) and float(value) > 0
    ):
        raise TokenizationError(f"{name} ({value!r}) must be a finite number > 0")
    return float(value)


def _num_bins(num_bins: object) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise TokenizationError(f"num_bins ({num_bins!r}) must be an int >= 2")
    return num_bins


def _size(name: str, size: object) -> tuple[float, float]:
    if isinstance(size, numbers.Real) and not isinstance(size, bool):
        w = h = size
    else:
        try:
            w, h = size  # type: ignore[misc]
        except (TypeError, ValueError):
            raise TokenizationError(f"{name} ({size!r}) must be a number or a (width, height) pair") from None
    return _positive(f"{name} width", w), _positive(f"{name} height", h)


def _bins(bins: object, num_bins: int) -> tuple[int, int, int, int]:
    if isinstance(bins, torch.Tensor):
        values = bins.detach().flatten().tolist() if bins.dim() <= 1 else None
    else:
        try:
            values = list(bins)  # type: ignore[call-overload]
        except TypeError:
            values = None
    if values is None or len(values) != 4:
        raise TokenizationError(f"bins {bins!r} must be 4 ints (x0, y0, x1, y1)")
    out: list[int] = []
    for v in values:
        try:
            k = operator.index(v)
        except TypeError:
            raise TokenizationError(f"bins {bins!r} has a non-integer entry {v!r}") from None
        if not 0 <= k < num_bins:
            raise TokenizationError(f"bin {k} in {bins!r} is out of range; accepted bins are 0..{num_bins - 1}")
        out.append(k)
    return out[0], out[1], out[2], out[3]


def _quantize(values: tuple[float, float, float, float], ratios: tuple[float, float] | None,
              max_image_size: float, num_bins: int) -> tuple[int, int, int, int]:
    # float32 tensors, as the reference transform and dataset code use: bins match it bit for bit.
    t = torch.tensor(values, dtype=torch.float32)
    if ratios is not None:
        wr, hr = ratios
        t = t * torch.tensor([wr, hr, wr, hr], dtype=torch.float32)
    q = (t / max_image_size * (num_bins - 1)).round().clamp(0, num_bins - 1)
    a, b, c, d = (int(v) for v in q.tolist())
    return a, b, c, d


def quantize_coords(box_xyxy: Box, max_image_size: float, num_bins: int) -> tuple[int, int, int, int]:
    """Quantises a box given in patch-image pixels to four bins.

    Args:
        box_xyxy: ``(x0, y0, x1, y1)`` in the pixel space of the (already resized) patch image.
        max_image_size: The normaliser (512 in OFA), so ``x̂ = x / max_image_size``.
        num_bins: Number of bins N (1000 in OFA).

    Returns:
        ``(b_x0, b_y0, b_x1, b_y1)``, each ``round(x̂ · (N − 1))`` clipped to ``[0, N − 1]``.

    Raises:
        TokenizationError: If the box is not 4 finite numbers with ``x0 <= x1`` and ``y0 <= y1``, or a size
            argument is out of range.
    """
    box = _box(box_xyxy)
    return _quantize(box, None, _positive("max_image_size", max_image_size), _num_bins(num_bins))


def dequantize_coords(bins: Sequence[int], max_image_size: float, num_bins: int) -> tuple[float, float, float, float]:
    """Inverse of :func:`quantize_coords`: bin centres in patch-image pixels.

    Args:
        bins: Four bin numbers in ``[0, num_bins)``; any order (model outputs need not be a valid box).
        max_image_size: The normaliser used when quantising.
        num_bins: Number of bins N.

    Returns:
        ``(x0, y0, x1, y1)`` with ``x = bin / (N − 1) · max_image_size``.

    Raises:
        TokenizationError: If there are not 4 integer bins in range.
    """
    n = _num_bins(num_bins)
    m = _positive("max_image_size", max_image_size)
    a, b, c, d = (k / (n - 1) * m for k in _bins(bins, n))
    return a, b, c, d


def quantize_box(
    box_xyxy: Box, image_size: Size, num_bins: int, max_image_size: float | None = None
) -> tuple[int, int, int, int]:
    """Quantises a box in the pixel space of an image of ``image_size`` (the patch image).

    Args:
        box_xyxy: ``(x0, y0, x1, y1)`` in pixels of that image.
        image_size: Its side, or ``(width, height)``.
        num_bins: Number of bins N.
        max_image_size: Normaliser; defaults to the longer side of ``image_size`` (OFA: 512 for 512-px
            RefCOCO images, but 512 for 256-px pretraining detection images, so pass it explicitly there).

    Returns:
        Four bins, see :func:`quantize_coords`.

    Raises:
        TokenizationError: On a bad box or size.
    """
    w, h = _size("image_size", image_size)
    return quantize_coords(box_xyxy, max(w, h) if max_image_size is None else max_image_size, num_bins)


def dequantize_box(
    bins: Sequence[int], image_size: Size, num_bins: int, max_image_size: float | None = None
) -> tuple[float, float, float, float]:
    """Inverse of :func:`quantize_box` (same defaults).

    Raises:
        TokenizationError: On bad bins or size.
    """
    w, h = _size("image_size", image_size)
    return dequantize_coords(bins, max(w, h) if max_image_size is None else max_image_size, num_bins)


def resize_ratios(original_size: Size, patch_size: Size) -> tuple[float, float]:
    """``(w_ratio, h_ratio) = (patch_w / w, patch_h / h)`` for a resize from ``original_size`` to ``patch_size``.

    Raises:
        TokenizationError: If a size is not positive and finite.
    """
    w, h = _size("original_size", original_size)
    pw, ph = _size("patch_size", patch_size)
    return pw / w, ph / h


def box_to_bins(
    box_xyxy: Box,
    original_size: Size,
    patch_size: Size = 512,
    num_bins: int = 1000,
    max_image_size: float = 512,
) -> tuple[int, int, int, int]:
    """Quantises a box in original-image pixels: scale by the resize ratios, then :func:`quantize_coords`.

    Args:
        box_xyxy: ``(x0, y0, x1, y1)`` in pixels of the original image.
        original_size: ``(width, height)`` of the original image (or one side for a square image).
        patch_size: Size the image is resized to (``(w, h)`` or one side); RefCOCO uses 512×512.
        num_bins: Number of bins N.
        max_image_size: Normaliser (512 in OFA).

    Returns:
        Four bins in ``[0, num_bins)``.

    Raises:
        TokenizationError: On a bad box or size.
    """
    box = _box(box_xyxy)
    ratios = resize_ratios(original_size, patch_size)
    return _quantize(box, ratios, _positive("max_image_size", max_image_size), _num_bins(num_bins))


def bins_to_box(
    bins: Sequence[int],
    original_size: Size,
    patch_size: Size = 512,
    num_bins: int = 1000,
    max_image_size: float = 512,
) -> tuple[float, float, float, float]:
    """Inverse of :func:`box_to_bins`: four bins to a box in original-image pixels.

    Returns:
        ``(x0, y0, x1, y1)`` with ``x = bin / (N − 1) · max_image_size / w_ratio`` (``h_ratio`` for y).

    Raises:
        TokenizationError: On bad bins or size.
    """
    wr, hr = resize_ratios(original_size, patch_size)
    x0, y0, x1, y1 = dequantize_coords(bins, max_image_size, num_bins)
    return x0 / wr, y0 / hr, x1 / wr, y1 / hr
