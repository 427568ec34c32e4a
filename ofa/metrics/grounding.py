"""Box IoU and Acc@0.5 for referring expression comprehension, with OFA's hit rule (spec section 5.2).

Boxes are ``(x0, y0, x1, y1)`` in pixels with ``x0 <= x1`` and ``y0 <= y1``. The intersection comes from the
element-wise max of the top-left and min of the bottom-right corners, and
``IoU = inter / (area_pred + area_gt - inter + 1e-6)``. A prediction is a hit when ``IoU >= threshold`` and the
intersection has positive width *and* height, so boxes that only touch never count.

OFA multiplies the raw (possibly negative) intersection width and height; :func:`box_iou` clamps them at 0 so it
returns a true IoU in [0, 1]. Hits are unaffected: a hit needs both to be positive, where the two agree.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from ofa.errors import ConfigError, DataError

__all__ = ["box_iou", "box_iou_batch", "grounding_hit", "grounding_hits", "grounding_accuracy"]

BoxLike = Union[Sequence[float], torch.Tensor]
_EPS = 1e-6


def _as_boxes(boxes: BoxLike | Sequence[BoxLike] | torch.Tensor, name: str) -> torch.Tensor:
    """[n, 4] float64 tensor of valid boxes, or DataError naming the first bad one."""
    try:
        t = torch.as_tensor(boxes, dtype=torch.float64) if not isinstance(boxes, torch.Tensor) else \
            boxes.detach().to(device="cpu", dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"{name} must be boxes (x0, y0, x1, y1) of numbers, got {boxes!r}: {err}") from err
    if t.ndim == 1:
        t = t.reshape(0, 4) if t.numel() == 0 else t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] != 4:
        raise DataError(f"{name} must have shape [n, 4] (x0, y0, x1, y1), got {tuple(t.shape)}")
    bad = ~torch.isfinite(t).all(dim=1) | (t[:, 0] > t[:, 2]) | (t[:, 1] > t[:, 3])
    if bad.any():
        i = int(bad.nonzero()[0])
        raise DataError(f"{name}[{i}] = {t[i].tolist()} is not a box: need finite x0 <= x1 and y0 <= y1")
    return t


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold ({threshold!r}) must be in [0, 1]")


def _iou_parts(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(IoU with clamped intersection, intersection width, intersection height), each [n]."""
    if pred.shape != gt.shape:
        raise DataError(f"{pred.shape[0]} predicted boxes but {gt.shape[0]} ground-truth boxes")
    lo = torch.maximum(pred[:, :2], gt[:, :2])  # [n, 2]
    hi = torch.minimum(pred[:, 2:], gt[:, 2:])  # [n, 2]
    inter_w = hi[:, 0] - lo[:, 0]
    inter_h = hi[:, 1] - lo[:, 1]
    inter = inter_w.clamp(min=0) * inter_h.clamp(min=0)
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    return inter / (area_p + area_g - inter + _EPS), inter_w, inter_h


def box_iou_batch(pred: torch.Tensor | Sequence[BoxLike], gt: torch.Tensor | Sequence[BoxLike]) -> torch.Tensor:
    """IoU of each predicted box with its ground-truth box.

    Args:
        pred: [n, 4] predicted boxes (x0, y0, x1, y1) in pixels.
        gt: [n, 4] ground-truth boxes.

    Returns:
        [n] float64 IoU values in [0, 1).

    Raises:
        DataError: on a shape other than [n, 4], differing n, or a box with NaN/inf or x0 > x1 / y0 > y1.
    """
    return _iou_parts(_as_boxes(pred, "pred"), _as_boxes(gt, "gt"))[0]


def box_iou(pred: BoxLike, gt: BoxLike) -> float:
    """IoU of one predicted box with one ground-truth box (see :func:`box_iou_batch`)."""
    return float(box_iou_batch(_single(pred, "pred"), _single(gt, "gt"))[0])


def grounding_hits(pred: torch.Tensor | Sequence[BoxLike], gt: torch.Tensor | Sequence[BoxLike],
                   threshold: float = 0.5) -> torch.Tensor:
    """OFA's hit rule for each pair: IoU >= threshold and positive intersection width and height.

    Args:
        pred: [n, 4] predicted boxes (x0, y0, x1, y1) in pixels.
        gt: [n, 4] ground-truth boxes.
        threshold: IoU needed for a hit.

    Returns:
        [n] bool tensor.

    Raises:
        DataError: on bad boxes (see :func:`box_iou_batch`).
        ConfigError: if ``threshold`` is outside [0, 1].
    """
    _check_threshold(threshold)
    iou, inter_w, inter_h = _iou_parts(_as_boxes(pred, "pred"), _as_boxes(gt, "gt"))
    return (iou >= threshold) & (inter_w > 0) & (inter_h > 0)


def grounding_hit(pred: BoxLike, gt: BoxLike, threshold: float = 0.5) -> bool:
    """Whether one predicted box hits its ground truth under OFA's rule (see :func:`grounding_hits`)."""
    return bool(grounding_hits(_single(pred, "pred"), _single(gt, "gt"), threshold)[0])


def grounding_accuracy(preds: torch.Tensor | Sequence[BoxLike], gts: torch.Tensor | Sequence[BoxLike],
                       threshold: float = 0.5) -> float:
    """Acc@threshold: the fraction of hits (multiply by 100 for the usual percentage).

    Raises:
        DataError: on no boxes or bad boxes.
        ConfigError: if ``threshold`` is outside [0, 1].
    """
    hits = grounding_hits(preds, gts, threshold)
    if hits.numel() == 0:
        raise DataError("no boxes to score")
    return float(hits.double().mean())


def _single(box: BoxLike, name: str) -> torch.Tensor:
    t = _as_boxes(box, name)
    if t.shape[0] != 1:
        raise DataError(f"{name} must be one box (x0, y0, x1, y1), got {t.shape[0]} boxes")
    return t
