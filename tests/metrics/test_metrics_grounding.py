"""Box IoU and OFA's Acc@0.5 hit rule, including the touching-box and bad-box edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from ofa.errors import ConfigError, DataError
from ofa.metrics import box_iou, box_iou_batch, grounding_accuracy, grounding_hit, grounding_hits


def test_identical_boxes() -> None:
    assert box_iou((10, 20, 50, 80), (10, 20, 50, 80)) == pytest.approx(1.0, abs=1e-9)
    assert grounding_hit((10, 20, 50, 80), (10, 20, 50, 80))


def test_hand_computed_iou() -> None:
    # inter = [5, 10] x [0, 10] = 50; union = 100 + 100 - 50 = 150.
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / (150 + 1e-6))
    assert not grounding_hit((0, 0, 10, 10), (5, 0, 15, 10))  # 1/3 < 0.5
    # inter = 80, union = 100 + 80 - 80 = 100 -> 0.8.
    assert grounding_hit((0, 0, 10, 10), (0, 0, 10, 8))
    # Exactly 0.5 in exact arithmetic is just below it after the 1e-6 guard: a miss, as in OFA.
    assert not grounding_hit((0, 0, 10, 10), (0, 0, 10, 5))


def test_touching_boxes_never_hit() -> None:
    # Shared edge: inter_w = 0, so no hit even with a threshold of 0 (where IoU >= threshold holds).
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert not grounding_hit((0, 0, 10, 10), (10, 0, 20, 10), threshold=0.0)
    assert not grounding_hit((0, 0, 10, 10), (0, 10, 10, 20), threshold=0.0)
    # Overlapping boxes do hit at threshold 0.
    assert grounding_hit((0, 0, 10, 10), (9, 9, 20, 20), threshold=0.0)


def test_disjoint_diagonal_boxes() -> None:
    # OFA's raw product of two negative sides would be positive; the IoU is clamped and the hit is a miss.
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert not grounding_hit((0, 0, 10, 10), (20, 20, 30, 30), threshold=0.0)


def test_degenerate_boxes_are_allowed_but_never_hit() -> None:
    assert box_iou((5, 5, 5, 5), (5, 5, 5, 5)) == 0.0
    assert not grounding_hit((5, 5, 5, 5), (0, 0, 10, 10), threshold=0.0)


def test_batch_matches_scalar() -> None:
    gen = torch.Generator().manual_seed(0)
    xy0 = torch.rand(50, 2, generator=gen) * 100
    wh = torch.rand(50, 2, generator=gen) * 60
    pred = torch.cat([xy0, xy0 + wh], dim=1)
    gt = pred + torch.randn(50, 4, generator=gen) * 5
    gt = torch.cat([torch.minimum(gt[:, :2], gt[:, 2:]), torch.maximum(gt[:, :2], gt[:, 2:])], dim=1)
    ious = box_iou_batch(pred, gt)
    hits = grounding_hits(pred, gt)
    assert ious.shape == (50,) and hits.dtype == torch.bool
    for i in range(50):
        assert ious[i].item() == pytest.approx(box_iou(pred[i], gt[i]))
        assert hits[i].item() == grounding_hit(pred[i].tolist(), gt[i].tolist())
    assert grounding_accuracy(pred, gt) == pytest.approx(hits.double().mean().item())
    assert 0 < hits.sum() < 50


def test_accuracy_on_lists() -> None:
    preds = [(0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10), (50, 50, 60, 60)]
    gts = [(0, 0, 10, 10), (1, 1, 10, 10), (10, 0, 20, 10), (0, 0, 1, 1)]
    assert grounding_accuracy(preds, gts) == 0.5


@pytest.mark.parametrize(
    "box",
    [(10, 0, 5, 10), (0, 10, 10, 5), (math.nan, 0, 1, 1), (0, 0, math.inf, 1), (0, 0, 1), "0,0,1,1"],
)
def test_bad_boxes_raise(box: object) -> None:
    with pytest.raises(DataError):
        box_iou(box, (0, 0, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(DataError):
        grounding_hit((0, 0, 1, 1), box)  # type: ignore[arg-type]


def test_bad_batches_and_thresholds_raise() -> None:
    with pytest.raises(DataError, match="2 predicted boxes but 1"):
        box_iou_batch(torch.zeros(2, 4), torch.zeros(1, 4))
    with pytest.raises(DataError, match="no boxes"):
        grounding_accuracy([], [])
    with pytest.raises(DataError, match="one box"):
        box_iou([(0, 0, 1, 1), (0, 0, 1, 1)], (0, 0, 1, 1))
    with pytest.raises(ConfigError, match="threshold"):
        grounding_hit((0, 0, 1, 1), (0, 0, 1, 1), threshold=1.5)
