"""Tests for ofa.nn.drop_path: stochastic depth per sample, identity in eval, OFA's linear rate spacing."""

from __future__ import annotations

import pytest
import torch

import ofa
from ofa.nn.drop_path import DropPath, drop_path_rates


def test_identity_in_eval_and_at_rate_zero(seed: int) -> None:
    x = torch.randn(4, 3, 5)
    assert DropPath(0.5).eval()(x) is x
    assert DropPath(0.0).train()(x) is x


def test_training_drops_whole_samples_and_rescales(seed: int) -> None:
    p = 0.3
    x = torch.randn(2000, 3, 4) + 5.0  # no exact zeros in the input
    out = DropPath(p).train()(x)
    dropped = (out == 0).flatten(1).all(dim=1)
    kept = ~dropped
    # A sample is either removed entirely or kept entirely and scaled by 1 / (1 - p).
    assert bool(((out == 0).flatten(1).any(dim=1) == dropped).all())
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    assert abs(dropped.float().mean().item() - p) < 0.05
    assert 0 < int(dropped.sum()) < 2000


def test_masks_differ_between_calls_and_samples(seed: int) -> None:
    layer = DropPath(0.5).train()
    x = torch.ones(64, 2)
    a, b = layer(x), layer(x)
    assert not torch.equal(a, b)
    assert a[:, 0].unique().numel() == 2  # some samples dropped, some kept


def test_gradient_follows_the_mask(seed: int) -> None:
    x = torch.randn(32, 4, requires_grad=True)
    out = DropPath(0.5).train()(x)
    out.sum().backward()
    kept = (out != 0).all(dim=1)
    assert bool((x.grad[kept] == 2.0).all()) and bool((x.grad[~kept] == 0.0).all())


@pytest.mark.parametrize(("rate", "layers", "expected"), [
    (0.1, 1, [0.0]),
    (0.1, 2, [0.0, 0.1]),
    (0.2, 5, [0.0, 0.05, 0.1, 0.15, 0.2]),
    (0.0, 3, [0.0, 0.0, 0.0]),
])
def test_rates_are_linearly_spaced_from_zero(rate: float, layers: int, expected: list[float]) -> None:
    assert drop_path_rates(rate, layers) == pytest.approx(expected)


def test_layers_get_the_spaced_rates() -> None:
    model = ofa.build_model("ofa-test", encoder_layers=3, encoder_drop_path_rate=0.2, decoder_drop_path_rate=0.1)
    assert [layer.drop_path.p for layer in model.encoder.layers] == pytest.approx([0.0, 0.1, 0.2])
    assert [layer.drop_path.p for layer in model.decoder.layers] == pytest.approx([0.0, 0.1])
    assert "p=0.2" in repr(model.encoder.layers[2].drop_path)
