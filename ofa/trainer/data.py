"""Deterministic, resumable training streams: every rank reads its part of the same global batches.

A stream shuffles its dataset once per epoch with ``seed + epoch``. Each draw takes the next
``micro_batch_size * world_size`` indices of that order, and rank ``r`` keeps the ``r``-th slice, so one process
with ``micro_batch_size * world_size`` per draw sees exactly the same global batches as ``world_size``
processes. The position (epoch, samples consumed) is saved in checkpoints and restored exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ofa.data.collate import Batch, PartedBatch, collate_parts
from ofa.errors import DataError

__all__ = ["StreamState", "TaskStream", "pick_task"]


@dataclass
class StreamState:
    epoch: int = 0
    consumed: int = 0


class TaskStream:
    """Micro-batches of one task's training data for this rank.

    Args:
        dataset: a map-style dataset of :class:`~ofa.tasks.base.Sample` (e.g. :class:`~ofa.data.dataset.TaskDataset`).
        micro_batch_size: samples per rank per micro-step.
        rank / world_size: this process's place.
        seed: shuffling seed.
        pad_id: collate padding.
        num_workers: DataLoader workers for encoding samples.
    """

    def __init__(self, dataset: Any, micro_batch_size: int, rank: int, world_size: int, seed: int, pad_id: int,
                 num_workers: int = 0) -> None:
        self.dataset = dataset
        self.micro = micro_batch_size
        self.rank = rank
        self.world = world_size
        self.seed = seed
        self.pad_id = pad_id
        self.num_workers = num_workers
        self.state = StreamState()
        self.chunk = micro_batch_size * world_size
        if len(dataset) < self.chunk:
            raise DataError(f"the dataset has {len(dataset)} samples, fewer than one draw of "
                            f"micro_batch_size x world_size = {self.chunk}")
        self._iterator: Iterator[Batch | PartedBatch] | None = None

    @property
    def draws_per_epoch(self) -> int:
        return len(self.dataset) // self.chunk

    def _order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(len(self.dataset), generator=g)

    def _batches(self) -> Iterator[Batch | PartedBatch]:
        while True:
            order = self._order(self.state.epoch)
            starts = range(self.state.consumed, self.draws_per_epoch * self.chunk, self.chunk)
            index_lists = _Draws(order, starts, self.rank * self.micro, self.micro)
            # A private generator: creating the loader must not draw from the global RNG, or a resumed run
            # (which creates it at another point) would see different dropout masks.
            generator = torch.Generator().manual_seed(self.seed + self.state.epoch)
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=index_lists, num_workers=self.num_workers, generator=generator,
                collate_fn=lambda samples: collate_parts(samples, pad_id=self.pad_id))
            for batch in loader:
                yield batch
            self.state = StreamState(epoch=self.state.epoch + 1, consumed=0)

    def next(self) -> Batch | PartedBatch:
        """The next micro-batch of this rank (advances the position)."""
        if self._iterator is None:
            self._iterator = self._batches()
        batch = next(self._iterator)
        # The position counts whole draws (all ranks), so it is the same number on every rank.
        self.state.consumed += self.chunk  # the generator rolls over to the next epoch on the following draw
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.state.epoch, "consumed": self.state.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.state = StreamState(epoch=int(state["epoch"]), consumed=int(state["consumed"]))
        if self.state.consumed >= self.draws_per_epoch * self.chunk:
            self.state = StreamState(epoch=self.state.epoch + 1, consumed=0)
        self._iterator = None


class _Draws:
    """This rank's index lists of an epoch, made one draw at a time (an epoch of a many-GB file has millions of
    rows: only the order tensor, 8 bytes per row, is held, not a list of Python ints)."""

    def __init__(self, order: torch.Tensor, starts: range, offset: int, micro: int) -> None:
        self.order, self.starts, self.offset, self.micro = order, starts, offset, micro

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self) -> Iterator[list[int]]:
        for s in self.starts:
            yield self.order[s + self.offset: s + self.offset + self.micro].tolist()


def pick_task(ratios: list[float], seed: int, step: int, micro: int) -> int:
    """Which task feeds micro-step ``micro`` of ``step``: drawn by ratio, the same on every rank and on resume."""
    if len(ratios) == 1:
        return 0
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + micro)
    weights = torch.tensor(ratios, dtype=torch.float64)
    return int(torch.multinomial(weights / weights.sum(), 1, generator=g))
