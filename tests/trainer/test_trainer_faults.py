"""Checkpoint fault tests (#14): a run saving every step is SIGKILLed several times, at the moment a save has
begun and at random moments, and resumed each time. After every kill ``latest`` names a checkpoint that verifies
and loads; at the end, weights, EMA and every step's loss equal an uninterrupted run's. Then the newest checkpoint
is truncated or has a byte flipped, and resuming falls back to the one before it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ofa.errors import CheckpointError
from ofa.serialization import read_torch_file, read_weights, verify_manifest
from ofa.trainer.checkpoint import CheckpointManager

STEPS = 12
SEED = 14  # the kill moments are drawn from random.Random(SEED): the same moments on every run


def command(world: Path, tokenizer_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ofa.trainer.cli", "task=caption", f"train_data={world / 'caption_train.tsv'}",
            f"tokenizer={tokenizer_dir}", "model=ofa-test", 'task_options={"image_size": 64}', "micro_batch_size=4",
            "grad_accum=2", f"max_steps={STEPS}", "save_every=1", "keep_last=2", "log_every=1", "lr=1e-3",
            "warmup_steps=2", 'model_overrides={"dropout": 0.1}', "drop_path_rate=0.1", "ema_decay=0.9",
            f"output_dir={out}", "--no-progress", *extra]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _saving(root: Path) -> bool:
    """A save is under way: its temporary directory exists (files are still being written into it)."""
    return any(root.glob(".tmp-step_*"))


def _pointer(root: Path) -> str | None:
    pointer = root / "latest"
    try:
        return pointer.read_text().strip() if pointer.is_file() else None
    except OSError:
        return None


def run_until(cmd: list[str], root: Path, kill_when: Any, timeout: float = 600) -> tuple[int, float]:
    """Start ``cmd``; SIGKILL it as soon as ``kill_when(elapsed)`` is true. Returns (exit code, seconds)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment())
    start = time.monotonic()
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            assert elapsed < timeout, "the run took too long"
            if kill_when(elapsed):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.wait()
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode in (0, -signal.SIGKILL), err[-4000:]
    return proc.returncode, time.monotonic() - start


def check_latest_loads(root: Path) -> int | None:
    """``latest`` (when written) names a complete checkpoint whose files load weights-only; returns its step."""
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    directory = root / pointer.read_text().strip()
    assert directory.is_dir(), f"latest names {directory.name}, which does not exist"
    assert verify_manifest(directory, required=True)
    weights = read_weights(directory)
    assert weights and all(isinstance(v, torch.Tensor) for v in weights.values())
    state = read_torch_file(directory / "trainer_state.pt")
    assert CheckpointManager.resolve(root.parent) == directory
    return int(state["step"])


def final_state(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[int, float]]:
    final = out / "checkpoints" / f"step_{STEPS:08d}"
    weights = read_weights(final)
    state = read_torch_file(final / "trainer_state.pt")
    assert state["step"] == STEPS
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {int(r["step"]): float(r["loss"]) for r in records if "loss" in r}
    assert len(losses) == len([r for r in records if "loss" in r])  # lost steps' records dropped on resume
    return weights, state["ema"]["shadow"], losses


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


@pytest.mark.slow
def test_sigkills_during_training_and_saves_lose_nothing(world: Path, tokenizer_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    first_checkpoint: list[float] = []

    def note_first(elapsed: float) -> bool:
        if not first_checkpoint and (straight / "checkpoints" / "latest").is_file():
            first_checkpoint.append(elapsed)
        return False

    code, duration = run_until(command(world, tokenizer_dir, straight), straight / "checkpoints", note_first)
    assert code == 0 and first_checkpoint
    rng = random.Random(SEED)
    root = killed / "checkpoints"
    # Three kills the moment a save has begun (its files half written), two at random moments of a run.
    plan = ["save", "random", "save", "random", "save"]
    landed = {"mid_save": 0, "elsewhere": 0}
    steps_seen: list[int | None] = []
    for how in plan:
        resume = CheckpointManager(root).latest() is not None
        cmd = command(world, tokenizer_dir, killed, *(["--resume", str(killed)] if resume else
                                                        (["--overwrite"] if killed.exists() else [])))
        at_launch = _pointer(root)
        if how == "save":  # once this process has published a checkpoint, the moment its next save begins
            kill_when = lambda elapsed: _pointer(root) != at_launch and _saving(root)  # noqa: E731
        else:  # a random moment after the first checkpoint would exist, before the run would end: a resumed run
            # has only the steps after its checkpoint left, so its span shrinks with them
            done = (steps_seen[-1] or 0) if steps_seen else 0
            span = (duration - first_checkpoint[0]) * (STEPS - done) / STEPS
            at = first_checkpoint[0] + rng.uniform(0.0, span)
            kill_when = lambda elapsed, at=at: elapsed >= at  # noqa: E731
        code, _ = run_until(cmd, root, kill_when)
        if code == 0:
            break  # the run finished before its kill moment
        landed["mid_save" if _saving(root) or any(root.glob(".trash-*")) else "elsewhere"] += 1
        steps_seen.append(check_latest_loads(root))
    kills = sum(landed.values())
    if CheckpointManager(root).latest() is not None:
        code, _ = run_until(command(world, tokenizer_dir, killed, "--resume", str(killed)), root, lambda e: False)
        assert code == 0
    with capsys.disabled():
        print(f"\n[faults] {kills} SIGKILLs: {landed}; latest step after each kill: {steps_seen}")
    assert kills >= 4 and landed["mid_save"] >= 1, landed
    assert check_latest_loads(root) == STEPS
    weights_a, ema_a, losses_a = final_state(straight)
    weights_b, ema_b, losses_b = final_state(killed)
    assert max_diff(weights_a, weights_b) <= 1e-6
    assert max_diff(ema_a, ema_b) <= 1e-6
    assert sorted(losses_b) == list(range(1, STEPS + 1))
    assert all(abs(losses_a[s] - losses_b[s]) <= 1e-6 for s in losses_a), (losses_a, losses_b)

    # The newest checkpoint damaged: truncated, or one byte flipped; resuming falls back to the one before it.
    newest, previous = root / f"step_{STEPS:08d}", root / f"step_{STEPS - 1:08d}"
    model = newest / "model.safetensors"
    intact = model.read_bytes()
    flipped = bytearray(intact)
    flipped[len(intact) // 2] ^= 0x01
    for damaged in (intact[: len(intact) // 3], bytes(flipped)):
        model.write_bytes(damaged)
        assert CheckpointManager.resolve(killed) == previous
        with pytest.raises(CheckpointError, match="model.safetensors"):
            verify_manifest(newest)
    model.write_bytes(intact)
    assert CheckpointManager.resolve(killed) == newest


def test_a_kill_while_deleting_leaves_nothing_half_deleted_under_a_checkpoint_name(tmp_path: Path) -> None:
    """Pruning renames a checkpoint away before deleting it: a leftover ``.trash-*`` is never a resume candidate
    and is swept by the next save."""
    manager = CheckpointManager(tmp_path, keep_last=1)

    def write(directory: Path) -> None:
        torch.save({"w": torch.ones(2)}, directory / "model.pt")

    manager.save(1, write, {"step": 1})
    # what a kill in the middle of deleting step 1 leaves: its trainer state but not the rest
    trash = tmp_path / ".trash-step_00000000"
    trash.mkdir()
    torch.save({"step": 0}, trash / "trainer_state.pt")
    assert manager.latest() == tmp_path / "step_00000001"
    manager.save(2, write, {"step": 2})
    assert not trash.exists() and not (tmp_path / "step_00000001").exists()
    assert manager.latest() == tmp_path / "step_00000002"
