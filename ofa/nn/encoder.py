"""OFA's encoder: image patches from the ResNet stem followed by text tokens, one pre-LN Transformer stack."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ofa.errors import InputError
from ofa.nn.embeddings import gather_rel_bias, position_bias
from ofa.nn.layers import EncoderLayer
from ofa.nn.rel_pos import image_bucket_index, image_position_ids, token_rel_positions
from ofa.nn.stack import Stack

__all__ = ["EncoderOutput", "OFAEncoder"]


@dataclass
class EncoderOutput:
    """What the decoder needs from the encoder (batch-first).

    Attributes:
        hidden: ``[b, s, D]`` after the final LayerNorm; image patches first, then text tokens.
        padding_mask: ``[b, s]`` bool, True = padding (masked images count as padding).
        position_embeddings: ``[b, s, D]`` LayerNorm-ed absolute positions, used by the decoder's cross bias.
        states: with ``return_states``: the embedding output and every layer's output ``[b, s, D]``.
        image_features: with ``return_states``: the ResNet output ``[b, C, h, w]`` (None without images).
    """

    hidden: torch.Tensor
    padding_mask: torch.Tensor
    position_embeddings: torch.Tensor
    states: list[torch.Tensor] | None = None
    image_features: torch.Tensor | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]

    def index_select(self, index: torch.Tensor) -> "EncoderOutput":
        """Select (or repeat) samples along the batch."""
        return replace(
            self,
            hidden=self.hidden.index_select(0, index),
            padding_mask=self.padding_mask.index_select(0, index),
            position_embeddings=self.position_embeddings.index_select(0, index),
            states=None,
            image_features=None,
        )


def _capturing() -> bool:
    """True while torch.export, torch.compile or the JIT tracer captures a graph (no data-dependent branches)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


class OFAEncoder(nn.Module):
    """Multimodal encoder (arXiv:2202.03052): ``[image patches; text]`` with position-only attention biases.

    Sub-modules carry the official checkpoint names (``embed_images``, ``image_proj``, ``pos_q_linear``, ...).
    Built by :func:`ofa.builders.build_ofa`.
    """

    def __init__(
        self,
        *,
        embed_tokens: nn.Embedding,
        type_embedding: nn.Embedding | None,
        layernorm_embedding: nn.Module,
        embed_images: nn.Module | None,
        image_proj: nn.Linear | None,
        patch_layernorm_embedding: nn.Module,
        embed_positions: nn.Embedding,
        embed_image_positions: nn.Embedding,
        pos_ln: nn.LayerNorm,
        image_pos_ln: nn.LayerNorm,
        pos_q_linear: nn.Linear,
        pos_k_linear: nn.Linear,
        token_rel_pos_table_list: Stack[nn.Embedding],
        image_rel_pos_table_list: Stack[nn.Embedding],
        layers: Stack[EncoderLayer],
        layer_norm: nn.LayerNorm,
        num_heads: int,
        scaling: float,
        pad_id: int,
        token_bucket_size: int,
        image_bucket_size: int,
        dropout: float = 0.0,
        entangle_position_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.entangle_position_embedding = entangle_position_embedding
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = layernorm_embedding
        self.type_embedding = type_embedding
        self.embed_images = embed_images
        self.image_proj = image_proj
        self.patch_layernorm_embedding = patch_layernorm_embedding
        self.embed_positions = embed_positions
        self.embed_image_positions = embed_image_positions
        self.pos_ln = pos_ln
        self.image_pos_ln = image_pos_ln
        self.pos_q_linear = pos_q_linear
        self.pos_k_linear = pos_k_linear
        self.token_rel_pos_table_list = token_rel_pos_table_list
        self.image_rel_pos_table_list = image_rel_pos_table_list
        self.layers = layers
        self.layer_norm = layer_norm
        self.num_heads = num_heads
        self.scaling = scaling
        self.pad_id = pad_id
        self.token_bucket_size = token_bucket_size
        self.image_bucket_size = image_bucket_size
        self.dropout = dropout

    def _embed_text(self, src_tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(src_tokens)
        if self.entangle_position_embedding:
            x = x + self.embed_positions.weight[: src_tokens.shape[1]]
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[0]
        return F.dropout(self.layernorm_embedding(x), p=self.dropout, training=self.training)

    def _embed_images(self, patch_images: torch.Tensor, sample_patch_num: int | None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Patch embeddings ``[b, n, D]``, the ResNet features, the grid's position ids ``[N]`` and the kept
        patches ``[b, n]`` (None: all ``N`` patches, in raster order)."""
        assert self.embed_images is not None and self.image_proj is not None
        features = self.embed_images(patch_images)  # [b, C, h, w]
        h, w = features.shape[-2:]
        grid_ids = image_position_ids(h, w, self.image_bucket_size, device=features.device)  # [N]
        patches = features.flatten(2).transpose(1, 2)  # [b, N, C]
        kept = None
        if sample_patch_num is not None:
            num = patches.shape[1]
            if not 1 <= sample_patch_num <= num:
                raise InputError(f"sample_patch_num ({sample_patch_num}) must be in [1, {num}] for a {h}x{w} grid")
            # k distinct patches per sample, uniformly at random and in random order (OFA's random.sample).
            kept = torch.rand(patches.shape[0], num, device=patches.device).argsort(dim=1)[:, :sample_patch_num]
            patches = patches.gather(1, kept[:, :, None].expand(-1, -1, patches.shape[2]))
        x = self.image_proj(patches)
        if self.entangle_position_embedding:
            x = x + self.embed_image_positions(grid_ids if kept is None else grid_ids[kept])
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[1]
        x = F.dropout(self.patch_layernorm_embedding(x), p=self.dropout, training=self.training)
        return x, features, grid_ids, kept

    def forward(
        self,
        src_tokens: torch.Tensor,
        patch_images: torch.Tensor | None = None,
        patch_masks: torch.Tensor | None = None,
        return_states: bool = False,
        sample_patch_num: int | None = None,
    ) -> EncoderOutput:
        """Encode a batch (inputs are validated by :class:`ofa.model.OFAModel`).

        Args:
            src_tokens: ``[b, L]`` right-padded token ids.
            patch_images: ``[b, 3, H, W]`` normalised images, or None for a text-only batch.
            patch_masks: ``[b]`` bool, False masks a sample's image out entirely (default all True).
            return_states: keep the embedding output and every layer's output.
            sample_patch_num: keep only this many patches of each image, drawn at random per sample (OFA's
                pretraining on image-text pairs); their position ids, absolute and relative biases are gathered
                with them, so the geometry of the kept patches is unchanged. None keeps every patch.
        """
        b, length = src_tokens.shape
        device = src_tokens.device
        x = self._embed_text(src_tokens)
        padding_mask = src_tokens.eq(self.pad_id)
        text_pos = self.pos_ln(self.embed_positions.weight[:length])  # [L, D]
        image_features = None
        num_patches = 0
        image_index = None
        if patch_images is not None:
            x_img, image_features, grid_ids, kept = self._embed_images(patch_images, sample_patch_num)
            num_patches = x_img.shape[1]
            image_pos = self.image_pos_ln(self.embed_image_positions(grid_ids))  # [N, D]
            image_index = image_bucket_index(grid_ids, grid_ids, self.image_bucket_size)  # [N, N]
            if kept is not None:  # per sample: [b, n, D] positions and a [b, n, n] table index
                image_pos = image_pos[kept]
                image_index = image_index[kept[:, :, None], kept[:, None, :]]
            if patch_masks is None:
                image_pad = torch.zeros(b, num_patches, dtype=torch.bool, device=device)
            else:
                image_pad = (~patch_masks.bool())[:, None].expand(b, num_patches)
            x = torch.cat([x_img, x], dim=1)
            padding_mask = torch.cat([image_pad, padding_mask], dim=1)
            if kept is None:
                positions = torch.cat([image_pos, text_pos], dim=0).unsqueeze(0)
            else:
                positions = torch.cat([image_pos, text_pos.unsqueeze(0).expand(b, -1, -1)], dim=1)
        else:
            positions = text_pos.unsqueeze(0)
        # positions: [1, s, D] when identical for every sample, [b, s, D] with sampled patches
        abs_bias = position_bias(self.pos_q_linear, self.pos_k_linear, positions, positions, self.num_heads,
                                 self.scaling)  # [1 or b, h, s, s]

        text_index = token_rel_positions(torch.arange(length, device=device), torch.arange(length, device=device),
                                         self.token_bucket_size)
        # Without padding the key-padding bias is all zeros and is left out: each layer's bias then stays
        # [1, h, s, s], shared by the batch, instead of a [b, h, s, s] sum written and read per layer (the same
        # values; ~9% of OFA-Base's encoder time at batch 8, 384 px). Graph capture keeps the unconditional form.
        pad_bias: torch.Tensor | None = None
        if _capturing() or bool(padding_mask.any()):
            pad_bias = torch.zeros(padding_mask.shape, dtype=x.dtype, device=device).masked_fill(
                padding_mask, float("-inf"))[:, None, None, :]  # [b, 1, 1, s]

        # unconditional (x * 1 is x), so the graph has no data-dependent branch for exporters
        x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
        states = [x] if return_states else None
        for index, layer in enumerate(self.layers):
            rel = torch.zeros_like(abs_bias if image_index is not None and image_index.dim() == 3 else abs_bias[0])
            rel[..., num_patches:, num_patches:] = gather_rel_bias(self.token_rel_pos_table_list[index], text_index)
            if image_index is not None:
                rel[..., :num_patches, :num_patches] = gather_rel_bias(self.image_rel_pos_table_list[index],
                                                                       image_index)
            bias = (abs_bias + rel).to(x.dtype)
            if pad_bias is not None:
                bias = bias + pad_bias  # [b, h, s, s]
            x = layer(x, bias)
            if states is not None:
                states.append(x)
        x = self.layer_norm(x)
        return EncoderOutput(
            hidden=x,
            padding_mask=padding_mask,
            position_embeddings=positions.expand(b, -1, -1),  # a view when shared
            states=states,
            image_features=image_features if return_states else None,
        )
