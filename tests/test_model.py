"""Tests for ofa.model.OFAModel: incremental = teacher forcing, batching, grouped rows, train/eval, golden loads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import ofa
from ofa.apps.golden import run_forward_cases

PAD = 1
TOL = dict(atol=1e-5, rtol=0)


def _tokens(vocab: int, rows: int, length: int, bos: bool = False) -> torch.Tensor:
    tokens = torch.randint(4, vocab, (rows, length))
    if bos:
        tokens[:, 0] = 0
    return tokens


def _teacher_forced(model: Any, prev: torch.Tensor, enc: Any, code_masks: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(prev, enc, code_masks=code_masks).logits


def _incremental(model: Any, prev: torch.Tensor, enc: Any, code_masks: torch.Tensor | None,
                 chunks: list[int]) -> torch.Tensor:
    assert sum(chunks) == prev.shape[1]
    with torch.no_grad():
        cache = model.init_cache(enc, num_rows=prev.shape[0], code_masks=code_masks)
        out, start = [], 0
        for size in chunks:
            logits = model.decode_step(prev[:, start:start + size], cache)
            assert logits.shape == (prev.shape[0], size, model.config.vocab_size)
            out.append(logits)
            start += size
        assert cache.length == prev.shape[1]
    return torch.cat(out, dim=1)


CODE_MODES = {"text": [False, False, False], "code": [True, True, True], "mixed": [False, True, False]}


@pytest.mark.parametrize("mode", list(CODE_MODES))
@pytest.mark.parametrize("chunks", [[1] * 7, [2, 3, 2], [3, 1, 3]], ids=["one-by-one", "2-3-2", "3-1-3"])
def test_incremental_decoding_equals_teacher_forcing(test_model: Any, mode: str, chunks: list[int]) -> None:
    vocab = test_model.config.vocab_size
    src = _tokens(vocab, 3, 6)
    src[2, 4:] = PAD
    with torch.no_grad():
        enc = test_model.encode(src, torch.randn(3, 3, 32, 48))
    prev = _tokens(vocab, 3, 7, bos=True)
    prev[1, 5:] = PAD
    code_masks = torch.tensor(CODE_MODES[mode])
    full = _teacher_forced(test_model, prev, enc, code_masks)
    torch.testing.assert_close(_incremental(test_model, prev, enc, code_masks, chunks), full, **TOL)


def test_mixed_rows_equal_pure_text_and_pure_code_rows(test_model: Any) -> None:
    vocab = test_model.config.vocab_size
    with torch.no_grad():
        enc = test_model.encode(_tokens(vocab, 2, 5))
    prev = _tokens(vocab, 2, 6, bos=True)
    mixed = _teacher_forced(test_model, prev, enc, torch.tensor([False, True]))
    text = _teacher_forced(test_model, prev, enc, None)
    code = _teacher_forced(test_model, prev, enc, torch.tensor([True, True]))
    torch.testing.assert_close(mixed[0], text[0], **TOL)
    torch.testing.assert_close(mixed[1], code[1], **TOL)
    assert (text[1] - code[1]).abs().max() > 1e-2  # the code path really is different


def _padded_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int], list[int]]:
    src_lengths, tgt_lengths = [6, 3, 5], [4, 7, 2]
    src = torch.full((3, max(src_lengths)), PAD)
    prev = torch.full((3, max(tgt_lengths)), PAD)
    for i, (ls, lt) in enumerate(zip(src_lengths, tgt_lengths)):
        src[i, :ls] = _tokens(vocab, 1, ls)[0]
        prev[i, :lt] = _tokens(vocab, 1, lt, bos=True)[0]
    return src, prev, torch.randn(3, 3, 48, 32), src_lengths, tgt_lengths


@pytest.mark.parametrize("with_images", [True, False], ids=["images", "text-only"])
def test_batch_equals_samples_run_one_by_one(test_model: Any, with_images: bool) -> None:
    src, prev, images, src_lengths, tgt_lengths = _padded_batch(test_model.config.vocab_size)
    patches = 3 * 2 if with_images else 0  # 48x32 pixels -> 3x2 patches
    with torch.no_grad():
        enc = test_model.encode(src, images if with_images else None)
        logits = test_model.decode(prev, enc).logits
        for i, (ls, lt) in enumerate(zip(src_lengths, tgt_lengths)):
            one_enc = test_model.encode(src[i:i + 1, :ls], images[i:i + 1] if with_images else None)
            one = test_model.decode(prev[i:i + 1, :lt], one_enc).logits
            assert one_enc.hidden.shape[1] == patches + ls
            torch.testing.assert_close(one_enc.hidden[0], enc.hidden[i, :patches + ls], **TOL)
            torch.testing.assert_close(one[0], logits[i, :lt], **TOL)
    expected_mask = torch.cat([torch.zeros(3, patches, dtype=torch.bool), src.eq(PAD)], dim=1)
    assert torch.equal(enc.padding_mask, expected_mask)


def test_incremental_batch_equals_samples_one_by_one(test_model: Any) -> None:
    src, prev, images, src_lengths, tgt_lengths = _padded_batch(test_model.config.vocab_size)
    with torch.no_grad():
        enc = test_model.encode(src, images)
    batch = _incremental(test_model, prev, enc, None, [1] * prev.shape[1])
    with torch.no_grad():
        for i, (ls, lt) in enumerate(zip(src_lengths, tgt_lengths)):
            one_enc = test_model.encode(src[i:i + 1, :ls], images[i:i + 1])
            one = test_model.decode(prev[i:i + 1, :lt], one_enc).logits
            torch.testing.assert_close(batch[i, :lt], one[0], **TOL)


@pytest.mark.parametrize("group", [1, 3])
def test_grouped_rows_equal_repeated_encoder_output(test_model: Any, group: int) -> None:
    vocab = test_model.config.vocab_size
    src = _tokens(vocab, 2, 5)
    src[0, 3:] = PAD
    with torch.no_grad():
        enc = test_model.encode(src, torch.randn(2, 3, 32, 32))
    prev = _tokens(vocab, 2 * group, 6, bos=True)
    prev[1, 4:] = PAD
    code_masks = torch.tensor([False, True] * group)
    repeated = enc.index_select(torch.arange(2).repeat_interleave(group))
    grouped = _teacher_forced(test_model, prev, enc, code_masks)
    torch.testing.assert_close(grouped, _teacher_forced(test_model, prev, repeated, code_masks), **TOL)
    torch.testing.assert_close(_incremental(test_model, prev, enc, code_masks, [2, 1, 3]), grouped, **TOL)


def test_cache_reorder_then_continue_equals_reordered_sequences(test_model: Any) -> None:
    vocab = test_model.config.vocab_size
    with torch.no_grad():
        enc = test_model.encode(_tokens(vocab, 2, 5), torch.randn(2, 3, 32, 32))
    prev = _tokens(vocab, 6, 7, bos=True)  # 3 rows ("beams") per source
    prev[2, 1] = prev[3, 2] = PAD  # key padding must move with its row too
    code_masks = torch.tensor([False, True, False, True, False, True])
    # Beam-search style: each new row comes from a row of the same source; rows may be duplicated.
    order = torch.tensor([2, 1, 2, 3, 3, 4])
    with torch.no_grad():
        cache = test_model.init_cache(enc, num_rows=6, code_masks=code_masks)
        test_model.decode_step(prev[:, :3], cache)
        cache.reorder(order)
        continued = [test_model.decode_step(prev[order, 3:5], cache)]
        order2 = torch.tensor([1, 0, 0, 4, 4, 5])
        cache.reorder(order2)
        continued.append(test_model.decode_step(prev[order][order2, 5:], cache))
    expected = _teacher_forced(test_model, prev[order], enc, code_masks[order])
    torch.testing.assert_close(continued[0], expected[:, 3:5], **TOL)
    expected2 = _teacher_forced(test_model, prev[order][order2], enc, code_masks[order][order2])
    torch.testing.assert_close(continued[1], expected2[:, 5:], **TOL)


def test_long_incremental_decoding_with_reorders(test_model: Any) -> None:
    # Longer than any initial cache capacity, in uneven pieces, with a reorder after the cache has grown.
    vocab = test_model.config.vocab_size
    with torch.no_grad():
        enc = test_model.encode(_tokens(vocab, 2, 5))
    prev = _tokens(vocab, 4, 45, bos=True)
    code_masks = torch.tensor([False, False, True, True])
    order = torch.tensor([1, 1, 3, 2])
    with torch.no_grad():
        cache = test_model.init_cache(enc, num_rows=4, code_masks=code_masks)
        pieces = [test_model.decode_step(prev[:, a:b], cache) for a, b in [(0, 1), (1, 15), (15, 17), (17, 30)]]
        cache.reorder(order)
        tail = torch.cat([test_model.decode_step(prev[order, t:t + 1], cache) for t in range(30, 45)], dim=1)
    head = torch.cat(pieces, dim=1)
    torch.testing.assert_close(head, _teacher_forced(test_model, prev, enc, code_masks)[:, :30], **TOL)
    expected = _teacher_forced(test_model, prev[order], enc, code_masks[order])
    torch.testing.assert_close(tail, expected[:, 30:], **TOL)


def test_select_sources_drops_finished_sources(test_model: Any) -> None:
    vocab = test_model.config.vocab_size
    src = _tokens(vocab, 3, 5)
    with torch.no_grad():
        enc = test_model.encode(src, torch.randn(3, 3, 32, 32))
    prev = _tokens(vocab, 6, 6, bos=True)  # 2 rows per source
    with torch.no_grad():
        cache = test_model.init_cache(enc, num_rows=6)
        test_model.decode_step(prev[:, :3], cache)
        cache.select_sources(torch.tensor([0, 2]), torch.tensor([1, 0, 4, 5]))  # source 1 finished
        assert cache.num_rows == 4 and cache.group_size == 2
        out = test_model.decode_step(prev[[1, 0, 4, 5], 3:], cache)
    expected = _teacher_forced(test_model, prev[[1, 0, 4, 5]], enc.index_select(torch.tensor([0, 2])), None)
    torch.testing.assert_close(out, expected[:, 3:], **TOL)


def test_decode_accepts_a_prepared_cross_state(test_model: Any) -> None:
    vocab = test_model.config.vocab_size
    prev = _tokens(vocab, 4, 5, bos=True)
    with torch.no_grad():
        enc = test_model.encode(_tokens(vocab, 2, 4))
        direct = test_model.decode(prev, enc).logits
        prepared = test_model.decode(prev, test_model.decoder.prepare(enc)).logits
    assert torch.equal(direct, prepared)


def test_forward_equals_encode_then_decode(test_model: Any) -> None:
    vocab = test_model.config.vocab_size
    src, prev, images = _tokens(vocab, 2, 5), _tokens(vocab, 2, 4, bos=True), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = test_model(src, prev, patch_images=images)
        manual = test_model.decode(prev, test_model.encode(src, images))
    assert torch.equal(out.logits, manual.logits)
    assert out.logits.shape == (2, 4, vocab) and out.features.shape == (2, 4, 32)


def test_return_states_and_cross_attention(test_model: Any) -> None:
    vocab = test_model.config.vocab_size
    src = _tokens(vocab, 2, 5)
    src[1, 3:] = PAD
    with torch.no_grad():
        enc = test_model.encode(src, torch.randn(2, 3, 32, 16), return_states=True)
        dec = test_model.decode(_tokens(vocab, 2, 4, bos=True), enc, return_states=True, return_cross_attention=True)
    assert len(enc.states) == test_model.config.encoder_layers + 1
    assert enc.image_features.shape == (2, 128, 2, 1)
    assert len(dec.states) == test_model.config.decoder_layers + 1
    weights = dec.cross_attention
    assert weights.shape == (2, 4, 2 + 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4))
    assert not weights[1, :, 2 + 3:].any()  # padded source tokens get no attention


def test_decoder_is_causal(test_model: Any) -> None:
    vocab = test_model.config.vocab_size
    with torch.no_grad():
        enc = test_model.encode(_tokens(vocab, 1, 5))
        prev = _tokens(vocab, 1, 6, bos=True)
        changed = prev.clone()
        changed[0, 4] = (prev[0, 4] + 1) % vocab
        a, b = test_model.decode(prev, enc).logits, test_model.decode(changed, enc).logits
    torch.testing.assert_close(a[:, :4], b[:, :4], **TOL)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3


def test_patch_mask_false_equals_text_only_run(test_model: Any) -> None:
    vocab = test_model.config.vocab_size
    src = _tokens(vocab, 3, 5)
    src[2, 4:] = PAD
    prev = _tokens(vocab, 3, 6, bos=True)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        masked = test_model.decode(prev, test_model.encode(src, images, torch.tensor([True, False, False]))).logits
        text = test_model.decode(prev, test_model.encode(src)).logits
        full = test_model.decode(prev, test_model.encode(src, images)).logits
    torch.testing.assert_close(masked[1:], text[1:], **TOL)
    torch.testing.assert_close(masked[0], full[0], **TOL)
    assert (masked[0] - text[0]).abs().max() > 1e-2  # the image does matter where it is kept


def test_integer_patch_masks_are_accepted(test_model: Any) -> None:
    vocab = test_model.config.vocab_size
    src, images = _tokens(vocab, 2, 4), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        as_bool = test_model.encode(src, images, torch.tensor([True, False])).hidden
        as_int = test_model.encode(src, images, torch.tensor([1, 0])).hidden
        no_images = test_model.encode(src, None, torch.tensor([False, False])).hidden
    assert torch.equal(as_bool, as_int)
    assert no_images.shape == (2, 4, 32)


@pytest.mark.parametrize("overrides", [
    {"dropout": 0.1},
    {"encoder_drop_path_rate": 0.5, "decoder_drop_path_rate": 0.5},
    {"attention_dropout": 0.2, "activation_dropout": 0.2},
], ids=["dropout", "drop-path", "attention-activation-dropout"])
def test_train_mode_is_stochastic_and_eval_is_deterministic(make_model: Callable[..., Any],
                                                            overrides: dict[str, float]) -> None:
    model = make_model(**overrides)
    vocab = model.config.vocab_size
    src, prev = _tokens(vocab, 4, 5), _tokens(vocab, 4, 6, bos=True)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a, b = model(src, prev, patch_images=images).logits, model(src, prev, patch_images=images).logits
        assert torch.equal(a, b)
        model.train()
        model.encoder.embed_images.eval()  # keep BatchNorm on running stats: only dropout may differ
        c, d = model(src, prev, patch_images=images).logits, model(src, prev, patch_images=images).logits
    assert not torch.equal(c, d)
    assert (c - d).abs().max() > 1e-3


def test_train_mode_without_dropout_equals_eval(make_model: Callable[..., Any]) -> None:
    model = make_model(dropout=0.0, encoder_drop_path_rate=0.0, decoder_drop_path_rate=0.0)
    vocab = model.config.vocab_size
    src, prev = _tokens(vocab, 2, 5), _tokens(vocab, 2, 6, bos=True)
    with torch.no_grad():
        a = model(src, prev).logits
        model.train()
        b = model(src, prev).logits
    torch.testing.assert_close(a, b, **TOL)


def test_gradients_reach_every_parameter(make_model: Callable[..., Any]) -> None:
    model = make_model().train()
    vocab = model.config.vocab_size
    out = model(_tokens(vocab, 2, 5), _tokens(vocab, 2, 1 + 4, bos=True), patch_images=torch.randn(2, 3, 32, 32),
                code_masks=torch.tensor([False, True]))
    out.logits.logsumexp(-1).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_model_builds_on_meta_device() -> None:
    with torch.device("meta"):
        model = ofa.build_model("ofa-test")
    assert all(p.is_meta for p in model.parameters())
    assert model.num_parameters() == ofa.build_model("ofa-test").num_parameters()


# -- the reference model, loaded through the official-checkpoint path ----------------------------------------------
def _check_golden_forward(model: Any, golden: dict[str, Any]) -> None:
    results = run_forward_cases(model, golden)
    assert "main/logits" in results and "incremental/main" in results
    bad = {name: err for name, err in results.items() if not err <= 1e-4}
    assert bad == {}


def test_golden_fairseq_checkpoint_with_args_namespace(golden_data: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_best.pt"
    torch.save({
        "model": golden_data["model"],
        "args": argparse.Namespace(**golden_data["cfg"]),
        "cfg": None,
        "criterion": None,
        "optimizer_history": [{"criterion_name": "AdjustLabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": 2.5},
                               "num_updates": 10}],
        "task_state": {},
        "extra_state": {"epoch": 1, "val_loss": 2.5},
    }, path)
    model = ofa.load_checkpoint(path)
    assert not model.training
    config = model.config
    assert (config.embed_dim, config.num_heads, config.encoder_layers, config.vocab_size) == (256, 4, 2, 2717)
    assert config.resnet.layers == (3, 4, 6)
    assert config.patch_image_size == 256 and config.dropout == 0.1 and config.encoder_drop_path_rate == 0.1
    _check_golden_forward(model, golden_data)


def test_golden_fairseq_checkpoint_with_nested_cfg(golden_data: dict[str, Any], tmp_path: Path) -> None:
    model_cfg = dict(golden_data["cfg"])
    task_cfg = {"_name": "ofa", "patch_image_size": model_cfg.pop("patch_image_size"), "num_bins": 200,
                "code_dict_size": 512, "max_src_length": 128}
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": golden_data["model"], "args": None, "criterion": None,
                "cfg": {"common": {"fp16": False, "seed": 1}, "model": model_cfg, "task": task_cfg,
                        "optimization": {"lr": [1e-4]}, "generation": {"beam": 5}}}, path)
    model = ofa.load_checkpoint(path)
    assert model.config.patch_image_size == 256  # read from cfg.task
    assert model.config.attn_scale_factor == 2.0  # read from cfg.model
    _check_golden_forward(model, golden_data)
