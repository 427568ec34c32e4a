"""Tests for ofa.generation.processors: AllowedTokens, TrieConstraint, NoRepeatNGram, ExactLength."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ofa.errors import GenerationError
from ofa.generation import AllowedTokens, ExactLength, NoRepeatNGram, StepContext, Trie, TrieConstraint

NEG_INF = float("-inf")


def _kept(scores: torch.Tensor) -> list[list[int]]:
    return [torch.isfinite(row).nonzero().view(-1).tolist() for row in scores]


# -- AllowedTokens --------------------------------------------------------------------------------------------


def test_allowed_tokens_keeps_specials_and_the_range() -> None:
    scores = torch.randn(2, 30)
    out = AllowedTokens(range(10, 14))(torch.zeros(2, 1, dtype=torch.long), scores)
    assert _kept(out) == [[0, 1, 2, 3, 10, 11, 12, 13]] * 2
    kept = torch.isfinite(out)
    assert torch.equal(out[kept], scores[kept])  # allowed logits are untouched
    assert bool(torch.isfinite(scores).all())  # a new tensor; the input is not modified


def test_allowed_tokens_with_a_sequence_custom_always_and_a_stepped_range() -> None:
    ids = torch.zeros(1, 1, dtype=torch.long)
    assert _kept(AllowedTokens([7, 5, 5, 9], always=(2,))(ids, torch.zeros(1, 12))) == [[2, 5, 7, 9]]
    assert _kept(AllowedTokens(range(4, 12, 3), always=())(ids, torch.zeros(1, 12))) == [[4, 7, 10]]
    processor = AllowedTokens(range(5, 8))
    assert _kept(processor(ids, torch.zeros(1, 10))) == [[0, 1, 2, 3, 5, 6, 7]]
    assert _kept(processor(ids, torch.zeros(1, 9))) == [[0, 1, 2, 3, 5, 6, 7]]  # the mask follows the vocab size


@pytest.mark.parametrize("allowed", [range(5, 5), [], ()])
def test_allowed_tokens_rejects_an_empty_set(allowed: object) -> None:
    with pytest.raises(GenerationError, match="empty"):
        AllowedTokens(allowed)  # type: ignore[arg-type]


def test_allowed_tokens_rejects_negative_and_out_of_vocabulary_ids() -> None:
    with pytest.raises(GenerationError, match=">= 0"):
        AllowedTokens([-1, 4])
    ids = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(GenerationError, match="allows id 20 but the vocabulary has 20"):
        AllowedTokens(range(10, 21))(ids, torch.zeros(1, 20))
    with pytest.raises(GenerationError, match="allows id 25"):
        AllowedTokens([4, 25])(ids, torch.zeros(1, 20))


# -- TrieConstraint -------------------------------------------------------------------------------------------


def _trie() -> TrieConstraint:
    return TrieConstraint(Trie.from_answers([[5], [5, 6], [5, 7, 8], [9]]))


def test_trie_constraint_allows_the_next_layer() -> None:
    rows = [[0], [0, 5], [0, 5, 7], [0, 5, 6], [0, 4]]
    constraint = _trie()
    for row, expected in zip(rows, [[5, 9], [2, 6, 7], [8], [2], [2]]):
        out = constraint(torch.tensor([row]), torch.zeros(1, 12))
        assert _kept(out) == [expected]


def test_trie_constraint_batches_rows_and_skips_forced_prefixes() -> None:
    constraint = _trie()
    # Each row: <s> + prefix + answer so far; prefix lengths 0, 2, 3 and 4 (the last one is still in its prefix).
    ids = torch.tensor([[0, 5, 7, 1], [0, 11, 12, 5], [0, 11, 12, 13], [0, 11, 12, 13]])
    prefix = torch.tensor([0, 2, 3, 4])
    out = constraint(ids, torch.zeros(4, 15), StepContext(step=3, prefix_lengths=prefix))
    kept = _kept(out)
    assert kept[0] == [2]  # [<s>, 5, 7, 1] left the trie: only eos
    assert kept[1] == [2, 6, 7]  # answer so far [5]
    assert kept[2] == [5, 9]  # the prefix just ended: the root's children
    assert kept[3] == list(range(15))  # inside the prefix: unconstrained
    mask = constraint.allowed_mask(ids, 15, prefix)
    assert mask.dtype == torch.bool and mask.shape == (4, 15)
    assert _kept(constraint(ids, torch.zeros(4, 15)))[1] == [2]  # without the prefix, 11 is not an answer


def test_trie_constraint_after_a_complete_answer_allows_nothing() -> None:
    out = _trie()(torch.tensor([[0, 9, 2]]), torch.zeros(1, 12))
    assert _kept(out) == [[]]


def test_trie_constraint_needs_answers() -> None:
    with pytest.raises(GenerationError, match="at least one answer"):
        TrieConstraint(Trie())


# -- NoRepeatNGram --------------------------------------------------------------------------------------------


def _brute_force_banned(row: list[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram of ``row`` (which starts with <s>)."""
    t = len(row)
    if t < n:
        return set()
    context = row[t - n + 1:]
    return {row[k + n - 1] for k in range(t - n + 1) if row[k:k + n - 1] == context}


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 4), width=st.integers(1, 12), rows=st.integers(1, 3), data=st.data())
def test_no_repeat_ngram_bans_exactly_the_repeating_tokens(n: int, width: int, rows: int,
                                                          data: st.DataObject) -> None:
    vocab = 6
    ids = [[0] + data.draw(st.lists(st.integers(3, vocab - 1), min_size=width - 1, max_size=width - 1))
           for _ in range(rows)]
    scores = torch.randn(rows, vocab)
    out = NoRepeatNGram(n)(torch.tensor(ids), scores)
    for r, row in enumerate(ids):
        banned = set(torch.isinf(out[r]).nonzero().view(-1).tolist())
        assert banned == _brute_force_banned(row, n)
        keep = torch.isfinite(out[r])
        assert torch.equal(out[r][keep], scores[r][keep])


def test_no_repeat_ngram_examples() -> None:
    scores = torch.zeros(1, 10)
    # <s> 5 6 5: the context (6, 5) never occurred before: nothing banned.
    assert _kept(NoRepeatNGram(3)(torch.tensor([[0, 5, 6, 5]]), scores)) == [list(range(10))]
    # <s> 5 6 5 6: context (5, 6) was followed by 5 -> 5 banned.
    assert _kept(NoRepeatNGram(3)(torch.tensor([[0, 5, 6, 5, 6]]), scores)) == [[0, 1, 2, 3, 4, 6, 7, 8, 9]]
    # n=2, context (5,): 5 was followed by 7 and by 5.
    assert _kept(NoRepeatNGram(2)(torch.tensor([[0, 5, 7, 5, 5]]), scores)) == [[0, 1, 2, 3, 4, 6, 8, 9]]
    # The leading <s> counts: <s> 6 <s> has context (<s>,), which was followed by 6.
    assert _kept(NoRepeatNGram(2)(torch.tensor([[0, 6, 0]]), scores)) == [[0, 1, 2, 3, 4, 5, 7, 8, 9]]
    assert _kept(NoRepeatNGram(3)(torch.tensor([[0, 6]]), scores)) == [list(range(10))]  # shorter than n
    assert _kept(NoRepeatNGram(1)(torch.tensor([[0, 4, 8]]), scores)) == [[1, 2, 3, 5, 6, 7, 9]]
    with pytest.raises(GenerationError, match="n-gram size"):
        NoRepeatNGram(0)


# -- ExactLength ----------------------------------------------------------------------------------------------


def test_exact_length_bans_eos_before_and_forces_it_at_the_length() -> None:
    processor = ExactLength(2)
    scores = torch.randn(2, 8)
    before = processor(torch.tensor([[0, 5], [0, 6]]), scores)
    assert _kept(before) == [[0, 1, 3, 4, 5, 6, 7]] * 2
    at = processor(torch.tensor([[0, 5, 6], [0, 6, 6]]), scores)
    assert _kept(at) == [[2], [2]]
    assert torch.equal(at[:, 2], scores[:, 2])  # eos keeps its log-prob (no renormalisation)
    assert _kept(ExactLength(1, eos_id=7)(torch.tensor([[0, 4]]), scores[:1])) == [[7]]
    with pytest.raises(GenerationError, match="length"):
        ExactLength(0)


def test_processor_stages() -> None:
    assert AllowedTokens(range(4, 6)).stage == "logits"
    assert _trie().stage == "logits"
    assert NoRepeatNGram(2).stage == "logprobs"
    assert ExactLength(3).stage == "logprobs"
