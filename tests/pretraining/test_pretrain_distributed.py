"""Pretraining under the launchers: 2 CPU processes (gloo) under torchrun with the torch engine and under the
``deepspeed`` launcher with ZeRO-2, each for 2 steps on the world's pretraining files.

Unlike fine-tuning, these runs are not compared with a 1-process run: OFA normalises each micro-batch's loss by
its own token counts (``loss_v1/ntok_v1 + loss_v2/ntok_v2``), so 2 x 2 samples and 1 x 4 samples are different
objectives by design.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

STEPS = 2


def _args(files: dict[str, Path], options: dict[str, Any], tok_dir: Path, out: Path) -> list[str]:
    return ["task=pretrain", f"train_data={files['vision_language']}", f"task_options={json.dumps(options)}",
            f"tokenizer={tok_dir}", "model=ofa-test", 'model_overrides={"code_image_size": 64}',
            "micro_batch_size=2", "grad_accum=2", f"max_steps={STEPS}", f"save_every={STEPS}", "log_every=1",
            "lr=1e-3", "warmup_steps=0", "clip_norm=5.0", 'criterion={"name": "pretrain", "sample_patch_num": 2}',
            f"output_dir={out}", "--no-progress"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout[-3000:] + "\n" + proc.stderr[-6000:])
    return proc


def _check(out: Path) -> None:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))  # rank 0 writes alone
    assert all(r["loss"] == r["loss"] and r["loss"] > 0 for r in train)
    checkpoint = out / "checkpoints" / f"step_{STEPS:08d}"
    assert sorted(p.name for p in checkpoint.glob("rng_rank*.pt")) == ["rng_rank0.pt", "rng_rank1.pt"]


@pytest.fixture
def tok_dir(tok: Any, tmp_path: Path) -> Path:
    return tok.save_pretrained(tmp_path / "tok")


@pytest.mark.slow
def test_pretraining_under_torchrun(pretrain_files: dict[str, Path], task_options: dict[str, Any], tok_dir: Path,
                                    tmp_path: Path, free_port: Callable[[], int]) -> None:
    out = tmp_path / "run"
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
          "-m", "ofa.trainer.cli", *_args(pretrain_files, task_options, tok_dir, out)])
    _check(out)


@pytest.mark.slow
@pytest.mark.deepspeed
def test_pretraining_under_the_deepspeed_launcher(pretrain_files: dict[str, Path], task_options: dict[str, Any],
                                                  tok_dir: Path, tmp_path: Path,
                                                  free_port: Callable[[], int]) -> None:
    pytest.importorskip("deepspeed")
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("the deepspeed launcher script is not installed")
    out = tmp_path / "run"
    _run([launcher, "--num_gpus", "2", "--master_port", str(free_port()), "--module", "ofa.trainer.cli",
          *_args(pretrain_files, task_options, tok_dir, out), 'engine={"name": "deepspeed", "zero_stage": 2}'])
    _check(out)
    assert (out / "checkpoints" / f"step_{STEPS:08d}" / "deepspeed").is_dir()
