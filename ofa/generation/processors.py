"""Logits processors: composable constraints applied at the step the reference applies them.

A processor is a callable ``(input_ids [n, t], scores [n, V], context) -> scores`` returning a new tensor.
``input_ids`` holds every token of each row so far, starting with ``<s>``. ``context`` (a :class:`StepContext`)
tells the step and, for forced decoder prefixes, how many tokens of each row are prefix.

Every processor declares its ``stage``. ``"logits"`` processors run on the logits *before* the log-softmax, so
the distribution is renormalised over what they allow: that is where OFA applies ``constraint_range`` and its
answer trie. ``"logprobs"`` processors run after it without renormalising, like OFA's length, prefix and n-gram
bans (the loop's own rules are such processors: :mod:`ofa.generation.bans`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Protocol, Sequence, runtime_checkable

import torch

from ofa.errors import GenerationError
from ofa.generation.trie import Trie
from ofa.tokenization.vocab import BOS_ID, EOS_ID, SPECIAL_IDS

__all__ = ["Stage", "STAGES", "StepContext", "LogitsProcessor", "apply_stage", "Staged", "AllowedTokens", "TrieConstraint",
           "NoRepeatNGram", "ExactLength"]

Stage = Literal["logits", "logprobs"]
STAGES: tuple[Stage, ...] = ("logits", "logprobs")

_NEG_INF = float("-inf")


@dataclass
class StepContext:
    """What a processor may need besides the tokens.

    Attributes:
        step: index of the token being chosen (0 = the first token after ``<s>``).
        prefix_lengths: ``[n]`` number of forced decoder-prefix tokens of each row (zeros without a prefix).
        prefix_tokens: ``[n, P]`` the forced decoder prefix of each row (pad forces nothing), or None.
        max_len: the last step at which a token other than eos may be chosen (None: unknown).
    """

    step: int
    prefix_lengths: torch.Tensor | None = None
    prefix_tokens: torch.Tensor | None = None
    max_len: int | None = None

    def forcing_prefix(self) -> bool:
        """Whether this step still lies inside the forced prefix (and before ``max_len``)."""
        return (self.prefix_tokens is not None and self.step < self.prefix_tokens.shape[1]
                and (self.max_len is None or self.step < self.max_len))


@runtime_checkable
class LogitsProcessor(Protocol):
    """``(input_ids [n, t], scores [n, V], context) -> scores``, applied at its ``stage``."""

    stage: Stage

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor: ...


def apply_stage(processors: Iterable[LogitsProcessor], stage: Stage, input_ids: torch.Tensor, scores: torch.Tensor,
                context: StepContext) -> torch.Tensor:
    """Run the processors of one stage, in order."""
    for processor in processors:
        if processor.stage == stage:
            scores = processor(input_ids, scores, context)
    return scores


class Staged:
    """Give a plain callable ``(input_ids, scores, context) -> scores`` a stage.

    Args:
        fn: the callable.
        stage: ``"logits"`` (before the log-softmax) or ``"logprobs"`` (after it).
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor, StepContext | None], torch.Tensor],
                 stage: Stage) -> None:
        if stage not in STAGES:
            raise GenerationError(f"stage {stage!r} is not one of {list(STAGES)}")
        if not callable(fn):
            raise GenerationError(f"Staged needs a callable, got {fn!r}")
        self.fn = fn
        self.stage: Stage = stage

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        return self.fn(input_ids, scores, context)

    def __repr__(self) -> str:
        return f"Staged({self.fn!r}, {self.stage!r})"


class AllowedTokens:
    """Allow only ``allowed`` ids (plus ``always`` ids, 0-3 by default as in OFA's ``constraint_range``).

    Args:
        allowed: a ``range`` (e.g. ``vocab.bin_range()``) or a sequence of ids.
        always: ids never masked (``<s> <pad> </s> <unk>`` in the reference; the loop bans pad separately).
    """

    stage: Stage = "logits"

    def __init__(self, allowed: range | Sequence[int], always: Iterable[int] = SPECIAL_IDS) -> None:
        self.allowed = allowed if isinstance(allowed, range) else sorted({int(i) for i in allowed})
        if len(self.allowed) == 0:
            raise GenerationError(f"AllowedTokens got an empty set of allowed ids ({allowed!r})")
        if min(self.allowed) < 0:
            raise GenerationError(f"AllowedTokens ids must be >= 0, got {min(self.allowed)}")
        self.always = sorted({int(i) for i in always})
        self._mask: torch.Tensor | None = None

    def _build_mask(self, vocab_size: int, device: torch.device) -> torch.Tensor:
        top = self.allowed[-1] if not isinstance(self.allowed, range) else self.allowed.stop - 1
        if top >= vocab_size:
            raise GenerationError(f"AllowedTokens allows id {top} but the vocabulary has {vocab_size} ids")
        mask = torch.ones(vocab_size, dtype=torch.bool, device=device)
        if isinstance(self.allowed, range) and self.allowed.step == 1:
            mask[self.allowed.start:self.allowed.stop] = False
        else:
            mask[torch.tensor(list(self.allowed), device=device)] = False
        mask[[i for i in self.always if i < vocab_size]] = False
        return mask

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        if self._mask is None or self._mask.shape[0] != scores.shape[-1] or self._mask.device != scores.device:
            self._mask = self._build_mask(scores.shape[-1], scores.device)
        return scores.masked_fill(self._mask, _NEG_INF)

    def __repr__(self) -> str:
        return f"AllowedTokens({self.allowed!r}, always={self.always})"


class TrieConstraint:
    """Allow only continuations of candidate answers (OFA's VQA / classification trie).

    For each row, the allowed next tokens are ``trie.next_tokens([bos] + answer_so_far)``; the answer starts
    after the row's forced prefix. Rows still inside their prefix are left unconstrained.

    Args:
        trie: built with :meth:`Trie.from_answers`.
        bos_id: the ``<s>`` id that starts every trie path.
    """

    stage: Stage = "logits"

    def __init__(self, trie: Trie, bos_id: int = BOS_ID) -> None:
        if len(trie) == 0:
            raise GenerationError("TrieConstraint needs a trie with at least one answer")
        self.trie = trie
        self.bos_id = bos_id

    def allowed_mask(self, input_ids: torch.Tensor, vocab_size: int,
                     prefix_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, V]`` bool, True where a token is allowed."""
        n, t = input_ids.shape
        mask = torch.zeros(n, vocab_size, dtype=torch.bool)
        rows = input_ids.tolist()
        prefixes = [0] * n if prefix_lengths is None else prefix_lengths.tolist()
        for i, (row, plen) in enumerate(zip(rows, prefixes)):
            if t > plen:
                mask[i, self.trie.next_tokens([self.bos_id] + row[plen + 1:])] = True
            else:
                mask[i] = True
        return mask.to(input_ids.device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        prefix = None if context is None else context.prefix_lengths
        return scores.masked_fill(~self.allowed_mask(input_ids, scores.shape[-1], prefix), _NEG_INF)

    def __repr__(self) -> str:
        return f"TrieConstraint({len(self.trie)} answers, bos_id={self.bos_id})"


class NoRepeatNGram:
    """Ban every token that would complete an n-gram already present in the row (``<s>`` included).

    Applied to log-probs (no renormalisation), as fairseq's n-gram blocker.
    """

    stage: Stage = "logprobs"

    def __init__(self, size: int) -> None:
        if size < 1:
            raise GenerationError(f"no-repeat n-gram size ({size}) must be >= 1")
        self.size = size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        n = self.size
        t = input_ids.shape[1]
        if t < n:
            return scores
        if n == 1:
            return scores.scatter(1, input_ids, _NEG_INF)
        windows = input_ids.unfold(1, n, 1)  # [rows, t - n + 1, n]
        context_ids = input_ids[:, t - n + 1:]  # the last n - 1 tokens
        hits = (windows[:, :, :-1] == context_ids[:, None, :]).all(dim=-1)  # [rows, windows]
        if not bool(hits.any()):
            return scores
        rows, cols = hits.nonzero(as_tuple=True)
        banned = windows[rows, cols, -1]
        scores = scores.clone()
        scores[rows, banned] = _NEG_INF
        return scores

    def __repr__(self) -> str:
        return f"NoRepeatNGram({self.size})"


class ExactLength:
    """Force exactly ``length`` tokens before eos (e.g. 4 location tokens for a box), on log-probs."""

    stage: Stage = "logprobs"

    def __init__(self, length: int, eos_id: int = EOS_ID) -> None:
        if length < 1:
            raise GenerationError(f"ExactLength length ({length}) must be >= 1")
        self.length = length
        self.eos_id = eos_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 context: StepContext | None = None) -> torch.Tensor:
        generated = input_ids.shape[1] - 1
        if generated < self.length:
            return scores.index_fill(1, torch.tensor([self.eos_id], device=scores.device), _NEG_INF)
        keep = scores[:, self.eos_id].clone()
        scores = torch.full_like(scores, _NEG_INF)
        scores[:, self.eos_id] = keep
        return scores

    def __repr__(self) -> str:
        return f"ExactLength({self.length}, eos_id={self.eos_id})"
