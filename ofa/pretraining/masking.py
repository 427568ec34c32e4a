"""BART whole-word span masking, as OFA's text infilling uses it (spec §5.7).

Of the ``n`` word-initial tokens (GPT-2 tokens that start with a space; never ``<s>`` or ``</s>``),
``ceil(ratio * n)`` words are masked in spans whose lengths (in words) are drawn from Poisson(λ): lengths are
drawn until they cover the budget and the last one is trimmed to it. Each span starts at a random word start,
distinct for each span, and covers that many whole words (every sub-word token up to the next word start,
never past ``</s>``). The span's first token becomes one ``<mask>`` and the rest of the span is deleted.
Zero-length spans become ``<mask>`` tokens inserted at random inner positions. Spans that run into each other
merge; spans that only touch leave two adjacent ``<mask>`` tokens, as in BART.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ofa.errors import DataError

__all__ = ["SpanMasking", "MaskedText", "poisson"]


def poisson(lam: float, generator: torch.Generator | None = None) -> int:
    """One draw from Poisson(``lam``) (Knuth's product of uniforms; ``lam`` is small here)."""
    limit, k, product = math.exp(-lam), 0, 1.0
    while True:
        product *= float(torch.rand((), generator=generator))
        if product <= limit:
            return k
        k += 1


@dataclass
class MaskedText:
    """The result of masking one token sequence.

    Attributes:
        tokens: the masked sequence (``<s>`` … ``</s>`` kept).
        span_starts: positions in the input where the non-empty spans start.
        span_lengths: their drawn lengths in words (a span may end early at ``</s>``).
        inserted: number of ``<mask>`` tokens inserted for zero-length spans.
        masked: positions in the input whose token was replaced by ``<mask>`` or deleted (what infilling must
            restore).
    """

    tokens: list[int]
    span_starts: list[int]
    span_lengths: list[int]
    inserted: int
    masked: list[int] = field(default_factory=list)


class SpanMasking:
    """Whole-word span masking with Poisson span lengths.

    Args:
        mask_id: the ``<mask>`` id.
        ratio: fraction of word-initial tokens to mask (OFA: 0.3).
        poisson_lambda: mean span length in words (OFA: 3).
    """

    def __init__(self, mask_id: int, ratio: float = 0.3, poisson_lambda: float = 3.0) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise DataError(f"mask ratio ({ratio}) must be in [0, 1]")
        if poisson_lambda <= 0:
            raise DataError(f"poisson_lambda ({poisson_lambda}) must be > 0")
        self.mask_id = mask_id
        self.ratio = ratio
        self.poisson_lambda = poisson_lambda

    def span_lengths(self, budget: int, generator: torch.Generator | None = None) -> list[int]:
        """Poisson lengths drawn until they sum to at least ``budget``, the last one trimmed to the budget."""
        lengths: list[int] = []
        total = 0
        while total < budget:
            length = poisson(self.poisson_lambda, generator)
            lengths.append(min(length, budget - total))
            total += lengths[-1]
        return lengths

    def __call__(self, tokens: Sequence[int], word_starts: Sequence[bool],
                 generator: torch.Generator | None = None) -> MaskedText:
        """Mask ``tokens`` (``<s>`` first, ``</s>`` last).

        Args:
            tokens: the ids, with ``<s>`` and ``</s>``.
            word_starts: per token, whether it starts a word (the first and last entries are ignored).
            generator: the source of randomness (default: torch's global generator).

        Raises:
            DataError: ``tokens`` and ``word_starts`` differ in length, or fewer than 2 tokens.
        """
        n = len(tokens)
        if n < 2 or len(word_starts) != n:
            raise DataError(f"span masking needs <s> ... </s> and one word-start flag per token; got {n} tokens "
                            f"and {len(word_starts)} flags")
        starts = [i for i in range(1, n - 1) if word_starts[i]]
        budget = math.ceil(len(starts) * self.ratio)
        if budget == 0:
            return MaskedText(list(tokens), [], [], 0)
        drawn = self.span_lengths(budget, generator)
        lengths = [length for length in drawn if length > 0]
        inserts = len(drawn) - len(lengths)
        order = torch.randperm(len(starts), generator=generator)[:len(lengths)].tolist()
        span_starts = [starts[i] for i in order]
        keep = [True] * n
        out = list(tokens)
        is_start = [bool(word_starts[i]) and 0 < i < n - 1 for i in range(n)]
        for start, length in zip(span_starts, lengths):
            out[start] = self.mask_id
            words, i = 1, start + 1
            while i < n - 1:  # the span ends before the next word start past its last word, or at </s>
                if is_start[i]:
                    words += 1
                    if words > length:
                        break
                keep[i] = False
                i += 1
        masked = [t for t, k in zip(out, keep) if k]
        # A span that began inside another span lost its own <mask> with the deleted tokens: merged spans.
        if inserts:
            masked = self._insert(masked, inserts, generator)
        hidden = sorted(set(span_starts) | {i for i in range(n) if not keep[i]})
        return MaskedText(masked, span_starts, lengths, inserts, hidden)

    def _insert(self, tokens: list[int], count: int, generator: torch.Generator | None) -> list[int]:
        """Insert ``count`` masks at distinct random positions strictly between ``<s>`` and ``</s>``."""
        total = len(tokens) + count
        positions = set((torch.randperm(total - 2, generator=generator)[:count] + 1).tolist())
        rest = iter(tokens)
        return [self.mask_id if i in positions else next(rest) for i in range(total)]
