"""Tests for the loop's typed seams: IncrementalModel, processor stages and the loop's rules as processors."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from ofa.errors import GenerationError, InputError
from ofa.generation import (
    AllowedTokens,
    GenerationConfig,
    IncrementalModel,
    LogitsProcessor,
    Staged,
    StepContext,
    generate,
    greedy_decode,
)
from ofa.generation.bans import (
    BanSpecialsUntilMaxLen,
    BanToken,
    ForcePrefix,
    MinLength,
    OnlyEosAtMaxLen,
    PenalizeToken,
    loop_processors,
)
from ofa.generation.contract import RecomputingModel
from ofa.generation.processors import NoRepeatNGram, apply_stage

EOS, PAD, V = 2, 1, 12


class Wrapped:
    """An IncrementalModel that is not an OFAModel: it only forwards the four members the loop needs (as an
    exported model would), and counts decode steps."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.steps = 0

    @property
    def config(self) -> Any:
        return self._model.config

    def encode(self, src_tokens: torch.Tensor, patch_images: torch.Tensor | None = None,
               patch_masks: torch.Tensor | None = None) -> Any:
        return self._model.encode(src_tokens, patch_images, patch_masks)

    def init_cache(self, encoder_out: Any, num_rows: int | None = None,
                   code_masks: torch.Tensor | None = None) -> Any:
        return self._model.init_cache(encoder_out, num_rows, code_masks)

    def decode_step(self, tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        self.steps += 1
        return self._model.decode_step(tokens, cache)

    def max_decoder_length(self, code_rows: bool = False) -> int:
        return int(self._model.max_decoder_length(code_rows))


def test_ofa_model_is_an_incremental_model(gen_model: Any) -> None:
    assert isinstance(gen_model, IncrementalModel)
    assert isinstance(gen_model, RecomputingModel)
    assert not isinstance(object(), IncrementalModel)


def test_any_incremental_model_decodes_like_ofa_model(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources([6, 4, 5], gen_model.config.vocab_size)
    config = GenerationConfig(beam_size=3, max_len_b=6, no_repeat_ngram_size=2)
    wrapped = Wrapped(gen_model)
    assert isinstance(wrapped, IncrementalModel) and not isinstance(wrapped, RecomputingModel)
    ours, theirs = generate(gen_model, src, config=config), generate(wrapped, src, config=config)
    assert wrapped.steps > 0
    for a, b in zip(ours, theirs):
        assert torch.equal(a[0].tokens, b[0].tokens) and a[0].score == b[0].score
    greedy_a, greedy_b = greedy_decode(gen_model, src, config=config), greedy_decode(wrapped, src, config=config)
    assert [h.tokens.tolist() for h in greedy_a] == [h.tokens.tolist() for h in greedy_b]


def test_recompute_baseline_needs_decode(gen_model: Any, helpers: Any) -> None:
    src = helpers.make_sources([4], gen_model.config.vocab_size)
    with pytest.raises(InputError, match="use_cache=False needs a model with decode"):
        generate(Wrapped(gen_model), src, use_cache=False)


# -- stages ---------------------------------------------------------------------------------------------------


def test_every_builtin_processor_declares_a_stage() -> None:
    for p in loop_processors(GenerationConfig(unk_penalty=1.0, no_repeat_ngram_size=2,
                                              ban_special_until_max_len=True), pad_id=PAD, eos_id=EOS):
        assert isinstance(p, LogitsProcessor) and p.stage == "logprobs"
    assert AllowedTokens(range(4, 8)).stage == "logits"


def test_stage_less_processor_is_deprecated_and_runs_on_logits(gen_model: Any, helpers: Any) -> None:
    seen: list[float] = []

    def plain(input_ids: torch.Tensor, scores: torch.Tensor, context: Any = None) -> torch.Tensor:
        seen.append(float(torch.logsumexp(scores[0], dim=-1)))  # logits: not normalised
        return scores

    with pytest.warns(FutureWarning, match="has no stage attribute"):
        config = GenerationConfig(max_len_b=2, processors=(plain,))
    (p,) = config.processors
    assert isinstance(p, Staged) and p.stage == "logits"
    generate(gen_model, helpers.make_sources([4], gen_model.config.vocab_size), config=config)
    assert seen and any(abs(v) > 1e-3 for v in seen)


def test_staged_runs_a_callable_on_log_probs(gen_model: Any, helpers: Any) -> None:
    seen: list[float] = []

    def probe(input_ids: torch.Tensor, scores: torch.Tensor, context: Any = None) -> torch.Tensor:
        seen.append(float(torch.logsumexp(scores[0, 4:], dim=-1)))
        return scores

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = GenerationConfig(max_len_b=2, processors=(Staged(probe, "logprobs"),))
    generate(gen_model, helpers.make_sources([4], gen_model.config.vocab_size), config=config)
    assert seen and all(v <= 1e-5 for v in seen)  # normalised, with pad banned


def test_bad_stage_is_rejected() -> None:
    class Odd:
        stage = "probs"

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, context: Any = None) -> torch.Tensor:
            return scores

    with pytest.raises(GenerationError, match=r"stage 'probs'.*'logits', 'logprobs'"):
        GenerationConfig(processors=(Odd(),))
    with pytest.raises(GenerationError, match="stage 'after'"):
        Staged(lambda i, s, c: s, "after")  # type: ignore[arg-type]


def test_apply_stage_runs_only_its_stage_in_order() -> None:
    calls: list[str] = []

    def tag(name: str, stage: Any) -> Staged:
        return Staged(lambda i, s, c: (calls.append(name), s + 1)[1], stage)

    procs = [tag("a", "logits"), tag("b", "logprobs"), tag("c", "logits")]
    out = apply_stage(procs, "logits", torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 3), StepContext(step=0))
    assert calls == ["a", "c"] and out.tolist() == [[2.0, 2.0, 2.0]]


# -- the loop's rules -----------------------------------------------------------------------------------------


def _lp(rows: int = 2) -> torch.Tensor:
    return torch.log_softmax(torch.arange(rows * V, dtype=torch.float).view(rows, V) / 10, dim=-1)


def test_loop_processors_order_and_switches() -> None:
    base = [type(p) for p in loop_processors(GenerationConfig(), pad_id=PAD, eos_id=EOS)]
    assert base == [BanToken, OnlyEosAtMaxLen, ForcePrefix, MinLength]
    user = AllowedTokens(range(4, 8))
    full = loop_processors(GenerationConfig(unk_penalty=0.5, ban_special_until_max_len=True, no_repeat_ngram_size=3,
                                            processors=(user,)), pad_id=PAD, eos_id=EOS)
    assert [type(p) for p in full] == [BanToken, PenalizeToken, BanSpecialsUntilMaxLen, OnlyEosAtMaxLen,
                                       ForcePrefix, MinLength, NoRepeatNGram, AllowedTokens]
    assert full[-1] is user


def test_rules_values() -> None:
    ids = torch.zeros(2, 1, dtype=torch.long)
    ctx = StepContext(step=1, max_len=3)
    lp = _lp()
    assert torch.isinf(BanToken(PAD)(ids, lp.clone(), ctx)[:, PAD]).all()
    assert torch.allclose(PenalizeToken(3, 0.5)(ids, lp.clone(), ctx)[:, 3], lp[:, 3] - 0.5)
    banned = BanSpecialsUntilMaxLen(range(4))(ids, lp.clone(), ctx)
    assert torch.isinf(banned[:, :4]).all() and torch.equal(banned[:, 4:], lp[:, 4:])
    assert torch.equal(BanSpecialsUntilMaxLen(range(4))(ids, lp.clone(), StepContext(step=3, max_len=3)), lp)
    last = OnlyEosAtMaxLen(EOS)(ids, lp.clone(), StepContext(step=3, max_len=3))
    assert torch.isinf(last[:, :EOS]).all() and torch.isinf(last[:, EOS + 1:]).all()
    assert torch.equal(last[:, EOS], lp[:, EOS])
    assert torch.equal(OnlyEosAtMaxLen(EOS)(ids, lp.clone(), ctx), lp)
    assert torch.isinf(MinLength(EOS, 2)(ids, lp.clone(), ctx)[:, EOS]).all()
    assert torch.equal(MinLength(EOS, 1)(ids, lp.clone(), ctx), lp)


def test_force_prefix_keeps_the_prefix_log_prob_and_pad_forces_nothing() -> None:
    ids = torch.zeros(2, 1, dtype=torch.long)
    prefix = torch.tensor([[7, 9], [8, PAD]])
    lp = _lp()
    step0 = ForcePrefix(PAD)(ids, lp.clone(), StepContext(step=0, prefix_tokens=prefix, max_len=5))
    for row, tok in enumerate((7, 8)):
        assert step0[row, tok] == lp[row, tok]
        assert int(torch.isfinite(step0[row]).sum()) == 1
    step1 = ForcePrefix(PAD)(ids, lp.clone(), StepContext(step=1, prefix_tokens=prefix, max_len=5))
    assert int(torch.isfinite(step1[0]).sum()) == 1 and torch.equal(step1[1], lp[1])
    # Inside the prefix min_len does not ban eos (the prefix decides); at max_len the prefix stops forcing.
    inside = StepContext(step=1, prefix_tokens=prefix, max_len=5)
    assert torch.equal(MinLength(EOS, 4)(ids, lp.clone(), inside), lp)
    assert not StepContext(step=1, prefix_tokens=prefix, max_len=1).forcing_prefix()
