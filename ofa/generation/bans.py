"""The decoding loop's own rules, as log-prob processors: the same rules, in the same order, for beam search,
sampling and greedy decoding (spec §5.9, fairseq's ``SequenceGenerator`` as OFA modified it).

In order, after the log-softmax: ``<pad>`` is never chosen; ``<unk>`` pays ``unk_penalty``; with
``ban_special_until_max_len`` the specials are banned before the last step (image codes); at ``max_len`` only
``</s>`` remains; a forced decoder prefix replaces the distribution by its token, otherwise ``</s>`` is banned
before ``min_len``; then n-gram blocking. The user's log-prob processors run after these.
"""

from __future__ import annotations

import torch

from ofa.generation.config import GenerationConfig
from ofa.generation.processors import LogitsProcessor, NoRepeatNGram, Stage, StepContext
from ofa.tokenization.vocab import SPECIAL_IDS, UNK_ID

__all__ = ["BanToken", "PenalizeToken", "BanSpecialsUntilMaxLen", "OnlyEosAtMaxLen", "ForcePrefix", "MinLength",
           "loop_processors"]

_NEG_INF = float("-inf")


class BanToken:
    """Never choose ``token_id`` (the loop bans ``<pad>``)."""

    stage: Stage = "logprobs"

    def __init__(self, token_id: int) -> None:
        self.token_id = token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        scores[:, self.token_id] = _NEG_INF
        return scores

    def __repr__(self) -> str:
        return f"BanToken({self.token_id})"


class PenalizeToken:
    """Subtract ``penalty`` from the log-prob of ``token_id`` (``unk_penalty``)."""

    stage: Stage = "logprobs"

    def __init__(self, token_id: int, penalty: float) -> None:
        self.token_id = token_id
        self.penalty = penalty

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        scores[:, self.token_id] -= self.penalty
        return scores

    def __repr__(self) -> str:
        return f"PenalizeToken({self.token_id}, {self.penalty})"


class BanSpecialsUntilMaxLen:
    """Ban the special ids before the last step (OFA's image-code generation: exactly ``max_len`` codes)."""

    stage: Stage = "logprobs"

    def __init__(self, special_ids: range = SPECIAL_IDS) -> None:
        self.special_ids = special_ids

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        assert context is not None and context.max_len is not None  # the loop always passes both
        if context.step < context.max_len:
            scores[:, self.special_ids.start:self.special_ids.stop] = _NEG_INF
        return scores

    def __repr__(self) -> str:
        return f"BanSpecialsUntilMaxLen({self.special_ids})"


class OnlyEosAtMaxLen:
    """From step ``max_len`` on, ``</s>`` is the only choice."""

    stage: Stage = "logprobs"

    def __init__(self, eos_id: int) -> None:
        self.eos_id = eos_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        assert context is not None and context.max_len is not None
        if context.step >= context.max_len:
            scores[:, :self.eos_id] = _NEG_INF
            scores[:, self.eos_id + 1:] = _NEG_INF
        return scores

    def __repr__(self) -> str:
        return f"OnlyEosAtMaxLen({self.eos_id})"


class ForcePrefix:
    """Inside the forced decoder prefix, each row keeps only its prefix token (with that token's log-prob); a
    pad in the prefix forces nothing."""

    stage: Stage = "logprobs"

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        if context is None or not context.forcing_prefix():
            return scores
        assert context.prefix_tokens is not None
        forced = context.prefix_tokens[:, context.step]
        forced_lp = scores.gather(-1, forced.unsqueeze(-1))
        forcing = forced.ne(self.pad_id)
        masked = torch.full_like(scores[forcing], _NEG_INF)
        scores[forcing] = masked.scatter(-1, forced[forcing].unsqueeze(-1), forced_lp[forcing])
        return scores

    def __repr__(self) -> str:
        return f"ForcePrefix(pad_id={self.pad_id})"


class MinLength:
    """Ban ``</s>`` before step ``min_len`` (not while a forced prefix decides the token)."""

    stage: Stage = "logprobs"

    def __init__(self, eos_id: int, min_len: int) -> None:
        self.eos_id = eos_id
        self.min_len = min_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        assert context is not None
        if not context.forcing_prefix() and context.step < self.min_len:
            scores[:, self.eos_id] = _NEG_INF
        return scores

    def __repr__(self) -> str:
        return f"MinLength({self.eos_id}, {self.min_len})"


def loop_processors(config: GenerationConfig, *, pad_id: int, eos_id: int, unk_id: int = UNK_ID,
                    special_ids: range = SPECIAL_IDS) -> list[LogitsProcessor]:
    """The loop's rules for ``config`` in the reference order, then the user's processors."""
    rules: list[LogitsProcessor] = [BanToken(pad_id)]
    if config.unk_penalty:
        rules.append(PenalizeToken(unk_id, config.unk_penalty))
    if config.ban_special_until_max_len:
        rules.append(BanSpecialsUntilMaxLen(special_ids))
    rules += [OnlyEosAtMaxLen(eos_id), ForcePrefix(pad_id), MinLength(eos_id, config.min_len)]
    if config.no_repeat_ngram_size > 0:
        rules.append(NoRepeatNGram(config.no_repeat_ngram_size))
    return rules + list(config.processors)
