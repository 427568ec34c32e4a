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
    chunk_size: int = 128,
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
    weight = model.decoder.output_projection.weight
    # The decoder is causal, so a position's features depend only on the tokens before it: every candidate with
    # the same prefix has the same distribution there. Each distinct (input, prefix) is a node of the candidates'
    # trie; its log-normaliser is computed once, over the trie's continuations of that prefix (use_trie) or the
    # whole vocabulary, and a candidate's score is the sum over its positions of logit(target) - normaliser.
    nodes: dict[tuple[int, tuple[int, ...]], int] = {}
    features_by_node: list[torch.Tensor | None] = []
    steps: list[list[list[tuple[int, int]]]] = [[[] for _ in lst] for lst in lists]  # (node, target) per position
    for i, lst in enumerate(lists):
        for j, cand in enumerate(lst):
            for k in range(len(cand) + 1):
                key = (i, tuple(cand[:k]))
                node = nodes.setdefault(key, len(nodes))
                if node == len(features_by_node):
                    features_by_node.append(None)  # set when a chunk decodes a row through this prefix
                steps[i][j].append((node, cand[k] if k < len(cand) else cfg.eos_id))
    longest = max(len(lst) for lst in lists)
    for start in range(0, longest, chunk_size):
        rows: list[list[int]] = []
        owners: list[tuple[int, int]] = []  # (input, candidate) of each row
        for i, lst in enumerate(lists):
            for j in range(start, start + chunk_size):
                # Inputs with fewer candidates repeat their last one so every input has chunk_size rows.
                cand = lst[min(j, len(lst) - 1)]
                rows.append(prompts[i] + cand)
                owners.append((i, min(j, len(lst) - 1)))
        width = max(len(r) for r in rows)
        prev = torch.full((len(rows), width), cfg.pad_id, dtype=torch.long, device=device)
        for r, row in enumerate(rows):
            prev[r, :len(row)] = torch.tensor(row, device=device)
        features = model.decode(prev, cross, project=False).features.float()  # [b * chunk, T, D]
        for r, (i, j) in enumerate(owners):
            first = len(prompts[i]) - 1
            for k, (node, _) in enumerate(steps[i][j]):
                if features_by_node[node] is None:
                    features_by_node[node] = features[r, first + k]
        if on_chunk is not None:
            on_chunk(start)
    node_features = torch.stack([f for f in features_by_node if f is not None])  # [nodes, D]
    assert node_features.shape[0] == len(nodes)
    w = weight.float()
    if use_trie:
        # One entry per trie edge: (node, allowed token); the targets are among them.
        edge_node: list[int] = []
        edge_token: list[int] = []
        edge_of: dict[tuple[int, int], int] = {}
        for (i, prefix), node in nodes.items():
            for token in tries[id(lists[i])].next_tokens([cfg.bos_id, *prefix]):
                edge_of[(node, token)] = len(edge_node)
                edge_node.append(node)
                edge_token.append(token)
        nodes_t = torch.tensor(edge_node, device=device)
        edge_logits = (w[torch.tensor(edge_token, device=device)] * node_features[nodes_t]).sum(dim=-1)
        peak = torch.full((len(nodes),), float("-inf"), device=device).scatter_reduce(
            0, nodes_t, edge_logits, reduce="amax")
        total = torch.zeros(len(nodes), device=device).index_add_(0, nodes_t, (edge_logits - peak[nodes_t]).exp())
        normaliser = peak + total.log()
        target_logit = edge_logits.tolist()

        def step_score(node: int, target: int) -> float:
            return target_logit[edge_of[(node, target)]] - lse[node]
    else:
        parts = []
        for begin in range(0, len(nodes), 256):  # [256, V] logits at a time
            parts.append(torch.logsumexp(node_features[begin:begin + 256] @ w.t(), dim=-1))
        normaliser = torch.cat(parts)

        def step_score(node: int, target: int) -> float:
            return float(node_features[node] @ w[target]) - lse[node]
    lse = normaliser.tolist()
    scores = [[sum(step_score(node, target) for node, target in cand_steps) for cand_steps in per_input]
              for per_input in steps]
    return [sorted((RankedCandidate(j, s) for j, s in enumerate(row)), key=lambda c: -c.score) for row in scores]
