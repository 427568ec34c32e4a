"""Tests for ofa.generation.config.GenerationConfig: validation, max_len, replace."""

from __future__ import annotations

from typing import Any

import pytest

from ofa.errors import GenerationError
from ofa.generation import GenerationConfig, NoRepeatNGram, generate


@pytest.mark.parametrize("settings,message", [
    ({"beam_size": 0}, "beam_size"),
    ({"beam_size": -2}, "beam_size"),
    ({"beam_size": 2.5}, "beam_size"),
    ({"min_len": 5, "max_len_b": 4}, "min_len"),
    ({"max_len_b": 0, "min_len": 0}, "max_len_b"),
    ({"max_len_b": -1}, "max_len"),
    ({"max_len_a": -0.5}, "max_len_a"),
    ({"min_len": -1}, "min_len"),
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"strategy": "nucleus"}, "strategy"),
    ({"sampling_topk": 10}, "strategy='sample'"),
    ({"sampling_topp": 0.9}, "strategy='sample'"),
    ({"strategy": "sample", "sampling_topk": 0}, "sampling_topk"),
    ({"strategy": "sample", "sampling_topk": -3}, "sampling_topk"),
    ({"strategy": "sample", "sampling_topp": 0.0}, "sampling_topp"),
    ({"strategy": "sample", "sampling_topp": 1.5}, "sampling_topp"),
    ({"temperature": float("inf")}, "temperature"),
    ({"max_len_a": float("nan")}, "max_len_a"),
    ({"len_penalty": float("nan")}, "len_penalty"),
    ({"unk_penalty": float("inf")}, "unk_penalty"),
    ({"strategy": "sample", "sampling_topp": float("nan")}, "sampling_topp"),
    ({"len_penalty": -1.0}, "len_penalty"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
    ({"processors": (NoRepeatNGram(2), "not a processor")}, "not callable"),
])
def test_bad_settings_raise(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(GenerationError, match=message):
        GenerationConfig(**settings)


def test_good_settings_and_defaults() -> None:
    config = GenerationConfig()
    assert (config.strategy, config.beam_size, config.max_len_a, config.max_len_b, config.min_len) == \
        ("beam", 5, 0.0, 200, 1)
    assert config.normalize_scores and config.len_penalty == 1.0 and config.processors == ()
    assert GenerationConfig(strategy="greedy", beam_size=5).beam_size == 1
    sample = GenerationConfig(strategy="sample", sampling_topk=5, sampling_topp=1.0, seed=3)
    assert sample.sampling_topk == 5 and sample.sampling_topp == 1.0
    single = GenerationConfig(processors=NoRepeatNGram(2))  # type: ignore[arg-type]
    assert isinstance(single.processors, tuple) and len(single.processors) == 1
    assert isinstance(GenerationConfig(processors=[NoRepeatNGram(2)]).processors, tuple)  # type: ignore[arg-type]
    assert GenerationConfig(min_len=0, max_len_b=1).min_len == 0


def test_max_len() -> None:
    assert GenerationConfig(max_len_b=16).max_len(src_len=30, max_positions=1024) == 16
    assert GenerationConfig(max_len_a=1.5, max_len_b=4).max_len(src_len=10, max_positions=1024) == 19
    assert GenerationConfig().max_len(src_len=10, max_positions=64) == 63  # capped by the positions
    config = GenerationConfig(max_len_a=0.5, max_len_b=0, min_len=5)  # valid until the source is known
    assert config.max_len(src_len=10, max_positions=1024) == 5
    with pytest.raises(GenerationError, match="min_len"):
        config.max_len(src_len=8, max_positions=1024)


def test_min_len_beyond_max_len_for_an_input_raises_in_generate(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources([4], gen_model.config.vocab_size)
    with pytest.raises(GenerationError, match="min_len"):
        generate(gen_model, src, config=GenerationConfig(max_len_a=0.5, max_len_b=0, min_len=5))


def test_replace_validates_again() -> None:
    config = GenerationConfig(beam_size=3)
    assert config.replace(beam_size=4).beam_size == 4 and config.beam_size == 3
    with pytest.raises(GenerationError, match="unknown generation setting"):
        config.replace(beam=4)
    with pytest.raises(GenerationError, match="temperature"):
        config.replace(temperature=0)
    with pytest.raises(GenerationError, match="strategy='sample'"):
        config.replace(sampling_topk=3)
    assert config.replace(strategy="sample", sampling_topk=3).sampling_topk == 3
    with pytest.raises(Exception):
        config.beam_size = 2  # type: ignore[misc]  # frozen
