"""OFA's pretraining loss (spec §5.7): one forward pass per part of a micro-batch, each normalised by its own
target tokens, ``loss = loss_v1 / ntok_v1 + loss_v2 / ntok_v2``.

The first part ("v1", image-text samples) may keep only ``sample_patch_num`` random patches per image (OFA: 196
of the 576 patches of a 384 px image); the second ("v2": text/image infilling and detection at 256 px) keeps all.
Each micro-batch counts 1 towards the step's normaliser (fairseq's ``sample_size = 1``), so a step averages the
micro-batch losses over micro-batches and ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from ofa.data.collate import Batch, PartedBatch
from ofa.errors import ConfigError, DataError
from ofa.trainer.criteria import CriterionContext, Prepared
from ofa.trainer.loss import LossOutput, label_smoothed_cross_entropy

if TYPE_CHECKING:  # pragma: no cover
    from ofa.trainer.config import TrainerConfig

__all__ = ["PretrainLoss"]


class PretrainLoss:
    """Sum over the micro-batch's parts of the part's label-smoothed CE divided by its target tokens."""

    @dataclass(frozen=True)
    class Config:
        name: Literal["pretrain"] = "pretrain"
        label_smoothing: float = 0.0
        sample_patch_num: int | None = None

        def __post_init__(self) -> None:
            if not 0 <= self.label_smoothing < 1:
                raise ConfigError(f"label_smoothing ({self.label_smoothing}) must be in [0, 1)")
            if self.sample_patch_num is not None and (isinstance(self.sample_patch_num, bool) or not isinstance(
                    self.sample_patch_num, int) or self.sample_patch_num < 1):
                raise ConfigError(f"sample_patch_num ({self.sample_patch_num!r}) must be an int >= 1 or null")

        def check(self, trainer: TrainerConfig) -> None:
            """Nothing across sections."""

    def __init__(self, config: Config, context: CriterionContext) -> None:
        self.config = config
        self.tokenizer = context.tokenizer
        self.tasks = context.tasks

    def prepare(self, batch: Batch | PartedBatch, task_index: int, step: int) -> Prepared:
        parts = batch.parts if isinstance(batch, PartedBatch) else (batch,)
        for part in parts:
            if part is not None and part.target is None:
                raise DataError(f"task {self.tasks[task_index].name!r} produced samples without training targets")
        return Prepared(task_index, batch, 1, step)  # sample_size = 1: the loss is normalised per part

    def part_loss(self, model: nn.Module, part: Batch, index: int) -> LossOutput:
        """Summed label-smoothed CE of one part (patch sampling on the first)."""
        assert part.target is not None  # prepare checked it
        code_masks = part.code_masks if bool(part.code_masks.any()) else None
        sample = self.config.sample_patch_num if index == 0 and part.patch_images is not None else None
        out = model(part.src_tokens, part.prev_output_tokens, part.patch_images, part.patch_masks, code_masks,
                    sample_patch_num=sample)
        weights = part.weights if bool((part.weights != 1).any()) else None
        return label_smoothed_cross_entropy(out.logits, part.target, epsilon=self.config.label_smoothing,
                                            pad_id=self.tokenizer.pad_id, weights=weights,
                                            constraints=part.constraints)

    def loss(self, model: nn.Module, prepared: Prepared) -> LossOutput:
        batch = prepared.batch
        parts = batch.parts if isinstance(batch, PartedBatch) else (batch,)
        loss: torch.Tensor | None = None
        nll: torch.Tensor | None = None
        for index, part in enumerate(parts):
            if part is None:
                continue
            out = self.part_loss(model, part, index)
            ntok = max(out.ntokens, 1)
            loss = out.loss / ntok if loss is None else loss + out.loss / ntok
            nll = out.nll_loss / ntok if nll is None else nll + out.nll_loss / ntok
        if loss is None or nll is None:
            raise DataError("a pretraining micro-batch without samples")
        return LossOutput(loss=loss, nll_loss=nll, ntokens=1)
