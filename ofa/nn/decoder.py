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
from ofa.nn.layers import DecoderLayer, KVBuffer
from ofa.nn.rel_pos import image_bucket_index, token_rel_positions
from ofa.nn.stack import Stack

__all__ = ["CrossState", "DecoderCache", "DecoderOutput", "OFADecoder", "PositionTables"]


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


class PositionTables:
    """Everything about decoder positions that does not depend on the tokens, for positions ``[0, capacity)``.

    Per mode (text / image code): the per-layer self-attention bias (absolute + relative, ``[h, C, C]``) and
    the scaled cross-attention position queries ``[1, h, C, d]``. Built once per :class:`DecoderCache` (and
    grown when decoding runs past ``capacity``), so a decoding step only slices it.
    """

    def __init__(self, capacity: int, self_bias: dict[bool, list[torch.Tensor]],
                 cross_q: dict[bool, torch.Tensor]) -> None:
        self.capacity = capacity
        self.self_bias = self_bias
        self.cross_q = cross_q


@dataclass
class DecoderCache:
    """Incremental-decoding state for ``n = b * g`` decoder rows over ``b`` encoder sources.

    Rows ``i * g ... (i + 1) * g - 1`` belong to source ``i``. Self-attention keys/values grow by the number of
    tokens fed at each step; the cross state never changes unless sources are dropped (:meth:`select_sources`).

    Attributes:
        cross: the per-source cross-attention state.
        code_masks: ``[n]`` bool, True for rows decoding image codes.
        kv: per layer, the self-attention key/value buffer.
        length: tokens fed so far.
        key_padding: ``[n, length]`` bool, True at pad tokens fed so far (None while no pad was fed).
        tables: position tables for the modes in use (built on the first step).
    """

    cross: CrossState
    code_masks: torch.Tensor
    kv: list[KVBuffer] = field(default_factory=list)
    length: int = 0
    key_padding: torch.Tensor | None = None
    tables: PositionTables | None = None

    @property
    def num_rows(self) -> int:
        return self.code_masks.shape[0]

    @property
    def group_size(self) -> int:
        return self.num_rows // self.cross.batch_size

    def reorder(self, row_index: torch.Tensor) -> None:
        """Reorder rows (beam search); each new row must come from the same source as the row it replaces."""
        if row_index.shape[0] == self.num_rows and torch.equal(
                row_index, torch.arange(self.num_rows, device=row_index.device)):
            return  # nothing moves (e.g. sampling): skip copying the history
        self.code_masks = self.code_masks.index_select(0, row_index)
        for buffer in self.kv:
            buffer.index_select(row_index)
        if self.key_padding is not None:
            self.key_padding = self.key_padding.index_select(0, row_index)

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

    image_position_idx: torch.Tensor  # a buffer

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
        token_rel_pos_table_list: Stack[nn.Embedding],
        image_rel_pos_table_list: Stack[nn.Embedding],
        layers: Stack[DecoderLayer],
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

    def position_tables(self, capacity: int, modes: list[bool], dtype: torch.dtype) -> PositionTables:
        """Build the token-independent position biases for positions ``[0, capacity)`` (see :class:`PositionTables`)."""
        device = self.embed_positions.weight.device
        positions = torch.arange(capacity, device=device)
        self_bias: dict[bool, list[torch.Tensor]] = {}
        cross_q: dict[bool, torch.Tensor] = {}
        for mode in modes:
            pos = self._mode_positions(capacity, mode).unsqueeze(0)  # [1, C, D]
            q = project_positions(self.self_pos_q_linear, pos, self.num_heads, self.scaling)
            k = project_positions(self.self_pos_k_linear, pos, self.num_heads)
            absolute = torch.matmul(q, k.transpose(-1, -2))[0]  # [h, C, C]
            if mode:
                ids = self.image_position_idx[:capacity]
                index = image_bucket_index(ids, ids, self.image_bucket_size)
                tables = self.image_rel_pos_table_list
            else:
                index = token_rel_positions(positions, positions, self.token_bucket_size)
                tables = self.token_rel_pos_table_list
            self_bias[mode] = [(absolute + gather_rel_bias(table, index)).to(dtype) for table in tables]
            cross_q[mode] = project_positions(self.cross_pos_q_linear, pos, self.num_heads, self.scaling).to(dtype)
        return PositionTables(capacity, self_bias, cross_q)

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
        project: bool = True,
        modes: list[bool] | None = None,
    ) -> DecoderOutput:
        """Decode ``t`` new tokens per row after the ``cache.length`` tokens already fed (0 without cache).

        Args:
            tokens: ``[n, t]`` new decoder input ids (inputs are validated by :class:`ofa.model.OFAModel`).
            cross: per-source state from :meth:`prepare`; ``n`` must be a multiple of its batch size.
            code_masks: ``[n]`` bool, True for rows in image-code mode.
            cache: incremental state, updated in place; None for teacher forcing.
            project: compute the logits; False leaves ``logits`` with an empty vocabulary axis ``[n, t, 0]``
                (callers that need a few vocabulary rows project ``features`` themselves).
            modes: the row modes present (``[False]`` text, ``[True]`` codes, or both), when the caller knows
                them; default: read from ``code_masks`` (a data-dependent branch graph exporters cannot trace).
        """
        n, t = tokens.shape
        past = 0 if cache is None else cache.length
        total = past + t
        device = tokens.device
        b = cross.batch_size
        g = n // b
        modes = self._modes(code_masks) if modes is None else modes
        dtype = cross.pos_keys.dtype

        # Embedding: text or code LayerNorm per row; no type embedding and no position added to the input.
        embedded = self.embed_tokens(tokens)
        x = self._select(code_masks, {
            mode: (self.code_layernorm_embedding if mode else self.layernorm_embedding)(embedded) for mode in modes
        })
        x = F.dropout(x, p=self.dropout, training=self.training)

        if cache is None:
            tables = self.position_tables(total, modes, dtype)
        else:
            cached = cache.tables
            if cached is None or cached.capacity < total or any(m not in cached.cross_q for m in modes):
                limit = min([self.max_code_length if m else self.embed_positions.num_embeddings for m in modes])
                capacity = min(max(total, 32 if cached is None else 2 * cached.capacity), limit)
                cached = cache.tables = self.position_tables(capacity, modes, dtype)
            tables = cached

        # Cross-attention position bias [b, h, g*t (or 1 when t == 1), s]: queries depend on the position only.
        cq = self._select(code_masks, {m: tables.cross_q[m][:, :, past:total] for m in modes})
        if cq.shape[0] == 1 and (t == 1 or g == 1):
            cross_bias = torch.matmul(cq, cross.pos_keys.transpose(-1, -2))  # [b, h, t, s]
        else:
            cq = cq.expand(n, -1, -1, -1)
            heads, d = cq.shape[1], cq.shape[3]
            cq = cq.reshape(b, g, heads, t, d).transpose(1, 2).reshape(b, heads, g * t, d)
            cross_bias = torch.matmul(cq, cross.pos_keys.transpose(-1, -2))
        cross_bias = cross_bias + cross.pad_bias

        # Causal mask (only needed within the new tokens) and key padding.
        mask: torch.Tensor | None = None
        if t > 1:
            query_pos = torch.arange(past, total, device=device)
            key_pos = torch.arange(total, device=device)
            mask = torch.zeros(t, total, dtype=x.dtype, device=device).masked_fill(
                key_pos[None, :] > query_pos[:, None], float("-inf"))
        new_pad = tokens.eq(self.pad_id)
        key_padding = None if cache is None else cache.key_padding
        if key_padding is not None or bool(new_pad.any()):
            if key_padding is None:
                key_padding = torch.zeros(n, past, dtype=torch.bool, device=device)
            key_padding = torch.cat([key_padding, new_pad], dim=1)
            pad_bias = torch.zeros(n, 1, 1, total, dtype=x.dtype, device=device).masked_fill(
                key_padding[:, None, None, :], float("-inf"))
            mask = pad_bias if mask is None else mask + pad_bias
        if cache is not None:
            cache.key_padding = key_padding
            if not cache.kv:
                cache.kv = [KVBuffer() for _ in self.layers]

        states = [x] if return_states else None
        weights = None
        for index, layer in enumerate(self.layers):
            self_bias = self._select(code_masks, {
                m: tables.self_bias[m][index][None, :, past:total, :total] for m in modes})
            if mask is not None:
                self_bias = self_bias + mask
            need = return_cross_attention and index == len(self.layers) - 1
            x, weights_l = layer(x, self_bias=self_bias, kv_cache=None if cache is None else cache.kv[index],
                                 cross_kv=cross.kv[index], cross_bias=cross_bias, need_weights=need)
            if need:
                weights = weights_l
            if states is not None:
                states.append(x)
        if cache is not None:
            cache.length = total
        features = self.layer_norm(x)
        return DecoderOutput(
            logits=self.project(features) if project else features.new_empty(n, t, 0),
            features=features,
            states=states,
            cross_attention=None if weights is None else weights.mean(dim=1),
        )

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., V]`` through the tied output embedding (no bias)."""
        weight = self.output_projection.weight
        flat = features.reshape(-1, features.shape[-1])
        if flat.shape[0] <= 256:
            # For few rows, W @ x^T streams the [V, D] weight far faster than x @ W^T (3x on CPU for 5 rows).
            logits = torch.matmul(weight, flat.t()).t()
        else:
            logits = F.linear(flat, weight)
        return logits.reshape(*features.shape[:-1], weight.shape[0])
