"""Tests for ofa.generation.trie.Trie (OFA's answer trie: [bos] + answer + [eos], next layer or [eos])."""

from __future__ import annotations

import pytest
import torch

from ofa.errors import GenerationError
from ofa.generation import Trie

ANSWERS = [[80], [80, 604], [80, 82], [10, 313], [10, 664, 313], [909, 8, 1104]]


def test_next_tokens_are_the_children_of_the_prefix() -> None:
    trie = Trie.from_answers(ANSWERS)
    assert len(trie) == 6
    assert sorted(trie.next_tokens([0])) == [10, 80, 909]
    assert sorted(trie.next_tokens([0, 80])) == [2, 82, 604]  # "two" ends here or continues
    assert trie.next_tokens([0, 80, 604]) == [2]
    assert sorted(trie.next_tokens([0, 10])) == [313, 664]
    assert trie.next_tokens([0, 10, 664]) == [313]
    assert trie.next_tokens([0, 909, 8, 1104]) == [2]
    assert trie.next_tokens([]) == [0]  # every path starts with <s>


def test_a_prefix_that_leaves_the_trie_gets_eos() -> None:
    trie = Trie.from_answers(ANSWERS)
    assert trie.next_tokens([0, 11]) == [2]
    assert trie.next_tokens([0, 10, 664, 664]) == [2]
    assert trie.next_tokens([5]) == [2]  # does not start with <s>
    assert trie.next_tokens([0, 10, 313, 2, 7]) == [2]


def test_a_complete_path_has_no_continuation() -> None:
    trie = Trie.from_answers(ANSWERS)
    assert trie.next_tokens([0, 80, 2]) == []
    assert trie.next_tokens([0, 10, 664, 313, 2]) == []


def test_custom_ids_duplicates_and_tensors() -> None:
    trie = Trie.from_answers([torch.tensor([7, 8]), [7, 8], [7]], bos_id=5, eos_id=6)
    assert trie.eos_id == 6
    assert trie.next_tokens([5]) == [7]
    assert sorted(trie.next_tokens([5, 7])) == [6, 8]
    assert trie.next_tokens([5, 9]) == [6]
    assert trie.next_tokens([5, 7, 8]) == [6]
    raw = Trie([[0, 4, 2], [0, 4, 5, 2]])
    assert len(raw) == 2 and sorted(raw.next_tokens([0, 4])) == [2, 5]


def test_from_answers_rejects_empty_input() -> None:
    with pytest.raises(GenerationError, match="empty"):
        Trie.from_answers([])
    with pytest.raises(GenerationError, match="no tokens"):
        Trie.from_answers([[5], []])
    assert len(Trie()) == 0 and Trie().next_tokens([0]) == [2]
