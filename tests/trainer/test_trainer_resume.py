"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed with ``--resume`` ends with the same
weights (and EMA) as the uninterrupted run, with dropout, drop-path and EMA on: TorchEngine and DeepSpeed ZeRO-2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ofa.serialization import read_weights

STEPS = 8


def command(world: Path, tokenizer_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ofa.trainer.cli", "task=caption", f"train_data={world / 'caption_train.tsv'}",
            f"tokenizer={tokenizer_dir}", "model=ofa-test", 'task_options={"image_size": 64}', "micro_batch_size=4",
            "grad_accum=2", f"max_steps={STEPS}", "save_every=2", "keep_last=3", "log_every=1", "lr=1e-3",
            "warmup_steps=2", 'model_overrides={"dropout": 0.1}', "drop_path_rate=0.1", "ema_decay=0.9",
            f"output_dir={out}", "--no-progress", *extra]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=environment())
    assert proc.returncode == 0, proc.stderr[-4000:]


def kill_after_first_checkpoint(cmd: list[str], out: Path) -> None:
    """Start ``cmd``, wait until a checkpoint is complete, then SIGKILL it (mid-run, not at the end)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment())
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + 600
    try:
        while not latest.is_file():
            assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-4000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 600 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "checkpoints" / f"step_{STEPS:08d}").exists()  # killed before the end


def load_final(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, float]]:
    final = out / "checkpoints" / f"step_{STEPS:08d}"
    weights = read_weights(final)
    state = torch.load(final / "trainer_state.pt", weights_only=False)
    assert state["step"] == STEPS
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert len(losses) == len([r for r in records if "loss" in r])  # the resume dropped the lost steps' records
    return weights, state["ema"]["shadow"], losses


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


def check_resume(world: Path, tokenizer_dir: Path, tmp_path: Path, *extra: str) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(command(world, tokenizer_dir, straight, *extra))
    kill_after_first_checkpoint(command(world, tokenizer_dir, killed, *extra), killed)
    resumed_from = (killed / "checkpoints" / "latest").read_text().strip()
    run(command(world, tokenizer_dir, killed, *extra, "--resume", str(killed)))
    weights_a, ema_a, losses_a = load_final(straight)
    weights_b, ema_b, losses_b = load_final(killed)
    assert max_diff(weights_a, weights_b) <= 1e-6, resumed_from
    assert max_diff(ema_a, ema_b) <= 1e-6
    assert sorted(losses_b) == list(range(1, STEPS + 1))
    assert all(abs(losses_a[s] - losses_b[s]) <= 1e-6 for s in losses_a), (losses_a, losses_b)
    # the interrupted run really trained on: its final weights are not the checkpoint it resumed from
    start = read_weights(killed / "checkpoints" / f"step_{STEPS - 2:08d}")
    assert max_diff(start, weights_b) > 1e-4


@pytest.mark.slow
def test_kill_and_resume_torch_engine(world: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    check_resume(world, tokenizer_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.deepspeed
def test_kill_and_resume_deepspeed_zero2(world: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    check_resume(world, tokenizer_dir, tmp_path, "engine=deepspeed", "zero_stage=2")
