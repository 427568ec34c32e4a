"""Engines: ``backward / step / save / load`` behind one interface.

:class:`TorchEngine` is plain PyTorch (optionally DDP, gloo on CPU); :class:`~ofa.trainer.zero.DeepSpeedEngine`
wraps DeepSpeed ZeRO. Both take losses already normalised for the global batch (see
:meth:`Engine.loss_scale`), so the same data gives the same update on either engine and any process count.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ofa.trainer.optim import PolynomialDecay

__all__ = ["Engine", "TorchEngine"]


class Engine(Protocol):
    """What the trainer needs from an engine."""

    module: nn.Module  # the model to call (possibly wrapped)
    model: nn.Module  # the bare OFAModel

    def loss_scale(self, total_tokens: float) -> float: ...
    def no_sync(self, last_micro: bool) -> contextlib.AbstractContextManager[Any]: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> float: ...
    def backward_skipped(self) -> None: ...
    def skip_step(self) -> None: ...
    def full_model(self) -> contextlib.AbstractContextManager[nn.Module]: ...
    def zero_grad(self) -> None: ...
    def lr(self) -> float: ...
    def save(self, directory: Path) -> None: ...
    def load(self, directory: Path) -> None: ...


class TorchEngine:
    """Plain PyTorch: AdamW + polynomial schedule, gradient clipping, optional DDP across processes.

    Args:
        model: the model (already on its device).
        optimizer / scheduler: see :mod:`ofa.trainer.optim`.
        clip_norm: max global gradient norm (0 = off).
        world_size: processes in the run; with more than one the model is wrapped in DDP.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: PolynomialDecay,
                 clip_norm: float, world_size: int = 1) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.clip_norm = clip_norm
        self.world_size = world_size
        if world_size > 1:
            device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
            self.module: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                                         find_unused_parameters=True)
        else:
            self.module = model

    def loss_scale(self, total_tokens: float) -> float:
        # DDP averages gradients over ranks; we want the sum over the global batch / its token count.
        return self.world_size / max(total_tokens, 1.0)

    def no_sync(self, last_micro: bool) -> contextlib.AbstractContextManager[Any]:
        if self.world_size > 1 and not last_micro:
            return self.module.no_sync()  # type: ignore[operator]
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.clip_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.clip_norm))
        else:
            norm = float(torch.norm(torch.stack([p.grad.detach().norm() for p in params]))) if params else 0.0
        self.optimizer.step()
        self.scheduler.step()
        self.zero_grad()
        return norm

    def backward_skipped(self) -> None:
        """A micro-batch whose loss was not finite: nothing to do (its backward is not run)."""

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
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   directory / "engine.pt")

    def load(self, directory: Path) -> None:
        """Restore the weights (``model.pt`` of the checkpoint), the optimizer and the schedule."""
        weights = torch.load(directory / "model.pt", map_location=model_device(self.model), weights_only=True)
        self.model.load_state_dict(weights, strict=True)
        state = torch.load(directory / "engine.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


