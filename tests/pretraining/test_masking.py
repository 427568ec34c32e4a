"""Tests for ofa.pretraining.masking: BART whole-word span masking as OFA's text infilling uses it."""

from __future__ import annotations

import math
import statistics

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ofa.pretraining.masking import SpanMasking, poisson

BOS, EOS, MASK = 0, 2, 99


def _text(flags: list[bool]) -> tuple[list[int], list[bool]]:
    """``<s>`` + tokens 10, 11, ... (word starts as flagged; the first is always one) + ``</s>``."""
    flags = [True] + flags[1:]
    return [BOS, *range(10, 10 + len(flags)), EOS], [False, *flags, False]


def _words(tokens: list[int], starts: list[bool]) -> list[list[int]]:
    words: list[list[int]] = []
    for t, s in zip(tokens[1:-1], starts[1:-1]):
        if s or not words:
            words.append([])
        words[-1].append(t)
    return words


@settings(max_examples=200, deadline=None)
@given(flags=st.lists(st.booleans(), min_size=1, max_size=60), seed=st.integers(0, 2**31 - 1))
def test_masking_invariants(flags: list[bool], seed: int) -> None:
    tokens, starts = _text(flags)
    out = SpanMasking(MASK)(tokens, starts, generator=torch.Generator().manual_seed(seed))
    masked = out.tokens
    assert masked[0] == BOS and masked[-1] == EOS  # bos/eos never masked
    num_words = sum(starts)
    budget = math.ceil(0.3 * num_words)
    assert sum(out.span_lengths) == budget and len(out.span_lengths) + out.inserted >= 1
    assert all(length >= 1 for length in out.span_lengths)
    assert len(set(out.span_starts)) == len(out.span_starts) and all(starts[s] for s in out.span_starts)
    # What is left of the original, read in order, is whole words: every deletion removes whole words.
    kept = [t for t in masked if t != MASK]
    words = _words(tokens, starts)
    survivors = [w for w in words if all(t in kept for t in w)]
    assert [t for w in survivors for t in w] == kept[1:-1]
    assert all(not any(t in kept for t in w) for w in words if w not in survivors)
    assert [t for i, t in enumerate(tokens) if i not in out.masked] == kept  # masked = what the masks hide
    # One <mask> per surviving span: never more masks than spans plus insertions.
    assert masked.count(MASK) <= len(out.span_lengths) + out.inserted
    assert masked.count(MASK) >= out.inserted + (1 if out.span_lengths else 0)


def test_zero_budget_leaves_text_alone() -> None:
    tokens, starts = _text([True, True])
    out = SpanMasking(MASK, ratio=0.0)(tokens, starts)
    assert out.tokens == tokens and out.inserted == 0


def test_masked_fraction_and_span_lengths_follow_the_recipe() -> None:
    """30 % of the words masked (minus overlaps), spans Poisson(3) trimmed to the budget."""
    g = torch.Generator().manual_seed(0)
    tokens, starts = _text([True, False, True, True, False, False] * 20)  # 60 words, 120 tokens
    words = _words(tokens, starts)
    fractions, lengths, drawn = [], [], []
    masker = SpanMasking(MASK)
    for _ in range(400):
        out = masker(tokens, starts, generator=g)
        kept = set(out.tokens)
        fractions.append(sum(1 for w in words if w[0] not in kept) / len(words))
        lengths.extend(out.span_lengths)
        drawn.append(sum(out.span_lengths))
    assert set(drawn) == {18}  # ceil(0.3 * 60): the non-empty spans always sum to the budget
    assert 0.24 < statistics.mean(fractions) <= 0.30  # overlapping spans mask a word once
    assert 2.2 < statistics.mean(lengths) < 3.3  # Poisson(3) without zeros, the last one trimmed


def test_poisson_mean_and_variance() -> None:
    g = torch.Generator().manual_seed(1)
    draws = [poisson(3.0, g) for _ in range(5000)]
    assert abs(statistics.mean(draws) - 3.0) < 0.1 and abs(statistics.variance(draws) - 3.0) < 0.25
    assert abs(draws.count(0) / len(draws) - math.exp(-3)) < 0.015
