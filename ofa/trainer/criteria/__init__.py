"""Training criteria: what a micro-batch costs. The trainer runs the loop; a criterion turns a collated batch
into the work of one micro-batch (:meth:`Criterion.prepare`: a rollout, targets, token counts) and that work
into a summed loss (:meth:`Criterion.loss`).

Each criterion is one class with a nested frozen ``Config`` dataclass (its section of the trainer config, with a
``name`` field and a ``check(trainer_config)`` method for checks across sections). The built-in ones are named in
:data:`CRITERIA`; a new one is a new module plus one line there, or a :func:`register_criterion` call.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import torch
from torch import nn

from ofa.data.collate import Batch, PartedBatch
from ofa.errors import ConfigError
from ofa.model import OFAModel
from ofa.trainer.loss import LossOutput

if TYPE_CHECKING:  # pragma: no cover
    from ofa.trainer.config import TrainerConfig

__all__ = ["Criterion", "CriterionConfig", "CriterionContext", "Prepared", "CRITERIA", "register_criterion",
           "criterion_class", "build_criterion", "single_batch"]

# name -> "module:Class", imported on first use.
CRITERIA: dict[str, str] = {
    "ce": "ofa.trainer.criteria.ce:LabelSmoothedCE",
    "scst": "ofa.trainer.criteria.scst:SCST",
    "clip_scst": "ofa.trainer.criteria.clip_scst:ClipSCST",
    "pretrain": "ofa.trainer.criteria.pretrain:PretrainLoss",
}
_REGISTERED: dict[str, type] = {}


@dataclass
class Prepared:
    """One micro-batch ready for forward and backward.

    Attributes:
        task_index: which of the run's tasks the batch came from.
        batch: the collated batch (on the device).
        ntokens: target tokens the loss sums over (the global normaliser adds these up across micro-batches
            and ranks before any backward).
        step: the optimiser step this micro-batch belongs to.
        extra: criterion-private tensors (rollouts, rewards, ...).
        stats: numbers to log, averaged over the step's micro-batches (e.g. ``scst_cider``).
    """

    task_index: int
    batch: Batch | PartedBatch
    ntokens: int
    step: int
    extra: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class CriterionContext:
    """What a criterion may use from the run, handed over when it is built.

    Attributes:
        tokenizer: the run's tokenizer.
        tasks: the run's tasks, in config order (``Prepared.task_index`` indexes them).
        datasets: each task's training dataset (random access to encoded samples).
        model: the bare model.
        device: where batches live.
        full_model: a context manager giving the complete model for generation (ZeRO-3 gathers it; call on
            every rank).
        train_mode: puts the model back in training mode (frozen BatchNorm kept in eval) after a rollout.
    """

    tokenizer: Any
    tasks: Sequence[Any]
    datasets: Sequence[Any]
    model: OFAModel
    device: torch.device
    full_model: Callable[[], contextlib.AbstractContextManager[OFAModel]]
    train_mode: Callable[[], None]


class CriterionConfig(Protocol):
    """A criterion's section of the trainer config (a frozen dataclass)."""

    name: str

    def check(self, trainer: TrainerConfig) -> None:
        """Raise :class:`~ofa.errors.ConfigError` when the rest of the trainer config does not fit."""


class Criterion(Protocol):
    """A training criterion (see the module docstring)."""

    def prepare(self, batch: Batch | PartedBatch, task_index: int, step: int) -> Prepared:
        """Rollouts, targets and token counts of one micro-batch (may run the model in eval mode)."""

    def loss(self, model: nn.Module, prepared: Prepared) -> LossOutput:
        """The summed loss and NLL over ``prepared.ntokens`` tokens, with a graph for backward."""


def single_batch(batch: Batch | PartedBatch, criterion: str) -> Batch:
    """``batch`` for a criterion that runs one forward pass per micro-batch.

    Raises:
        ConfigError: ``batch`` holds samples for several forward passes (a task with ``Sample.part``, i.e. the
            ``pretrain`` task), which only the ``pretrain`` criterion trains on.
    """
    if isinstance(batch, PartedBatch):
        raise ConfigError(f"criterion {criterion!r} trains one forward pass per micro-batch, but the task gave "
                          "samples for several (Sample.part, as the pretrain task does); use criterion 'pretrain'")
    return batch


def register_criterion(name: str, cls: type, replace: bool = False) -> None:
    """Register a criterion class (with a nested ``Config``) under ``name`` (``criterion: {"name": name}``)."""
    if not hasattr(cls, "Config"):
        raise ConfigError(f"criterion {cls.__qualname__} has no nested Config dataclass")
    if not replace and (name in CRITERIA or name in _REGISTERED):
        raise ConfigError(f"a criterion named {name!r} exists; pass replace=True to override it")
    _REGISTERED[name] = cls


def criterion_class(name: Any) -> Any:
    """The criterion class registered under ``name``.

    Raises:
        ConfigError: an unknown name, listing the known ones.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if not isinstance(name, str) or name not in CRITERIA:
        known = ", ".join(repr(n) for n in dict.fromkeys([*CRITERIA, *_REGISTERED]))
        raise ConfigError(f"criterion ({name!r}) must be one of {known}")
    module, attr = CRITERIA[name].split(":")
    cls = getattr(importlib.import_module(module), attr)
    _REGISTERED[name] = cls
    return cls


def build_criterion(config: CriterionConfig, context: CriterionContext) -> Criterion:
    """Build the criterion a config section names."""
    criterion: Criterion = criterion_class(config.name)(config, context)
    return criterion
