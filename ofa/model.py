"""The OFA encoder-decoder (arXiv:2202.03052), assembled from :mod:`ofa.nn` blocks.

Public entry points validate their inputs and raise :class:`ofa.errors.InputError` naming the bad value, so
mistakes never surface as shape errors deep inside torch.
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

import torch
from torch import nn

from ofa.config import OFAConfig
from ofa.errors import InputError
from ofa.nn.attention import MultiheadAttention
from ofa.nn.attention_backends import resolve_backend
from ofa.nn.decoder import CrossState, DecoderCache, DecoderOutput, OFADecoder
from ofa.nn.encoder import EncoderOutput, OFAEncoder
from ofa.serialization import DEFAULT_MAX_SHARD_SIZE, write_pretrained

__all__ = ["OFAModel", "EncoderOutput", "DecoderOutput", "DecoderCache", "CrossState"]


def _check_tokens(name: str, tokens: Any, vocab_size: int, max_length: int) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise InputError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
    if tokens.dim() != 2:
        raise InputError(f"{name} must be 2-D [batch, length], got shape {tuple(tokens.shape)}")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {tuple(tokens.shape)}); need at least one sample and one token")
    if tokens.shape[1] > max_length:
        raise InputError(f"{name} has length {tokens.shape[1]}; the model accepts at most {max_length} positions")
    if tokens.device.type != "meta":
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise InputError(f"{name} contains token id {bad}; accepted ids are [0, {vocab_size})")
    return tokens.long()


def _check_mask(name: str, mask: Any, batch: int) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"{name} must be a bool tensor of shape [{batch}], got {type(mask).__name__}")
    if mask.dim() != 1 or mask.shape[0] != batch:
        raise InputError(f"{name} must have shape [{batch}] (one flag per sample), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and mask.dtype.is_floating_point:
        raise InputError(f"{name} must be bool (or 0/1 integers), got dtype {mask.dtype}")
    return mask.bool()


class OFAModel(nn.Module):
    """One encoder-decoder for every OFA task: text/image in, text/location/image-code tokens out.

    Args:
        encoder: the multimodal :class:`~ofa.nn.encoder.OFAEncoder`.
        decoder: the :class:`~ofa.nn.decoder.OFADecoder` (its token embedding is the encoder's).
        config: the :class:`~ofa.config.OFAConfig` the model was built from (saved with checkpoints).

    Build one with :func:`ofa.build_model` or load one with :func:`ofa.load_checkpoint`.
    """

    def __init__(self, *, encoder: OFAEncoder, decoder: OFADecoder, config: OFAConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.config = config

    # -- configuration ----------------------------------------------------------------------------------------
    @property
    def attention_backend(self) -> str:
        return next(m.backend for m in self.modules() if isinstance(m, MultiheadAttention))

    def set_attention_backend(self, backend: str) -> "OFAModel":
        """Switch every attention block to ``"eager"``, ``"sdpa"``, ``"xformers"`` or ``"auto"``."""
        backend = resolve_backend(backend)
        for module in self.modules():
            if isinstance(module, MultiheadAttention):
                module.backend = backend
        return self

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Unique parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- validation -------------------------------------------------------------------------------------------
    def _check_images(self, patch_images: Any, batch: int) -> torch.Tensor:
        if self.encoder.embed_images is None:
            raise InputError("this model has no image stem (config.resnet is None); pass patch_images=None")
        if not isinstance(patch_images, torch.Tensor):
            raise InputError(f"patch_images must be a float tensor [b, 3, H, W], got {type(patch_images).__name__}")
        if not patch_images.dtype.is_floating_point:
            raise InputError(
                f"patch_images must be a normalised floating-point tensor, got dtype {patch_images.dtype}; "
                "convert uint8 pixels with (x / 255 - 0.5) / 0.5")
        if patch_images.dim() != 4 or patch_images.shape[1] != 3:
            raise InputError(f"patch_images must have shape [b, 3, H, W], got {tuple(patch_images.shape)}")
        if patch_images.shape[0] != batch:
            raise InputError(f"patch_images has batch size {patch_images.shape[0]} but src_tokens has {batch}")
        h, w = patch_images.shape[-2:]
        limit = 16 * self.config.image_bucket_size
        if not (16 <= h <= limit and 16 <= w <= limit):
            raise InputError(
                f"patch_images are {h}x{w} pixels; accepted sizes are 16..{limit} per side "
                f"(16 * image_bucket_size = {self.config.image_bucket_size} patches)")
        dtype = next(self.encoder.embed_images.parameters()).dtype
        if patch_images.dtype != dtype:
            patch_images = patch_images.to(dtype)
        return patch_images

    # -- encoder ----------------------------------------------------------------------------------------------
    def encode(
        self,
        src_tokens: torch.Tensor,
        patch_images: torch.Tensor | None = None,
        patch_masks: torch.Tensor | None = None,
        return_states: bool = False,
        sample_patch_num: int | None = None,
    ) -> EncoderOutput:
        """Encode instructions and (optionally) images.

        Args:
            src_tokens: ``[b, L]`` token ids, right-padded with ``config.pad_id``.
            patch_images: ``[b, 3, H, W]`` images normalised to [-1, 1] (or per the task), or None.
            patch_masks: ``[b]`` bool; False removes that sample's image (its patches become padding).
            return_states: also return the per-layer states and the ResNet features.
            sample_patch_num: keep this many random patches per image (OFA pretraining); None keeps all.

        Returns:
            :class:`EncoderOutput` (batch-first).

        Raises:
            InputError: on ids out of range, wrong image shape/dtype/size or mismatched batch sizes.
        """
        src_tokens = _check_tokens("src_tokens", src_tokens, self.config.vocab_size, self.config.max_positions)
        batch = src_tokens.shape[0]
        if patch_images is not None:
            patch_images = self._check_images(patch_images, batch)
            if patch_masks is not None:
                patch_masks = _check_mask("patch_masks", patch_masks, batch)
        elif patch_masks is not None and bool(_check_mask("patch_masks", patch_masks, batch).any()):
            raise InputError("patch_masks marks images as present but patch_images is None")
        else:
            patch_masks = None
        if sample_patch_num is not None and (isinstance(sample_patch_num, bool) or
                                             not isinstance(sample_patch_num, int)):
            raise InputError(f"sample_patch_num must be an int or None, got {sample_patch_num!r}")
        return self.encoder(src_tokens, patch_images, patch_masks, return_states=return_states,
                            sample_patch_num=sample_patch_num)

    # -- decoder ----------------------------------------------------------------------------------------------
    def max_decoder_length(self, code_rows: bool = False) -> int:
        """Longest decoder input (``<s>`` included) of text rows, or of image-code rows, which have their own
        position table (spec §3.2: 1 + w**2 + 769 entries, e.g. 1794 for 1024 codes)."""
        return self.decoder.max_code_length if code_rows else self.config.max_positions

    def _check_decoder_input(self, tokens: torch.Tensor, num_sources: int, code_masks: Any,
                             past: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        code_rows = isinstance(code_masks, torch.Tensor) and code_masks.numel() > 0 and bool(code_masks.all())
        max_len = self.max_decoder_length(code_rows) - past
        tokens = _check_tokens("prev_output_tokens", tokens, self.config.vocab_size, max(max_len, 1))
        n = tokens.shape[0]
        if n % num_sources:
            raise InputError(
                f"prev_output_tokens has {n} rows, which is not a multiple of the encoder batch size {num_sources}")
        if code_masks is None:
            code_masks = torch.zeros(n, dtype=torch.bool, device=tokens.device)
        else:
            code_masks = _check_mask("code_masks", code_masks, n)
            if bool(code_masks.any()) and past + tokens.shape[1] > self.decoder.max_code_length:
                raise InputError(
                    f"image-code rows are {past + tokens.shape[1]} tokens long; the code path has "
                    f"{self.decoder.max_code_length} positions")
        return tokens, code_masks

    def decode(
        self,
        prev_output_tokens: torch.Tensor,
        encoder_out: EncoderOutput | CrossState,
        code_masks: torch.Tensor | None = None,
        return_states: bool = False,
        return_cross_attention: bool = False,
        project: bool = True,
    ) -> DecoderOutput:
        """Teacher-forced decoding of whole sequences.

        Args:
            prev_output_tokens: ``[n, T]`` decoder inputs (bos + target[:-1]), right-padded. ``n`` may be a
                multiple ``g`` of the encoder batch: rows ``i*g .. i*g+g-1`` then share source ``i`` (candidate
                ranking), and the encoder output is used without being copied.
            encoder_out: from :meth:`encode` (or its prepared :class:`CrossState`).
            code_masks: ``[n]`` bool, True for rows whose targets are image codes.
            return_states / return_cross_attention: extra outputs for inspection and tests.
            project: False skips the output projection (``logits`` is then ``[n, T, 0]``; use ``features``).
        """
        num_sources = encoder_out.batch_size
        tokens, code_masks = self._check_decoder_input(prev_output_tokens, num_sources, code_masks)
        cross = self.decoder.prepare(encoder_out) if isinstance(encoder_out, EncoderOutput) else encoder_out
        return self.decoder(tokens, cross, code_masks, cache=None, return_states=return_states,
                            return_cross_attention=return_cross_attention, project=project)

    def forward(
        self,
        src_tokens: torch.Tensor,
        prev_output_tokens: torch.Tensor,
        patch_images: torch.Tensor | None = None,
        patch_masks: torch.Tensor | None = None,
        code_masks: torch.Tensor | None = None,
        sample_patch_num: int | None = None,
    ) -> DecoderOutput:
        """Encode then decode with teacher forcing; returns :class:`DecoderOutput` (``.logits [n, T, V]``).
        ``sample_patch_num`` keeps that many random patches per image (see :meth:`encode`)."""
        encoder_out = self.encode(src_tokens, patch_images, patch_masks, sample_patch_num=sample_patch_num)
        return self.decode(prev_output_tokens, encoder_out, code_masks)

    def init_cache(
        self,
        encoder_out: EncoderOutput | CrossState,
        num_rows: int | None = None,
        code_masks: torch.Tensor | None = None,
    ) -> DecoderCache:
        """Start incremental decoding: cross-attention keys/values are computed here, once per source.

        Args:
            encoder_out: the encoder output of ``b`` sources.
            num_rows: decoder rows, a multiple ``b * g`` of the sources (e.g. ``g`` = beam size); default ``b``.
            code_masks: ``[num_rows]`` bool, rows decoding image codes.
        """
        b = encoder_out.batch_size
        n = b if num_rows is None else int(num_rows)
        if n < 1 or n % b:
            raise InputError(f"num_rows ({num_rows}) must be a positive multiple of the encoder batch size {b}")
        if code_masks is not None:
            code_masks = _check_mask("code_masks", code_masks, n)
        return self.decoder.init_cache(encoder_out, n, code_masks)

    def decode_step(self, tokens: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """Feed ``t >= 1`` new tokens per row and return their logits ``[n, t, V]``; ``cache`` is updated.

        Positions continue from ``cache.length``, so feeding a sequence in pieces gives the teacher-forced
        logits of the whole sequence.
        """
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[0] != cache.num_rows:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise InputError(f"decode_step expects tokens of shape [{cache.num_rows}, t], got {shape}")
        tokens, _ = self._check_decoder_input(tokens, cache.cross.batch_size, cache.code_masks, past=cache.length)
        return self.decoder(tokens, cache.cross, cache.code_masks, cache=cache).logits

    # -- persistence ------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str], *,
                        max_shard_size: int = DEFAULT_MAX_SHARD_SIZE) -> None:
        """Write ``config.json`` and ``model.safetensors`` (sharded with an index past ``max_shard_size`` bytes)
        to ``directory``; read it back with :func:`ofa.load_checkpoint`."""
        write_pretrained(directory, self.state_dict(), self.config.to_dict(), max_shard_size=max_shard_size)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], **kwargs: Any) -> "OFAModel":
        """Deprecated (0.2): use :func:`ofa.load_checkpoint`, which reads this and every other format.

        Loading builds the model from blocks, which is the builders' job one floor up; the model no longer
        imports them, so this alias resolves the loader by name and goes away in 0.3.
        """
        warnings.warn("OFAModel.from_pretrained is deprecated; use ofa.load_checkpoint(directory)",
                      DeprecationWarning, stacklevel=2)
        loader = importlib.import_module("ofa.checkpoint").load_checkpoint
        model: OFAModel = loader(directory, **kwargs)
        return model
