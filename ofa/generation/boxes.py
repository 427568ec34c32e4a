"""Grounding outputs: location tokens to pixel boxes with a confidence.

**Confidence.** A box is four location tokens. Its confidence is the geometric mean of the four tokens'
probabilities, ``exp(mean(log p(bin_k)))``, taken from the step distributions the search used (so, with the
location constraint on, from the distribution restricted to location tokens). It lies in (0, 1], does not
depend on the eos probability, and is comparable across images: 0.9 means that on average each coordinate was
chosen with probability 0.9. It is a model-internal score, not a calibrated IoU estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ofa.errors import GenerationError
from ofa.generation.processors import AllowedTokens
from ofa.tokenization.boxes import bins_to_box
from ofa.tokenization.vocab import TokenKind

__all__ = ["BoxPrediction", "hypothesis_to_box", "location_constraint"]


@dataclass(frozen=True)
class BoxPrediction:
    """A predicted box in original-image pixels (``x0, y0, x1, y1``), its confidence and its bins."""

    box: tuple[float, float, float, float]
    confidence: float
    bins: tuple[int, int, int, int]
    score: float


def location_constraint(vocab: Any) -> Any:
    """The processor that restricts decoding to location tokens and ``</s>`` (spec §5.2).

    Unlike OFA's generic ``constraint_range`` (which keeps ids 0-3), ``<s>`` and ``<unk>`` are masked too: a
    grounding output is four bins and eos, and any other token would make an unreadable box.
    """
    return AllowedTokens(vocab.bin_range(), always=(vocab.eos_id,))


def hypothesis_to_box(
    hypothesis: Any,
    vocab: Any,
    original_size: Sequence[float],
    patch_size: float | Sequence[float] = 512,
    max_image_size: float = 512,
) -> BoxPrediction:
    """Turn a grounding hypothesis (4 location tokens + eos) into a :class:`BoxPrediction`.

    Args:
        hypothesis: a :class:`~ofa.generation.generate.Hypothesis`.
        vocab: the :class:`~ofa.tokenization.UnifiedVocab` that owns the bin ids.
        original_size: ``(width, height)`` of the original image.
        patch_size: the size the image was resized to for the model (512 for RefCOCO).
        max_image_size: the normaliser of the quantisation (512 in OFA).

    Raises:
        GenerationError: the hypothesis does not start with 4 location tokens.
    """
    tokens = hypothesis.tokens.tolist()
    head = tokens[:4]
    if len(head) < 4 or any(vocab.kind(t) != TokenKind.BIN for t in head):
        raise GenerationError(
            f"a box needs 4 location tokens, got {[vocab.symbol(t) for t in head]}; "
            "decode grounding with the location constraint and min_len = max_len = 4")
    bins = tuple(vocab.bin_index(t) for t in head)
    box = bins_to_box(bins, original_size, patch_size, vocab.num_bins, max_image_size)
    log_probs = hypothesis.positional_scores[:4].double()
    confidence = math.exp(float(log_probs.mean()))
    x0, y0, x1, y1 = (float(v) for v in box)
    return BoxPrediction(box=(x0, y0, x1, y1), confidence=confidence, bins=(bins[0], bins[1], bins[2], bins[3]),
                         score=float(hypothesis.score))
