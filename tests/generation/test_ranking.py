"""Tests for ofa.generation.ranking.rank_candidates: equal to constrained beam-search scores, chunking, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ofa.errors import GenerationError, InputError
from ofa.generation import GenerationConfig, RankedCandidate, Trie, TrieConstraint, generate, rank_candidates

EOS = 2
PAD = 1
TEXTS = (" yes", " no", " two", " two men", " two people", " a man", " a woman", " black", " white")


@pytest.fixture(scope="module")
def answers(tok: Any) -> list[list[int]]:
    out = [tok.encode(t) for t in TEXTS]
    assert len({tuple(a) for a in out}) == len(TEXTS) and any(len(a) > 1 for a in out)
    return out


@pytest.fixture(scope="module")
def inputs(tok: Any, helpers: Any) -> dict[str, torch.Tensor]:
    return {"src_tokens": helpers.make_sources([6, 4], len(tok), seed=31),
            "patch_images": helpers.make_images(2, seed=32)}


def _scores(ranked: list[RankedCandidate]) -> dict[int, float]:
    return {c.index: c.score for c in ranked}


@pytest.mark.parametrize("beam", [5, len(TEXTS)])
def test_ranking_scores_equal_trie_beam_search_scores(tok_model: Any, answers: list[list[int]],
                                                     inputs: dict[str, torch.Tensor], beam: int) -> None:
    config = GenerationConfig(beam_size=beam, normalize_scores=False,
                              processors=(TrieConstraint(Trie.from_answers(answers)),))
    hypos = generate(tok_model, inputs["src_tokens"], patch_images=inputs["patch_images"], config=config)
    ranked = rank_candidates(tok_model, inputs["src_tokens"], answers, patch_images=inputs["patch_images"])
    for hyps, ranking in zip(hypos, ranked):
        assert len(hyps) == beam and len(ranking) == len(answers)
        scores = _scores(ranking)
        for h in hyps:
            tokens = h.tokens.tolist()
            assert tokens[-1] == EOS
            index = answers.index(tokens[:-1])  # every hypothesis is an answer + eos
            assert h.score == pytest.approx(scores[index], abs=1e-4)
        ranked_scores = [c.score for c in ranking]
        assert ranked_scores == sorted(ranked_scores, reverse=True)
        assert all(s <= 0 for s in ranked_scores)
        if beam == len(answers):  # every answer is found, in the ranking's order
            assert [answers.index(h.tokens[:-1].tolist()) for h in hyps] == [c.index for c in ranking]
    assert [c.index for c in ranked[0]] != [c.index for c in ranked[1]]  # the two inputs rank differently


def test_ranking_with_a_decoder_prompt_equals_prefixed_beam_search(tok: Any, tok_model: Any,
                                                                  answers: list[list[int]],
                                                                  inputs: dict[str, torch.Tensor]) -> None:
    questions = [tok.encode(" what is it?"), tok.encode(" how many")]
    assert len(questions[0]) != len(questions[1])
    width = max(len(q) for q in questions)
    prefix = torch.full((2, width), PAD, dtype=torch.long)
    for i, q in enumerate(questions):
        prefix[i, :len(q)] = torch.tensor(q)
    config = GenerationConfig(beam_size=5, normalize_scores=False,
                              processors=(TrieConstraint(Trie.from_answers(answers)),))
    hypos = generate(tok_model, inputs["src_tokens"], patch_images=inputs["patch_images"], prefix_tokens=prefix,
                     config=config)
    ranked = rank_candidates(tok_model, inputs["src_tokens"], answers, patch_images=inputs["patch_images"],
                             decoder_prompts=[[0] + q for q in questions])
    plain = rank_candidates(tok_model, inputs["src_tokens"], answers, patch_images=inputs["patch_images"])
    for q, hyps, ranking, unprompted in zip(questions, hypos, ranked, plain):
        scores = _scores(ranking)
        for h in hyps:
            tokens = h.tokens.tolist()
            assert tokens[:len(q)] == q
            index = answers.index(tokens[len(q):-1])
            assert float(h.positional_scores[len(q):].sum()) == pytest.approx(scores[index], abs=1e-4)
        assert abs(ranking[0].score - _scores(unprompted)[ranking[0].index]) > 1e-3  # the prompt matters


def test_chunk_size_does_not_change_results(tok_model: Any, answers: list[list[int]],
                                            inputs: dict[str, torch.Tensor]) -> None:
    results = [rank_candidates(tok_model, inputs["src_tokens"], answers, patch_images=inputs["patch_images"],
                               chunk_size=size) for size in (1, 3, 20)]
    chunks: list[int] = []
    rank_candidates(tok_model, inputs["src_tokens"], answers, chunk_size=4, on_chunk=chunks.append)
    assert chunks == [0, 4, 8]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert [c.index for c in a] == [c.index for c in b]
            assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-5)


def test_per_input_candidate_lists(tok_model: Any, answers: list[list[int]],
                                   inputs: dict[str, torch.Tensor]) -> None:
    lists = [answers[:5], answers[3:]]
    src, images = inputs["src_tokens"], inputs["patch_images"]
    ranked = rank_candidates(tok_model, src, lists, patch_images=images, chunk_size=2)
    for i in range(2):
        alone = rank_candidates(tok_model, src[i:i + 1], lists[i], patch_images=images[i:i + 1])[0]
        assert sorted(c.index for c in ranked[i]) == list(range(len(lists[i])))
        assert [c.index for c in ranked[i]] == [c.index for c in alone]
        assert [c.score for c in ranked[i]] == pytest.approx([c.score for c in alone], abs=1e-5)


def test_without_trie_scores_are_full_softmax_log_probs(tok_model: Any, answers: list[list[int]],
                                                        inputs: dict[str, torch.Tensor]) -> None:
    src = inputs["src_tokens"][:1]
    ranked = rank_candidates(tok_model, src, answers[:3], use_trie=False)[0]
    with torch.no_grad():
        enc = tok_model.encode(src)
    for c in ranked:
        target = answers[c.index] + [EOS]
        prev = torch.tensor([[0] + answers[c.index]])
        with torch.no_grad():
            lprobs = torch.log_softmax(tok_model.decode(prev, enc).logits[0].float(), dim=-1)
        expected = float(lprobs.gather(-1, torch.tensor(target)[:, None]).sum())
        assert c.score == pytest.approx(expected, abs=1e-4)
    with_trie = _scores(rank_candidates(tok_model, src, answers[:3])[0])
    assert all(with_trie[c.index] > c.score for c in ranked)  # the trie renormalises over fewer tokens


def test_bad_candidates_raise(tok: Any, tok_model: Any, answers: list[list[int]],
                              inputs: dict[str, torch.Tensor]) -> None:
    src = inputs["src_tokens"]
    with pytest.raises(GenerationError, match="candidate list is empty"):
        rank_candidates(tok_model, src, [])
    with pytest.raises(GenerationError, match="candidate list is empty"):
        rank_candidates(tok_model, src, [[], [answers[0]]])
    with pytest.raises(GenerationError, match="candidate 1 has no tokens"):
        rank_candidates(tok_model, src, [answers[0], tok.encode("")])
    with pytest.raises(GenerationError, match="outside"):
        rank_candidates(tok_model, src, [answers[0], [len(tok)]])
    with pytest.raises(GenerationError, match="outside"):
        rank_candidates(tok_model, src, [[-1]])
    with pytest.raises(GenerationError, match="encode text"):
        rank_candidates(tok_model, src, ["yes", "no"])  # type: ignore[list-item]
    with pytest.raises(GenerationError, match="chunk_size"):
        rank_candidates(tok_model, src, answers, chunk_size=0)
    with pytest.raises(InputError, match="candidate lists for 3 inputs"):
        rank_candidates(tok_model, src, [answers, answers, answers])
    with pytest.raises(InputError, match="decoder prompts"):
        rank_candidates(tok_model, src, answers, decoder_prompts=[[0]])
    with pytest.raises(InputError, match="empty"):
        rank_candidates(tok_model, src, answers, decoder_prompts=[[0], []])


def test_tensor_candidates_are_accepted(tok_model: Any, answers: list[list[int]],
                                        inputs: dict[str, torch.Tensor]) -> None:
    src = inputs["src_tokens"]
    as_lists = rank_candidates(tok_model, src, answers[:4])
    as_tensors = rank_candidates(tok_model, src, [torch.tensor(a) for a in answers[:4]])
    for a, b in zip(as_lists, as_tensors):
        assert a == b
