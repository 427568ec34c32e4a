"""OFA's decoder: causal pre-LN stack with position-only biases, text or image-code mode per sample.

Teacher forcing and incremental decoding share one code path: :meth:`OFADecoder.forward` runs ``t`` new
positions after ``past`` cached ones. The cross-attention keys/values and the encoder side of the cross
position bias are computed once per source (:meth:`OFADecoder.prepare`), never per beam or per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ofa.nn.embeddings import gather_rel_bias, project_positions
from ofa.nn.encoder import EncoderOutput
from ofa.nn.layers import DecoderLayer
from ofa.nn.rel_pos import image_bucket_index, token_rel_positions

__all__ = ["CrossState", "DecoderCache", "DecoderOutput", "OFADecoder"]


@dataclass
class CrossState:
    """Per-source tensors the decoder derives once from the encoder output.

    Attributes:
        kv: per layer, encoder keys and values ``[b, h, s, d]``.
        pos_keys: ``cross_pos_k_linear(encoder positions)`` per head, ``[b, h, s, d]``.
        pad_bias: ``[b, 1, 1, s]``, ``-inf`` at encoder padding.
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    pos_keys: torch.Tensor
    pad_bias: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.pos_keys.shape[0]

    def index_select(self, index: torch.Tensor) -> "CrossState":
        return CrossState(
            kv=[(k.index_select(0, index), v.index_select(0, index)) for k, v in self.kv],
            pos_keys=self.pos_keys.index_select(0, index),
            pad_bias=self.pad_bias.index_select(0, index),
        )


@dataclass
class DecoderCache:
    """Incremental-decoding state for ``n = b * g`` decoder rows over ``b`` encoder sources.

    Rows ``i * g ... (i + 1) * g - 1`` belong to source ``i``. Self-attention keys/values grow by the number of
    tokens fed at each step; the cross state never changes unless sources are dropped (:meth:`select_sources`).

    Attributes:
        cross: the per-source cross-attention state.
        code_masks: ``[n]`` bool, True for rows decoding image codes.
        self_kv: per layer ``(keys, values)`` ``[n, h, t, d]`` (empty before the first step).
        tokens: ``[n, t]`` every token fed so far (for positions and key padding).
    """

    cross: CrossState
    code_masks: torch.Tensor
    self_kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    tokens: torch.Tensor | None = None

    @property
    def num_rows(self) -> int:
        return self.code_masks.shape[0]

    @property
    def group_size(self) -> int:
        return self.num_rows // self.cross.batch_size

    @property
    def length(self) -> int:
        return 0 if self.tokens is None else self.tokens.shape[1]

    def reorder(self, row_index: torch.Tensor) -> None:
        """Reorder rows (beam search); each new row must come from the same source as the row it replaces."""
        self.code_masks = self.code_masks.index_select(0, row_index)
        self.self_kv = [(k.index_select(0, row_index), v.index_select(0, row_index)) for k, v in self.self_kv]
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, row_index)

    def select_sources(self, source_index: torch.Tensor, row_index: torch.Tensor) -> None:
        """Keep only some sources (finished sentences leave the batch) and the matching rows."""
        self.cross = self.cross.index_select(source_index)
        self.reorder(row_index)


@dataclass
class DecoderOutput:
    """Teacher-forced or incremental decoder output.

    Attributes:
        logits: ``[n, t, V]``.
        features: ``[n, t, D]`` after the final LayerNorm.
        states: with ``return_states``: embedding output and each layer's output ``[n, t, D]``.
        cross_attention: with ``return_cross_attention``: last layer's cross-attention probabilities averaged
            over heads, ``[n, t, s]``.
    """

    logits: torch.Tensor
    features: torch.Tensor
    states: list[torch.Tensor] | None = None
    cross_attention: torch.Tensor | None = None


class OFADecoder(nn.Module):
    """Decoder of OFA (arXiv:2202.03052) with the official sub-module names. Built by :func:`ofa.builders.build_ofa`."""

    def __init__(
        self,
        *,
        embed_tokens: nn.Embedding,
        layernorm_embedding: nn.Module,
        code_layernorm_embedding: nn.Module,
        embed_positions: nn.Embedding,
        embed_image_positions: nn.Embedding,
        pos_ln: nn.LayerNorm,
        image_pos_ln: nn.LayerNorm,
        self_pos_q_linear: nn.Linear,
        self_pos_k_linear: nn.Linear,
        cross_pos_q_linear: nn.Linear,
        cross_pos_k_linear: nn.Linear,
        token_rel_pos_table_list: nn.ModuleList,
        image_rel_pos_table_list: nn.ModuleList,
        layers: nn.ModuleList,
        layer_norm: nn.LayerNorm,
        output_projection: nn.Linear,
        image_position_idx: torch.Tensor,
        num_heads: int,
        scaling: float,
        pad_id: int,
        token_bucket_size: int,
        image_bucket_size: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = layernorm_embedding
        self.code_layernorm_embedding = code_layernorm_embedding
        self.embed_positions = embed_positions
        self.embed_image_positions = embed_image_positions
        self.pos_ln = pos_ln
        self.image_pos_ln = image_pos_ln
        self.self_pos_q_linear = self_pos_q_linear
        self.self_pos_k_linear = self_pos_k_linear
        self.cross_pos_q_linear = cross_pos_q_linear
        self.cross_pos_k_linear = cross_pos_k_linear
        self.token_rel_pos_table_list = token_rel_pos_table_list
        self.image_rel_pos_table_list = image_rel_pos_table_list
        self.layers = layers
        self.layer_norm = layer_norm
        self.output_projection = output_projection
        # Deterministic, rebuilt from the config: not part of the saved weights.
        self.register_buffer("image_position_idx", image_position_idx, persistent=False)
        self.num_heads = num_heads
        self.scaling = scaling
        self.pad_id = pad_id
        self.token_bucket_size = token_bucket_size
        self.image_bucket_size = image_bucket_size
        self.dropout = dropout

    @property
    def max_code_length(self) -> int:
        """Longest sequence (bos included) the code path has positions for."""
        return self.image_position_idx.shape[0]

    def prepare(self, encoder_out: EncoderOutput) -> CrossState:
        """Compute the cross-attention keys/values and position keys once per source."""
        kv = [layer.encoder_attn.project_key_value(encoder_out.hidden) for layer in self.layers]
        pos_keys = project_positions(self.cross_pos_k_linear, encoder_out.position_embeddings, self.num_heads)
        pad = encoder_out.padding_mask
        pad_bias = torch.zeros(pad.shape, dtype=encoder_out.hidden.dtype, device=pad.device)
        pad_bias = pad_bias.masked_fill(pad, float("-inf"))[:, None, None, :]
        return CrossState(kv=kv, pos_keys=pos_keys, pad_bias=pad_bias)

    def init_cache(self, encoder_out: EncoderOutput | CrossState, num_rows: int | None = None,
                   code_masks: torch.Tensor | None = None) -> DecoderCache:
        """Start incremental decoding of ``num_rows`` rows (a multiple of the sources) for ``encoder_out``."""
        cross = self.prepare(encoder_out) if isinstance(encoder_out, EncoderOutput) else encoder_out
        n = cross.batch_size if num_rows is None else num_rows
        if code_masks is None:
            code_masks = torch.zeros(n, dtype=torch.bool, device=cross.pos_keys.device)
        return DecoderCache(cross=cross, code_masks=code_masks.bool())

    # -- positions ---------------------------------------------------------------------------------------------
    def _mode_positions(self, length: int, code: bool) -> torch.Tensor:
        """LN-ed absolute positions ``[length, D]`` of the text or the image-code path."""
        if code:
            return self.image_pos_ln(self.embed_image_positions(self.image_position_idx[:length]))
        return self.pos_ln(self.embed_positions.weight[:length])

    def _modes(self, code_masks: torch.Tensor) -> list[bool]:
        if code_masks.all():
            return [True]
        if not code_masks.any():
            return [False]
        return [False, True]

    def _select(self, code_masks: torch.Tensor, per_mode: dict[bool, torch.Tensor]) -> torch.Tensor:
        """Pick the text or code version of a tensor per row: ``[1, ...] -> [n or 1, ...]``."""
        if len(per_mode) == 1:
            return next(iter(per_mode.values()))
        mask = code_masks.view(-1, *([1] * (per_mode[True].dim() - 1)))
        return torch.where(mask, per_mode[True], per_mode[False])

    def forward(
        self,
        tokens: torch.Tensor,
        cross: CrossState,
        code_masks: torch.Tensor,
        cache: DecoderCache | None = None,
        return_states: bool = False,
        return_cross_attention: bool = False,
    ) -> DecoderOutput:
        """Decode ``t`` new tokens per row after the ``cache.length`` tokens already fed (0 without cache).

        Args:
            tokens: ``[n, t]`` new decoder input ids (inputs are validated by :class:`ofa.model.OFAModel`).
            cross: per-source state from :meth:`prepare`; ``n`` must be a multiple of its batch size.
            code_masks: ``[n]`` bool, True for rows in image-code mode.
            cache: incremental state, updated in place; None for teacher forcing.
        """
        n, t = tokens.shape
        past = 0 if cache is None else cache.length
        total = past + t
        all_tokens = tokens if cache is None or cache.tokens is None else torch.cat([cache.tokens, tokens], dim=1)
        device = tokens.device
        b = cross.batch_size
        g = n // b
        modes = self._modes(code_masks)

        # Embedding: text or code LayerNorm per row; no type embedding and no position added to the input.
        embedded = self.embed_tokens(tokens)
        x = self._select(code_masks, {
            mode: (self.code_layernorm_embedding if mode else self.layernorm_embedding)(embedded) for mode in modes
        })
        x = F.dropout(x, p=self.dropout, training=self.training)

        # Position biases, shared by all layers: [1 or n, h, t, total] self and [1 or n, h, t, d] cross queries.
        self_abs: dict[bool, torch.Tensor] = {}
        cross_q: dict[bool, torch.Tensor] = {}
        for mode in modes:
            pos = self._mode_positions(total, mode).unsqueeze(0)  # [1, total, D]
            q = project_positions(self.self_pos_q_linear, pos[:, past:], self.num_heads, self.scaling)
            k = project_positions(self.self_pos_k_linear, pos, self.num_heads)
            self_abs[mode] = torch.matmul(q, k.transpose(-1, -2))
            cross_q[mode] = project_positions(self.cross_pos_q_linear, pos[:, past:], self.num_heads, self.scaling)
        cq = self._select(code_masks, cross_q).expand(n, -1, -1, -1)  # [n, h, t, d]
        heads, d = cq.shape[1], cq.shape[3]
        cq = cq.reshape(b, g, heads, t, d).transpose(1, 2).reshape(b, heads, g * t, d)
        cross_bias = torch.matmul(cq, cross.pos_keys.transpose(-1, -2)) + cross.pad_bias  # [b, h, g*t, s]

        query_pos = torch.arange(past, total, device=device)
        key_pos = torch.arange(total, device=device)
        mask = torch.zeros(t, total, dtype=x.dtype, device=device).masked_fill(
            key_pos[None, :] > query_pos[:, None], float("-inf"))
        key_pad = all_tokens.eq(self.pad_id)
        if key_pad.any():
            mask = mask + torch.zeros(n, 1, 1, total, dtype=x.dtype, device=device).masked_fill(
                key_pad[:, None, None, :], float("-inf"))
        rel_index: dict[bool, torch.Tensor] = {}
        for mode in modes:
            if mode:
                ids = self.image_position_idx
                rel_index[mode] = image_bucket_index(ids[past:total], ids[:total], self.image_bucket_size)
            else:
                rel_index[mode] = token_rel_positions(query_pos, key_pos, self.token_bucket_size)

        states = [x] if return_states else None
        new_kv = []
        weights = None
        for index, layer in enumerate(self.layers):
            rel = {
                mode: self_abs[mode] + gather_rel_bias(
                    (self.image_rel_pos_table_list if mode else self.token_rel_pos_table_list)[index],
                    rel_index[mode])
                for mode in modes
            }
            self_bias = self._select(code_masks, rel).to(x.dtype) + mask
            past_kv = cache.self_kv[index] if cache is not None and cache.self_kv else None
            need = return_cross_attention and index == len(self.layers) - 1
            x, kv, weights_l = layer(x, self_bias=self_bias, past_kv=past_kv, cross_kv=cross.kv[index],
                                     cross_bias=cross_bias, need_weights=need)
            new_kv.append(kv)
            if need:
                weights = weights_l
            if states is not None:
                states.append(x)
        if cache is not None:
            cache.self_kv = new_kv
            cache.tokens = all_tokens
        features = self.layer_norm(x)
        logits = self.output_projection(features)
        return DecoderOutput(
            logits=logits,
            features=features,
            states=states,
            cross_attention=None if weights is None else weights.mean(dim=1),
        )
