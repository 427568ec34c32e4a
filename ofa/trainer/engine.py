"""Engines: ``backward / step / save / load`` behind one interface, and the engine registry.

:class:`TorchEngine` is plain PyTorch (optionally DDP, gloo on CPU); :class:`~ofa.trainer.zero.DeepSpeedEngine`
wraps DeepSpeed ZeRO. Both take losses already normalised for the global batch (see
:meth:`Engine.loss_scale`), so the same data gives the same update on either engine and any process count.

An engine class has a nested frozen ``Config`` dataclass (its section of the trainer config: a ``name`` field
and ``check(trainer_config)``) and a ``build(model, config, plan, total_steps, warmup_steps, dist)``
classmethod. Built-in engines are named in :data:`ENGINES`; a new one is a new module plus one line there, or a
:func:`register_engine` call. :func:`build_engine` is the trainer's only way to make one.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import nn

from ofa.data.collate import Batch, PartedBatch
from ofa.errors import ConfigError
from ofa.serialization import read_torch_file, read_weights
from ofa.trainer.distributed import DistInfo
from ofa.trainer.optim import PolynomialDecay, build_optimizer

if TYPE_CHECKING:  # pragma: no cover
    from ofa.trainer.config import BatchPlan, TrainerConfig

__all__ = ["Engine", "TorchEngine", "ENGINES", "register_engine", "engine_class", "build_engine"]

# name -> "module:Class", imported on first use.
ENGINES: dict[str, str] = {
    "torch": "ofa.trainer.engine:TorchEngine",
    "deepspeed": "ofa.trainer.zero:DeepSpeedEngine",
}
_REGISTERED: dict[str, type] = {}


class Engine(Protocol):
    """What the trainer needs from an engine."""

    module: nn.Module  # the model to call (possibly wrapped)
    model: nn.Module  # the bare OFAModel
    backward_per_forward: bool  # each micro-batch's backward must follow its own forward (DeepSpeed ZeRO-3)

    def cast_inputs(self, batch: Batch | PartedBatch) -> Batch | PartedBatch: ...
    def loss_scale(self, total_tokens: float) -> float: ...
    def no_sync(self, last_micro: bool) -> contextlib.AbstractContextManager[Any]: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> float: ...
    def skip_step(self) -> None: ...
    def full_model(self) -> contextlib.AbstractContextManager[nn.Module]: ...
    def zero_grad(self) -> None: ...
    def lr(self) -> float: ...
    def save(self, directory: Path) -> None: ...
    def load(self, directory: Path) -> None: ...


class TorchEngine:
    """Plain PyTorch: AdamW + polynomial schedule, gradient clipping, data parallel across processes.

    With several processes the gradients of the whole global batch are summed with one flattened all-reduce
    per step (plain ``torch.distributed``, gloo on CPU) before clipping, so every rank applies the same update
    and a run on N processes follows the 1-process run with the same global batch. (DDP's bucketed overlap
    would save time on GPUs but ties reduction to each backward, which the trainer's check-all-losses-first
    step does not fit.)

    Args:
        model: the model (already on its device).
        optimizer / scheduler: see :mod:`ofa.trainer.optim`.
        clip_norm: max global gradient norm (0 = off).
        world_size: processes in the run.
        rank: this process; only rank 0 writes ``engine.pt`` (the state is the same on every rank).
    """

    backward_per_forward = False

    @dataclass(frozen=True)
    class Config:
        name: Literal["torch"] = "torch"

        def check(self, trainer: TrainerConfig) -> None:
            if trainer.precision == "fp16":
                raise ConfigError("precision='fp16' needs engine='deepspeed' (dynamic loss scaling); the torch "
                                  "engine trains in fp32 or bf16")

    @classmethod
    def build(cls, model: nn.Module, config: TrainerConfig, plan: BatchPlan, total_steps: int, warmup_steps: int,
              dist_info: DistInfo) -> "TorchEngine":
        optimizer = build_optimizer(model.parameters(), config.lr, config.weight_decay, config.adam_betas,
                                    config.adam_eps)
        scheduler = PolynomialDecay(optimizer, config.lr, total_steps, warmup_steps, config.end_lr)
        return cls(model, optimizer, scheduler, config.clip_norm, dist_info.world_size, dist_info.rank,
                   input_dtype=torch.bfloat16 if config.precision == "bf16" else None)

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: PolynomialDecay,
                 clip_norm: float, world_size: int = 1, rank: int = 0, input_dtype: torch.dtype | None = None) -> None:
        self.input_dtype = input_dtype
        self.model = model
        self.module = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.clip_norm = clip_norm
        self.world_size = world_size
        self.rank = rank

    def cast_inputs(self, batch: Batch | PartedBatch) -> Batch | PartedBatch:
        """Images in the model's dtype (a bf16 model meets bf16 pixels; DeepSpeed casts them itself)."""
        if isinstance(batch, PartedBatch):
            return batch.map(self._cast)
        return self._cast(batch)

    def _cast(self, batch: Batch) -> Batch:
        if self.input_dtype is not None and batch.patch_images is not None:
            batch.patch_images = batch.patch_images.to(self.input_dtype)
        return batch

    def loss_scale(self, total_tokens: float) -> float:
        # Gradients are summed over ranks: the update is the sum over the global batch / its token count.
        return 1.0 / max(total_tokens, 1.0)

    def no_sync(self, last_micro: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def _all_reduce_grads(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        used = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
        dist.all_reduce(used, op=dist.ReduceOp.SUM)
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)  # unused on this rank (e.g. no image in its batch)
            grads.append(p.grad)
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, grad, n_used in zip(params, grads, used.tolist()):
            n = p.numel()
            if n_used:
                grad.copy_(flat[offset:offset + n].view_as(p))
            else:
                p.grad = None  # unused on every rank: the optimizer skips it, as in a 1-process run
            offset += n

    def step(self) -> float:
        if self.world_size > 1:
            self._all_reduce_grads()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.clip_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.clip_norm, foreach=True))
        else:
            grads = [p.grad.detach() for p in params if p.grad is not None]
            norm = float(torch.norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0
        self.optimizer.step()
        self.scheduler.step()
        self.zero_grad()
        return norm

    def skip_step(self) -> None:
        """Drop the accumulated gradients without updating weights or the schedule."""
        self.zero_grad()

    def full_model(self) -> contextlib.AbstractContextManager[nn.Module]:
        """The complete model for evaluation and saving (DeepSpeed ZeRO-3 gathers it; here it just is)."""
        return contextlib.nullcontext(self.model)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: Path) -> None:
        if self.rank != 0:  # every rank holds the same state; two writers of one file could interleave
            return
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   directory / "engine.pt")

    def load(self, directory: Path) -> None:
        """Restore the weights (the checkpoint's ``model.safetensors``, or ``model.pt`` before 0.3), the optimizer
        and the schedule."""
        weights = read_weights(directory, map_location=model_device(self.model))
        self.model.load_state_dict(weights, strict=True)
        state = read_torch_file(directory / "engine.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device




def register_engine(name: str, cls: type, replace: bool = False) -> None:
    """Register an engine class (with a nested ``Config`` and a ``build`` classmethod) under ``name``."""
    if not hasattr(cls, "Config") or not hasattr(cls, "build"):
        raise ConfigError(f"engine {cls.__qualname__} needs a nested Config dataclass and a build() classmethod")
    if not replace and (name in ENGINES or name in _REGISTERED):
        raise ConfigError(f"an engine named {name!r} exists; pass replace=True to override it")
    _REGISTERED[name] = cls


def engine_class(name: Any) -> Any:
    """The engine class registered under ``name``.

    Raises:
        ConfigError: an unknown name, listing the known ones.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if not isinstance(name, str) or name not in ENGINES:
        known = ", ".join(repr(n) for n in dict.fromkeys([*ENGINES, *_REGISTERED]))
        raise ConfigError(f"engine ({name!r}) must be one of {known}")
    module, attr = ENGINES[name].split(":")
    cls = getattr(importlib.import_module(module), attr)
    _REGISTERED[name] = cls
    return cls


def build_engine(model: nn.Module, config: TrainerConfig, plan: BatchPlan, total_steps: int, warmup_steps: int,
                 dist_info: DistInfo) -> Engine:
    """The engine ``config.engine`` names, built around ``model`` with its optimizer and schedule."""
    engine: Engine = engine_class(config.engine.name).build(model, config, plan, total_steps, warmup_steps,
                                                            dist_info)
    return engine
