"""Tests for ofa.nn.attention and ofa.nn.attention_backends: backends agree; OFA's scaling and head gains."""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

import pytest
import torch
from torch import nn

import ofa
from ofa.errors import ConfigError
from ofa.nn import attention_backends
from ofa.nn.attention import MultiheadAttention, merge_heads, split_heads
from ofa.nn.attention_backends import attention, eager_attention, resolve_backend

HAS_XFORMERS = importlib.util.find_spec("xformers") is not None


def _qkv_bias(b: int = 2, h: int = 3, tq: int = 5, tk: int = 7, d: int = 8) -> tuple[torch.Tensor, ...]:
    q, k, v = torch.randn(b, h, tq, d), torch.randn(b, h, tk, d), torch.randn(b, h, tk, d)
    bias = torch.randn(b, h, tq, tk) * 2
    bias[0, :, :, 2] = float("-inf")  # a padded key
    bias[1, :, 3, :4] = float("-inf")  # a causal-style block
    bias[1, 1, :, -1] = float("-inf")
    return q, k, v, bias


@pytest.mark.parametrize("backend", ["sdpa", "auto"])
def test_backends_equal_eager_with_masks(seed: int, backend: str) -> None:
    q, k, v, bias = _qkv_bias()
    ref = attention(q, k, v, bias, backend="eager")
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(attention(q, k, v, bias, backend=backend), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bias_shape", [(1, 3, 5, 7), (2, 1, 1, 7), (1, 1, 5, 7), None])
def test_backends_equal_eager_with_broadcast_bias(seed: int, bias_shape: tuple[int, ...] | None) -> None:
    q, k, v, _ = _qkv_bias()
    bias = None if bias_shape is None else torch.randn(bias_shape)
    torch.testing.assert_close(attention(q, k, v, bias, backend="sdpa"), attention(q, k, v, bias, backend="eager"),
                               atol=1e-5, rtol=0)


def test_fully_masked_query_gives_zeros_on_every_backend(seed: int) -> None:
    q, k, v, bias = _qkv_bias()
    bias[1, :, 2, :] = float("-inf")
    eager, weights = eager_attention(q, k, v, bias, return_weights=True)
    sdpa = attention(q, k, v, bias, backend="sdpa")
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=0)
    assert not eager[1, :, 2].any() and torch.isfinite(eager).all()
    assert weights is not None and not weights[1, :, 2].any()


def test_eager_matches_a_hand_written_softmax(seed: int) -> None:
    q, k, v, bias = _qkv_bias()
    probs = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
    out, weights = eager_attention(q, k, v, bias, return_weights=True)
    torch.testing.assert_close(out, probs @ v)
    torch.testing.assert_close(weights, probs)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))


def test_attention_dropout_only_changes_outputs_when_asked(seed: int) -> None:
    q, k, v, bias = _qkv_bias()
    a = attention(q, k, v, bias, dropout_p=0.5, backend="eager")
    b = attention(q, k, v, bias, dropout_p=0.5, backend="eager")
    assert not torch.equal(a, b)


def _image_batch(vocab: int) -> dict[str, torch.Tensor]:
    src = torch.randint(4, vocab, (2, 6))
    src[1, 4:] = 1
    prev = torch.randint(4, vocab, (2, 5))
    prev[:, 0] = 0
    prev[0, 3:] = 1
    return {"src_tokens": src, "patch_images": torch.randn(2, 3, 48, 32), "prev_output_tokens": prev}


def test_whole_model_eager_equals_sdpa(test_model: Any, seed: int) -> None:
    inputs = _image_batch(test_model.config.vocab_size)
    with torch.no_grad():
        sdpa = test_model(**inputs).logits
        assert test_model.set_attention_backend("eager") is test_model
        assert test_model.attention_backend == "eager"
        assert all(m.backend == "eager" for m in test_model.modules() if isinstance(m, MultiheadAttention))
        eager = test_model(**inputs).logits
        test_model.set_attention_backend("auto")
        auto = test_model(**inputs).logits
    assert sdpa.abs().max() > 1.0  # lively weights: a real check, not of near-constant logits
    torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=0)
    torch.testing.assert_close(auto, sdpa, atol=1e-5, rtol=0)


def test_model_built_with_eager_backend_equals_sdpa(make_model: Callable[..., Any]) -> None:
    eager = make_model(attention_backend="eager")
    sdpa = make_model(attention_backend="sdpa")
    assert eager.attention_backend == "eager"
    inputs = _image_batch(eager.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(eager(**inputs).logits, sdpa(**inputs).logits, atol=1e-5, rtol=0)


@pytest.mark.skipif(not HAS_XFORMERS, reason="xformers is not installed")
def test_xformers_backend_falls_back_on_cpu(test_model: Any, seed: int) -> None:
    q, k, v, bias = _qkv_bias()
    torch.testing.assert_close(attention(q, k, v, bias, backend="xformers"), attention(q, k, v, bias, backend="sdpa"),
                               atol=1e-6, rtol=0)
    inputs = _image_batch(test_model.config.vocab_size)
    with torch.no_grad():
        sdpa = test_model(**inputs).logits
        test_model.set_attention_backend("xformers")
        xformers = test_model(**inputs).logits
    torch.testing.assert_close(xformers, sdpa, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not HAS_XFORMERS, reason="needs CUDA and xformers")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_xformers_equals_sdpa_on_cuda_half(seed: int, dtype: torch.dtype) -> None:
    q, k, v, bias = (t.cuda().to(dtype) for t in _qkv_bias(b=2, h=4, tq=33, tk=45, d=64))
    ref = attention(q.float(), k.float(), v.float(), bias.float(), backend="eager")
    out = attention(q, k, v, bias, backend="xformers")
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=0)


def test_unknown_backend_raises_config_error(test_model: Any) -> None:
    for call in (lambda: resolve_backend("flash"),
                 lambda: test_model.set_attention_backend("flash"),
                 lambda: ofa.build_model("ofa-test", attention_backend="flash"),
                 lambda: MultiheadAttention(8, 2, scaling=0.25, backend="flash")):
        with pytest.raises(ConfigError, match="flash.*eager"):
            call()
    assert test_model.attention_backend == "sdpa"  # unchanged by the failed switch


def test_missing_xformers_raises_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention_backends, "xformers_available", lambda: False)
    with pytest.raises(ConfigError, match="xformers.*not installed"):
        resolve_backend("xformers")


def _mha(scale_heads: bool = True) -> MultiheadAttention:
    mha = MultiheadAttention(8, 2, scaling=0.3, scale_heads=scale_heads, backend="eager")
    for param in mha.parameters():
        nn.init.normal_(param)
    return mha


def test_multihead_attention_matches_hand_computation(seed: int) -> None:
    mha = _mha()
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    bias = torch.randn(2, 2, 3, 4)
    with torch.no_grad():
        q = split_heads(mha.q_proj(x) * 0.3, 2)
        k, v = split_heads(mha.k_proj(memory), 2), split_heads(mha.v_proj(memory), 2)
        heads = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1) @ v  # [b, h, t, d]
        expected = mha.out_proj(merge_heads(heads * mha.c_attn.view(1, 2, 1, 1)))
        out, weights = mha(x, memory, bias)
        out_w, weights_w = mha(x, memory, bias, need_weights=True)
    assert weights is None
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out_w, expected)
    assert weights_w is not None and weights_w.shape == (2, 2, 3, 4)


def test_c_attn_scales_each_head_before_out_proj(seed: int) -> None:
    mha = _mha()
    with torch.no_grad():
        mha.out_proj.weight.copy_(torch.eye(8))
        mha.out_proj.bias.zero_()
        x = torch.randn(2, 3, 8)
        mha.c_attn.fill_(1.0)
        plain, _ = mha(x)
        mha.c_attn.copy_(torch.tensor([2.0, -0.5]))
        scaled, _ = mha(x)
    torch.testing.assert_close(scaled[..., :4], 2.0 * plain[..., :4])  # head 0 is features 0..3
    torch.testing.assert_close(scaled[..., 4:], -0.5 * plain[..., 4:])


def test_scale_heads_off_has_no_gains() -> None:
    mha = _mha(scale_heads=False)
    assert mha.c_attn is None
    assert "c_attn" not in dict(mha.named_parameters())


def test_split_and_merge_heads_are_inverse(seed: int) -> None:
    x = torch.randn(2, 5, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(heads[:, 1], x[..., 4:8])
    assert torch.equal(merge_heads(heads), x)
