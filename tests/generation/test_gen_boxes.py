"""Tests for ofa.generation.boxes: location tokens to pixel boxes with a confidence, and the bin constraint."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from ofa.errors import GenerationError
from ofa.generation import BoxPrediction, GenerationConfig, Hypothesis, generate, hypothesis_to_box, location_constraint
from ofa.tokenization.boxes import bins_to_box

EOS = 2


def _hypothesis(tokens: list[int], positional: list[float]) -> Hypothesis:
    scores = torch.tensor(positional)
    return Hypothesis(tokens=torch.tensor(tokens), score=float(scores.sum()) / len(tokens), positional_scores=scores)


@pytest.mark.parametrize("original_size,patch_size,max_image_size", [
    ((640, 480), 512, 512),
    ((300, 900), (256, 128), 256),
])
def test_hypothesis_to_box_matches_bins_to_box(tok: Any, original_size: tuple[int, int], patch_size: Any,
                                               max_image_size: int) -> None:
    vocab = tok.vocab
    bins = (3, 10, 50, 99)
    hyp = _hypothesis([vocab.bin_id(b) for b in bins] + [EOS], [-0.1, -0.2, -0.3, -0.4, -2.5])
    pred = hypothesis_to_box(hyp, vocab, original_size, patch_size=patch_size, max_image_size=max_image_size)
    assert isinstance(pred, BoxPrediction)
    assert pred.bins == bins
    expected = bins_to_box(bins, original_size, patch_size, vocab.num_bins, max_image_size)
    assert pred.box == pytest.approx(expected, abs=1e-9)
    assert pred.confidence == pytest.approx(math.exp(-0.25), abs=1e-7)  # eos's log-prob does not count
    assert pred.score == pytest.approx(hyp.score)


def test_box_corners_map_to_the_image_corners(tok: Any) -> None:
    vocab = tok.vocab
    hyp = _hypothesis([vocab.bin_id(0), vocab.bin_id(0), vocab.bin_id(99), vocab.bin_id(99), EOS], [0.0] * 5)
    pred = hypothesis_to_box(hyp, vocab, (640, 480))
    assert pred.box == pytest.approx((0.0, 0.0, 640.0, 480.0))
    assert pred.confidence == 1.0


@pytest.mark.parametrize("tokens", [
    [5, 6, 7, 8, 2],  # text
    [0, 709, 710, 711, 2],  # <s> first
    [709, 710, 2],  # too short
    [709, 710, 650, 711, 2],  # an image code among the bins
])
def test_non_bin_hypotheses_raise(tok: Any, tokens: list[int]) -> None:
    with pytest.raises(GenerationError, match="4 location tokens"):
        hypothesis_to_box(_hypothesis(tokens, [-1.0] * len(tokens)), tok.vocab, (100, 100))


def test_location_constraint_allows_bins_and_eos_only(tok: Any) -> None:
    vocab = tok.vocab
    out = location_constraint(vocab)(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, len(tok)))
    assert torch.isfinite(out[0]).nonzero().view(-1).tolist() == [EOS] + list(vocab.bin_range())


def test_grounding_end_to_end(tok: Any, tok_model: Any, helpers: Any) -> None:
    vocab = tok.vocab
    src = helpers.make_sources([7, 5, 6], len(tok), seed=41)
    images = helpers.make_images(3, seed=42)
    config = GenerationConfig(beam_size=5, min_len=4, max_len_b=4, processors=(location_constraint(vocab),))
    out = generate(tok_model, src, patch_images=images, config=config)
    sizes = [(640, 480), (100, 300), (512, 512)]
    for hyps, size in zip(out, sizes):
        assert len(hyps) == 5 and len({tuple(h.tokens.tolist()) for h in hyps}) == 5
        for h in hyps:
            tokens = h.tokens.tolist()
            assert len(tokens) == 5 and tokens[-1] == EOS
            assert all(t in vocab.bin_range() for t in tokens[:4])
            pred = hypothesis_to_box(h, vocab, size)
            assert 0.0 < pred.confidence <= 1.0
            assert pred.confidence == pytest.approx(math.exp(float(h.positional_scores[:4].double().mean())))
            assert all(0.0 <= v <= size[k % 2] + 1e-9 for k, v in enumerate(pred.box))
