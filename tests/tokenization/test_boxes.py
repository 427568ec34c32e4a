"""Tests for ofa.tokenization.boxes: box quantisation (spec §4.4)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ofa.errors import TokenizationError
from ofa.tokenization import (
    bins_to_box,
    box_to_bins,
    dequantize_box,
    dequantize_coords,
    quantize_box,
    quantize_coords,
    resize_ratios,
)

coord = st.floats(min_value=0.0, max_value=512.0, allow_nan=False)
num_bins_st = st.integers(min_value=2, max_value=2000)
size_st = st.floats(min_value=1.0, max_value=4096.0)


def test_refcoco_example() -> None:
    # 640x480 image resized to 512x512: x * 0.8, y * 512/480, then / 512 * 999, rounded - in float32, as the
    # reference transform does. y1: 400 * 512/480 / 512 * 999 = 832.5 exactly in real numbers; float32 gives
    # 832.50006 -> 833 (the reference's bin), while float64 + Python round would give 832.
    box = (10.0, 20.0, 300.0, 400.0)
    ratios = torch.tensor([512 / 640, 512 / 480, 512 / 640, 512 / 480], dtype=torch.float32)
    reference = (torch.tensor(box, dtype=torch.float32) * ratios / 512 * 999).round().long().tolist()
    assert box_to_bins(box, (640, 480)) == tuple(reference) == (16, 42, 468, 833)
    assert round(400 * 512 / 480 / 512 * 999) == 832
    x0, _, _, y1 = bins_to_box((16, 42, 468, 833), (640, 480))
    assert x0 == pytest.approx(16 / 999 * 512 / 0.8)
    assert y1 == pytest.approx(833 / 999 * 512 / (512 / 480))


def test_rounding_is_half_to_even_like_torch() -> None:
    # num_bins=3, max 4: x / 4 * 2 = 0.5, 1.5, 2.5 exactly -> 0, 2, 2 (torch.round and Python round agree)
    assert quantize_coords((1.0, 3.0, 5.0, 5.0), max_image_size=4, num_bins=3) == (0, 2, 2, 2)
    assert quantize_coords((1.0, 1.0, 3.0, 3.0), max_image_size=4, num_bins=5) == (1, 1, 3, 3)
    assert torch.tensor([0.5, 1.5, 2.5]).round().tolist() == [0.0, 2.0, 2.0]


def test_bins_are_clipped() -> None:
    assert quantize_coords((-50.0, -1.0, 600.0, 1e30), 512, 1000) == (0, 0, 999, 999)
    assert box_to_bins((0, 0, 640, 480), (640, 480)) == (0, 0, 999, 999)


def test_pretraining_detection_uses_half_the_range() -> None:
    # 256-px images normalised by 512 stay in [0, 499] (spec §4.4).
    assert quantize_box((0, 0, 256, 256), image_size=256, num_bins=1000, max_image_size=512) == (0, 0, 500, 500)
    assert quantize_box((0, 0, 255, 255), image_size=256, num_bins=1000, max_image_size=512)[2] == 498
    assert quantize_box((0, 0, 256, 128), image_size=(256, 128), num_bins=1000) == (0, 0, 999, 500)
    assert dequantize_box((0, 0, 999, 999), image_size=256, num_bins=1000) == (0.0, 0.0, 256.0, 256.0)


def test_accepts_tensors_and_ints() -> None:
    assert quantize_coords(torch.tensor([0, 0, 512, 256]), 512, 1000) == (0, 0, 999, 500)
    assert dequantize_coords(torch.tensor([0, 999, 999, 0]), 512, 1000) == (0.0, 512.0, 512.0, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=4, max_size=4),
    num_bins=num_bins_st,
    max_size=size_st,
)
def test_bins_always_in_range(values: list[float], num_bins: int, max_size: float) -> None:
    box = (min(values[0], values[2]), min(values[1], values[3]), max(values[0], values[2]), max(values[1], values[3]))
    bins = quantize_coords(box, max_size, num_bins)
    assert all(isinstance(b, int) and 0 <= b < num_bins for b in bins)
    assert bins[0] <= bins[2] and bins[1] <= bins[3]


@settings(max_examples=200, deadline=None)
@given(a=coord, b=coord, num_bins=num_bins_st)
def test_monotone_in_x(a: float, b: float, num_bins: int) -> None:
    lo, hi = min(a, b), max(a, b)
    q_lo = quantize_coords((lo, 0, 512, 1), 512, num_bins)[0]
    q_hi = quantize_coords((hi, 0, 512, 1), 512, num_bins)[0]
    assert q_lo <= q_hi


@settings(max_examples=200, deadline=None)
@given(x=st.floats(min_value=0.0, max_value=1.0), num_bins=num_bins_st, max_size=size_st)
def test_dequantize_quantize_error_is_half_a_bin(x: float, num_bins: int, max_size: float) -> None:
    v = x * max_size
    q = quantize_coords((v, v, v, v), max_size, num_bins)
    back = dequantize_coords(q, max_size, num_bins)
    bound = max_size / (2 * (num_bins - 1))
    assert all(abs(r - v) <= bound + 1e-5 * max_size for r in back)


@settings(max_examples=100, deadline=None)
@given(
    w=st.integers(16, 2000),
    h=st.integers(16, 2000),
    fx=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=4, max_size=4),
)
def test_original_pixel_round_trip(w: int, h: int, fx: list[float]) -> None:
    box = (min(fx[0], fx[2]) * w, min(fx[1], fx[3]) * h, max(fx[0], fx[2]) * w, max(fx[1], fx[3]) * h)
    back = bins_to_box(box_to_bins(box, (w, h)), (w, h))
    wr, hr = resize_ratios((w, h), 512)
    for got, want, r in zip(back, box, (wr, hr, wr, hr)):
        assert abs(got - want) <= (512 / (2 * 999) + 1e-3) / r


@pytest.mark.parametrize(
    "box",
    [
        (float("nan"), 0, 1, 1),
        (0, 0, float("inf"), 1),
        (5, 0, 4, 1),  # x0 > x1
        (0, 5, 1, 4),  # y0 > y1
        (0, 0, 1),
        (0, 0, 1, 1, 1),
        "0 0 1 1",
        (0, 0, "1", 1),
        (0, 0, True, 1),
        None,
    ],
)
def test_bad_boxes_raise_naming_the_box(box: object) -> None:
    with pytest.raises(TokenizationError, match="box"):
        quantize_coords(box, 512, 1000)  # type: ignore[arg-type]
    with pytest.raises(TokenizationError, match="box"):
        box_to_bins(box, (640, 480))  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(x0=coord, x1=coord)
def test_reversed_x_raises(x0: float, x1: float) -> None:
    assume(x0 > x1)
    with pytest.raises(TokenizationError, match="x0 <= x1"):
        quantize_coords((x0, 0, x1, 1), 512, 1000)


def test_bad_bins_and_sizes() -> None:
    with pytest.raises(TokenizationError, match=r"bin 1000 .*0\.\.999"):
        dequantize_coords((0, 0, 1000, 1), 512, 1000)
    with pytest.raises(TokenizationError, match="non-integer"):
        dequantize_coords((0, 0, 1.5, 1), 512, 1000)  # type: ignore[arg-type]
    with pytest.raises(TokenizationError, match="4 ints"):
        dequantize_coords((0, 0, 1), 512, 1000)
    with pytest.raises(TokenizationError, match="num_bins"):
        quantize_coords((0, 0, 1, 1), 512, 1)
    with pytest.raises(TokenizationError, match="max_image_size"):
        quantize_coords((0, 0, 1, 1), 0, 1000)
    with pytest.raises(TokenizationError, match="max_image_size"):
        quantize_coords((0, 0, 1, 1), math.nan, 1000)
    with pytest.raises(TokenizationError, match="original_size"):
        box_to_bins((0, 0, 1, 1), (640, -1))
    with pytest.raises(TokenizationError, match="patch_size"):
        box_to_bins((0, 0, 1, 1), (640, 480), patch_size=(1, 2, 3))  # type: ignore[arg-type]
