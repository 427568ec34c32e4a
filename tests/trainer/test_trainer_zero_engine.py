"""The DeepSpeed engine in one plain process (subprocesses, so the test process keeps no process group):
ZeRO-3 with every parameter partitioned, bf16, SCST generation and validation on the gathered model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ofa
from ofa.trainer import Trainer


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
@pytest.mark.deepspeed
def test_zero3_bf16_scst(make_config, world: Path, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    stage1 = make_config(output_dir=str(tmp_path / "stage1"), valid_data=None, max_steps=1, save_every=1)
    Trainer(stage1, progress=False).train()
    checkpoint = tmp_path / "stage1" / "checkpoints" / "step_00000001"
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"stage3_param_persistence_threshold": 0}}))
    out = tmp_path / "stage2"
    cmd = [sys.executable, "-m", "ofa.trainer.cli", f"model={checkpoint}", "task=caption",
           f"train_data={world / 'caption_train.tsv'}", f"valid_data={world / 'caption_valid.tsv'}",
           'task_options={"image_size": 64, "tokenizer": "simple", "metrics": ["CIDEr"], "max_len": 6}',
           "criterion=scst", "scst_beam_size=2", "scst_max_len=6", "engine=deepspeed", "zero_stage=3",
           "precision=bf16", "micro_batch_size=2", "grad_accum=2", "max_steps=2", "save_every=2", "log_every=1",
           "valid_max_examples=2", f"deepspeed_config={user}", f"output_dir={out}", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=environment())
    assert proc.returncode == 0, proc.stderr[-6000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2] and all("scst_cider" in r for r in train)
    assert [r["valid"].keys() for r in records if "valid" in r] == [{"CIDEr"}]
    final = out / "checkpoints" / "step_00000002"
    model = ofa.load_checkpoint(final)
    start = ofa.load_checkpoint(checkpoint)
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v.float(), start.state_dict()[k].float())]
    assert any(k.startswith("decoder.layers.") for k in moved)
    assert "shm_comm_op built" not in proc.stdout + proc.stderr


def test_plain_copy_keeps_weights_buffers_and_ties() -> None:
    """What ZeRO-3's full_model() hands to validation, saving and SCST generation: a hook-free copy built from a
    weightless skeleton, with every weight and buffer (also the non-persistent ones) and the tied embedding."""
    from ofa.trainer.zero import _meta_skeleton, _plain_copy, _tied_parameters

    torch.manual_seed(0)
    model = ofa.build_model("ofa-test").train()
    with torch.no_grad():
        model.decoder.image_position_idx.add_(1)  # a non-persistent buffer: not in state_dict()
    tied = _tied_parameters(model)
    assert ["decoder.output_projection", "weight"] in [list(x) for group in tied for x in group]
    skeleton = _meta_skeleton(model)
    assert all(t.is_meta for t in [*skeleton.parameters(), *skeleton.buffers()])
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert skeleton.decoder.output_projection.weight is skeleton.encoder.embed_tokens.weight
    plain = _plain_copy(skeleton, tied, model)
    assert plain.training and plain is not model
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in plain.state_dict().items())
    assert torch.equal(plain.decoder.image_position_idx, model.decoder.image_position_idx)
    assert plain.decoder.output_projection.weight is plain.encoder.embed_tokens.weight
    assert plain.decoder.output_projection.weight is not model.decoder.output_projection.weight
    assert next(skeleton.parameters()).is_meta  # the skeleton stays weightless for the next copy
