"""Self-critical sequence training for captioning (spec §6.2): beam-search ``beam_size`` captions per image in
eval mode, reward each with CIDEr-D minus the leave-one-out mean of its image's captions, and weight the
captions' log-likelihood by the rewards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from ofa.data.text import strip_punctuation
from ofa.errors import ConfigError
from ofa.generation.config import GenerationConfig
from ofa.generation.generate import generate
from ofa.metrics.cider import CiderDScorer
from ofa.trainer.criteria import CriterionContext, Prepared, single_batch
from ofa.trainer.loss import LossOutput, leave_one_out, scst_loss

if TYPE_CHECKING:  # pragma: no cover
    from ofa.data.collate import Batch, PartedBatch
    from ofa.trainer.config import TrainerConfig

__all__ = ["SCST", "scst_text"]


def scst_text(text: str) -> str:
    """OFA's SCST text normalisation: strip punctuation (and a trailing period), then append `` <eos>``."""
    return " ".join(strip_punctuation(text).split()) + " <eos>"


class SCST:
    """CIDEr-D optimisation of captions; the document frequencies come from the training references."""

    @dataclass(frozen=True)
    class Config:
        name: Literal["scst"] = "scst"
        beam_size: int = 5
        max_len: int = 16
        no_repeat_ngram_size: int = 3

        def __post_init__(self) -> None:
            if self.beam_size < 2:
                raise ConfigError(f"SCST needs beam_size >= 2 (got {self.beam_size}): the baseline of a caption "
                                  "is the mean of its image's other captions")
            if self.max_len < 1:
                raise ConfigError(f"SCST max_len ({self.max_len}) must be >= 1")
            if self.no_repeat_ngram_size < 0:
                raise ConfigError(f"SCST no_repeat_ngram_size ({self.no_repeat_ngram_size}) must be >= 0 (0 = off)")

        def check(self, trainer: TrainerConfig) -> None:
            """Nothing across sections."""

    def __init__(self, config: Config, context: CriterionContext) -> None:
        self.config = config
        self.context = context
        self.scorer = self._build_scorer()

    def _build_scorer(self) -> CiderDScorer:
        refs: list[list[str]] = []
        for dataset in self.context.datasets:
            for i in range(len(dataset)):
                refs.append(list(dataset[i].meta.get("references") or []))
        if not any(refs):
            raise ConfigError("SCST needs reference captions in the training samples (the caption task)")
        return CiderDScorer.from_references([[scst_text(r) for r in rs] for rs in refs if rs])

    def prepare(self, batch: Batch | PartedBatch, task_index: int, step: int) -> Prepared:
        batch = single_batch(batch, "scst")
        ctx = self.context
        tok = ctx.tokenizer
        k = self.config.beam_size
        gen_config = GenerationConfig(beam_size=k, max_len_b=self.config.max_len,
                                      no_repeat_ngram_size=self.config.no_repeat_ngram_size)
        ctx.model.eval()
        # full_model(): ZeRO-3 gathers the partitioned weights (generation does not run the engine's forward).
        with torch.no_grad(), ctx.full_model() as full:
            hypos = generate(full, batch.src_tokens, patch_images=batch.patch_images,
                             patch_masks=batch.patch_masks, config=gen_config)
        ctx.train_mode()
        seqs: list[list[int]] = []
        candidates: list[str] = []
        references: list[list[str]] = []
        for sample, hyps in zip(batch.samples, hypos):
            hyps = list(hyps) + [hyps[-1]] * (k - len(hyps))  # keep k rows per image
            for h in hyps[:k]:
                tokens = h.tokens.tolist()
                seqs.append(tokens)
                candidates.append(scst_text(tok.decode(tokens)))
                references.append([scst_text(r) for r in sample.meta.get("references", [])])
        scores = torch.as_tensor(self.scorer.score(candidates, references), dtype=torch.float32)
        rewards = leave_one_out(scores.view(-1, k)).view(-1).to(ctx.device)
        width = max(len(s) for s in seqs)
        target = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long, device=ctx.device)
        prev = torch.full_like(target, tok.pad_id)
        for i, s in enumerate(seqs):
            target[i, :len(s)] = torch.tensor(s)
            prev[i, 0] = tok.bos_id
            prev[i, 1:len(s)] = torch.tensor(s[:-1])
        ntokens = int(target.ne(tok.pad_id).sum())
        return Prepared(task_index, batch, ntokens, step, extra={"target": target, "prev": prev, "rewards": rewards},
                        stats={"scst_cider": float(scores.mean())})

    def loss(self, model: nn.Module, prepared: Prepared) -> LossOutput:
        batch = single_batch(prepared.batch, "scst")
        # The encoder runs once per image: the model decodes the k captions of an image as k rows that share its
        # encoder output (rows i*k .. i*k+k-1 belong to image i).
        out = model(batch.src_tokens, prepared.extra["prev"], batch.patch_images, batch.patch_masks)
        return scst_loss(out.logits, prepared.extra["target"], prepared.extra["rewards"],
                         self.context.tokenizer.pad_id)
