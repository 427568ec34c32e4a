"""TorchEngine: loss scaling, clipping, skipping, and the save/load of optimizer and schedule (rank 0 only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ofa.serialization import write_weights
from ofa.trainer.engine import TorchEngine
from ofa.trainer.optim import PolynomialDecay, build_optimizer


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.unused = nn.Linear(2, 2)


def engine(clip: float = 1.0, rank: int = 0, seed: int = 0) -> TorchEngine:
    torch.manual_seed(seed)
    model = Tiny()
    optimizer = build_optimizer(model.parameters(), lr=0.1, weight_decay=0.01)
    return TorchEngine(model, optimizer, PolynomialDecay(optimizer, 0.1, total_steps=10, warmup_steps=2), clip,
                       world_size=1, rank=rank)


def loss(e: TorchEngine, scale: float = 1.0) -> torch.Tensor:
    return e.model.a(torch.ones(4, 3)).pow(2).sum() * scale


def test_loss_scale_is_per_global_token() -> None:
    assert engine().loss_scale(40.0) == 1 / 40 and engine().loss_scale(0.0) == 1.0


def test_step_clips_and_skips_unused_parameters() -> None:
    e = engine(clip=1e-3)
    unused = e.model.unused.weight.detach().clone()
    e.backward(loss(e, 100.0))
    norm = e.step()
    assert norm > 1e-3  # the norm before clipping
    assert e.scheduler.step_count == 1 and e.lr() == pytest.approx(0.05)
    assert all(p.grad is None for p in e.model.parameters())
    assert torch.equal(e.model.unused.weight, unused)  # no gradient: no update, no weight decay


def test_skip_step_drops_gradients() -> None:
    e = engine()
    before = {k: v.clone() for k, v in e.model.state_dict().items()}
    e.backward(loss(e))
    e.skip_step()
    assert all(p.grad is None for p in e.model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in e.model.state_dict().items())
    assert e.scheduler.step_count == 0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    a = engine(seed=0)
    for _ in range(3):
        a.backward(loss(a))
        a.step()
    a.save(tmp_path)
    write_weights(tmp_path, a.model.state_dict())  # what the trainer's save_pretrained writes
    b = engine(seed=1)
    b.load(tmp_path)
    assert all(torch.equal(v, a.model.state_dict()[k]) for k, v in b.model.state_dict().items())
    assert b.scheduler.step_count == 3 and b.lr() == a.lr()
    for e in (a, b):
        e.backward(loss(e))
        e.step()
    assert all(torch.equal(v, a.model.state_dict()[k]) for k, v in b.model.state_dict().items())


def test_only_rank_0_writes(tmp_path: Path) -> None:
    engine(rank=1).save(tmp_path)
    assert not list(tmp_path.iterdir())
    engine(rank=0).save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["engine.pt"]
