"""Training checkpoints: atomic saves, keep-last-N, keep-best, and the pointer to the latest one.

A checkpoint is a directory ``step_00000123/`` holding the model in our ``save_pretrained`` format plus the
tokenizer (so ``ofa predict --checkpoint`` loads it directly), the engine state (optimizer, scheduler or
DeepSpeed's files), ``trainer_state.pt`` (step, data positions, EMA, counters) and one ``rng_rank{r}.pt`` per
process; with EMA on, ``ema/`` holds the averaged weights and the tokenizer (what validation scored). It is
written under a temporary name and renamed into place, so a crash never leaves a half-written checkpoint behind
a valid name.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ofa.errors import CheckpointError

__all__ = ["CheckpointManager", "capture_rng", "restore_rng"]

logger = logging.getLogger(__name__)


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class CheckpointManager:
    """Saves and finds checkpoints under ``root`` (``output_dir/checkpoints``).

    Args:
        root: the directory.
        keep_last: how many step checkpoints to keep (the best one is kept separately as ``best/``).
        best_metric / best_mode: the validation metric that selects ``best/`` and whether higher is better.
        rank / world_size: this process; only rank 0 writes shared files, every rank writes its RNG state.
        barrier: synchronises the ranks around the rename.
    """

    def __init__(self, root: Path, keep_last: int = 2, best_metric: str | None = None, best_mode: str = "max",
                 rank: int = 0, world_size: int = 1, barrier: Callable[[], None] = lambda: None) -> None:
        self.root = Path(root)
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.rank = rank
        self.world_size = world_size
        self.barrier = barrier
        self.best_value: float | None = None

    def _name(self, step: int) -> str:
        return f"step_{step:08d}"

    def save(self, step: int, write: Callable[[Path], None], trainer_state: dict[str, Any]) -> Path:
        """Write a checkpoint: ``write(tmp_dir)`` saves model/engine/tokenizer (called on every rank; engines
        decide who writes what), then trainer state and RNG, then the atomic rename and pruning."""
        final = self.root / self._name(step)
        tmp = self.root / f".tmp-{self._name(step)}"
        if self.rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.barrier()
        write(tmp)
        torch.save(capture_rng(), tmp / f"rng_rank{self.rank}.pt")
        if self.rank == 0:
            torch.save(trainer_state, tmp / "trainer_state.pt")
        self.barrier()
        if self.rank == 0:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _write_atomic(self.root / "latest", final.name)
            self._prune()
        self.barrier()
        return final

    def update_best(self, step: int, metrics: dict[str, float]) -> bool:
        """Copy checkpoint ``step`` to ``best/`` when ``metrics[best_metric]`` improves; returns whether it did."""
        if self.best_metric is None or self.best_metric not in metrics:
            if self.best_metric is not None:
                logger.warning("best_metric %r is not among the validation metrics %s", self.best_metric,
                               sorted(metrics))
            return False
        value = float(metrics[self.best_metric])
        better = self.best_value is None or (value > self.best_value if self.best_mode == "max"
                                             else value < self.best_value)
        if not better:
            return False
        self.best_value = value
        if self.rank == 0:
            source = self.root / self._name(step)
            tmp = self.root / ".tmp-best"
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(source, tmp)
            _write_atomic(tmp / "best.json", json.dumps({"step": step, self.best_metric: value}))
            best = self.root / "best"
            if best.exists():
                shutil.rmtree(best)
            os.replace(tmp, best)
        self.barrier()
        return True

    def _prune(self) -> None:
        steps = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in steps[: max(len(steps) - self.keep_last, 0)]:
            shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if pointer.is_file():
            path = self.root / pointer.read_text().strip()
            if (path / "trainer_state.pt").is_file():
                return path
        steps = sorted(p for p in self.root.glob("step_*") if (p / "trainer_state.pt").is_file())
        return steps[-1] if steps else None

    @staticmethod
    def resolve(path: str | Path) -> Path:
        """A checkpoint directory, or a run/checkpoints directory whose latest checkpoint is used."""
        path = Path(path)
        if (path / "trainer_state.pt").is_file():
            return path
        for root in (path / "checkpoints", path):
            latest = CheckpointManager(root).latest()
            if latest is not None:
                return latest
        raise CheckpointError(f"no checkpoint to resume from in {str(path)!r}")
