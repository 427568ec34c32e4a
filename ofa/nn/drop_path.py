"""Stochastic depth (arXiv:1603.09382): drop a whole residual branch per sample during training."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "drop_path_rates"]


def drop_path_rates(rate: float, num_layers: int) -> list[float]:
    """Per-layer rates linearly spaced from 0 (first layer) to ``rate`` (last layer), as OFA assigns them."""
    if num_layers == 1:
        return [0.0]
    return [rate * i / (num_layers - 1) for i in range(num_layers)]


class DropPath(nn.Module):
    """Zero the input for a random subset of samples and rescale the rest by ``1 / (1 - p)``.

    Args:
        p: probability of dropping a sample's branch; identity in eval mode or when 0.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        # One Bernoulli draw per sample (dim 0), broadcast over the remaining dims.
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
