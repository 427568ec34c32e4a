"""CLIP-SCST for text-to-image (spec §6.3) as a criterion: sample ``num_samples`` code grids per caption, decode
them with the VQGAN, score them against the caption, reinforce the better ones (mechanics in
:mod:`ofa.trainer.clip_scst`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from torch import nn

from ofa.errors import ConfigError
from ofa.metrics.image_text import build_scorer
from ofa.tasks.base import GeneratesImages
from ofa.trainer.clip_scst import clip_scst_loss, sample_clip_scst
from ofa.trainer.criteria import CriterionContext, Prepared, single_batch
from ofa.trainer.loss import LossOutput
from ofa.vqgan import load_vqgan
from ofa.vqgan.codes import check_codebook

if TYPE_CHECKING:  # pragma: no cover
    from ofa.data.collate import Batch, PartedBatch
    from ofa.trainer.config import TrainerConfig

__all__ = ["ClipSCST"]


class ClipSCST:
    """Reinforce sampled images by an image-text score; every task of the run must generate images."""

    @dataclass(frozen=True)
    class Config:
        name: Literal["clip_scst"] = "clip_scst"
        vqgan: str | None = None
        image_scorer: str = "color"
        num_samples: int = 5

        def __post_init__(self) -> None:
            if self.num_samples < 2:
                raise ConfigError(f"CLIP-SCST needs num_samples >= 2 (got {self.num_samples})")
            if self.vqgan is None:
                raise ConfigError("criterion 'clip_scst' needs 'vqgan' (a VQGAN folder or checkpoint that decodes "
                                  "the sampled codes)")

        def check(self, trainer: TrainerConfig) -> None:
            """Nothing across sections."""

    def __init__(self, config: Config, context: CriterionContext) -> None:
        self.config = config
        self.context = context
        scorer = build_scorer(config.image_scorer)
        if scorer is None:
            raise ConfigError(f"criterion 'clip_scst' needs an image scorer, got image_scorer={config.image_scorer!r}")
        self.scorer = scorer
        for task in context.tasks:
            if not isinstance(task, GeneratesImages):
                raise ConfigError(f"criterion 'clip_scst' trains text-to-image tasks (image_gen); task "
                                  f"{task.name!r} is not one")
            task.check_model(context.model, context.tokenizer)
        assert config.vqgan is not None  # Config checks it
        self.vqgan = load_vqgan(config.vqgan, map_location=context.device)
        check_codebook(self.vqgan, context.tokenizer)

    def prepare(self, batch: Batch | PartedBatch, task_index: int, step: int) -> Prepared:
        batch = single_batch(batch, "clip_scst")
        ctx = self.context
        task = ctx.tasks[task_index]
        assert isinstance(task, GeneratesImages)  # checked when built
        captions = [task.sample_caption(sample, ctx.tokenizer) for sample in batch.samples]
        # full_model(): ZeRO-3 gathers the partitioned weights (generation does not run the engine's forward).
        with ctx.full_model() as full:
            rollout = sample_clip_scst(full, captions, task, ctx.tokenizer, self.vqgan, self.scorer,
                                       num_samples=self.config.num_samples)
        ctx.train_mode()
        return Prepared(task_index, batch, rollout.ntokens, step, extra={"rollout": rollout},
                        stats={"clip_scst_score": float(rollout.scores.mean())})

    def loss(self, model: nn.Module, prepared: Prepared) -> LossOutput:
        return clip_scst_loss(model, prepared.extra["rollout"])
