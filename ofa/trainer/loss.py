"""OFA's training losses: label-smoothed cross entropy with constraints and drop-worst (spec §6.1), and the
self-critical sequence training loss with a leave-one-out CIDEr-D baseline (spec §6.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ofa.errors import ConfigError
from ofa.tokenization.vocab import PAD_ID, SPECIAL_IDS

__all__ = ["LossOutput", "label_smoothed_cross_entropy", "constraint_mask", "scst_loss", "leave_one_out"]


@dataclass
class LossOutput:
    """Summed loss over the kept target tokens, the summed NLL, and how many tokens were kept."""

    loss: torch.Tensor
    nll_loss: torch.Tensor
    ntokens: int


def constraint_mask(constraints: Sequence[Sequence[Sequence[int]] | None], keep: torch.Tensor,
                    vocab_size: int) -> torch.Tensor | None:
    """``[n_kept, V]`` bool mask of the allowed ids at every kept target position (None without constraints).

    Args:
        constraints: per sample, per target position, the allowed next ids (``Sample.constraint``); a sample
            without constraints (None) allows everything.
        keep: ``[b, T]`` bool, the target positions that take part in the loss.
    """
    if not any(c is not None for c in constraints):
        return None
    b, t = keep.shape
    rows = []
    for i in range(b):
        for j in keep[i].nonzero().flatten().tolist():
            sample = constraints[i]
            allowed = sample[j] if sample is not None and j < len(sample) else None
            row = torch.zeros(vocab_size, dtype=torch.bool)
            if allowed is None or len(allowed) == 0:
                row[:] = True
            else:
                row[list(allowed)] = True
            rows.append(row)
    return torch.stack(rows).to(keep.device) if rows else torch.zeros(0, vocab_size, dtype=torch.bool,
                                                                      device=keep.device)


def label_smoothed_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    epsilon: float,
    pad_id: int = PAD_ID,
    weights: torch.Tensor | None = None,
    constraints: Sequence[Sequence[Sequence[int]] | None] | None = None,
    constraint_range: tuple[int, int] | None = None,
    ignore_prefix_size: int = 0,
    drop_worst_ratio: float = 0.0,
) -> LossOutput:
    """OFA's ``adjust_label_smoothed_cross_entropy``.

    Per kept token ``t`` with target ``y`` and allowed set ``A_t`` (constraint mask, ``{0..3} ∪ [a, b)`` for a
    constraint range, or the whole vocabulary): ``loss_t = (1 - eps - eps_i) * nll_t + eps_i * smooth_t`` with
    ``nll_t = -lp_t[y]``, ``smooth_t = -sum_{v in A_t} lp_t[v]``, ``eps_i = eps / (|A_t| - 1)`` (+1e-6 with
    masks or ranges), where ``lp = log_softmax(logits restricted to A_t) * weight``. Pad targets are dropped.

    Args:
        logits: ``[b, T, V]``.
        target: ``[b, T]`` with ``pad_id`` at ignored positions.
        epsilon: label smoothing.
        weights: ``[b]`` per-sample weights (VQA answer confidence), multiplying the log-probs.
        constraints: per sample, per position allowed ids (trie tasks), see :func:`constraint_mask`.
        constraint_range: ``(a, b)``: only ids 0-3 and ``[a, b)`` are allowed (text-to-image).
        ignore_prefix_size: drop the first k target positions.
        drop_worst_ratio: when > 0, keep only the ``floor(N * (1 - ratio))`` lowest-loss tokens (the caller
            decides when drop-worst is active, e.g. after ``drop_worst_after`` updates).

    Returns:
        :class:`LossOutput` with sums over the kept tokens.
    """
    if not 0.0 <= epsilon < 1.0:
        raise ConfigError(f"label smoothing ({epsilon}) must be in [0, 1)")
    if not 0.0 <= drop_worst_ratio < 1.0:
        raise ConfigError(f"drop_worst_ratio ({drop_worst_ratio}) must be in [0, 1)")
    if ignore_prefix_size > 0:
        logits = logits[:, ignore_prefix_size:]
        target = target[:, ignore_prefix_size:]
        if constraints is not None:
            constraints = [None if c is None else list(c)[ignore_prefix_size:] for c in constraints]
    vocab = logits.shape[-1]
    keep = target.ne(pad_id)
    kept_logits = logits[keep].float()  # [n, V]
    kept_target = target[keep]
    masks = constraint_mask(constraints, keep, vocab) if constraints is not None else None
    if masks is not None:
        kept_logits = kept_logits.masked_fill(~masks, float("-inf"))
    elif constraint_range is not None:
        start, end = constraint_range
        kept_logits = kept_logits.clone()
        kept_logits[:, 4:start] = float("-inf")
        kept_logits[:, end:] = float("-inf")
    lprobs = torch.log_softmax(kept_logits, dim=-1)
    if weights is not None:
        per_token = weights.to(lprobs.dtype)[:, None].expand_as(target)[keep]
        lprobs = lprobs * per_token[:, None]
    nll = -lprobs.gather(-1, kept_target[:, None]).squeeze(-1)
    if masks is not None:
        smooth = -lprobs.masked_fill(~masks, 0.0).sum(-1)
        eps_i = epsilon / (masks.sum(-1).to(lprobs.dtype) - 1 + 1e-6)
    elif constraint_range is not None:
        allowed = list(SPECIAL_IDS) + list(range(constraint_range[0], constraint_range[1]))
        smooth = -lprobs[:, allowed].sum(-1)
        eps_i = torch.full_like(nll, epsilon / (len(allowed) - 1 + 1e-6))
    else:
        smooth = -lprobs.sum(-1)
        eps_i = torch.full_like(nll, epsilon / (vocab - 1))
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    if drop_worst_ratio > 0 and loss.numel() > 0:
        k = int(loss.shape[0] * (1 - drop_worst_ratio))
        loss, indices = torch.topk(loss, k=k, largest=False)
        nll = nll[indices]
    return LossOutput(loss=loss.sum(), nll_loss=nll.sum(), ntokens=int(loss.numel()))


def leave_one_out(scores: torch.Tensor) -> torch.Tensor:
    """``[b, k]`` sample scores -> rewards ``score_i - mean_{j != i} score_j`` within each row (k >= 2)."""
    k = scores.shape[-1]
    if k < 2:
        raise ConfigError("the leave-one-out baseline needs at least 2 samples per input")
    others = (scores.sum(-1, keepdim=True) - scores) / (k - 1)
    return scores - others


def scst_loss(logits: torch.Tensor, target: torch.Tensor, rewards: torch.Tensor, pad_id: int = PAD_ID) -> LossOutput:
    """Self-critical loss ``-sum_t lp(token_t) * reward`` over the non-pad tokens of sampled sequences.

    Args:
        logits: ``[n, T, V]`` teacher-forced on the sampled sequences.
        target: ``[n, T]`` the sampled sequences (ending with eos), pad elsewhere.
        rewards: ``[n]`` per-sequence rewards (e.g. :func:`leave_one_out` of CIDEr-D).
    """
    keep = target.ne(pad_id)
    lprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    weighted = -(lprobs * rewards.to(lprobs.dtype)[:, None])[keep]
    nll = -lprobs[keep]
    return LossOutput(loss=weighted.sum(), nll_loss=nll.sum(), ntokens=int(keep.sum()))
