"""Our generation reproduces the original OFA generator's hypotheses stored in ../shared/golden."""

from __future__ import annotations

from typing import Any

import pytest

from ofa.apps.golden import load_golden_model
from ofa.generation import GenerationConfig, Trie
from ofa.generation.golden import config_from_reference_args, run_golden_generation

EXPECTED = {"beam5_maxlen10", "beam5_maxlen10_norepeat3", "beam3_maxlen10_textonly", "bins_constraint_range_len4",
            "trie_vqa_prefix", "trie_noprefix"}


@pytest.fixture(scope="module")
def golden_model(golden_data: dict[str, Any]) -> Any:
    return load_golden_model(golden_data)


def test_every_generation_entry_matches_the_reference(golden_data: dict[str, Any], golden_model: Any) -> None:
    results = run_golden_generation(golden_model, golden_data)
    assert set(results) == EXPECTED
    for name, result in results.items():
        assert result["tokens_identical"], name
        assert result["score_abs_err"] <= 1e-4, (name, result)
        assert result["positional_abs_err"] <= 1e-4, (name, result)


def test_the_reference_data_exercises_what_it_claims(golden_data: dict[str, Any]) -> None:
    entries = golden_data["outputs"]["generation"]
    lengths = {len(h["tokens"]) for hyps in entries["beam5_maxlen10"]["hypos"] for h in hyps}
    assert 11 in lengths and min(lengths) < 11  # some hypotheses finish early, some are forced at max_len
    for hyps in entries["bins_constraint_range_len4"]["hypos"]:
        assert all(len(h["tokens"]) == 5 for h in hyps)


def test_config_from_reference_args() -> None:
    config = config_from_reference_args({"beam": 3, "max_len_b": 4, "min_len": 4, "unnormalized": True,
                                         "no_repeat_ngram_size": 3}, constraint_range="10,20",
                                        trie=Trie.from_answers([[5]]))
    assert isinstance(config, GenerationConfig)
    assert (config.beam_size, config.max_len_b, config.min_len, config.normalize_scores,
            config.no_repeat_ngram_size) == (3, 4, 4, False, 3)
    assert [type(p).__name__ for p in config.processors] == ["AllowedTokens", "TrieConstraint"]
    assert config.processors[0].allowed == range(10, 20)
    default = config_from_reference_args({})
    assert (default.beam_size, default.max_len_b, default.min_len, default.normalize_scores) == (5, 200, 1, True)
