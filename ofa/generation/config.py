"""Decoding settings: one frozen, validated dataclass that tasks build and users override."""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from ofa.errors import GenerationError
from ofa.generation.processors import STAGES, LogitsProcessor, Staged

__all__ = ["GenerationConfig"]

Strategy = Literal["beam", "greedy", "sample"]


def _staged(processor: Any) -> LogitsProcessor:
    """A user's processor as a :class:`LogitsProcessor`: its ``stage`` is checked here, where it enters."""
    if isinstance(processor, LogitsProcessor):
        if processor.stage not in STAGES:
            raise GenerationError(f"processor {processor!r} has stage {processor.stage!r}; "
                                  f"accepted: {list(STAGES)}")
        return processor
    warnings.warn(f"processor {processor!r} has no stage attribute; it runs on the logits as before, but from "
                  f"ofa 0.3 a processor must declare stage = 'logits' or 'logprobs' (or be wrapped in "
                  f"ofa.generation.Staged)", FutureWarning, stacklevel=4)
    return Staged(processor, "logits")


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode (fairseq/OFA semantics, spec §5.9).

    Args:
        strategy: ``"beam"`` (beam search), ``"greedy"`` or ``"sample"`` (top-k / top-p sampling).
        beam_size: beams per input (``"beam"``) or samples per input (``"sample"``).
        max_len_a, max_len_b: the longest output is ``max_len_a * src_len + max_len_b`` tokens before the
            final eos (``src_len`` = padded source length), capped by the model's positions.
        min_len: eos is banned while fewer tokens than this were generated.
        normalize_scores: final score = sum of log-probs / length ** ``len_penalty`` (length counts eos);
            False gives the plain sum (OFA's ``unnormalized``).
        len_penalty: exponent of the length normalisation.
        temperature: logits are divided by it before anything else.
        unk_penalty: subtracted from ``<unk>``'s log-prob.
        no_repeat_ngram_size: ban tokens that would repeat an n-gram (the leading ``<s>`` counts).
        sampling_topk / sampling_topp: restrict sampling to the k most likely tokens / the nucleus of mass p
            (-1 disables).
        seed: sampling seed; input ``i`` of a call draws from a generator seeded ``seed + i``, so a batch gives
            the same samples as single calls with seeds ``seed``, ``seed + 1``, ...
        ban_special_until_max_len: ban ids 0-3 before the last step (OFA's image-code generation).
        processors: logits processors applied before the log-softmax (constraints, see
            :mod:`ofa.generation.processors`), in order.
        return_all: return every finalized hypothesis (``beam_size`` per input); else only the best.
    """

    strategy: Strategy = "beam"
    beam_size: int = 5
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 1
    normalize_scores: bool = True
    len_penalty: float = 1.0
    temperature: float = 1.0
    unk_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    sampling_topk: int = -1
    sampling_topp: float = -1.0
    seed: int | None = None
    ban_special_until_max_len: bool = False
    processors: tuple[Any, ...] = field(default_factory=tuple)
    return_all: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in ("beam", "greedy", "sample"):
            raise GenerationError(f"strategy {self.strategy!r} is not one of 'beam', 'greedy', 'sample'")
        for name in ("beam_size", "max_len_b", "min_len", "no_repeat_ngram_size", "sampling_topk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise GenerationError(f"{name} ({value!r}) must be an integer, got {type(value).__name__}")
            object.__setattr__(self, name, int(value))
        for name in ("normalize_scores", "ban_special_until_max_len", "return_all"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise GenerationError(f"{name} ({value!r}) must be True or False, got {type(value).__name__}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)):
            raise GenerationError(f"seed ({self.seed!r}) must be an integer or None, got {type(self.seed).__name__}")
        if self.beam_size < 1:
            raise GenerationError(f"beam_size ({self.beam_size}) must be an integer >= 1")
        if self.strategy == "greedy" and self.beam_size != 1:
            object.__setattr__(self, "beam_size", 1)
        for name in ("max_len_a", "len_penalty", "temperature", "unk_penalty", "sampling_topp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise GenerationError(f"{name} ({value!r}) must be a finite number")
        if self.max_len_a < 0 or self.max_len_b < 0:
            raise GenerationError(f"max_len_a ({self.max_len_a}) and max_len_b ({self.max_len_b}) must be >= 0")
        if self.min_len < 0:
            raise GenerationError(f"min_len ({self.min_len}) must be >= 0")
        if self.max_len_a == 0 and self.min_len > self.max_len_b:
            raise GenerationError(f"min_len ({self.min_len}) is larger than max_len ({self.max_len_b})")
        if self.max_len_a == 0 and self.max_len_b < 1:
            raise GenerationError(f"max_len_b ({self.max_len_b}) must be >= 1")
        if not self.temperature > 0:
            raise GenerationError(f"temperature ({self.temperature}) must be > 0")
        # Bounds that keep every score finite in float32 for any length up to the model's 1024 positions.
        if not 0 <= self.len_penalty <= 100:
            raise GenerationError(f"len_penalty ({self.len_penalty}) must be in [0, 100]")
        if abs(self.unk_penalty) > 1e6:
            raise GenerationError(f"unk_penalty ({self.unk_penalty}) must be in [-1e6, 1e6]")
        if self.temperature < 1e-4:
            raise GenerationError(f"temperature ({self.temperature}) must be >= 1e-4 (use strategy='greedy' for the "
                                  "limit of temperature 0)")
        if self.no_repeat_ngram_size < 0:
            raise GenerationError(f"no_repeat_ngram_size ({self.no_repeat_ngram_size}) must be >= 0")
        if self.sampling_topk == 0 or self.sampling_topk < -1:
            raise GenerationError(f"sampling_topk ({self.sampling_topk}) must be -1 (off) or >= 1")
        if self.sampling_topp != -1.0 and not 0.0 < self.sampling_topp <= 1.0:
            raise GenerationError(f"sampling_topp ({self.sampling_topp}) must be -1 (off) or in (0, 1]")
        if (self.sampling_topk > 0 or self.sampling_topp > 0) and self.strategy != "sample":
            raise GenerationError("sampling_topk / sampling_topp need strategy='sample'")
        processors = tuple(self.processors) if isinstance(self.processors, Sequence) else (self.processors,)
        for p in processors:
            if not callable(p):
                raise GenerationError(f"processor {p!r} is not callable (input_ids, scores, context) -> scores")
        object.__setattr__(self, "processors", tuple(_staged(p) for p in processors))

    def max_len(self, src_len: int, max_positions: int) -> int:
        """Tokens that may precede the forced final eos for a source of ``src_len`` (padded) tokens."""
        limit = int(self.max_len_a * src_len + self.max_len_b)
        max_len = min(limit, max_positions - 1)
        if self.min_len > max_len:
            raise GenerationError(f"min_len ({self.min_len}) is larger than max_len ({max_len}) for this input")
        return max_len

    def replace(self, **changes: Any) -> "GenerationConfig":
        """A copy with fields changed (validated again); unknown names raise :class:`GenerationError`."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - valid)
        if unknown:
            raise GenerationError(f"unknown generation setting(s) {unknown}; valid: {sorted(valid)}")
        return dataclasses.replace(self, **changes)
