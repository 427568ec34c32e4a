"""Position tables and the shared absolute-position attention bias of OFA.

Positions never enter the token stream: each stack turns its (LayerNorm-ed) absolute position embeddings into
a per-head bias ``(q_lin(P) * scale) @ k_lin(P)^T`` that every layer adds to its attention logits.
"""

from __future__ import annotations

import torch
from torch import nn

from ofa.nn.attention import split_heads

__all__ = ["position_bias", "project_positions", "gather_rel_bias"]


def project_positions(linear: nn.Linear, positions: torch.Tensor, num_heads: int, scaling: float = 1.0) -> torch.Tensor:
    """``[b, t, D]`` position embeddings -> per-head projections ``[b, h, t, d]`` (times ``scaling``)."""
    projected = linear(positions)
    if scaling != 1.0:
        projected = projected * scaling
    return split_heads(projected, num_heads)


def position_bias(
    q_linear: nn.Linear,
    k_linear: nn.Linear,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    num_heads: int,
    scaling: float,
) -> torch.Tensor:
    """Absolute-position bias ``[b, h, tq, tk]`` from LN-ed position embeddings ``[b, tq, D]`` and ``[b, tk, D]``."""
    q = project_positions(q_linear, query_positions, num_heads, scaling)
    k = project_positions(k_linear, key_positions, num_heads)
    return torch.matmul(q, k.transpose(-1, -2))


def gather_rel_bias(table: nn.Embedding, index: torch.Tensor) -> torch.Tensor:
    """Per-head relative bias ``[h, tq, tk]`` from a ``[rows, h]`` table and a ``[tq, tk]`` row index (``[b, h, tq,
    tk]`` from a per-sample ``[b, tq, tk]`` index)."""
    # Gather from the [h, rows] view: each head's plane comes out contiguous, with no [.., h] -> [h, ..] copy.
    # movedim puts the head axis after the batch axis of a per-sample index; for a [tq, tk] index it is a no-op.
    heads = table.weight.shape[1]
    return table.weight.t().index_select(1, index.reshape(-1)).view(heads, *index.shape).movedim(0, -3)
