"""Batched decoding for OFA: beam search, greedy, sampling, constraints, candidate ranking, boxes."""

from __future__ import annotations

from ofa.generation.boxes import BoxPrediction, hypothesis_to_box, location_constraint
from ofa.generation.config import GenerationConfig
from ofa.generation.contract import IncrementalModel
from ofa.generation.generate import Hypothesis, generate, greedy_decode
from ofa.generation.processors import (
                                       AllowedTokens,
                                       ExactLength,
                                       LogitsProcessor,
                                       NoRepeatNGram,
                                       Staged,
                                       StepContext,
                                       TrieConstraint,
)
from ofa.generation.ranking import RankedCandidate, rank_candidates
from ofa.generation.trie import Trie

__all__ = [
    "GenerationConfig", "Hypothesis", "generate", "greedy_decode", "IncrementalModel", "LogitsProcessor", "Staged",
    "AllowedTokens", "ExactLength", "NoRepeatNGram", "StepContext", "TrieConstraint", "Trie", "RankedCandidate", "rank_candidates",
    "BoxPrediction", "hypothesis_to_box", "location_constraint",
]
