"""Candidate ranking ("allcand"): score a fixed list of answers per input by teacher-forced log-probability.

As OFA evaluates VQA, SNLI-VE and ImageNet: the encoder runs once per input; each candidate becomes a decoder
row ``decoder_prompt + answer`` (the prompt defaults to ``<s>``), rows of one input share its encoder output
(never copied), candidates go through the decoder in chunks, and a candidate's score is the sum of the
log-probs of its answer tokens and the final ``</s>``. With ``use_trie`` (OFA's default) the logits at each
answer position are restricted to the trie of all candidates before the log-softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ofa.errors import GenerationError, InputError
from ofa.generation.trie import Trie

__all__ = ["RankedCandidate", "rank_candidates"]


@dataclass(frozen=True)
class RankedCandidate:
    """One candidate's result: its position in the candidate list and its summed log-prob."""

    index: int
    score: float


def _is_sequence(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() >= 1
    return isinstance(x, Sequence) and not isinstance(x, (str, bytes))


def _as_lists(candidates: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    if not _is_sequence(candidates):
        raise GenerationError(f"candidates must be lists of token ids, got {type(candidates).__name__}")
    out = []
    for i, c in enumerate(candidates):
        if not _is_sequence(c):
            raise GenerationError(f"candidate {i} ({c!r:.40}) is not a list of token ids; encode text with the "
                                  "tokenizer first")
        try:
            out.append([int(t) for t in c])
        except (TypeError, ValueError):
            raise GenerationError(f"candidate {i} ({c!r:.40}) is not a list of token ids") from None
    if not out:
        raise GenerationError("the candidate list is empty")
    for i, c in enumerate(out):
        if not c:
            raise GenerationError(f"candidate {i} has no tokens (the tokenizer could not encode it)")
        bad = [t for t in c if not 0 <= t < vocab_size]
        if bad:
            raise GenerationError(f"candidate {i} has token ids {bad} outside [0, {vocab_size})")
    return out


@torch.no_grad()
def rank_candidates(
    model: Any,
    src_tokens: torch.Tensor,
    candidates: Sequence[Sequence[int]] | Sequence[Sequence[Sequence[int]]],
    *,
    patch_images: torch.Tensor | None = None,
    patch_masks: torch.Tensor | None = None,
    decoder_prompts: Sequence[Sequence[int]] | None = None,
    use_trie: bool = True,
    chunk_size: int = 20,
    on_chunk: Callable[[int], None] | None = None,
) -> list[list[RankedCandidate]]:
    """Rank candidate answers for every input, best first.

    Args:
        model: an :class:`~ofa.model.OFAModel`.
        src_tokens: ``[b, L]`` sources (with images as for :meth:`OFAModel.encode`).
        candidates: token lists (without bos/eos) shared by all inputs, or one such list per input.
        decoder_prompts: per input, the decoder prompt starting with ``<s>`` (OFA's ``prev_output`` prompt:
            ``<s>`` + question); default ``[<s>]``.
        use_trie: restrict each answer position to the continuations allowed by the trie of the candidates.
        chunk_size: candidates per decoder pass per input.

    Returns:
        per input, every candidate as :class:`RankedCandidate`, sorted by score (highest first).

    Raises:
        GenerationError: an empty candidate list, a candidate without tokens, ids out of range.
    """
    cfg = model.config
    if chunk_size < 1:
        raise GenerationError(f"chunk_size ({chunk_size}) must be >= 1")
    bsz = src_tokens.shape[0]
    # One list per input when the elements are lists of lists (an empty inner list marks it only if another
    # element shows the nesting; a lone empty candidate is reported as such).
    per_input = _is_sequence(candidates) and any(
        _is_sequence(c) and len(c) > 0 and _is_sequence(c[0]) for c in candidates)
    if per_input:
        if len(candidates) != bsz:
            raise InputError(f"got candidate lists for {len(candidates)} inputs but {bsz} sources")
        lists = [_as_lists(c, cfg.vocab_size) for c in candidates]  # type: ignore[arg-type]
    else:
        shared = _as_lists(candidates, cfg.vocab_size)  # type: ignore[arg-type]
        lists = [shared] * bsz
    if decoder_prompts is None:
        prompts = [[cfg.bos_id]] * bsz
    else:
        if len(decoder_prompts) != bsz:
            raise InputError(f"got {len(decoder_prompts)} decoder prompts for {bsz} sources")
        prompts = [list(map(int, p)) for p in decoder_prompts]
        if any(not p for p in prompts):
            raise InputError("a decoder prompt is empty; it must start with <s>")
    tries = {id(lst): Trie.from_answers(lst, cfg.bos_id, cfg.eos_id) for lst in lists} if use_trie else {}

    encoder_out = model.encode(src_tokens, patch_images=patch_images, patch_masks=patch_masks)
    cross = model.decoder.prepare(encoder_out)
    device = encoder_out.hidden.device
    scores: list[list[float]] = [[0.0] * len(lst) for lst in lists]
    longest = max(len(lst) for lst in lists)
    for start in range(0, longest, chunk_size):
        rows: list[list[int]] = []
        spans: list[tuple[int, int, int, int]] = []  # (input, candidate, first target position, answer length)
        for i, lst in enumerate(lists):
            for j in range(start, start + chunk_size):
                # Inputs with fewer candidates repeat their last one so every input has chunk_size rows.
                cand = lst[min(j, len(lst) - 1)]
                rows.append(prompts[i] + cand)
                spans.append((i, j if j < len(lst) else -1, len(prompts[i]) - 1, len(cand)))
        width = max(len(r) for r in rows)
        prev = torch.full((len(rows), width), cfg.pad_id, dtype=torch.long, device=device)
        for r, row in enumerate(rows):
            prev[r, :len(row)] = torch.tensor(row, device=device)
        logits = model.decode(prev, cross).logits.float()  # [b * chunk, T, V]
        for r, (i, j, first, length) in enumerate(spans):
            if j < 0:
                continue
            cand = lists[i][j]
            positions = logits[r, first:first + length + 1]  # predicts answer tokens, then eos
            targets = torch.tensor(cand + [cfg.eos_id], device=device)
            if use_trie:
                trie = tries[id(lists[i])]
                allowed = torch.zeros_like(positions, dtype=torch.bool)
                for k in range(length + 1):
                    allowed[k, trie.next_tokens([cfg.bos_id] + cand[:k])] = True
                positions = positions.masked_fill(~allowed, float("-inf"))
            lprobs = torch.log_softmax(positions, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
            scores[i][j] = float(lprobs.sum())
        if on_chunk is not None:
            on_chunk(start)
    return [sorted((RankedCandidate(j, s) for j, s in enumerate(row)), key=lambda c: -c.score) for row in scores]
