"""CheckpointManager: atomic saves, keep-last pruning, the latest pointer, keep-best, and resolving a run dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ofa.errors import CheckpointError
from ofa.trainer.checkpoint import CheckpointManager, capture_rng, restore_rng


def writer(tag: str = "w"):
    def write(directory: Path) -> None:
        (directory / "model.pt").write_text(f"{tag}:{directory.name}")

    return write


def step_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("step_"))


def test_save_layout(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "ckpt")
    path = manager.save(3, writer(), {"step": 3})
    assert path == tmp_path / "ckpt" / "step_00000003"
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.pt", "rng_rank0.pt", "trainer_state.pt"]
    assert torch.load(path / "trainer_state.pt", weights_only=False) == {"step": 3}
    assert (tmp_path / "ckpt" / "latest").read_text() == "step_00000003"
    assert not list((tmp_path / "ckpt").glob(".tmp-*"))


def test_crash_inside_write_leaves_no_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    manager = CheckpointManager(root)
    manager.save(1, writer(), {"step": 1})

    def crash(directory: Path) -> None:
        (directory / "model.pt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        manager.save(2, crash, {"step": 2})
    assert step_dirs(root) == ["step_00000001"]  # no step_00000002, not even a partial one
    assert [p.name for p in root.glob(".tmp-*")] == [".tmp-step_00000002"]
    assert manager.latest() == root / "step_00000001" and (root / "latest").read_text() == "step_00000001"
    # the next save of that step replaces the leftover
    manager.save(2, writer("again"), {"step": 2})
    assert step_dirs(root) == ["step_00000001", "step_00000002"]
    assert (root / "step_00000002" / "model.pt").read_text() == "again:.tmp-step_00000002"
    assert not list(root.glob(".tmp-*"))


def test_keep_last(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (5, 10, 15, 20):
        manager.save(step, writer(), {"step": step})
    assert step_dirs(tmp_path) == ["step_00000015", "step_00000020"]
    assert manager.latest() == tmp_path / "step_00000020"
    one = CheckpointManager(tmp_path / "one", keep_last=1)
    for step in (1, 2, 100):
        one.save(step, writer(), {"step": step})
    assert step_dirs(tmp_path / "one") == ["step_00000100"]


def test_latest_pointer_and_fallback(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=5)
    assert manager.latest() is None
    for step in (1, 2, 3):
        manager.save(step, writer(), {"step": step})
    assert manager.latest() == tmp_path / "step_00000003"
    (tmp_path / "latest").write_text("step_00000002")
    assert manager.latest() == tmp_path / "step_00000002"  # the pointer wins
    (tmp_path / "latest").unlink()
    assert manager.latest() == tmp_path / "step_00000003"  # no pointer: the highest complete step
    (tmp_path / "step_00000003" / "trainer_state.pt").unlink()
    assert manager.latest() == tmp_path / "step_00000002"  # incomplete ones are skipped
    (tmp_path / "latest").write_text("step_00000003")
    assert manager.latest() == tmp_path / "step_00000002"


def test_update_best_max(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, best_metric="CIDEr", best_mode="max")
    for step, value, improved in ((1, 0.5, True), (2, 0.4, False), (3, 0.9, True), (4, 0.9, False)):
        manager.save(step, writer(), {"step": step})
        assert manager.update_best(step, {"CIDEr": value, "BLEU": 0.0}) is improved
    assert manager.best_value == 0.9
    import json

    assert json.loads((tmp_path / "best" / "best.json").read_text()) == {"step": 3, "CIDEr": 0.9}
    assert (tmp_path / "best" / "model.pt").read_text() == "w:.tmp-step_00000003"
    assert step_dirs(tmp_path) == ["step_00000004"]  # best/ survives the pruning of its step
    assert manager.latest() == tmp_path / "step_00000004"  # best/ is not a step checkpoint
    assert not list(tmp_path.glob(".tmp-*"))


def test_update_best_min(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=3, best_metric="loss", best_mode="min")
    results = []
    for step, value in ((1, 2.0), (2, 3.0), (3, 1.0)):
        manager.save(step, writer(), {"step": step})
        results.append(manager.update_best(step, {"loss": value}))
    assert results == [True, False, True] and manager.best_value == 1.0


def test_update_best_without_the_metric(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manager = CheckpointManager(tmp_path, best_metric="CIDEr")
    manager.save(1, writer(), {})
    assert manager.update_best(1, {"BLEU": 1.0}) is False
    assert "not among the validation metrics" in caplog.text
    assert CheckpointManager(tmp_path / "x").update_best(1, {"CIDEr": 1.0}) is False  # no best_metric
    assert not (tmp_path / "best").exists()


def test_resolve(tmp_path: Path) -> None:
    run = tmp_path / "run"
    manager = CheckpointManager(run / "checkpoints")
    manager.save(4, writer(), {"step": 4})
    manager.save(8, writer(), {"step": 8})
    assert CheckpointManager.resolve(run) == run / "checkpoints" / "step_00000008"  # a run directory
    assert CheckpointManager.resolve(run / "checkpoints") == run / "checkpoints" / "step_00000008"
    assert CheckpointManager.resolve(run / "checkpoints" / "step_00000004") == run / "checkpoints" / "step_00000004"
    assert CheckpointManager.resolve(str(run)) == run / "checkpoints" / "step_00000008"
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        CheckpointManager.resolve(tmp_path / "empty")


def test_rng_round_trip() -> None:
    import random

    import numpy as np

    state = capture_rng()
    a = (torch.rand(3), np.random.rand(), random.random())
    restore_rng(state)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_only_rank_0_writes_shared_files(tmp_path: Path) -> None:
    calls: list[str] = []
    (tmp_path / ".tmp-step_00000001").mkdir()  # as rank 0 would have made it
    rank1 = CheckpointManager(tmp_path, rank=1, world_size=2, barrier=lambda: calls.append("barrier"))
    rank1.save(1, writer(), {"step": 1})
    tmp = tmp_path / ".tmp-step_00000001"
    assert sorted(p.name for p in tmp.iterdir()) == ["model.pt", "rng_rank1.pt"]  # no trainer_state, no rename
    assert not (tmp_path / "latest").exists() and calls.count("barrier") == 3
