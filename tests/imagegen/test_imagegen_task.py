"""Tests for the image_gen task end to end: sampled code grids -> VQGAN pictures -> reranking by a scorer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

import ofa
from ofa.data.collate import collate
from ofa.errors import ConfigError, InputError
from ofa.generation import generate
from ofa.metrics.image_text import ColorNameScorer
from ofa.tasks.base import Example
from ofa.tasks.image_gen import ImageGenPrediction, ImageGenTask, check_codebook
from ofa.vqgan import VQGANConfig, build_vqgan

GRID = 2  # the conftest's small_model grid (checked by test_grid_matches_the_fixture)


class FixedScorer:
    """Scores each image by a fixed table indexed by call order; records what it was given."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.calls: list[tuple[list[str], list[Image.Image]]] = []

    def score(self, texts: list[str], images: list[Image.Image]) -> list[float]:
        self.calls.append((texts, images))
        return self.scores[: len(images)]


def batch_of(task: ImageGenTask, tok: Any, *captions: str) -> Any:
    return collate([task.encode(Example(id=i, text=c), tok) for i, c in enumerate(captions)], pad_id=tok.pad_id)


def test_predictions_carry_pil_images_of_the_vqgan_size(tok: Any, small_model: Any, vqgan: Any) -> None:
    task = ofa.get_task("image_gen", grid_size=GRID, num_samples=3, vqgan=vqgan, scorer="color")
    preds = task.predict(small_model, batch_of(task, tok, "a red circle", "a blue square"), tok)
    side = GRID * vqgan.downsample_factor
    for pred in preds:
        assert isinstance(pred, ImageGenPrediction)
        assert len(pred.images) == len(pred.samples) == len(pred.scorer_scores) == 3
        assert all(im.size == (side, side) and im.mode == "RGB" for im in pred.images)
        assert pred.image is pred.images[0] and torch.equal(pred.codes, pred.samples[0])
        assert sorted(pred.ranking) == [0, 1, 2]
        assert pred.scorer_scores == sorted(pred.scorer_scores, reverse=True)
        # The picture is the VQGAN's decoding of the chosen grid.
        again = vqgan.codes_to_pil(pred.codes[None])[0]
        assert again.tobytes() == pred.image.tobytes()
        record = json.loads(json.dumps(pred.to_dict()))
        assert "images" not in record and "image" not in record and record["ranking"] == pred.ranking


def test_reranking_follows_the_scorer_and_ties_keep_model_order(tok: Any, small_model: Any, vqgan: Any) -> None:
    plain = ImageGenTask(grid_size=GRID, num_samples=4, vqgan=vqgan)
    base = plain.predict(small_model, batch_of(plain, tok, "a red circle"), tok)[0]
    assert base.ranking == [0, 1, 2, 3] and base.scorer_scores == []
    assert base.sample_scores == sorted(base.sample_scores, reverse=True)

    scorer = FixedScorer([0.1, 0.9, 0.5, 0.9])
    task = ImageGenTask(grid_size=GRID, num_samples=4, vqgan=vqgan, scorer=scorer)
    pred = task.predict(small_model, batch_of(task, tok, "A  Red Circle"), tok)[0]
    assert scorer.calls[0][0] == ["a red circle"] * 4  # the caption as the model read it
    assert pred.ranking == [1, 3, 2, 0]  # 0.9 (model rank 1) before 0.9 (model rank 3): ties by model score
    assert pred.scorer_scores == [0.9, 0.9, 0.5, 0.1]
    assert [s.tolist() for s in pred.samples] == [base.samples[i].tolist() for i in pred.ranking]
    assert pred.sample_scores == [base.sample_scores[i] for i in pred.ranking]
    assert pred.score == base.sample_scores[1] and torch.equal(pred.codes, base.samples[1])


def test_scorer_without_vqgan_is_unused_and_decode_draws(tok: Any, small_model: Any, vqgan: Any) -> None:
    scorer = FixedScorer([1.0, 0.0])
    task = ImageGenTask(grid_size=GRID, num_samples=2, scorer=scorer)
    pred = task.predict(small_model, batch_of(task, tok, "a red circle"), tok)[0]
    assert pred.images == [] and pred.image is None and scorer.calls == [] and pred.ranking == [0, 1]
    with pytest.raises(ConfigError, match="no VQGAN"):
        task.images(pred.samples)
    drawn = ImageGenTask(grid_size=GRID, vqgan=vqgan).decode([tok.vocab.code_id(c) for c in (1, 2, 3, 4)], tok)
    assert drawn.image is not None and drawn.image.size == (4, 4) and drawn.codes.tolist() == [[1, 2], [3, 4]]


def test_vqgan_from_a_path_and_the_caption_fallback(tok: Any, vqgan_dir: Path) -> None:
    task = ofa.get_task("image_gen", grid_size=GRID, vqgan=str(vqgan_dir), scorer=ColorNameScorer())
    assert task.vqgan is not None and task.vqgan.num_codes == 64 and not task.vqgan.training
    sample = task.encode(Example(id=0, text="Two  Blue squares"), tok)
    assert sample.meta["caption"] == "two blue squares"
    del sample.meta["caption"]
    assert task.sample_caption(sample, tok) == "two blue squares"  # decoded from the source ids


def test_grid_matches_the_fixture(grid: int, small_model: Any) -> None:
    assert grid == GRID and small_model.config.code_image_size == 8 * GRID


def test_codebook_mismatch_raises_a_clear_error(tok: Any, small_model: Any, tiny_vqgan_config: VQGANConfig) -> None:
    other = build_vqgan(VQGANConfig(**{**tiny_vqgan_config.to_dict(), "num_codes": 32})).eval()
    with pytest.raises(ConfigError, match=r"codebook size \(32\) must equal the tokenizer's number of code "
                                          r"tokens \(64\)"):
        check_codebook(other, tok)
    task = ImageGenTask(grid_size=GRID, vqgan=other)
    with pytest.raises(ConfigError, match="codebook size"):
        task.predict(small_model, batch_of(task, tok, "a red circle"), tok)
    with pytest.raises(ConfigError, match="vqgan must be a VQGAN"):
        ImageGenTask(grid_size=GRID, vqgan=42)  # type: ignore[arg-type]


def test_bad_grids_and_scorers_raise(tok: Any, small_model: Any, vqgan: Any) -> None:
    task = ImageGenTask(grid_size=GRID, vqgan=vqgan, num_samples=2, scorer=FixedScorer([1.0]))
    with pytest.raises(InputError, match="returned 1 scores for 2"):
        task.predict(small_model, batch_of(task, tok, "a red circle"), tok)
    with pytest.raises(InputError, match="out of range"):
        task.images([torch.tensor([[0, 1], [2, 64]])])
    with pytest.raises(InputError, match="do not fill grid_size"):
        vqgan.decode(torch.zeros(1, 5, dtype=torch.long), grid_size=GRID)
    wrong = ImageGenTask(grid_size=3, vqgan=vqgan)
    with pytest.raises(ConfigError, match="code_image_size=24"):
        wrong.predict(small_model, batch_of(wrong, tok, "x"), tok)
    for bad in ({"grid_size": 0}, {"num_samples": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ImageGenTask(**bad)
    with pytest.raises(ConfigError, match="unknown image scorer"):
        ImageGenTask(scorer="clip")


def test_code_rows_may_outgrow_the_text_positions(tok: Any) -> None:
    # OFA draws 1024 codes + eos (1026 decoder positions) with 1024 text positions: code rows have their own
    # position table. The same geometry in small: 16 text positions, a 4x4 grid (bos + 16 codes + eos).
    torch.manual_seed(0)
    model = ofa.build_model("ofa-test", vocab_size=len(tok), max_positions=16, token_bucket_size=16,
                            code_image_size=32).eval()
    assert model.max_decoder_length() == 16 and model.max_decoder_length(code_rows=True) > 17
    task = ImageGenTask(grid_size=4, num_samples=2)
    src = torch.tensor([[tok.bos_id] + tok.encode(" red")[:3] + [tok.eos_id]])
    config = task.generation_config(tok)
    codes = torch.ones(1, dtype=torch.bool)
    cached = generate(model, src, config=config, code_masks=codes)
    recomputed = generate(model, src, config=config, code_masks=codes, use_cache=False)
    assert [h.tokens.tolist() for h in cached[0]] == [h.tokens.tolist() for h in recomputed[0]]
    assert all(len(h.tokens) == 17 for h in cached[0])
    prev = torch.cat([torch.tensor([[tok.bos_id]]), cached[0][0].tokens[None]], dim=1)  # 18 tokens
    assert model(src, prev, code_masks=codes).logits.shape[1] == 18
    with pytest.raises(InputError, match="at most 16 positions"):
        model(src, prev)  # text rows keep their 16 positions
