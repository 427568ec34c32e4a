"""Gumbel-softmax vector quantizer of the GumbelVQ VQGAN (arXiv:1611.01144 relaxation over a learned codebook).

A 1x1 conv (``proj``) turns each latent vector into logits over the codebook; training draws a (straight-through)
Gumbel-softmax sample and mixes the codebook rows (``embed``) with it, evaluation takes the argmax code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ofa.errors import InputError

__all__ = ["GumbelQuantize"]


class GumbelQuantize(nn.Module):
    """Latent map -> code logits -> codes and their codebook vectors.

    Args:
        num_hiddens: channels of the incoming latent map.
        embedding_dim: width ``d`` of a codebook vector.
        num_codes: codebook size ``n``.
        kl_weight: weight of the KL divergence of the code posterior to the uniform prior.
        temperature: default Gumbel-softmax temperature in training.
        straight_through: hard one-hot samples with the soft sample's gradient (else soft samples).
    """

    def __init__(self, *, num_hiddens: int, embedding_dim: int, num_codes: int, kl_weight: float = 1e-8,
                 temperature: float = 1.0, straight_through: bool = True) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.kl_weight = kl_weight
        self.temperature = temperature
        self.straight_through = straight_through
        self.proj = nn.Conv2d(num_hiddens, num_codes, 1)
        self.embed = nn.Embedding(num_codes, embedding_dim)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Code logits ``[b, n, h, w]`` of a latent map ``[b, num_hiddens, h, w]``."""
        return self.proj(h)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors ``[b, d, h, w]`` of codes ``[b, h, w]`` (checked by the caller)."""
        return self.embed(codes).permute(0, 3, 1, 2)

    def forward(self, h: torch.Tensor, temperature: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize a latent map.

        In training mode codes are Gumbel-softmax samples at ``temperature`` (hard with a straight-through
        gradient when ``straight_through``); in eval mode they are the argmax, so the result is deterministic.
        (taming's quantizer draws Gumbel noise in eval mode too; the argmax is the mode of that distribution.)

        Args:
            h: latent map ``[b, num_hiddens, h, w]``.
            temperature: overrides the default training temperature; must be > 0.

        Returns:
            ``(z_q [b, d, h, w], kl [], codes [b, h, w] long)``; ``kl`` is already multiplied by ``kl_weight``.

        Raises:
            InputError: If ``temperature`` is not a positive finite number.
        """
        tau = self.temperature if temperature is None else temperature
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (0.0 < tau < math.inf):
            raise InputError(f"temperature ({tau!r}) must be a positive finite number")
        logits = self.proj(h)  # [b, n, h, w]
        if self.training:
            one_hot = F.gumbel_softmax(logits, tau=float(tau), hard=self.straight_through, dim=1)
            z_q = torch.einsum("bnhw,nd->bdhw", one_hot, self.embed.weight)
            codes = one_hot.argmax(dim=1)
        else:
            codes = logits.argmax(dim=1)
            z_q = self.lookup(codes)
        q = F.softmax(logits, dim=1)
        kl = self.kl_weight * torch.sum(q * torch.log(q * self.num_codes + 1e-10), dim=1).mean()
        return z_q, kl, codes
