"""Label-smoothed cross entropy with OFA's constraint range and drop-worst (spec §6.1): the default criterion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from torch import nn

from ofa.errors import ConfigError, DataError
from ofa.tasks.base import ConstrainsTraining
from ofa.trainer.criteria import CriterionContext, Prepared, single_batch
from ofa.trainer.loss import LossOutput, label_smoothed_cross_entropy

if TYPE_CHECKING:  # pragma: no cover
    from ofa.data.collate import Batch, PartedBatch
    from ofa.trainer.config import TrainerConfig

__all__ = ["LabelSmoothedCE"]


class LabelSmoothedCE:
    """Teacher-forced label-smoothed CE over every target token, weighted per sample (VQA confidence).

    A task that is :class:`~ofa.tasks.base.ConstrainsTraining` restricts logits and smoothing to its range; from
    step ``drop_worst_after`` on, the worst ``drop_worst_ratio`` of the tokens are left out.
    """

    @dataclass(frozen=True)
    class Config:
        name: Literal["ce"] = "ce"
        label_smoothing: float = 0.1
        drop_worst_ratio: float = 0.0
        drop_worst_after: int = 0

        def __post_init__(self) -> None:
            if not 0 <= self.label_smoothing < 1:
                raise ConfigError(f"label_smoothing ({self.label_smoothing}) must be in [0, 1)")
            if not 0 <= self.drop_worst_ratio < 1:
                raise ConfigError(f"drop_worst_ratio ({self.drop_worst_ratio}) must be in [0, 1)")
            if self.drop_worst_after < 0:
                raise ConfigError(f"drop_worst_after ({self.drop_worst_after}) must be >= 0")

        def check(self, trainer: TrainerConfig) -> None:
            """Nothing across sections."""

    def __init__(self, config: Config, context: CriterionContext) -> None:
        self.config = config
        self.tokenizer = context.tokenizer
        self.tasks = context.tasks

    def _drop_worst_ratio(self, step: int) -> float:
        """Active once ``update_num > drop_worst_after`` (spec §6.1); fairseq's update_num counts the updates
        already done, i.e. the step index."""
        return self.config.drop_worst_ratio if step > self.config.drop_worst_after else 0.0

    def prepare(self, batch: Batch | PartedBatch, task_index: int, step: int) -> Prepared:
        batch = single_batch(batch, "ce")
        if batch.target is None:
            raise DataError(f"task {self.tasks[task_index].name!r} produced samples without training targets")
        ntokens = int(batch.target.ne(self.tokenizer.pad_id).sum())
        ratio = self._drop_worst_ratio(step)
        if ratio > 0:
            ntokens = int(ntokens * (1 - ratio))
        return Prepared(task_index, batch, ntokens, step)

    def loss(self, model: nn.Module, prepared: Prepared) -> LossOutput:
        batch = single_batch(prepared.batch, "ce")
        if batch.target is None:
            raise DataError(f"task {self.tasks[prepared.task_index].name!r} gave a training batch without targets "
                            f"(its encode(training=True) must set Sample.target)")
        code_masks = batch.code_masks if bool(batch.code_masks.any()) else None
        out = model(batch.src_tokens, batch.prev_output_tokens, batch.patch_images, batch.patch_masks, code_masks)
        weights = batch.weights if bool((batch.weights != 1).any()) else None
        task = self.tasks[prepared.task_index]
        constraint_range = task.training_constraint_range(self.tokenizer) if isinstance(
            task, ConstrainsTraining) else None
        return label_smoothed_cross_entropy(
            out.logits, batch.target, epsilon=self.config.label_smoothing, pad_id=self.tokenizer.pad_id,
            weights=weights, constraints=batch.constraints, constraint_range=constraint_range,
            drop_worst_ratio=self._drop_worst_ratio(prepared.step))
