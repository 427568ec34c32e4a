"""Relative-position bucket indices for text and image tokens (OFA, arXiv:2202.03052, §2.4 of our spec).

Each layer owns two tables (``[2*tb-1, H]`` for text, ``[(2*ib-1)**2 + 3, H]`` for images); the functions here
compute which row of the table a (query, key) pair reads. The official checkpoints store these indices as
1024x1024 and 1765x1765 int64 buffers; we compute only the part a forward needs, on the fly, and check the
stored buffers against these formulas when loading.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "token_bucket_index",
    "token_rel_positions",
    "image_bucket_index",
    "image_position_ids",
    "decoder_image_position_ids",
    "num_image_rel_rows",
]


def token_bucket_index(rel: torch.Tensor, bucket_size: int, max_positions: int) -> torch.Tensor:
    """Table row for relative distances ``rel = query_pos - key_pos`` (log-spaced beyond ``bucket_size / 2``).

    Args:
        rel: integer tensor of relative distances, any shape.
        bucket_size: ``token_bucket_size`` (256 in every release).
        max_positions: the length the log spacing is computed for (1024; the reference always uses 1024).

    Returns:
        int64 tensor of the same shape with values in ``[0, 2 * bucket_size - 2]``.
    """
    mid = bucket_size // 2
    abs_rel = rel.abs()
    # Inside the exact window the formula's log term is never used; clamp keeps log() finite there.
    safe = torch.where(abs_rel > mid, abs_rel, torch.full_like(abs_rel, mid)).to(torch.float32)
    log_bucket = torch.ceil(torch.log(safe / mid) / math.log((max_positions - 1) / mid) * (mid - 1)) + mid
    bucket = torch.where(abs_rel <= mid, rel, log_bucket.to(torch.int64) * torch.sign(rel))
    return bucket.to(torch.int64) + bucket_size - 1


def token_rel_positions(
    query_positions: torch.Tensor, key_positions: torch.Tensor, bucket_size: int, max_positions: int = 1024
) -> torch.Tensor:
    """Bucket rows for every (query, key) pair: ``[tq, tk]`` from 1-d position tensors."""
    rel = query_positions.to(torch.int64)[:, None] - key_positions.to(torch.int64)[None, :]
    return token_bucket_index(rel, bucket_size, max_positions)


def num_image_rel_rows(bucket_size: int) -> int:
    """Rows of an image relative table: ``(2 * ib - 1) ** 2 + 3`` (6892 for ib = 42)."""
    return (2 * bucket_size - 1) ** 2 + 3


def image_bucket_index(query_ids: torch.Tensor, key_ids: torch.Tensor, bucket_size: int) -> torch.Tensor:
    """Table rows for pairs of image position ids (``id = 1 + row * ib + col``; id 0 is special).

    Returns ``[tq, tk]`` int64: ``(dr + ib - 1) * (2 * ib - 1) + (dc + ib - 1)`` for ordinary ids, and the three
    special rows ``n - 3`` (query id 0), ``n - 2`` (key id 0), ``n - 1`` (both 0) with ``n`` the table size.
    """
    q = query_ids.to(torch.int64)[:, None]
    k = key_ids.to(torch.int64)[None, :]
    span = 2 * bucket_size - 1
    dr = (q - 1).div(bucket_size, rounding_mode="floor") - (k - 1).div(bucket_size, rounding_mode="floor")
    dc = (q - 1).remainder(bucket_size) - (k - 1).remainder(bucket_size)
    index = (dr + bucket_size - 1) * span + (dc + bucket_size - 1)
    n = num_image_rel_rows(bucket_size)
    index = torch.where(q == 0, torch.full_like(index, n - 3), index)
    index = torch.where(k == 0, torch.full_like(index, n - 2), index)
    index = torch.where((q == 0) & (k == 0), torch.full_like(index, n - 1), index)
    return index


def image_position_ids(height: int, width: int, bucket_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Position ids of an ``height x width`` patch grid in row-major order: ``1 + row * ib + col`` -> ``[h * w]``."""
    rows = torch.arange(height, device=device)[:, None] * bucket_size
    cols = torch.arange(width, device=device)[None, :]
    return (rows + cols + 1).reshape(-1)


def decoder_image_position_ids(grid_size: int, bucket_size: int) -> torch.Tensor:
    """The decoder's ``image_position_idx``: ``[0]`` (bos) + the ``grid x grid`` raster ids + ``[1024] * 769``.

    The tail keeps the table as long as the reference's (``1 + grid**2 + 769``); those rows are never used by a
    code sequence of ``grid**2`` tokens plus eos.
    """
    grid = image_position_ids(grid_size, grid_size, bucket_size)
    # The reference appends a fixed 769 copies of id 1024, whatever the grid size.
    tail = torch.full((769,), 1024, dtype=torch.int64)
    return torch.cat([torch.zeros(1, dtype=torch.int64), grid, tail])
