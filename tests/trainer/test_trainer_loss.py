"""OFA's losses against a naive per-token reading of spec §6.1 (label-smoothed CE with constraints, weights,
prefix and drop-worst) and §6.2 (SCST with the leave-one-out baseline)."""

from __future__ import annotations

import math
from typing import Sequence

import pytest
import torch

from ofa.errors import ConfigError
from ofa.trainer.loss import constraint_mask, label_smoothed_cross_entropy, leave_one_out, scst_loss

PAD = 1
V = 12


def reference(logits: torch.Tensor, target: torch.Tensor, eps: float, *, weights: Sequence[float] | None = None,
              allowed: Sequence[Sequence[Sequence[int]] | None] | None = None,
              crange: tuple[int, int] | None = None, prefix: int = 0,
              drop: float = 0.0) -> tuple[float, float, int, list[float]]:
    """Spec §6.1 one token at a time, in Python floats: (loss, nll, ntokens, kept per-token losses)."""
    b, t_len, vocab = logits.shape
    tokens: list[tuple[float, float]] = []
    for i in range(b):
        w = 1.0 if weights is None else float(weights[i])
        for t in range(prefix, t_len):
            y = int(target[i, t])
            if y == PAD:
                continue
            guard = 0.0
            allowed_set: list[int] = list(range(vocab))
            if allowed is not None:
                guard = 1e-6
                rows = allowed[i]
                if rows is not None and t < len(rows) and len(rows[t]) > 0:
                    allowed_set = sorted(rows[t])
            elif crange is not None:
                guard = 1e-6
                allowed_set = [0, 1, 2, 3] + list(range(*crange))
            row = [float(logits[i, t, v]) for v in allowed_set]
            top = max(row)
            lse = top + math.log(sum(math.exp(x - top) for x in row))
            lp = {v: (x - lse) * w for v, x in zip(allowed_set, row)}
            nll = -lp[y]
            smooth = -sum(lp.values())
            eps_i = eps / (len(allowed_set) - 1 + guard)
            tokens.append(((1 - eps - eps_i) * nll + eps_i * smooth, nll))
    if drop > 0:
        k = math.floor(len(tokens) * (1 - drop))
        tokens = sorted(tokens, key=lambda pair: pair[0])[:k]
    return sum(x for x, _ in tokens), sum(n for _, n in tokens), len(tokens), [x for x, _ in tokens]


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, V, generator=g) * 3
    target = torch.tensor([[5, 7, 2, PAD, PAD],
                           [4, 4, 9, 11, 2],
                           [PAD, PAD, 6, 2, PAD]])
    return logits, target


def check(out, expected: tuple[float, float, int, list[float]]) -> None:
    loss, nll, ntokens, _ = expected
    assert out.ntokens == ntokens
    assert float(out.loss.detach()) == pytest.approx(loss, rel=1e-5, abs=1e-5)
    assert float(out.nll_loss.detach()) == pytest.approx(nll, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_plain(batch, eps: float) -> None:
    logits, target = batch
    out = label_smoothed_cross_entropy(logits, target, epsilon=eps, pad_id=PAD)
    check(out, reference(logits, target, eps))
    assert out.ntokens == int(target.ne(PAD).sum()) == 10


def test_no_smoothing_is_cross_entropy(batch) -> None:
    logits, target = batch
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.0, pad_id=PAD)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, V), target.reshape(-1), ignore_index=PAD,
                                                 reduction="sum")
    assert torch.allclose(out.loss, expected, atol=1e-5) and torch.allclose(out.nll_loss, expected, atol=1e-5)


def test_pad_positions_do_not_matter(batch) -> None:
    logits, target = batch
    changed = logits.clone()
    changed[target.eq(PAD)] = torch.randn(int(target.eq(PAD).sum()), V) * 100
    a = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD)
    b = label_smoothed_cross_entropy(changed, target, epsilon=0.1, pad_id=PAD)
    assert torch.equal(a.loss, b.loss)


def test_constraint_masks(batch) -> None:
    logits, target = batch
    allowed = [
        [[5, 6, 0], [7, 8], [2], [], []],  # one allowed id: |A| - 1 = 0, only the 1e-6 guard keeps eps_i finite
        None,  # a sample without constraints allows everything
        [[], [], [6, 3, 2, 10], [2, 4], []],  # empty lists (prompt positions) allow everything
    ]
    for eps in (0.0, 0.1):
        out = label_smoothed_cross_entropy(logits, target, epsilon=eps, pad_id=PAD, constraints=allowed)
        check(out, reference(logits, target, eps, allowed=allowed))


def test_constraint_mask_rows() -> None:
    keep = torch.tensor([[True, False, True], [False, True, True]])
    mask = constraint_mask([[[3], [4], [5, 6]], None], keep, vocab_size=8)
    assert mask is not None and mask.shape == (4, 8)  # one row per kept position, in order
    assert mask[0].nonzero().flatten().tolist() == [3]
    assert mask[1].nonzero().flatten().tolist() == [5, 6]
    assert bool(mask[2].all()) and bool(mask[3].all())
    assert constraint_mask([None, None], keep, vocab_size=8) is None


def test_constraint_range_keeps_ids_0_to_3(batch) -> None:
    logits, target = batch
    target = torch.where(target.eq(PAD), target, torch.tensor([[8, 9, 2, PAD, PAD], [0, 3, 8, 10, 2],
                                                               [PAD, PAD, 9, 2, PAD]]))
    for eps in (0.0, 0.1):
        out = label_smoothed_cross_entropy(logits, target, epsilon=eps, pad_id=PAD, constraint_range=(8, 11))
        check(out, reference(logits, target, eps, crange=(8, 11)))
    # ids outside {0..3} u [8, 11) get no probability: making them huge changes nothing
    changed = logits.clone()
    changed[..., 4:8] = 1e4
    changed[..., 11:] = 1e4
    same = label_smoothed_cross_entropy(changed, target, epsilon=0.1, pad_id=PAD, constraint_range=(8, 11))
    assert float(same.loss) == pytest.approx(reference(logits, target, 0.1, crange=(8, 11))[0], rel=1e-5)


def test_sample_weights_multiply_the_log_probs(batch) -> None:
    logits, target = batch
    weights = [0.5, 2.0, 0.3]
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD, weights=torch.tensor(weights))
    check(out, reference(logits, target, 0.1, weights=weights))
    ones = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD, weights=torch.ones(3))
    plain = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD)
    assert torch.allclose(ones.loss, plain.loss)


def test_weights_with_constraints(batch) -> None:
    logits, target = batch
    allowed = [[[5, 6], [7, 8, 1], [2, 3]], None, [[], [], [6, 0], [2, 4]]]
    weights = [1.0, 0.7, 2.0]
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD, weights=torch.tensor(weights),
                                       constraints=allowed)
    check(out, reference(logits, target, 0.1, weights=weights, allowed=allowed))


@pytest.mark.parametrize("prefix", [1, 2])
def test_ignore_prefix_size(batch, prefix: int) -> None:
    logits, target = batch
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD, ignore_prefix_size=prefix)
    check(out, reference(logits, target, 0.1, prefix=prefix))
    allowed = [[[5], [7, 8], [2, 0]], None, [[], [4], [6, 3], [2]]]
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD, ignore_prefix_size=prefix,
                                       constraints=allowed)
    check(out, reference(logits, target, 0.1, prefix=prefix, allowed=allowed))


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.5, 0.75])
def test_drop_worst_keeps_the_smallest_losses(batch, ratio: float) -> None:
    logits, target = batch
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD, drop_worst_ratio=ratio)
    expected = reference(logits, target, 0.1, drop=ratio)
    check(out, expected)
    assert out.ntokens == math.floor(10 * (1 - ratio))
    full = reference(logits, target, 0.1)[3]
    assert max(expected[3]) <= sorted(full)[out.ntokens]  # everything dropped is at least as large


def test_drop_worst_gradient_only_reaches_kept_tokens(batch) -> None:
    logits, target = batch
    logits = logits.clone().requires_grad_(True)
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD, drop_worst_ratio=0.5)
    out.loss.backward()
    touched = logits.grad.abs().sum(-1).ne(0)  # [b, T]
    assert int(touched.sum()) == out.ntokens == 5
    assert not bool(touched[target.eq(PAD)].any())


def test_gradients_finite_with_empty_prompt_constraints() -> None:
    # VQA with prompt_type=prev_output: prompt positions are pad targets with empty constraint lists.
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 6, V, generator=g) * 5).requires_grad_(True)
    target = torch.tensor([[PAD, PAD, PAD, 7, 2, PAD], [PAD, PAD, 5, 9, 2, PAD]])
    allowed = [[[], [], [], [7, 8], [2], []], [[], [], [5, 6], [9, 10, 11], [2], []]]
    weights = torch.tensor([0.6, 1.0])
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD, weights=weights,
                                       constraints=allowed)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert bool(torch.isfinite(logits.grad).all())
    # disallowed ids get no gradient at constrained positions
    assert float(logits.grad[0, 3, [i for i in range(V) if i not in (7, 8)]].abs().sum()) == 0.0
    check(out, reference(logits.detach(), target, 0.1, weights=[0.6, 1.0], allowed=allowed))


def test_all_pad_batch_is_zero() -> None:
    logits = torch.randn(2, 3, V)
    target = torch.full((2, 3), PAD)
    out = label_smoothed_cross_entropy(logits, target, epsilon=0.1, pad_id=PAD, drop_worst_ratio=0.2)
    assert out.ntokens == 0 and float(out.loss) == 0.0


def test_bad_arguments() -> None:
    logits, target = torch.randn(1, 2, V), torch.tensor([[3, 2]])
    with pytest.raises(ConfigError, match="label smoothing"):
        label_smoothed_cross_entropy(logits, target, epsilon=1.0)
    with pytest.raises(ConfigError, match="drop_worst_ratio"):
        label_smoothed_cross_entropy(logits, target, epsilon=0.1, drop_worst_ratio=1.0)


# -- SCST ------------------------------------------------------------------------------------------------------
def test_leave_one_out_by_hand() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.6]])
    rewards = leave_one_out(scores)
    # 1 - (2+3)/2, 2 - (1+3)/2, 3 - (1+2)/2; 0 - 0.3, 0 - 0.3, 0.6 - 0
    assert torch.allclose(rewards, torch.tensor([[-1.5, 0.0, 1.5], [-0.3, -0.3, 0.6]]))
    assert torch.allclose(leave_one_out(torch.tensor([[4.0, 1.0]])), torch.tensor([[3.0, -3.0]]))
    with pytest.raises(ConfigError, match="at least 2 samples"):
        leave_one_out(torch.tensor([[1.0]]))


def test_scst_loss_by_hand() -> None:
    # Two sequences over a 4-id vocabulary; uniform logits make every log-prob log(1/4).
    logits = torch.zeros(2, 3, 4)
    target = torch.tensor([[2, 3, 2], [3, 2, PAD]])
    rewards = torch.tensor([0.5, -2.0])
    out = scst_loss(logits, target, rewards, pad_id=PAD)
    lp = math.log(0.25)
    assert out.ntokens == 5
    assert float(out.loss) == pytest.approx(-(3 * lp * 0.5 + 2 * lp * -2.0))
    assert float(out.nll_loss) == pytest.approx(-5 * lp)


def test_scst_loss_against_a_loop() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, V, generator=g)
    target = torch.tensor([[4, 5, 2, PAD], [6, 2, PAD, PAD], [7, 7, 8, 2]])
    rewards = torch.tensor([0.2, -0.1, 1.3])
    expected = 0.0
    for i in range(3):
        for t in range(4):
            if int(target[i, t]) != PAD:
                expected -= float(torch.log_softmax(logits[i, t], -1)[target[i, t]]) * float(rewards[i])
    out = scst_loss(logits, target, rewards, pad_id=PAD)
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    logits.requires_grad_(True)
    scst_loss(logits, target, torch.zeros(3), pad_id=PAD).loss.backward()
    assert float(logits.grad.abs().sum()) == 0.0  # zero reward, zero gradient (no entropy term)
