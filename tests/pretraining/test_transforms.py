"""Tests for ofa.pretraining.transforms: crops keep boxes on their objects; the infilling hole is where OFA puts it."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

from ofa.pretraining.transforms import (
    detection_transform,
    grounding_transform,
    image_text_transform,
    infilling_transform,
    pretraining_augment,
)


def _scene(size: tuple[int, int] = (120, 90)) -> tuple[Image.Image, tuple[int, int, int, int]]:
    image = Image.new("RGB", size, (0, 0, 0))
    box = (70, 20, 100, 60)
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    return image, box


def test_image_text_transform_shape_and_range() -> None:
    image, _ = _scene()
    for seed in range(5):
        out = image_text_transform(image, 64, torch.Generator().manual_seed(seed))
        assert out.shape == (3, 64, 64) and float(out.min()) >= -1.0 and float(out.max()) <= 1.0


def test_image_text_augment_is_ofas_random_augment_after_the_crop() -> None:
    image, _ = _scene()
    augment = pretraining_augment(64)
    assert (augment.num_ops, augment.magnitude, len(augment.ops)) == (2, 7.0, 10)
    assert augment.translate == 10 * 64 / 384  # 10 px at OFA's 384
    plain = [image_text_transform(image, 64, torch.Generator().manual_seed(s)) for s in range(12)]
    augmented = [image_text_transform(image, 64, torch.Generator().manual_seed(s), augment) for s in range(12)]
    again = [image_text_transform(image, 64, torch.Generator().manual_seed(s), augment) for s in range(12)]
    assert all(torch.equal(a, b) for a, b in zip(augmented, again))  # seeded
    changed = sum(not torch.equal(a, p) for a, p in zip(augmented, plain))
    assert 3 <= changed <= 12  # 1 - (0.5 + 0.5 * 0.1) ** 2 = 0.7: ~8 of 12 images see a non-identity op
    assert all(a.shape == (3, 64, 64) and float(a.min()) >= -1.0 and float(a.max()) <= 1.0 for a in augmented)


def test_grounding_crop_keeps_the_box_on_the_object() -> None:
    image, box = _scene()
    for seed in range(10):
        tensor, (x0, y0, x1, y1) = grounding_transform(image, box, 64, torch.Generator().manual_seed(seed))
        assert tensor.shape == (3, 64, 64)
        inside = tensor[0, int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2]
        assert inside.numel() > 0 and float(inside.mean()) > 0.9  # white inside the box
        assert float(tensor[0].mean()) < float(inside.mean())


def test_detection_boxes_follow_flip_and_jitter() -> None:
    image, box = _scene()
    flips = 0
    for seed in range(20):
        tensor, kept, boxes = detection_transform(image, [box, (0, 0, 1, 1)], 64, torch.Generator().manual_seed(seed))
        assert tensor.shape == (3, 64, 64)
        for (x0, y0, x1, y1) in boxes:
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        if 0 in kept:
            x0, y0, x1, y1 = boxes[kept.index(0)]
            inside = tensor[0, int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2]
            if inside.numel():
                assert float(inside.mean()) > 0.9
            flips += x0 < 32
    assert flips > 0  # the object moved to the left half in some draws (flipped)


def test_infilling_zeroes_the_middle_quarter() -> None:
    image, _ = _scene()
    out = infilling_transform(image, 64)
    assert out.shape == (3, 64, 64)
    assert torch.equal(out[:, 16:48, 16:48], torch.zeros(3, 32, 32))
    assert bool((out[:, :16] != 0).any())
