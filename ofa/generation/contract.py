"""What the decoding loop needs from a model: :class:`IncrementalModel`.

:class:`~ofa.model.OFAModel` satisfies it; so can anything else that encodes once and then decodes one step at a
time through a cache (an exported or compiled model, a wrapper that moves tensors between devices). The loop
reads nothing else from the model.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

__all__ = ["ModelIds", "EncoderState", "IncrementalCache", "IncrementalModel", "RecomputingModel"]


class ModelIds(Protocol):
    """The part of a model's config the loop reads (:class:`~ofa.config.OFAConfig` has it)."""

    @property
    def pad_id(self) -> int: ...
    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def max_positions(self) -> int: ...


class EncoderState(Protocol):
    """An encoder output over ``batch_size`` sources (:class:`~ofa.nn.encoder.EncoderOutput`)."""

    @property
    def batch_size(self) -> int: ...

    def index_select(self, index: torch.Tensor) -> Any:
        """The output of the sources ``index`` (may repeat sources)."""
        ...


class IncrementalCache(Protocol):
    """Decoder state across steps for ``num_rows = sources * group`` rows (:class:`~ofa.nn.decoder.DecoderCache`)."""

    def reorder(self, row_index: torch.Tensor) -> None:
        """Rows continue from the rows ``row_index`` (beam reordering; sources unchanged)."""
        ...

    def select_sources(self, source_index: torch.Tensor, row_index: torch.Tensor) -> None:
        """Keep only the sources ``source_index``; rows continue from the rows ``row_index``."""
        ...


E = TypeVar("E", bound=EncoderState)
C = TypeVar("C", bound=IncrementalCache)


@runtime_checkable
class IncrementalModel(Protocol[E, C]):
    """A model the loop can decode: encode once, then feed tokens step by step through a cache.

    Members:
        config: the special ids, vocabulary size and text positions (:class:`ModelIds`).
        encode: ``(src_tokens [b, L], patch_images, patch_masks) -> encoder state`` of ``b`` sources.
        init_cache: ``(encoder state, num_rows, code_masks [num_rows] | None) -> cache``; rows
            ``i*g .. i*g+g-1`` belong to source ``i``.
        decode_step: ``(tokens [num_rows, t], cache) -> logits [num_rows, t, V]``; advances the cache.
        max_decoder_length: ``(code_rows) -> int``, the longest decoder input (``<s>`` included) of text rows
            or of image-code rows.
    """

    @property
    def config(self) -> ModelIds: ...

    def encode(self, src_tokens: torch.Tensor, patch_images: torch.Tensor | None = None,
               patch_masks: torch.Tensor | None = None) -> E: ...

    def init_cache(self, encoder_out: E, num_rows: int | None = None,
                   code_masks: torch.Tensor | None = None) -> C: ...

    def decode_step(self, tokens: torch.Tensor, cache: C) -> torch.Tensor: ...

    def max_decoder_length(self, code_rows: bool = False) -> int: ...


@runtime_checkable
class RecomputingModel(IncrementalModel[E, C], Protocol[E, C]):
    """An :class:`IncrementalModel` that can also decode whole prefixes without a cache (the loop's
    ``use_cache=False`` baseline): ``decode(tokens [n, T], encoder state, code_masks) -> .logits [n, T, V]``."""

    def decode(self, prev_output_tokens: torch.Tensor, encoder_out: E,
               code_masks: torch.Tensor | None = None) -> Any: ...
