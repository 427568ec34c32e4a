"""Search strategies as plain functions over one decoding step.

Each takes the step's log-probs ``[bsz, beam, V]`` and the cumulative scores so far ``[bsz, beam, step]`` and
returns candidates ``(scores, token ids, source beams)``, each ``[bsz, c]``. The decoding loop in
:mod:`ofa.generation.generate` turns candidates into finished hypotheses and the next step's beams.
"""

from __future__ import annotations

import torch

__all__ = ["beam_step", "sample_step", "top_p_filter"]


def beam_step(step: int, lprobs: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fairseq beam search: the top ``2 * beam`` extensions of all beams by cumulative log-prob.

    At step 0 every beam holds the same ``<s>`` prefix, so only beam 0 is expanded.
    """
    bsz, beam, vocab = lprobs.shape
    if step == 0:
        lprobs = lprobs[:, ::beam, :].contiguous()
    else:
        lprobs = lprobs + scores[:, :, step - 1].unsqueeze(-1)
    flat = lprobs.view(bsz, -1)
    top_scores, top_indices = torch.topk(flat, k=min(2 * beam, flat.shape[1] - 1))
    beams = torch.div(top_indices, vocab, rounding_mode="trunc")
    return top_scores, top_indices.fmod(vocab), beams


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail of each distribution outside the smallest set with mass >= ``top_p`` (the top token stays)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def sample_step(
    step: int,
    lprobs: torch.Tensor,
    scores: torch.Tensor,
    *,
    generators: list[torch.Generator | None],
    top_k: int = -1,
    top_p: float = -1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one token per beam (each beam is one independent sample) from the (top-k / top-p) distribution.

    Args:
        generators: one generator per input (``bsz``), so that inputs draw independently of their batch.
    """
    bsz, beam, vocab = lprobs.shape
    probs = lprobs.float().exp()
    if top_k > 0:
        kth = torch.topk(probs, k=min(top_k, vocab), dim=-1).values[..., -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if top_p > 0:
        probs = top_p_filter(probs, top_p)
    # A row whose constraints allow nothing draws any token at log-prob -inf (as beam search would rank it), so
    # the loop can report the input instead of torch.multinomial failing on an all-zero row.
    probs = probs.masked_fill(probs.sum(dim=-1, keepdim=True) <= 0, 1.0)
    indices = torch.empty(bsz, beam, dtype=torch.long, device=lprobs.device)
    for i in range(bsz):
        rows = probs[i, :1].expand(beam, -1) if step == 0 else probs[i]
        indices[i] = torch.multinomial(rows.cpu(), 1, replacement=True, generator=generators[i]).view(-1).to(
            lprobs.device)
    token_lp = lprobs.gather(-1, indices.unsqueeze(-1)).squeeze(-1)  # [bsz, beam]
    if step > 0:
        token_lp = token_lp + scores[:, :, step - 1]
    beams = torch.arange(beam, device=lprobs.device).expand(bsz, beam).contiguous()
    return token_lp, indices, beams
