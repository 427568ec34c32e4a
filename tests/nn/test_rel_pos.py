"""Tests for ofa.nn.rel_pos: bucket formulas against the reference's stored buffers and the spec's examples."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ofa.nn.rel_pos import (
    decoder_image_position_ids,
    image_bucket_index,
    image_position_ids,
    num_image_rel_rows,
    token_bucket_index,
    token_rel_positions,
)

TB, IB = 256, 42  # token_bucket_size and image_bucket_size of every release


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_token_buckets_equal_reference_buffer(golden_data: dict[str, Any], stack: str) -> None:
    stored = golden_data["model"][f"{stack}.token_rp_bucket"]
    pos = torch.arange(stored.shape[0])
    assert stored.shape == (1024, 1024)
    assert torch.equal(token_rel_positions(pos, pos, TB), stored)


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_image_buckets_equal_reference_buffer(golden_data: dict[str, Any], stack: str) -> None:
    stored = golden_data["model"][f"{stack}.image_rp_bucket"]
    ids = torch.arange(IB**2 + 1)
    assert stored.shape == (1765, 1765)
    assert torch.equal(image_bucket_index(ids, ids, IB), stored)


def test_decoder_image_position_idx_equals_reference_buffer(golden_data: dict[str, Any]) -> None:
    stored = golden_data["model"]["decoder.image_position_idx"]
    assert torch.equal(decoder_image_position_ids(16, IB), stored)


# Spec §2.4: |rel| -> |bucket| before the +tb-1 offset.
SPEC_EXAMPLES = [(127, 127), (128, 128), (129, 129), (130, 129), (140, 134), (200, 156), (300, 181), (500, 212),
                 (1000, 254), (1023, 255)]


@pytest.mark.parametrize(("distance", "bucket"), SPEC_EXAMPLES)
def test_token_bucket_spec_examples(distance: int, bucket: int) -> None:
    index = token_bucket_index(torch.tensor([distance, -distance]), TB, 1024)
    assert index.tolist() == [bucket + TB - 1, -bucket + TB - 1]


def test_token_buckets_exact_window_range_symmetry_and_monotonicity() -> None:
    rel = torch.arange(-1023, 1024)
    index = token_bucket_index(rel, TB, 1024)
    assert index.dtype == torch.int64
    window = rel.abs() <= TB // 2
    assert torch.equal(index[window], rel[window] + TB - 1)  # exact inside |rel| <= 128
    assert int(index.min()) == 0 and int(index.max()) == 2 * TB - 2  # rows of a [511, H] table
    assert torch.equal(index - (TB - 1), -(index.flip(0) - (TB - 1)))  # antisymmetric in rel
    assert bool((index[1:] >= index[:-1]).all())


def test_token_rel_positions_is_query_minus_key() -> None:
    q = torch.tensor([5, 6])
    k = torch.arange(8)
    expected = token_bucket_index(q[:, None] - k[None, :], TB, 1024)
    assert torch.equal(token_rel_positions(q, k, TB), expected)
    assert token_rel_positions(q, k, TB)[0, 5].item() == TB - 1  # rel 0


def test_image_bucket_formula_and_special_rows() -> None:
    assert num_image_rel_rows(IB) == 6892
    # query patch at (row 2, col 3), key at (0, 0): (2 + 41) * 83 + (3 + 41)
    q = torch.tensor([0, 1 + 2 * IB + 3])
    k = torch.tensor([0, 1, 1 + 2 * IB + 3])
    index = image_bucket_index(q, k, IB)
    assert index[1, 1].item() == (2 + 41) * 83 + (3 + 41)
    assert index[1, 2].item() == 41 * 83 + 41  # same patch
    assert index[0, 1].item() == 6889  # query id 0
    assert index[1, 0].item() == 6890  # key id 0
    assert index[0, 0].item() == 6891  # both 0
    ids = torch.arange(1, IB**2 + 1)
    ordinary = image_bucket_index(ids, ids, IB)
    assert int(ordinary.min()) == 0 and int(ordinary.max()) == 6888


def test_image_position_ids_use_the_bucket_size_as_row_stride() -> None:
    assert image_position_ids(2, 3, IB).tolist() == [1, 2, 3, 43, 44, 45]
    assert image_position_ids(IB, IB, IB).max().item() == IB**2


@pytest.mark.parametrize(("grid", "length"), [(16, 1026), (32, 1794)])
def test_decoder_image_position_ids_layout(grid: int, length: int) -> None:
    ids = decoder_image_position_ids(grid, IB)
    assert ids.shape == (length,)
    assert ids[0].item() == 0  # the code bos
    assert torch.equal(ids[1:1 + grid * grid], image_position_ids(grid, grid, IB))
    assert bool((ids[1 + grid * grid:] == 1024).all()) and ids[1 + grid * grid:].numel() == 769
