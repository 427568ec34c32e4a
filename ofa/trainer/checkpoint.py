"""Training checkpoints: atomic saves, keep-last-N, keep-best, and the pointer to the latest one.

A checkpoint is a directory ``step_00000123/`` holding the model in our ``save_pretrained`` format plus the
tokenizer (so ``ofa predict --checkpoint`` loads it directly), the engine state (optimizer, scheduler or
DeepSpeed's files), ``trainer_state.pt`` (step, data positions, EMA, counters) and one ``rng_rank{r}.pt`` per
process; with EMA on, ``ema/`` holds the averaged weights and the tokenizer (what validation scored). It is
written under a temporary name, every file synced to disk, a ``manifest.json`` (each file's size and sha256) written
last, then renamed into place and ``latest`` pointed at it; a crash never leaves a half-written checkpoint behind a
valid name. Resuming verifies the manifest and falls back to the newest checkpoint that verifies, saying so.

Everything the trainer writes loads with ``torch.load(weights_only=True)``: RNG states are stored as tensors and
plain containers, so a tampered run directory cannot run code on resume.
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
from ofa.serialization import check_torch_file, fsync_path, verify_manifest, write_manifest

__all__ = ["CheckpointManager", "capture_rng", "restore_rng", "refuse_pickled_objects", "ENGINE_SAFE_GLOBALS"]

logger = logging.getLogger(__name__)


def capture_rng() -> dict[str, Any]:
    """torch, numpy, Python (and CUDA) generator states as tensors and plain containers (``weights_only``-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Plain-data classes DeepSpeed pickles into its own checkpoint files (loss-scaler state, fragment addresses, the
# ZeRO stage enum). Rebuilding them calls nothing but their constructors, so a file whose only globals are these
# and torch's weights-only allowlist cannot run code when DeepSpeed unpickles it.
ENGINE_SAFE_GLOBALS = frozenset({
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
})


def refuse_pickled_objects(directory: Path) -> None:
    """Raise unless every torch file under ``directory`` is intact (zip CRCs) and holds only tensors, plain
    containers and :data:`ENGINE_SAFE_GLOBALS` (engines such as DeepSpeed read their files with full unpickling,
    so this check runs before any of them is opened)."""
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in (".pt", ".pth", ".bin")):
        check_torch_file(path, allowed=ENGINE_SAFE_GLOBALS.__contains__,
                         opt_in="trust_pickle=True (ofa-train --trust-pickle) when resuming, only if you trust this "
                                "run directory,")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


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
            write_manifest(tmp)  # syncs every file, then the manifest, written last
            self._discard(final)  # a step saved again after a resume
            os.replace(tmp, final)
            fsync_path(self.root)
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
            self._discard(best)
            os.replace(tmp, best)
        self.barrier()
        return True

    def _prune(self) -> None:
        steps = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in steps[: max(len(steps) - self.keep_last, 0)]:
            self._discard(old)
        for leftover in self.root.glob(".trash-*"):  # from a run killed while deleting
            shutil.rmtree(leftover, ignore_errors=True)

    def _discard(self, path: Path) -> None:
        """Delete a checkpoint directory without ever leaving half of it under its own name: it is renamed away
        first (atomic), so a kill mid-delete leaves a ``.trash-*`` directory that no lookup considers."""
        if not path.exists():
            return
        trash = path.with_name(f".trash-{path.name}")
        if trash.exists():
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(path, trash)
        fsync_path(path.parent)
        shutil.rmtree(trash, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest checkpoint whose manifest verifies (``latest`` first, then the ``step_*`` directories newest
        first); a damaged one is skipped with a warning naming its bad file. None when there is none."""
        candidates: list[Path] = []
        pointer = self.root / "latest"
        if pointer.is_file():
            candidates.append(self.root / pointer.read_text().strip())
        candidates += sorted((p for p in self.root.glob("step_*") if p.is_dir()), reverse=True)
        seen: set[Path] = set()
        for path in candidates:
            if path in seen or not (path / "trainer_state.pt").is_file():
                continue
            seen.add(path)
            try:
                verify_manifest(path, required=False)  # checkpoints written before manifests are taken as they are
            except CheckpointError as exc:
                logger.warning("skipping a damaged checkpoint: %s; falling back to an earlier one", exc)
                continue
            return path
        return None

    @staticmethod
    def resolve(path: str | Path) -> Path:
        """A checkpoint directory (verified), or a run/checkpoints directory whose newest intact checkpoint is
        used."""
        path = Path(path)
        if (path / "trainer_state.pt").is_file():
            verify_manifest(path, required=False)
            return path
        for root in (path / "checkpoints", path):
            latest = CheckpointManager(root).latest()
            if latest is not None:
                return latest
        raise CheckpointError(f"no checkpoint to resume from in {str(path)!r} (none there, or none that verifies)")
