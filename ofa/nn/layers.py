"""Pre-LN Transformer layers with OFA's NormFormer extras (arXiv:2110.09456).

The attribute names are the official checkpoint's (``self_attn_layer_norm``, ``attn_ln``, ``fc1``,
``ffn_layernorm``, ...) so weights load without renaming; the feed-forward block therefore stays inside the
layer instead of being a sub-module of its own.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ofa.nn.attention import MultiheadAttention
from ofa.nn.drop_path import DropPath

__all__ = ["FeedForward", "EncoderLayer", "DecoderLayer", "CrossAttentionKV", "KVBuffer"]


def _gelu_fp32(x: torch.Tensor) -> torch.Tensor:
    # OFA computes the exact (erf) GELU in fp32 whatever the activation dtype.
    return F.gelu(x.float()).to(x.dtype)


class FeedForward:
    """Shared forward of the FFN sub-block: ``fc2(ffn_layernorm(act(fc1(h))))`` with dropouts.

    A plain helper (not a module) so the weights keep their official flat names inside the layers.
    """

    @staticmethod
    def run(layer: "EncoderLayer | DecoderLayer", h: torch.Tensor) -> torch.Tensor:
        h = layer.activation(layer.fc1(h))
        h = F.dropout(h, p=layer.activation_dropout, training=layer.training)
        h = layer.ffn_layernorm(h)
        return layer.fc2(h)


class EncoderLayer(nn.Module):
    """Encoder layer: ``x + DropPath(attn_ln(SelfAttn(LN(x))))``, then ``x + DropPath(FFN(LN(x)))``.

    Args:
        self_attn: the self-attention block.
        self_attn_layer_norm: pre-attention LayerNorm.
        attn_ln: post-attention LayerNorm (``scale_attn``) or ``nn.Identity``.
        fc1, fc2: FFN projections; ffn_layernorm: LN between them (``scale_fc``) or ``nn.Identity``.
        final_layer_norm: pre-FFN LayerNorm.
        dropout: residual-branch dropout; activation_dropout: dropout after the activation.
        drop_path: stochastic-depth rate of this layer.
    """

    def __init__(
        self,
        *,
        self_attn: MultiheadAttention,
        self_attn_layer_norm: nn.Module,
        attn_ln: nn.Module,
        fc1: nn.Linear,
        fc2: nn.Linear,
        ffn_layernorm: nn.Module,
        final_layer_norm: nn.Module,
        dropout: float = 0.0,
        activation_dropout: float = 0.0,
        drop_path: float = 0.0,
        activation: Callable[[torch.Tensor], torch.Tensor] = _gelu_fp32,
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.self_attn_layer_norm = self_attn_layer_norm
        self.attn_ln = attn_ln
        self.fc1 = fc1
        self.fc2 = fc2
        self.ffn_layernorm = ffn_layernorm
        self.final_layer_norm = final_layer_norm
        self.dropout = dropout
        self.activation_dropout = activation_dropout
        self.activation = activation
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Args: x ``[b, s, D]``; bias ``[b or 1, h, s, s]`` (positions, + key padding). Returns ``[b, s, D]``."""
        h, _ = self.self_attn(self.self_attn_layer_norm(x), bias=bias)
        h = F.dropout(self.attn_ln(h), p=self.dropout, training=self.training)
        x = x + self.drop_path(h)
        h = FeedForward.run(self, self.final_layer_norm(x))
        h = F.dropout(h, p=self.dropout, training=self.training)
        return x + self.drop_path(h)


CrossAttentionKV = tuple[torch.Tensor, torch.Tensor]


class DecoderLayer(nn.Module):
    """Decoder layer: causal self-attention, cross-attention to the encoder, FFN; each pre-LN + NormFormer LN.

    Args:
        self_attn, encoder_attn: attention blocks.
        self_attn_layer_norm, encoder_attn_layer_norm, final_layer_norm: pre-LNs.
        self_attn_ln, cross_attn_ln: post-attention LNs (``scale_attn``) or ``nn.Identity``.
        fc1, fc2, ffn_layernorm: the FFN.
        dropout, activation_dropout, drop_path: as in :class:`EncoderLayer`.
    """

    def __init__(
        self,
        *,
        self_attn: MultiheadAttention,
        self_attn_layer_norm: nn.Module,
        self_attn_ln: nn.Module,
        encoder_attn: MultiheadAttention,
        encoder_attn_layer_norm: nn.Module,
        cross_attn_ln: nn.Module,
        fc1: nn.Linear,
        fc2: nn.Linear,
        ffn_layernorm: nn.Module,
        final_layer_norm: nn.Module,
        dropout: float = 0.0,
        activation_dropout: float = 0.0,
        drop_path: float = 0.0,
        activation: Callable[[torch.Tensor], torch.Tensor] = _gelu_fp32,
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.self_attn_layer_norm = self_attn_layer_norm
        self.self_attn_ln = self_attn_ln
        self.encoder_attn = encoder_attn
        self.encoder_attn_layer_norm = encoder_attn_layer_norm
        self.cross_attn_ln = cross_attn_ln
        self.fc1 = fc1
        self.fc2 = fc2
        self.ffn_layernorm = ffn_layernorm
        self.final_layer_norm = final_layer_norm
        self.dropout = dropout
        self.activation_dropout = activation_dropout
        self.activation = activation
        self.drop_path = DropPath(drop_path)

    def _residual(self, x: torch.Tensor, h: torch.Tensor, post_norm: nn.Module) -> torch.Tensor:
        h = F.dropout(post_norm(h), p=self.dropout, training=self.training)
        return x + self.drop_path(h)

    def forward(
        self,
        x: torch.Tensor,
        *,
        self_bias: torch.Tensor,
        kv_cache: "KVBuffer | None",
        cross_kv: CrossAttentionKV,
        cross_bias: torch.Tensor,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the layer on ``t`` new positions of ``n = b * g`` rows (``g`` rows per encoder source).

        Args:
            x: ``[n, t, D]`` the new positions.
            self_bias: ``[n or 1, h, t, past + t]`` causal + padding + position bias.
            kv_cache: self-attention keys/values of the ``past`` positions, extended in place; None for
                teacher forcing (no past).
            cross_kv: encoder keys/values ``[b, h, s, d]``, computed once per source.
            cross_bias: ``[b, h, g * t or 1, s]`` cross position bias + encoder padding.
            need_weights: return the cross-attention probabilities ``[n, h, t, s]``.

        Returns:
            ``(x [n, t, D], cross weights or None)``.
        """
        attn = self.self_attn
        h = self.self_attn_layer_norm(x)
        k, v = attn.project_key_value(h)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        h, _ = attn.attend(attn.project_query(h), k, v, self_bias)
        x = self._residual(x, h, self.self_attn_ln)

        h = self.encoder_attn_layer_norm(x)
        q = self.encoder_attn.project_query(h)  # [n, h, t, d]
        n, heads, t, d = q.shape
        b = cross_kv[0].shape[0]
        g = n // b
        # All rows of one source share its keys: fold the g rows into the query axis instead of copying K/V.
        q = q.view(b, g, heads, t, d).transpose(1, 2).reshape(b, heads, g * t, d)
        h, weights = self.encoder_attn.attend(q, cross_kv[0], cross_kv[1], cross_bias, need_weights)
        h = h.view(b, g, t, -1).reshape(n, t, -1)
        if weights is not None:
            weights = weights.view(b, heads, g, t, -1).transpose(1, 2).reshape(n, heads, t, -1)
        x = self._residual(x, h, self.cross_attn_ln)

        h = FeedForward.run(self, self.final_layer_norm(x))
        h = F.dropout(h, p=self.dropout, training=self.training)
        return x + self.drop_path(h), weights


class KVBuffer:
    """Growable self-attention key/value store of one decoder layer, ``[n, h, capacity, d]``.

    Appending writes in place (capacity doubles when full), so a long generation (1024 image codes) does not
    copy the whole history at every step.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add ``[n, h, t, d]`` keys/values; return views of all ``length + t`` of them."""
        need = self.length + k.shape[2]
        if self.keys is None or need > self.keys.shape[2]:
            capacity = max(need, 16 if self.keys is None else 2 * self.keys.shape[2])
            self.keys = self._grow(self.keys, k, capacity)
            self.values = self._grow(self.values, v, capacity)
        assert self.values is not None
        self.keys[:, :, self.length:need] = k
        self.values[:, :, self.length:need] = v
        self.length = need
        return self.keys[:, :, :need], self.values[:, :, :need]

    def _grow(self, old: torch.Tensor | None, like: torch.Tensor, capacity: int) -> torch.Tensor:
        n, h, _, d = like.shape
        new = like.new_empty(n, h, capacity, d)
        if old is not None and self.length:
            new[:, :, :self.length] = old[:, :, :self.length]
        return new

    def index_select(self, index: torch.Tensor) -> None:
        """Reorder / select rows (beam search)."""
        if self.keys is None:
            return
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((index.shape[0],) + tuple(old.shape[1:]))
            new[:, :, :self.length] = old[:, :, :self.length].index_select(0, index)
            setattr(self, name, new)
