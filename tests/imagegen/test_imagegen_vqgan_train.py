"""Tests for ofa.vqgan.train: the from-scratch VQGAN recipe on shape-world images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ofa.errors import ConfigError, InputError
from ofa.vqgan import VQGANConfig, build_vqgan, load_vqgan, reconstruction_error, train_vqgan
from ofa.vqgan.train import cosine_temperature, load_image_tensor


def test_training_reduces_the_reconstruction_error(world: Path, tmp_path: Path,
                                                   tiny_vqgan_config: VQGANConfig) -> None:
    images = load_image_tensor(world / "caption_train.tsv", 16)
    assert images.shape == (6, 3, 16, 16) and float(images.min()) >= -1 and float(images.max()) <= 1
    torch.manual_seed(0)
    model = build_vqgan(tiny_vqgan_config)
    before = reconstruction_error(model, images)
    result = train_vqgan(world / "caption_train.tsv", model, steps=12, lr=2e-3, batch_size=4, log_every=4,
                         out_dir=tmp_path / "vq", progress=False, seed=0)
    after = reconstruction_error(result.model, images)
    assert after["l1"] < 0.7 * before["l1"]
    losses = [r["reconstruction"] for r in result.history if "eval" not in r]
    assert len(losses) == 3 and losses[-1] < losses[0]
    temperatures = [r["temperature"] for r in result.history if "eval" not in r]
    assert temperatures == sorted(temperatures, reverse=True)
    assert result.history[-1]["eval"] == 1.0 and result.history[-1]["l1"] == pytest.approx(after["l1"])
    # Saved with save_pretrained, next to a JSONL log.
    loaded = load_vqgan(tmp_path / "vq")
    assert loaded.config == tiny_vqgan_config
    assert reconstruction_error(loaded, images)["l1"] == pytest.approx(after["l1"], rel=1e-5)
    log = [json.loads(line) for line in (tmp_path / "vq" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 4


def test_l2_loss_pil_input_and_a_fresh_config(world: Path, tiny_vqgan_config: VQGANConfig) -> None:
    from ofa.data.image_text import read_image_text

    images = [r.image for r in read_image_text(world / "caption_train.tsv", limit=2)]
    result = train_vqgan(images, tiny_vqgan_config, steps=2, batch_size=3, reconstruction="l2", image_size=8,
                         temperature=lambda step, steps: 1.0, progress=False)
    assert not result.model.training and result.out_dir is None
    assert [r["temperature"] for r in result.history if "eval" not in r] == [1.0]


def test_cosine_temperature_schedule() -> None:
    schedule = cosine_temperature(0.9, 0.1)
    assert schedule(0, 11) == pytest.approx(0.9) and schedule(10, 11) == pytest.approx(0.1)
    assert schedule(5, 11) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="temperatures"):
        cosine_temperature(0.0, 1.0)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"steps": 0}, ConfigError, "steps"),
    ({"lr": 0.0}, ConfigError, "lr"),
    ({"reconstruction": "lpips"}, ConfigError, "reconstruction"),
    ({"image_size": 15}, ConfigError, "multiple of the downsampling factor 2"),
    ({"config": "test"}, ConfigError, "VQGANConfig"),
    ({"data": torch.zeros(2, 3, 8, 8)}, InputError, r"\[n, 3, 16, 16\]"),
])
def test_bad_training_settings_raise(kwargs: dict, error: type, match: str,
                                     tiny_vqgan_config: VQGANConfig) -> None:
    args = {"data": torch.zeros(2, 3, 16, 16), "config": tiny_vqgan_config, "steps": 1, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        train_vqgan(**args)
