"""Tests for ``sample_patch_num`` (OFA pretraining keeps k random patches per image): the kept patches' encoder
outputs against a reference gathered by hand, and the geometry check that keeping every patch in a random
order changes nothing but the order."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from ofa.errors import InputError
from ofa.nn.embeddings import gather_rel_bias, position_bias
from ofa.nn.rel_pos import image_bucket_index, image_position_ids, token_rel_positions

LENGTHS = (6, 4)


def _inputs(model: Any, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    src = torch.randint(4, model.config.vocab_size, (len(LENGTHS), max(LENGTHS)), generator=g)
    for row, n in enumerate(LENGTHS):
        src[row, n:] = model.config.pad_id
    return src, torch.randn(len(LENGTHS), 3, size, size, generator=g)


def _kept(sampled: torch.Tensor, full: torch.Tensor) -> list[int]:
    """Which full-grid patches the sampled image positions are (matched by their position embeddings)."""
    distances = torch.cdist(sampled, full)  # [k, N]
    kept = distances.argmin(dim=1).tolist()
    assert float(distances.min(dim=1).values.max()) < 1e-6 and len(set(kept)) == len(kept)
    return kept


def _reference(model: Any, src: torch.Tensor, image: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """One sample encoded by hand: gather the kept patches' features and position ids first, then build every
    bias from the gathered ids with the plain 2-D helpers."""
    enc = model.encoder
    features = enc.embed_images(image[None])  # [1, C, h, w]
    h, w = features.shape[-2:]
    ids = image_position_ids(h, w, enc.image_bucket_size)[kept]  # [k]
    patches = features.flatten(2).transpose(1, 2)[:, kept]
    x_img = enc.patch_layernorm_embedding(enc.image_proj(patches) + enc.type_embedding.weight[1])
    x_txt = enc.layernorm_embedding(enc.embed_tokens(src[None]) + enc.type_embedding.weight[0])
    x = torch.cat([x_img, x_txt], dim=1)
    pad = torch.cat([torch.zeros(len(kept), dtype=torch.bool), src.eq(model.config.pad_id)])[None]
    positions = torch.cat([enc.image_pos_ln(enc.embed_image_positions(ids)),
                           enc.pos_ln(enc.embed_positions.weight[:src.shape[0]])])[None]
    abs_bias = position_bias(enc.pos_q_linear, enc.pos_k_linear, positions, positions, enc.num_heads, enc.scaling)
    arange = torch.arange(src.shape[0])
    text_index = token_rel_positions(arange, arange, enc.token_bucket_size)
    image_index = image_bucket_index(ids, ids, enc.image_bucket_size)
    pad_bias = torch.zeros(pad.shape).masked_fill(pad, float("-inf"))[:, None, None, :]
    x = x * (1 - pad[..., None].float())
    k = len(kept)
    for i, layer in enumerate(enc.layers):
        rel = torch.zeros_like(abs_bias[0])
        rel[:, k:, k:] = gather_rel_bias(enc.token_rel_pos_table_list[i], text_index)
        rel[:, :k, :k] = gather_rel_bias(enc.image_rel_pos_table_list[i], image_index)
        x = layer(x, abs_bias + rel + pad_bias)
    return enc.layer_norm(x)[0]


@torch.no_grad()
def test_kept_patches_match_a_hand_gathered_reference(make_model: Any) -> None:
    model = make_model()
    assert model.config.add_type_embedding and not model.config.entangle_position_embedding  # the reference's path
    src, images = _inputs(model)
    full = model.encode(src, images)
    torch.manual_seed(11)
    out = model.encode(src, images, sample_patch_num=5)
    assert out.hidden.shape == (2, 5 + src.shape[1], model.config.embed_dim)
    assert out.padding_mask.shape == (2, 5 + src.shape[1])
    kept_rows = []
    for i in range(len(LENGTHS)):
        kept = _kept(out.position_embeddings[i, :5], full.position_embeddings[i, :16])
        kept_rows.append(kept)
        expected = _reference(model, src[i], images[i], kept)
        real = ~out.padding_mask[i]
        torch.testing.assert_close(out.hidden[i][real], expected[real], rtol=1e-5, atol=1e-5)
    assert kept_rows[0] != kept_rows[1]  # drawn per sample


@torch.no_grad()
def test_keeping_every_patch_only_reorders(make_model: Any) -> None:
    model = make_model()
    src, images = _inputs(model)
    full = model.encode(src, images)
    torch.manual_seed(5)
    shuffled = model.encode(src, images, sample_patch_num=16)
    n = 16
    for i in range(len(LENGTHS)):
        order = _kept(shuffled.position_embeddings[i, :n], full.position_embeddings[i, :n])
        assert order != sorted(order)  # a real permutation
        torch.testing.assert_close(shuffled.hidden[i, :n], full.hidden[i, order], rtol=1e-5, atol=1e-5)
        real = ~full.padding_mask[i, n:]
        torch.testing.assert_close(shuffled.hidden[i, n:][real], full.hidden[i, n:][real], rtol=1e-5, atol=1e-5)


def test_sampling_trains_and_decodes(make_model: Any) -> None:
    model = make_model().train()
    src, images = _inputs(model)
    prev = src[:, :3].clone()
    out = model(src, prev, images, None, None, sample_patch_num=4)
    loss = F.cross_entropy(out.logits.flatten(0, 1), src[:, 1:4].flatten())
    loss.backward()
    assert model.encoder.embed_images.conv1.weight.grad is not None
    assert torch.isfinite(loss)


@pytest.mark.parametrize("k", [0, 17, 2.5, True])
def test_bad_sample_patch_num(make_model: Any, k: Any) -> None:
    model = make_model()
    src, images = _inputs(model)
    with pytest.raises(InputError, match="sample_patch_num"):
        model.encode(src, images, sample_patch_num=k)
