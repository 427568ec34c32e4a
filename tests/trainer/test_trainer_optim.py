"""Optimiser, schedule and EMA (spec §6.4): polynomial decay values, EMA formula, frozen parameters."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ofa.errors import ConfigError
from ofa.trainer.optim import EMA, PolynomialDecay, build_optimizer


def optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)


def test_warmup_then_linear_decay() -> None:
    opt = optimizer()
    sched = PolynomialDecay(opt, peak_lr=1e-3, total_steps=10, warmup_steps=4, end_lr=1e-5)
    seen = [sched.get_last_lr()[0]]
    for _ in range(12):
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    expected = [1e-3 * s / 4 for s in range(5)]  # linear from 0: 0, 0.25, 0.5, 0.75, 1 x peak
    expected += [(1e-3 - 1e-5) * (1 - (s - 4) / 6) + 1e-5 for s in range(5, 10)]  # linear to end_lr at step 10
    expected += [1e-5] * 3  # then flat at end_lr
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert seen[0] == 0.0 and seen[4] == pytest.approx(1e-3) and seen[10] == pytest.approx(1e-5)


def test_no_warmup_starts_at_peak() -> None:
    sched = PolynomialDecay(optimizer(), peak_lr=2.0, total_steps=4, warmup_steps=0)
    values = [sched.lr_at(s) for s in range(6)]
    assert values == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0, 0.0])


def test_power() -> None:
    sched = PolynomialDecay(optimizer(), peak_lr=1.0, total_steps=4, warmup_steps=0, power=2.0)
    assert sched.lr_at(2) == pytest.approx(0.25)


def test_state_dict_round_trip() -> None:
    opt = optimizer()
    sched = PolynomialDecay(opt, peak_lr=1.0, total_steps=20, warmup_steps=5)
    for _ in range(7):
        sched.step()
    other_opt = optimizer()
    other = PolynomialDecay(other_opt, peak_lr=1.0, total_steps=20, warmup_steps=5)
    other.load_state_dict(sched.state_dict())
    assert other.step_count == 7
    assert other_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(1 - 2 / 15)
    sched.step()
    other.step()
    assert other.get_last_lr() == sched.get_last_lr()


@pytest.mark.parametrize("total, warmup", [(0, 0), (5, 6), (5, -1)])
def test_bad_schedule(total: int, warmup: int) -> None:
    with pytest.raises(ConfigError, match="warmup_steps"):
        PolynomialDecay(optimizer(), peak_lr=1.0, total_steps=total, warmup_steps=warmup)


# -- optimizer -------------------------------------------------------------------------------------------------
def test_build_optimizer_skips_frozen_and_rejects_all_frozen() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    opt = build_optimizer(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98), eps=1e-6)
    params = opt.param_groups[0]["params"]
    assert len(params) == 3 and all(p is not model[0].weight for p in params)
    assert opt.param_groups[0]["betas"] == (0.9, 0.98) and opt.param_groups[0]["eps"] == 1e-6
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(model.parameters(), lr=1e-3)


def test_fused_update_matches_the_reference_adamw_loop() -> None:
    # The fused kernel (one device, float params) must give the update of torch's plain per-parameter AdamW.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    reference = copy.deepcopy(model)
    opt = build_optimizer(model.parameters(), lr=1e-2, weight_decay=0.01)
    assert opt.defaults["fused"] is True
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.01, foreach=False)
    x = torch.randn(16, 4)
    for _ in range(5):
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # Parameters of several dtypes cannot share one fused kernel: the multi-tensor loop runs instead.
    mixed = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    assert build_optimizer(mixed, lr=1e-3).defaults["foreach"] is True


def test_weight_decay_is_decoupled() -> None:
    # With a zero gradient Adam's update is 0, so only the decoupled decay moves the weight: w *= 1 - lr * wd.
    weight = nn.Parameter(torch.tensor([2.0, -4.0]))
    opt = build_optimizer([weight], lr=0.1, weight_decay=0.01)
    weight.grad = torch.zeros(2)
    opt.step()
    assert torch.allclose(weight.detach(), torch.tensor([2.0, -4.0]) * (1 - 0.1 * 0.01))


# -- EMA -------------------------------------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.norm = nn.BatchNorm1d(2)


def test_ema_update_formula() -> None:
    torch.manual_seed(0)
    model = Net()
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.linear.weight.add_(1.0)
    ema.update(model)
    now = model.state_dict()
    for key, value in ema.shadow.items():
        assert value.dtype == torch.float32
        assert torch.allclose(value, 0.9 * start[key].float() + 0.1 * now[key].float())
    assert "norm.num_batches_tracked" not in ema.shadow  # integer buffers are not averaged
    with torch.no_grad():
        model.linear.weight.add_(1.0)
    ema.update(model)
    expected = 0.9 * (0.9 * start["linear.weight"] + 0.1 * (start["linear.weight"] + 1)) + 0.1 * (
        start["linear.weight"] + 2)
    assert torch.allclose(ema.shadow["linear.weight"], expected)


def test_ema_copy_to_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = Net()
    ema = EMA(model, decay=0.5)
    before = model.linear.weight.detach().clone()
    with torch.no_grad():
        model.linear.weight.mul_(3.0)
    ema.update(model)
    averaged = ema.copy_to(model)
    assert averaged is not model
    assert torch.allclose(averaged.linear.weight, 0.5 * before + 0.5 * 3.0 * before)
    assert torch.allclose(model.linear.weight, 3.0 * before)  # the training model is untouched
    assert torch.equal(averaged.norm.num_batches_tracked, model.norm.num_batches_tracked)


def test_ema_bf16_model_keeps_an_fp32_copy() -> None:
    model = Net().to(torch.bfloat16)
    ema = EMA(model, decay=0.9999)
    assert all(v.dtype == torch.float32 for v in ema.shadow.values())
    assert ema.copy_to(model).linear.weight.dtype == torch.bfloat16


def test_ema_state_dict_round_trip() -> None:
    model = Net()
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        model.linear.bias.add_(5.0)
    ema.update(model)
    other = EMA(Net(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.99
    assert all(torch.equal(other.shadow[k], v) for k, v in ema.shadow.items())
    other.shadow["linear.bias"].add_(1.0)  # a copy, not shared
    assert not torch.equal(other.shadow["linear.bias"], ema.shadow["linear.bias"])


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_ema_decay_range(decay: float) -> None:
    with pytest.raises(ConfigError, match="ema decay"):
        EMA(Net(), decay=decay)
