"""Tests for CLIP-SCST (ofa.trainer.clip_scst) and the trainer's ``criterion="clip_scst"``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import ofa
from ofa.errors import ConfigError
from ofa.tasks.image_gen import ImageGenTask
from ofa.trainer import TrainerConfig
from ofa.trainer.clip_scst import clip_scst_loss, sample_clip_scst
from ofa.trainer.trainer import Trainer
from ofa.vqgan import VQGANConfig, build_vqgan
from ofa.vqgan.codes import write_image_gen_tsv


class MeanPixelScorer:
    """Rewards brighter images: distinct scores for distinct samples, so the rewards are not all zero."""

    def score(self, texts: list[str], images: list[Image.Image]) -> list[float]:
        return [float(np.asarray(im.convert("L"), dtype=np.float64).mean()) / 255.0 for im in images]


def fresh_model(tok: Any) -> Any:
    torch.manual_seed(0)
    return ofa.build_model("ofa-test", vocab_size=len(tok), code_image_size=16)


def test_rollout_shapes_and_leave_one_out_rewards(tok: Any, vqgan: Any) -> None:
    model = fresh_model(tok).train()
    task = ImageGenTask(grid_size=2)
    rollout = sample_clip_scst(model, ["a red circle", "a blue square"], task, tok, vqgan, MeanPixelScorer(),
                               num_samples=2, seed=0, keep_images=True)
    assert model.training  # mode restored after sampling
    assert rollout.target.shape == rollout.prev.shape == (4, 5) and rollout.scores.shape == (2, 2)
    assert bool((rollout.target[:, -1] == tok.eos_id).all()) and bool((rollout.prev[:, 0] == tok.bos_id).all())
    assert torch.equal(rollout.prev[:, 1:], rollout.target[:, :-1])
    codes = rollout.target[:, :-1]
    assert bool(((codes >= tok.vocab.code_range().start) & (codes < tok.vocab.code_range().stop)).all())
    expected = rollout.scores - (rollout.scores.sum(-1, keepdim=True) - rollout.scores)  # K = 2
    assert torch.allclose(rollout.rewards, expected.view(-1))
    assert len(rollout.images) == 4 and rollout.ntokens == 20


def test_one_clip_scst_step_changes_the_weights(tok: Any, vqgan: Any) -> None:
    model = fresh_model(tok).train()
    rollout = sample_clip_scst(model, ["a red circle", "a green triangle"], ImageGenTask(grid_size=2), tok, vqgan,
                               MeanPixelScorer(), num_samples=2, seed=1)
    assert bool(rollout.rewards.abs().sum() > 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    out = clip_scst_loss(model, rollout)
    assert out.ntokens == rollout.ntokens and torch.isfinite(out.loss)
    (out.loss / out.ntokens).backward()
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed and any("decoder" in n for n in changed)


def test_clip_scst_bad_settings_raise(tok: Any, vqgan: Any, tiny_vqgan_config: VQGANConfig) -> None:
    model = fresh_model(tok)
    task = ImageGenTask(grid_size=2)
    with pytest.raises(ConfigError, match="num_samples >= 2"):
        sample_clip_scst(model, ["x"], task, tok, vqgan, MeanPixelScorer(), num_samples=1)
    small = build_vqgan(VQGANConfig(**{**tiny_vqgan_config.to_dict(), "num_codes": 16}))
    with pytest.raises(ConfigError, match="codebook size"):
        sample_clip_scst(model, ["x"], task, tok, small, MeanPixelScorer())
    with pytest.raises(ConfigError, match="code_image_size"):
        sample_clip_scst(model, ["x"], ImageGenTask(grid_size=3), tok, vqgan, MeanPixelScorer())
    with pytest.raises(ConfigError, match="needs 'vqgan'"):
        TrainerConfig(task="image_gen", criterion="clip_scst")
    with pytest.raises(ConfigError, match="num_samples >= 2"):
        TrainerConfig(task="image_gen", criterion={"name": "clip_scst", "vqgan": "v", "num_samples": 1})


def test_trainer_runs_clip_scst(tok: Any, vqgan_dir: Path, world: Path, tmp_path: Path) -> None:
    data = tmp_path / "image_gen_train.tsv"
    write_image_gen_tsv(world / "caption_train.tsv", data, str(vqgan_dir), image_size=4)
    tok.save_pretrained(tmp_path / "tok")
    criterion = {"name": "clip_scst", "vqgan": str(vqgan_dir), "image_scorer": "color", "num_samples": 2}
    settings = dict(output_dir=str(tmp_path / "run"), model="ofa-test", model_overrides={"code_image_size": 16},
                    tokenizer=str(tmp_path / "tok"), task="image_gen", task_options={"grid_size": 2},
                    train_data=str(data), micro_batch_size=2, max_steps=2, device="cpu", log_every=1,
                    criterion=criterion,
                    lr=1e-3, warmup_steps=0, seed=0)
    trainer = Trainer(TrainerConfig.from_dict(settings), progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert all("clip_scst_score" in r and r["ntokens"] == 2 * 2 * 5 for r in records if "loss" in r)
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    with pytest.raises(ConfigError, match="needs an image scorer"):
        no_scorer = {**settings, "criterion": {**criterion, "image_scorer": "none"}}
        Trainer(TrainerConfig.from_dict(no_scorer), progress=False)
