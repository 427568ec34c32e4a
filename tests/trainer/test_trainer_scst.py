"""SCST (spec §6.2): a short stage-2 run from a stage-1 checkpoint generates beams, rewards them with CIDEr-D
minus the leave-one-out mean, logs ``scst_cider`` and moves the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ofa.serialization import read_weights
from ofa.trainer import Trainer, TrainerConfig


@pytest.fixture(scope="module")
def stage1(world: Path, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A caption model trained for 30 steps: enough for its beams to share words with the references."""
    out = tmp_path_factory.mktemp("stage1")
    config = TrainerConfig(
        output_dir=str(out), model="ofa-test", tokenizer=str(tokenizer_dir), task="caption",
        task_options={"image_size": 64}, train_data=str(world / "caption_train.tsv"), max_steps=30,
        save_every=30, micro_batch_size=8, grad_accum=1, lr=3e-3, warmup_steps=0, weight_decay=0.0,
        label_smoothing=0.0, model_overrides={"dropout": 0.0}, log_every=10, device="cpu", seed=1)
    Trainer(config, progress=False).train()
    return out / "checkpoints" / "step_00000030"


def test_scst_stage2(make_config, stage1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ofa.trainer.criteria.scst as module

    seen: list[dict[str, torch.Tensor]] = []
    real = module.scst_loss

    def spy(logits, target, rewards, pad_id=1):
        seen.append({"target": target.clone(), "rewards": rewards.clone(), "logits": logits.detach()})
        return real(logits, target, rewards, pad_id)

    monkeypatch.setattr(module, "scst_loss", spy)
    # model = the stage-1 checkpoint directory; the tokenizer comes from it too
    config = make_config(output_dir=str(tmp_path / "stage2"), model=str(stage1), tokenizer=None,
                         criterion="scst", scst_beam_size=3, scst_max_len=8, micro_batch_size=2, grad_accum=2,
                         max_steps=2, lr=1e-3, warmup_steps=0, weight_decay=0.0, label_smoothing=0.0,
                         valid_max_examples=2)
    trainer = Trainer(config, progress=False)
    start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    stage1_weights = read_weights(stage1)
    assert all(torch.equal(start[k], stage1_weights[k]) for k in stage1_weights)
    valid = trainer.train()

    records = [json.loads(line) for line in (tmp_path / "stage2" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    assert all("scst_cider" in r and r["scst_cider"] >= 0 for r in train)
    assert any(r["scst_cider"] > 0 and r["grad_norm"] > 0 for r in train)  # a real learning signal
    assert "CIDEr" in valid

    # 2 steps x 2 micro-batches, each 2 images x 3 beams
    assert len(seen) >= 4
    eos = trainer.tokenizer.eos_id
    for call in seen[-4:]:
        target, rewards = call["target"], call["rewards"]
        assert target.shape[0] == rewards.shape[0] == 6
        assert torch.allclose(rewards.view(2, 3).sum(-1), torch.zeros(2), atol=1e-5)  # leave-one-out
        lengths = target.ne(trainer.tokenizer.pad_id).sum(-1)
        assert all(int(target[i, int(n) - 1]) == eos for i, n in enumerate(lengths))  # every sample ends with eos

    end = trainer.model.state_dict()
    moved = [k for k in start if not torch.equal(start[k], end[k])]
    assert any(k.startswith("decoder.layers.") for k in moved)  # weight decay is 0: only the reward moved them


def test_scst_from_init_checkpoint(make_config, stage1: Path, tmp_path: Path) -> None:
    config = make_config(output_dir=str(tmp_path / "stage2"), init_checkpoint=str(stage1), criterion="scst",
                         scst_beam_size=3, scst_max_len=8, micro_batch_size=2, grad_accum=1, max_steps=1,
                         valid_data=None)
    trainer = Trainer(config, progress=False)
    stage1_weights = read_weights(stage1)
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in stage1_weights.items())
    stats: dict[str, Any] | None = trainer.train_step()
    assert stats is not None and "scst_cider" in stats and stats["ntokens"] > 0


def test_scst_needs_references(make_config, world: Path) -> None:
    from ofa.errors import ConfigError

    config = make_config(task="refcoco", train_data=str(world / "refcoco_train.tsv"), valid_data=None,
                         task_options={"image_size": 64, "max_image_size": 64}, criterion="scst")
    with pytest.raises(ConfigError, match="SCST needs reference captions"):
        Trainer(config, progress=False)
