"""Fixtures for the generation tests: small OFA models whose outputs are not degenerate, and a tiny tokenizer.

Random ``ofa-test`` weights at the default init give near-uniform logits, and with O(1) weights every beam
still runs to ``max_len`` because ``</s>`` never wins, and the (16) image patches drown the text. The models
here re-draw every parameter at O(1) scale, double the token embeddings, sharpen the image stem's first
convolution, and point ``</s>``'s embedding row near the row of the token the model likes most. With the
seeds used below, hypotheses end at different lengths and differ between inputs, so finalisation, ranking
and per-input bookkeeping are all exercised (the tests check that where it matters).
"""

from __future__ import annotations

from typing import Any, Sequence

import pytest
import torch

import ofa
from ofa.generation import GenerationConfig, Hypothesis, generate


def _redraw_(model: torch.nn.Module, seed: int) -> None:
    """Matrices N(0, 1/fan_in), biases N(0, 0.1^2), norm weights and gains U(0.5, 1.5)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) / param[0].numel() ** 0.5)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
            else:
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)


def lively_generation_model(vocab_size: int | None = None, seed: int = 2) -> Any:
    """An ``ofa-test`` model in eval mode whose beams finish at different lengths."""
    overrides = {} if vocab_size is None else {"vocab_size": vocab_size}
    model = ofa.build_model("ofa-test", attention_backend="sdpa", **overrides)
    _redraw_(model, seed)
    model.eval()
    cfg = model.config
    weight = model.encoder.embed_tokens.weight
    with torch.no_grad():
        weight.mul_(2.0)
        model.encoder.embed_images.conv1.weight.mul_(3.0)
        src = make_sources([6, 5, 7, 6], cfg.vocab_size, seed=seed + 2)
        greedy = generate(model, src, config=GenerationConfig(strategy="greedy", min_len=6, max_len_b=6))
        favourite = int(torch.cat([h.tokens[:-1] for hs in greedy for h in hs]).mode().values)
        noise = torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(seed + 1))
        # Close to, but not equal to, the favourite's row: no exact logit ties between eos and that token.
        weight[cfg.eos_id] = 0.97 * weight[favourite] + 0.05 * noise / weight.shape[1] ** 0.5
    return model


@pytest.fixture(scope="session")
def gen_model() -> Any:
    """``ofa-test`` (vocab 1024) with lively weights, eval mode."""
    return lively_generation_model()


@pytest.fixture(scope="session")
def tok() -> Any:
    """The tiny test tokenizer (809 ids: 640 text, 64 codes, 100 bins)."""
    return ofa.OFATokenizer.from_test_assets(num_codes=64, num_bins=100)


@pytest.fixture(scope="session")
def tok_model(tok: Any) -> Any:
    """``ofa-test`` sized to the tiny tokenizer's vocabulary, lively weights, eval mode."""
    return lively_generation_model(vocab_size=len(tok), seed=5)


def make_sources(lengths: Sequence[int], vocab_size: int, seed: int = 1, pad: int = 1) -> torch.Tensor:
    """``[b, max(lengths)]`` right-padded sources ``<s> ... </s>`` of the given lengths (eos included)."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    src = torch.full((len(lengths), width), pad, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(4, vocab_size, (n,), generator=generator)
        src[i, 0] = 0
        src[i, n - 1] = 2
    return src


def make_images(batch: int, size: int = 64, seed: int = 2) -> torch.Tensor:
    """``[b, 3, size, size]`` smooth images in [-1, 1] (random ramps plus a per-image stripe frequency).

    Pixel noise would average out in the image stem and give every input nearly the same features.
    """
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for i in range(batch):
        a = torch.rand(3, 3, generator=generator) * 2 - 1
        image = a[:, 0, None, None] * xx + a[:, 1, None, None] * yy + a[:, 2, None, None]
        images.append((image + 0.3 * torch.sin(xx * (3 + 4 * i))).clamp(-1, 1))
    return torch.stack(images)


def assert_same_hypotheses(ours: Sequence[Hypothesis], ref: Sequence[Hypothesis], atol: float = 1e-5) -> None:
    """Same number of hypotheses, identical tokens, scores and positional scores within ``atol``."""
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.tokens.tolist() == b.tokens.tolist()
        assert a.score == pytest.approx(b.score, abs=atol)
        torch.testing.assert_close(a.positional_scores, b.positional_scores, atol=atol, rtol=0)


@pytest.fixture(scope="session")
def helpers() -> Any:
    """The module-level helpers above, for test files (which cannot import this conftest by name)."""

    class _Helpers:
        make_sources = staticmethod(make_sources)
        make_images = staticmethod(make_images)
        assert_same = staticmethod(assert_same_hypotheses)
        lively_model = staticmethod(lively_generation_model)

    return _Helpers
