"""CLIP-SCST for text-to-image (spec §6.3): sample code grids, decode and score them, reinforce the better ones.

For each caption, ``K`` code sequences are sampled (the task's top-k sampling, eval mode, no gradient), decoded
to images by the VQGAN and scored against the caption by an
:class:`~ofa.metrics.image_text.ImageTextScorer` (OFA: CLIP ViT-B/16 cosine; offline here:
:class:`~ofa.metrics.image_text.ColorNameScorer` or any scorer you plug in). The reward of a sample is its
score minus the mean score of the caption's other samples (:func:`~ofa.trainer.loss.leave_one_out`), and the
loss is ``-sum_t lp(token_t) * reward`` over a teacher-forced pass on the samples
(:func:`~ofa.trainer.loss.scst_loss`), with the logits restricted to ids 0-3 and the code range as in
generation and cross-entropy training.

Used by :class:`~ofa.trainer.trainer.Trainer` with ``criterion="clip_scst"``; usable alone::

    rollout = sample_clip_scst(model, captions, task, tok, vqgan, scorer, num_samples=5)
    out = clip_scst_loss(model, rollout)
    (out.loss / out.ntokens).backward()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ofa.data.collate import collate
from ofa.errors import ConfigError, InputError
from ofa.generation.generate import generate
from ofa.records import Example
from ofa.tokenization.vocab import PAD_ID, SPECIAL_IDS
from ofa.trainer.loss import LossOutput, leave_one_out, scst_loss
from ofa.vqgan.codes import check_codebook

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["ClipScstRollout", "sample_clip_scst", "clip_scst_loss"]


@dataclass
class ClipScstRollout:
    """Sampled code sequences of a batch of captions, with everything the loss needs.

    Rows ``i*K .. i*K+K-1`` of ``prev`` / ``target`` / ``rewards`` are the samples of caption ``i``.

    Attributes:
        src_tokens: ``[b, L]`` encoder inputs (one per caption).
        prev: ``[b*K, T]`` decoder inputs (``<s>`` + sample without its final ``</s>``).
        target: ``[b*K, T]`` the sampled ids (codes, then ``</s>``); pad elsewhere.
        code_masks: ``[b*K]`` all True (the decoder's image-code path).
        rewards: ``[b*K]`` leave-one-out rewards.
        scores: ``[b, K]`` the scorer's scores.
        constraint_range: ``(start, stop)`` of the code ids (logits outside it and ids 0-3 are masked).
        images: the decoded images, row order (kept for inspection).
    """

    src_tokens: torch.Tensor
    prev: torch.Tensor
    target: torch.Tensor
    code_masks: torch.Tensor
    rewards: torch.Tensor
    scores: torch.Tensor
    constraint_range: tuple[int, int]
    pad_id: int = PAD_ID
    images: "list[Image.Image]" = field(default_factory=list)

    @property
    def ntokens(self) -> int:
        return int(self.target.ne(self.pad_id).sum())


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def sample_clip_scst(model: Any, captions: Sequence[str], task: Any, tok: Any, vqgan: Any, scorer: Any, *,
                     num_samples: int = 5, seed: int | None = None, keep_images: bool = False) -> ClipScstRollout:
    """Sample ``num_samples`` code grids per caption, decode, score and turn the scores into rewards.

    The model is put in eval mode for sampling (no gradient) and its mode restored afterwards.

    Args:
        model: the :class:`~ofa.model.OFAModel` (``code_image_size == 8 * task.grid_size``).
        captions: the texts to draw.
        task: an :class:`~ofa.tasks.image_gen.ImageGenTask` (prompt, grid size, top-k/top-p, constraint).
        tok: the tokenizer.
        vqgan: decodes code grids to images; its codebook size must be the tokenizer's code count.
        scorer: ``score(texts, images) -> list[float]``.
        num_samples: ``K >= 2`` samples per caption (OFA: 5).
        seed: sampling seed (caption ``i`` uses ``seed + i``); None draws from torch's global generator.
        keep_images: keep the decoded images in the rollout.

    Raises:
        ConfigError: ``K < 2``, a model/task/VQGAN mismatch, or a scorer returning the wrong number of scores.
        InputError: no captions.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ConfigError(f"CLIP-SCST needs num_samples >= 2 for its leave-one-out baseline, got {num_samples!r}")
    if isinstance(captions, str) or not captions:
        raise InputError("captions must be a non-empty list of strings")
    check_codebook(vqgan, tok)
    task.check_model(model, tok)
    k = num_samples
    device = _device(model)
    samples = [task.encode(Example(id=i, text=c), tok) for i, c in enumerate(captions)]
    src_tokens = collate(samples, pad_id=tok.pad_id).src_tokens.to(device)
    texts = [task.sample_caption(s, tok) for s in samples]
    config = task.generation_config(tok).replace(beam_size=k, seed=seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            hypos = generate(model, src_tokens, config=config,
                             code_masks=torch.ones(len(samples), dtype=torch.bool, device=device))
    finally:
        model.train(was_training)
    seqs: list[list[int]] = []
    for hyps in hypos:
        if not hyps:
            raise ConfigError("sampling produced no code sequence for a caption")
        hyps = list(hyps) + [hyps[-1]] * (k - len(hyps))  # keep K rows per caption
        seqs.extend(h.tokens.tolist() for h in hyps[:k])
    grid = task.grid_size
    grids = torch.stack([tok.decode_codes([t for t in s if t != tok.eos_id][: grid * grid], grid_size=grid)
                         for s in seqs])
    images = vqgan.codes_to_pil(grids)
    raw = scorer.score([t for t in texts for _ in range(k)], images)
    if len(raw) != len(seqs):
        raise ConfigError(f"the scorer returned {len(raw)} scores for {len(seqs)} (text, image) pairs")
    scores = torch.tensor([float(v) for v in raw], dtype=torch.float32).view(-1, k)
    if not bool(torch.isfinite(scores).all()):
        raise ConfigError(f"the scorer returned non-finite scores: {scores.tolist()}")
    rewards = leave_one_out(scores).view(-1).to(device)
    width = max(len(s) for s in seqs)
    target = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long)
    prev = torch.full_like(target, tok.pad_id)
    for i, s in enumerate(seqs):
        target[i, :len(s)] = torch.tensor(s)
        prev[i, 0] = tok.bos_id
        prev[i, 1:len(s)] = torch.tensor(s[:-1])
    start, stop = task.training_constraint_range(tok)
    return ClipScstRollout(src_tokens=src_tokens, prev=prev.to(device), target=target.to(device),
                           code_masks=torch.ones(len(seqs), dtype=torch.bool, device=device), rewards=rewards,
                           scores=scores, constraint_range=(start, stop), pad_id=tok.pad_id,
                           images=list(images) if keep_images else [])


def clip_scst_loss(model: Any, rollout: ClipScstRollout) -> LossOutput:
    """Teacher-forced pass on the sampled sequences and the SCST loss (a sum over tokens, not normalised).

    The encoder runs once per caption: the decoder reads the K rows of a caption against its encoder output.

    Args:
        model: the model (or an engine's module with the same forward signature), in train mode.
        rollout: from :func:`sample_clip_scst`.
    """
    out = model(rollout.src_tokens, rollout.prev, None, None, rollout.code_masks)
    logits = out.logits
    start, stop = rollout.constraint_range
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    allowed[SPECIAL_IDS.start:SPECIAL_IDS.stop] = True
    allowed[start:stop] = True
    logits = logits.masked_fill(~allowed, float("-inf"))
    return scst_loss(logits, rollout.target, rollout.rewards, rollout.pad_id)
