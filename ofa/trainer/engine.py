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
import torch.distributed as dist
from torch import nn

from ofa.trainer.optim import PolynomialDecay

__all__ = ["Engine", "TorchEngine"]


class Engine(Protocol):
    """What the trainer needs from an engine."""

    module: nn.Module  # the model to call (possibly wrapped)
    model: nn.Module  # the bare OFAModel
    backward_per_forward: bool  # each micro-batch's backward must follow its own forward (DeepSpeed ZeRO-3)

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

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: PolynomialDecay,
                 clip_norm: float, world_size: int = 1, rank: int = 0) -> None:
        self.model = model
        self.module = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.clip_norm = clip_norm
        self.world_size = world_size
        self.rank = rank

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
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)  # unused on this rank (e.g. no image in its batch)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, n_used in zip(params, used.tolist()):
            n = p.numel()
            if n_used:
                p.grad.copy_(flat[offset:offset + n].view_as(p))
            else:
                p.grad = None  # unused on every rank: the optimizer skips it, as in a 1-process run
            offset += n

    def step(self) -> float:
        if self.world_size > 1:
            self._all_reduce_grads()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.clip_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.clip_norm))
        else:
            norm = float(torch.norm(torch.stack([p.grad.detach().norm() for p in params]))) if params else 0.0
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
        """Restore the weights (``model.pt`` of the checkpoint), the optimizer and the schedule."""
        weights = torch.load(directory / "model.pt", map_location=model_device(self.model), weights_only=True)
        self.model.load_state_dict(weights, strict=True)
        state = torch.load(directory / "engine.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


