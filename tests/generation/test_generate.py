"""Tests for ofa.generation.generate: batching, cache vs recompute, greedy, invariants, sampling, bad input."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from ofa.errors import GenerationError, InputError
from ofa.generation import (
    AllowedTokens,
    ExactLength,
    GenerationConfig,
    Hypothesis,
    Trie,
    TrieConstraint,
    generate,
    greedy_decode,
)

EOS = 2
PAD = 1
LENGTHS = [7, 5, 6, 6]
PATCH_MASKS = torch.tensor([True, False, True, True])


def _single(model: Any, src: torch.Tensor, i: int, *, images: torch.Tensor | None = None,
            masks: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
            code_masks: torch.Tensor | None = None, config: GenerationConfig) -> list[Hypothesis]:
    """Generate for input ``i`` alone, with its own padding (and prefix padding) stripped."""
    row = src[i]
    row = row[: int(row.ne(PAD).sum())].unsqueeze(0)
    kwargs: dict[str, Any] = {}
    if images is not None:
        kwargs["patch_images"] = images[i : i + 1]
        kwargs["patch_masks"] = None if masks is None else masks[i : i + 1]
    if prefix is not None:
        p = prefix[i]
        kwargs["prefix_tokens"] = p[: int(p.ne(PAD).sum())].unsqueeze(0)
    if code_masks is not None:
        kwargs["code_masks"] = code_masks[i : i + 1]
    return generate(model, row, config=config, **kwargs)[0]


def _ngrams(seq: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[k : k + n]) for k in range(len(seq) - n + 1)]


# -- batching -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_images", [True, False])
def test_batched_beam_search_equals_single_calls(gen_model: Any, helpers: Any, with_images: bool) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    images = helpers.make_images(len(LENGTHS)) if with_images else None
    masks = PATCH_MASKS if with_images else None
    config = GenerationConfig(beam_size=3, max_len_b=8, no_repeat_ngram_size=3)
    batch = generate(gen_model, src, patch_images=images, patch_masks=masks, config=config)
    assert len(batch) == len(LENGTHS)
    for i in range(len(LENGTHS)):
        helpers.assert_same(batch[i], _single(gen_model, src, i, images=images, masks=masks, config=config))
    # The inputs really differ (a mix-up between inputs would show).
    assert len({tuple(hyps[0].tokens.tolist()) for hyps in batch}) >= 3
    if not with_images:  # text only: inputs finish at different steps, so the batch shrinks mid-search
        assert len({max(len(h.tokens) for h in hyps) for hyps in batch}) >= 2


def test_masked_image_equals_text_only_input(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    config = GenerationConfig(beam_size=3, max_len_b=6)
    with_masked = generate(gen_model, src, patch_images=helpers.make_images(4), patch_masks=PATCH_MASKS,
                           config=config)
    text_only = generate(gen_model, src, config=config)
    helpers.assert_same(with_masked[1], text_only[1])
    assert abs(with_masked[0][0].score - text_only[0][0].score) > 1e-2  # the unmasked image is used


def test_batched_bin_constraint_equals_single_calls(tok: Any, tok_model: Any, helpers: Any) -> None:
    vocab = tok.vocab
    src = helpers.make_sources([6, 4, 5], len(tok))
    images = helpers.make_images(3, seed=7)
    config = GenerationConfig(beam_size=5, min_len=4, max_len_b=4, processors=(AllowedTokens(vocab.bin_range()),))
    batch = generate(tok_model, src, patch_images=images, config=config)
    for i in range(3):
        helpers.assert_same(batch[i], _single(tok_model, src, i, images=images, config=config))
        for h in batch[i]:
            # ids 0-3 stay allowed, as in OFA's constraint_range (pad is banned separately)
            assert len(h.tokens) == 5 and h.tokens[-1] == EOS
            assert all(t in vocab.bin_range() or t in (0, 3) for t in h.tokens[:4].tolist())
    assert sum(t in vocab.bin_range() for hyps in batch for h in hyps for t in h.tokens.tolist()) >= 40


def _trie_setup(tok: Any) -> tuple[list[list[int]], TrieConstraint]:
    answers = [tok.encode(a) for a in (" yes", " no", " two", " two men", " a man", " a woman", " black")]
    return answers, TrieConstraint(Trie.from_answers(answers))


@pytest.mark.parametrize("with_prefix", [False, True])
def test_batched_trie_constraint_equals_single_calls(tok: Any, tok_model: Any, helpers: Any,
                                                     with_prefix: bool) -> None:
    answers, constraint = _trie_setup(tok)
    src = helpers.make_sources([6, 4, 5], len(tok), seed=11)
    images = helpers.make_images(3, seed=12)
    prefix = None
    if with_prefix:  # prefixes of 4, 2 and 3 tokens, right-padded
        prefix = torch.full((3, 4), PAD, dtype=torch.long)
        for i, n in enumerate([4, 2, 3]):
            prefix[i, :n] = torch.arange(100 + 10 * i, 100 + 10 * i + n)
    config = GenerationConfig(beam_size=5, normalize_scores=False, processors=(constraint,))
    batch = generate(tok_model, src, patch_images=images, prefix_tokens=prefix, config=config)
    for i in range(3):
        helpers.assert_same(batch[i], _single(tok_model, src, i, images=images, prefix=prefix, config=config))
        plen = 0 if prefix is None else int(prefix[i].ne(PAD).sum())
        assert len(batch[i]) == 5
        for h in batch[i]:
            tokens = h.tokens.tolist()
            if prefix is not None:
                assert tokens[:plen] == prefix[i, :plen].tolist()
            assert tokens[plen:-1] in answers and tokens[-1] == EOS
            assert h.score == pytest.approx(float(h.positional_scores.sum()), abs=1e-5)


def test_trie_with_fewer_answers_than_beams_returns_every_answer(tok: Any, tok_model: Any, helpers: Any) -> None:
    # The reference carries the dead beams to max_len and returns the 3 answers; so must we (not raise).
    answers = [tok.encode(a) for a in (" yes", " two men", " a woman")]
    src = helpers.make_sources([6, 4, 5], len(tok), seed=11)
    prefix = torch.tensor([[100, 101, 102], [PAD, PAD, PAD], [120, PAD, PAD]])  # inputs finish at different steps
    config = GenerationConfig(beam_size=5, max_len_b=20, normalize_scores=False,
                              processors=(TrieConstraint(Trie.from_answers(answers)),))
    batch = generate(tok_model, src, prefix_tokens=prefix, config=config)
    for i, hyps in enumerate(batch):
        plen = int(prefix[i].ne(PAD).sum())
        assert sorted(h.tokens[plen:-1].tolist() for h in hyps) == sorted(answers)
        assert all(math.isfinite(h.score) for h in hyps)
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        helpers.assert_same(hyps, _single(tok_model, src, i, prefix=prefix, config=config))
    for a, b in zip(batch, generate(tok_model, src, prefix_tokens=prefix, config=config, use_cache=False)):
        helpers.assert_same(a, b)


def test_sampling_under_a_trie(tok: Any, tok_model: Any, helpers: Any) -> None:
    # Samples end at different steps; a finished sample's row then allows no token at all.
    answers, constraint = _trie_setup(tok)
    src = helpers.make_sources([6, 4, 5], len(tok), seed=11)
    config = GenerationConfig(strategy="sample", beam_size=6, seed=3, normalize_scores=False, temperature=3.0,
                              processors=(constraint,))
    batch = generate(tok_model, src, config=config)
    lengths = set()
    for i, hyps in enumerate(batch):
        assert len(hyps) == 6
        for h in hyps:
            assert h.tokens[:-1].tolist() in answers and h.tokens[-1] == EOS and math.isfinite(h.score)
            lengths.add(len(h.tokens))
        helpers.assert_same(hyps, _single(tok_model, src, i, config=config.replace(seed=3 + i)))
    assert len(lengths) >= 2
    for a, b in zip(batch, generate(tok_model, src, config=config, use_cache=False)):
        helpers.assert_same(a, b)


@pytest.mark.parametrize("top", [{"sampling_topk": 8}, {"sampling_topp": 0.9}])
def test_batched_sampling_uses_seed_plus_index(gen_model: Any, helpers: Any, top: dict[str, Any]) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    config = GenerationConfig(strategy="sample", beam_size=3, max_len_b=6, seed=123, **top)
    batch = generate(gen_model, src, config=config)
    for i in range(len(LENGTHS)):
        single = _single(gen_model, src, i, config=config.replace(seed=123 + i))
        helpers.assert_same(batch[i], single)
    again = generate(gen_model, src, config=config)
    for a, b in zip(batch, again):
        helpers.assert_same(a, b, atol=0.0)
    # Different seeds draw different samples, and the samples of one input differ.
    other = generate(gen_model, src, config=config.replace(seed=7))
    assert [[h.tokens.tolist() for h in hs] for hs in other] != [[h.tokens.tolist() for h in hs] for hs in batch]
    assert any(len({tuple(h.tokens.tolist()) for h in hs}) > 1 for hs in batch)


def test_sampling_top_k_one_is_greedy(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    sampled = generate(gen_model, src, config=GenerationConfig(strategy="sample", beam_size=2, sampling_topk=1,
                                                               max_len_b=6, seed=0))
    greedy = greedy_decode(gen_model, src, config=GenerationConfig(max_len_b=6))
    for hyps, g in zip(sampled, greedy):
        for h in hyps:
            assert h.tokens.tolist() == g.tokens.tolist()
            assert h.score == pytest.approx(g.score, abs=1e-5)


def test_batched_image_code_rows_equal_single_calls(tok: Any, tok_model: Any, helpers: Any) -> None:
    vocab = tok.vocab
    src = helpers.make_sources([6, 4, 5], len(tok), seed=21)
    code_masks = torch.tensor([True, False, True])
    config = GenerationConfig(beam_size=3, min_len=6, max_len_b=6, processors=(AllowedTokens(vocab.code_range()),),
                              ban_special_until_max_len=True)
    batch = generate(tok_model, src, code_masks=code_masks, config=config)
    for i in range(3):
        helpers.assert_same(batch[i], _single(tok_model, src, i, code_masks=code_masks, config=config))
        for h in batch[i]:
            assert len(h.tokens) == 7 and h.tokens[-1] == EOS
            assert all(t in vocab.code_range() for t in h.tokens[:-1].tolist())
    # The code path is really taken: the same input without code_masks scores differently.
    plain = generate(tok_model, src[:1], config=config)[0]
    assert abs(plain[0].score - batch[0][0].score) > 1e-3 or plain[0].tokens.tolist() != batch[0][0].tokens.tolist()


# -- cache vs recompute ---------------------------------------------------------------------------------------


def test_cached_equals_recompute_beam(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    images = helpers.make_images(4)
    config = GenerationConfig(beam_size=4, max_len_b=8, no_repeat_ngram_size=3)
    cached = generate(gen_model, src, patch_images=images, patch_masks=PATCH_MASKS, config=config)
    recomputed = generate(gen_model, src, patch_images=images, patch_masks=PATCH_MASKS, config=config,
                          use_cache=False)
    for a, b in zip(cached, recomputed):
        helpers.assert_same(a, b)
    text_config = config.replace(beam_size=3)
    text_cached = generate(gen_model, src, config=text_config)
    text_recomputed = generate(gen_model, src, config=text_config, use_cache=False)
    for a, b in zip(text_cached, text_recomputed):
        helpers.assert_same(a, b)
    assert len({max(len(h.tokens) for h in hyps) for hyps in text_cached}) >= 2  # the batch shrinks mid-search


def test_cached_equals_recompute_trie_prefix_codes_and_sampling(tok: Any, tok_model: Any, helpers: Any) -> None:
    _, constraint = _trie_setup(tok)
    src = helpers.make_sources([6, 4, 5], len(tok), seed=11)
    prefix = torch.tensor([[100, 101, 102], [110, PAD, PAD], [120, 121, PAD]])
    runs = [
        dict(config=GenerationConfig(beam_size=5, normalize_scores=False, processors=(constraint,)),
             prefix_tokens=prefix),
        dict(config=GenerationConfig(beam_size=3, min_len=5, max_len_b=5,
                                     processors=(AllowedTokens(tok.vocab.code_range()),)),
             code_masks=torch.tensor([True, False, True])),
        dict(config=GenerationConfig(strategy="sample", beam_size=3, max_len_b=6, sampling_topk=20, seed=5)),
    ]
    for kwargs in runs:
        cached = generate(tok_model, src, **kwargs)
        recomputed = generate(tok_model, src, use_cache=False, **kwargs)
        for a, b in zip(cached, recomputed):
            helpers.assert_same(a, b)


def test_reused_encoder_output_gives_the_same_result(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    images = helpers.make_images(4)
    config = GenerationConfig(beam_size=3, max_len_b=6)
    fresh = generate(gen_model, src, patch_images=images, config=config)
    with torch.no_grad():
        enc = gen_model.encode(src, patch_images=images)
    reused = generate(gen_model, src, encoder_out=enc, config=config)
    for a, b in zip(fresh, reused):
        helpers.assert_same(a, b)


# -- greedy ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    {},
    {"no_repeat_ngram_size": 2, "min_len": 3, "temperature": 0.7},
    {"unk_penalty": 0.5, "normalize_scores": False},
    {"ban_special_until_max_len": True, "len_penalty": 0.5},
])
def test_greedy_decode_equals_beam_size_one(gen_model: Any, helpers: Any, settings: dict[str, Any]) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    images = helpers.make_images(4)
    config = GenerationConfig(beam_size=1, max_len_b=8, **settings)
    greedy = greedy_decode(gen_model, src, patch_images=images, patch_masks=PATCH_MASKS, config=config)
    beam = generate(gen_model, src, patch_images=images, patch_masks=PATCH_MASKS, config=config)
    strategy = generate(gen_model, src, patch_images=images, patch_masks=PATCH_MASKS,
                        config=config.replace(strategy="greedy"))
    assert len(greedy) == 4
    for g, b, s in zip(greedy, beam, strategy):
        assert len(b) == 1 and len(s) == 1
        helpers.assert_same([g], b)
        helpers.assert_same([g], s)


def test_special_ban_removes_special_tokens_until_max_len(tok_model: Any, helpers: Any) -> None:
    src = helpers.make_sources(LENGTHS, tok_model.config.vocab_size)
    base = greedy_decode(tok_model, src, config=GenerationConfig(max_len_b=6))
    assert any(t < 4 for h in base for t in h.tokens[:-1].tolist())  # this model likes <s>
    for search in (greedy_decode, generate):
        config = GenerationConfig(beam_size=1, max_len_b=6, ban_special_until_max_len=True)
        banned = search(tok_model, src, config=config)
        for h in banned:
            h = h[0] if isinstance(h, list) else h
            assert all(t >= 4 for t in h.tokens[:-1].tolist()) and len(h.tokens) == 7


# -- invariants -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize,len_penalty", [(True, 1.0), (True, 0.6), (False, 1.0)])
def test_beam_hypotheses_are_sorted_complete_and_scored(gen_model: Any, helpers: Any, normalize: bool,
                                                        len_penalty: float) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    config = GenerationConfig(beam_size=4, min_len=2, max_len_b=7, no_repeat_ngram_size=3,
                              normalize_scores=normalize, len_penalty=len_penalty)
    out = generate(gen_model, src, config=config)
    lengths = set()
    for hyps in out:
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            tokens = h.tokens.tolist()
            lengths.add(len(tokens))
            assert tokens[-1] == EOS and EOS not in tokens[:-1] and PAD not in tokens
            assert 2 <= len(tokens) - 1 <= 7  # min_len <= generated tokens <= max_len
            assert h.positional_scores.shape == (len(tokens),)
            assert bool(torch.isfinite(h.positional_scores).all()) and bool((h.positional_scores <= 0).all())
            total = float(h.positional_scores.double().sum())
            expected = total / len(tokens) ** len_penalty if normalize else total
            assert h.score == pytest.approx(expected, abs=1e-5)
            grams = _ngrams([0] + tokens, 3)  # the leading <s> counts
            assert len(grams) == len(set(grams))
    assert len(lengths) >= 2  # some hypotheses finish before max_len


def test_positional_scores_are_the_model_log_probs(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    out = generate(gen_model, src, config=GenerationConfig(beam_size=3, max_len_b=5))
    with torch.no_grad():
        enc = gen_model.encode(src)
    for i, hyps in enumerate(out):
        for h in hyps:
            prev = torch.cat([torch.tensor([0]), h.tokens[:-1]]).unsqueeze(0)
            with torch.no_grad():
                logits = gen_model.decode(prev, enc.index_select(torch.tensor([i]))).logits[0].float()
            lprobs = torch.log_softmax(logits, dim=-1)
            expected = lprobs.gather(-1, h.tokens[:, None]).squeeze(-1)
            # The forced final eos (at max_len) keeps its raw log-prob; pad is never chosen.
            torch.testing.assert_close(h.positional_scores, expected, atol=1e-4, rtol=0)


def test_min_len_equal_max_len_forces_the_length(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    out = generate(gen_model, src, config=GenerationConfig(beam_size=3, min_len=3, max_len_b=3))
    for hyps in out:
        assert [len(h.tokens) for h in hyps] == [4, 4, 4]


def test_max_len_a_scales_with_the_padded_source(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources([4, 4], gen_model.config.vocab_size)
    out = generate(gen_model, src, config=GenerationConfig(beam_size=2, max_len_a=0.5, max_len_b=1, min_len=3))
    for hyps in out:
        assert all(len(h.tokens) == 4 for h in hyps)  # max_len = 0.5 * 4 + 1 = 3 = min_len


def test_return_all_false_keeps_the_best(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    config = GenerationConfig(beam_size=4, max_len_b=6)
    full = generate(gen_model, src, config=config)
    best = generate(gen_model, src, config=config.replace(return_all=False))
    for a, b in zip(full, best):
        assert len(b) == 1
        helpers.assert_same(a[:1], b, atol=0.0)


def test_on_step_reports_each_step(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources([5], gen_model.config.vocab_size)
    steps: list[int] = []
    generate(gen_model, src, config=GenerationConfig(beam_size=2, min_len=4, max_len_b=4), on_step=steps.append)
    assert steps == [0, 1, 2, 3, 4]  # the last one forces eos


def test_exact_length_processor(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources(LENGTHS, gen_model.config.vocab_size)
    out = generate(gen_model, src, config=GenerationConfig(beam_size=3, max_len_b=10, processors=(ExactLength(3),)))
    for hyps in out:
        assert len(hyps) == 3 and all(len(h.tokens) == 4 and h.tokens[-1] == EOS for h in hyps)


# -- bad input ------------------------------------------------------------------------------------------------


def test_prefix_tokens_with_wrong_batch_size_raise(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources([5, 5], gen_model.config.vocab_size)
    with pytest.raises(InputError, match="prefix_tokens must have shape"):
        generate(gen_model, src, prefix_tokens=torch.tensor([[5, 6]]), config=GenerationConfig(max_len_b=4))
    with pytest.raises(InputError, match="prefix_tokens must have shape"):
        generate(gen_model, src, prefix_tokens=torch.tensor([5, 6]), config=GenerationConfig(max_len_b=4))
    with pytest.raises(InputError, match="outside"):
        generate(gen_model, src, prefix_tokens=torch.tensor([[5], [5000]]), config=GenerationConfig(max_len_b=4))


def test_code_masks_with_wrong_shape_raise(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources([5, 5], gen_model.config.vocab_size)
    with pytest.raises(InputError, match="code_masks"):
        generate(gen_model, src, code_masks=torch.tensor([True]), config=GenerationConfig(max_len_b=4))


@pytest.mark.parametrize("strategy", ["beam", "greedy", "sample"])
def test_constraints_without_a_legal_token_raise(gen_model: Any, helpers: Any, strategy: str) -> None:
    src = helpers.make_sources([5, 6], gen_model.config.vocab_size)
    extra = {"seed": 0} if strategy == "sample" else {}
    beam = 1 if strategy == "greedy" else 3
    no_eos = GenerationConfig(strategy=strategy, beam_size=beam, max_len_b=5, **extra,  # type: ignore[arg-type]
                              processors=(AllowedTokens(range(10, 20), always=()), ExactLength(2)))
    trie = TrieConstraint(Trie.from_answers([[5], [6, 7]]))
    too_long = GenerationConfig(strategy=strategy, beam_size=beam, max_len_b=5, min_len=3,  # type: ignore[arg-type]
                                processors=(trie,), **extra)
    only_pad = GenerationConfig(strategy=strategy, beam_size=beam, max_len_b=5,  # type: ignore[arg-type]
                                processors=(AllowedTokens([PAD], always=()),), **extra)
    for config in (no_eos, too_long, only_pad):
        with pytest.raises(GenerationError, match="no legal token"):
            generate(gen_model, src, config=config)
        with pytest.raises(GenerationError, match="no legal token"):
            greedy_decode(gen_model, src, config=config.replace(strategy="greedy", beam_size=1, seed=None))


def test_out_of_vocabulary_constraint_raises(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources([5], gen_model.config.vocab_size)
    config = GenerationConfig(max_len_b=4, processors=(AllowedTokens(range(1000, 1100)),))
    with pytest.raises(GenerationError, match="vocabulary has 1024"):
        generate(gen_model, src, config=config)
