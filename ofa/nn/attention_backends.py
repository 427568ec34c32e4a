"""Scaled dot-product attention behind one signature: eager | torch SDPA | xformers.

All backends take ``q, k, v`` as ``[b, h, s, d]`` with ``q`` already scaled, and an optional additive float
``bias`` broadcastable to ``[b, h, tq, tk]`` that carries OFA's position biases and the ``-inf`` masks.
They return ``[b, h, tq, d]``. Softmax is computed in fp32 on every backend.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import Literal

import torch
import torch.nn.functional as F

from ofa.errors import ConfigError

__all__ = ["AttentionBackend", "BACKENDS", "attention", "eager_attention", "resolve_backend", "xformers_available"]

logger = logging.getLogger(__name__)

AttentionBackend = Literal["auto", "eager", "sdpa", "xformers"]
BACKENDS: tuple[str, ...] = ("auto", "eager", "sdpa", "xformers")


@functools.lru_cache(maxsize=1)
def xformers_available() -> bool:
    """Whether the ``xformers`` package can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("xformers") is not None


def resolve_backend(name: str) -> str:
    """Validate a backend name; ``"auto"`` means SDPA (xformers is used per call where it can run)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown attention backend {name!r}; accepted: {list(BACKENDS)}")
    if name == "xformers" and not xformers_available():
        raise ConfigError("attention backend 'xformers' was requested but the xformers package is not installed")
    return name


def eager_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reference implementation: fp32 softmax of ``q @ k^T + bias``. Optionally returns the probabilities.

    A query whose keys are all masked (``-inf``) gets zero probabilities and a zero output, as SDPA gives,
    rather than NaN.
    """
    logits = torch.matmul(q, k.transpose(-1, -2))
    if bias is not None:
        logits = logits + bias
    probs = torch.softmax(logits.float(), dim=-1)
    if bias is not None:
        probs = probs.masked_fill(torch.isneginf(logits).all(dim=-1, keepdim=True), 0.0)
    probs = probs.to(q.dtype)
    weights = probs if return_weights else None
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, v), weights


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    if bias is not None and bias.dtype != q.dtype:
        bias = bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=1.0)


def _xformers_can_run(q: torch.Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and xformers_available()


def _xformers(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    import xformers.ops as xops  # imported lazily: optional dependency

    b, h, tq, d = q.shape
    tk = k.shape[2]
    attn_bias = None
    if bias is not None:
        # xformers wants a dense [b, h, tq, tk] bias whose last dim sits in storage aligned to 8 elements.
        padded_tk = (tk + 7) // 8 * 8
        storage = q.new_zeros(b, h, tq, padded_tk)
        storage[..., :tk] = bias.expand(b, h, tq, tk)
        attn_bias = storage[..., :tk]
    out = xops.memory_efficient_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=attn_bias, p=dropout_p
    )
    return out.transpose(1, 2)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over ``[b, h, s, d]`` tensors with an additive bias, on the chosen backend.

    Args:
        q: ``[b, h, tq, d]``, already multiplied by the attention scale.
        k, v: ``[b, h, tk, d]``.
        bias: additive float bias broadcastable to ``[b, h, tq, tk]`` (``-inf`` masks a key).
        dropout_p: attention-probability dropout (pass 0 in eval).
        backend: ``"eager"``, ``"sdpa"``, ``"xformers"`` or ``"auto"``. xformers runs only on CUDA half
            precision tensors; elsewhere the call falls back to SDPA (logged at debug level), which computes
            the same function.

    Returns:
        ``[b, h, tq, d]``.
    """
    if backend == "eager":
        return eager_attention(q, k, v, bias, dropout_p)[0]
    if backend in ("xformers", "auto") and _xformers_can_run(q):
        return _xformers(q, k, v, bias, dropout_p)
    if backend == "xformers":
        logger.debug("xformers needs CUDA fp16/bf16 tensors (got %s on %s); using SDPA", q.dtype, q.device)
    return _sdpa(q, k, v, bias, dropout_p)
