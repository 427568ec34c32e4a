"""Multi-head attention with OFA's scaling, additive position biases and per-head output gains.

Queries are scaled by ``(head_dim * attn_scale_factor) ** -0.5`` (bias included before scaling), the logits get
an additive bias (relative + absolute positions and the ``-inf`` masks), softmax runs in fp32, and with
``scale_heads`` each head's output is multiplied by a learned gain ``c_attn[h]`` before ``out_proj``
(NormFormer, arXiv:2110.09456).
"""

from __future__ import annotations

import torch
from torch import nn

from ofa.nn.attention_backends import attention, eager_attention, resolve_backend

__all__ = ["MultiheadAttention", "split_heads", "merge_heads"]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[b, t, h * d] -> [b, h, t, d]``."""
    b, t, _ = x.shape
    return x.view(b, t, num_heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[b, h, t, d] -> [b, t, h * d]``."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


class MultiheadAttention(nn.Module):
    """OFA attention block: separate biased q/k/v projections, additive bias, per-head gains, output projection.

    Args:
        embed_dim: width of queries and outputs.
        num_heads: number of heads.
        scaling: query scale, ``(head_dim * attn_scale_factor) ** -0.5``.
        kdim: width of keys/values (``embed_dim`` when None).
        dropout: attention-probability dropout (training only).
        scale_heads: learn a gain per head (``c_attn``).
        backend: attention backend name (see :mod:`ofa.nn.attention_backends`).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        scaling: float,
        kdim: int | None = None,
        dropout: float = 0.0,
        scale_heads: bool = True,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = scaling
        self.dropout = dropout
        self.backend = resolve_backend(backend)
        kdim = embed_dim if kdim is None else kdim
        self.c_attn = nn.Parameter(torch.ones(num_heads)) if scale_heads else None
        self.k_proj = nn.Linear(kdim, embed_dim)
        self.v_proj = nn.Linear(kdim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def project_query(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, t, D] -> [b, h, t, d]``, scaled."""
        return split_heads(self.q_proj(x) * self.scaling, self.num_heads)

    def project_key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[b, t, kdim] -> ([b, h, t, d], [b, h, t, d])``."""
        return split_heads(self.k_proj(x), self.num_heads), split_heads(self.v_proj(x), self.num_heads)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention over projected heads, then per-head gains and ``out_proj``.

        Args:
            q: ``[b, h, tq, d]`` (scaled); k, v: ``[b, h, tk, d]``.
            bias: additive bias broadcastable to ``[b, h, tq, tk]``.
            need_weights: also return the attention probabilities ``[b, h, tq, tk]`` (runs the eager path).

        Returns:
            ``([b, tq, D], weights or None)``.
        """
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            out, weights = eager_attention(q, k, v, bias, dropout_p, return_weights=True)
        else:
            out = attention(q, k, v, bias, dropout_p=dropout_p, backend=self.backend)
        if self.c_attn is not None:
            out = out * self.c_attn.view(1, -1, 1, 1).to(out.dtype)
        return self.out_proj(merge_heads(out)), weights

    def forward(
        self,
        query: torch.Tensor,
        key_value: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention (``key_value=None``) or attention of ``query [b, tq, D]`` to ``key_value [b, tk, kdim]``."""
        source = query if key_value is None else key_value
        k, v = self.project_key_value(source)
        return self.attend(self.project_query(query), k, v, bias, need_weights)
