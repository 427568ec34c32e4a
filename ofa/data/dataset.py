"""Datasets that read rows, let a task parse and encode them, and survive a bounded number of bad rows.

* :class:`TaskDataset`: map-style (random access; use with any sampler).
* :class:`ShardedTaskIterable`: iterable that reads only this process's contiguous shard of rows, in file
  order, as OFA's reader does (spec §5.0).

Bad-row policy (both classes): any exception while reading, parsing or encoding a row (undecodable image,
wrong column count, bad box, empty text, bad JSON, ...) marks the row bad. The row is counted, logged as a
warning naming ``file:line`` and the reason, and skipped: :class:`TaskDataset` returns the next good row
instead (wrapping around at the end), so every index still yields a :class:`~ofa.tasks.base.Sample` and batch
sizes stay fixed; :class:`ShardedTaskIterable` just moves on. Once more than ``max_bad_rows`` rows were bad the
dataset raises :class:`~ofa.errors.DataError` with the count, the limit and the last reason.

Counting is per process: each DataLoader worker holds its own copy of the dataset, so ``bad_rows`` in the
main process counts only the rows read there (``num_workers=0``), and the limit applies to each worker
separately. A row found bad once is remembered by that process and skipped without a second warning.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Iterator, Protocol, cast

import torch.utils.data

from ofa.data.jsonl import ImageFolderRecords, JSONLFile
from ofa.data.lines import shard_for_worker, shard_range
from ofa.data.tsv import TSVFile
from ofa.errors import DataError
from ofa.records import EncodesGroups, Example, ParsesRecords, ParsesRows, Sample

if TYPE_CHECKING:  # pragma: no cover
    from ofa.tokenization import OFATokenizer


class _EncodesExamples(Protocol):
    """What a dataset needs from a task besides a parser (:class:`~ofa.tasks.base.Task` has it)."""

    name: str

    def encode(self, example: Example, tok: Any, training: bool = False) -> Sample: ...

__all__ = ["TaskDataset", "ShardedTaskIterable"]

logger = logging.getLogger(__name__)


class _RowEncoding:
    """What both datasets share: source checks, row -> Example -> Sample, and the bad-row policy."""

    source: TSVFile | JSONLFile | ImageFolderRecords
    task: _EncodesExamples
    tokenizer: OFATokenizer
    training: bool
    max_bad_rows: int
    image_root: str | os.PathLike[str] | None
    bad_rows: int
    last_bad_reason: str | None

    def _setup(
        self,
        source: TSVFile | JSONLFile | ImageFolderRecords,
        task: _EncodesExamples,
        tokenizer: OFATokenizer,
        training: bool,
        max_bad_rows: int,
        image_root: str | os.PathLike[str] | None,
    ) -> None:
        if isinstance(source, TSVFile):
            method = "parse_row"
            if image_root is not None:
                raise DataError("image_root is only used with JSONLFile sources; TSV rows hold their images")
        elif isinstance(source, JSONLFile):
            method = "parse_record"
        elif isinstance(source, ImageFolderRecords):
            method = "parse_record"
            if image_root is not None:
                raise DataError(
                    "image_root must be None with ImageFolderRecords, which already resolves images against "
                    f"its root {str(source.root)!r}"
                )
        else:
            raise DataError(
                f"source must be a TSVFile, JSONLFile or ImageFolderRecords, got {type(source).__name__}"
            )
        task_name = getattr(task, "name", type(task).__name__)  # only for the message: a broken task has none
        if not isinstance(task, ParsesRows if method == "parse_row" else ParsesRecords):
            raise DataError(f"task {task_name!r} has no {method}(); it is needed to read {source!r}")
        if not callable(getattr(task, "encode", None)):
            raise DataError(f"task {task_name!r} has no encode()")
        if isinstance(max_bad_rows, bool) or not isinstance(max_bad_rows, int) or max_bad_rows < 0:
            raise DataError(f"max_bad_rows must be an int >= 0, got {max_bad_rows!r}")
        self.source = source
        self.task = task
        self.tokenizer = tokenizer
        self.training = bool(training)
        self.max_bad_rows = max_bad_rows
        self.image_root = image_root
        self._parse_method = method
        self.bad_rows = 0
        self.last_bad_reason: str | None = None
        self._known_bad: set[int] = set()

    def _encode_row(self, index: int) -> Sample | list[Sample] | None:
        """The sample of row ``index``, or None when the row is bad (counted, logged; raises past the limit)."""
        try:
            source = self.source
            if isinstance(source, TSVFile):
                example = cast(ParsesRows, self.task).parse_row(source[index])
            else:
                example = cast(ParsesRecords, self.task).parse_record(source[index], self.image_root)
            if isinstance(self.task, EncodesGroups):
                return self.task.encode_group(example, self.tokenizer, self.training, index)
            return self.task.encode(example, self.tokenizer, training=self.training)
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure on a row makes it a bad row (bounded, logged)
            self._record_bad(index, err)
            return None

    def _record_bad(self, index: int, err: Exception) -> None:
        self.bad_rows += 1
        self._known_bad.add(index)
        where = f"{self.source.path}:{self.source.row_number(index)}"
        message = str(err)
        if message.startswith(f"{where}: "):  # readers already name the row; say it once
            message = message[len(where) + 2 :]
        reason = f"{type(err).__name__}: {message}"
        self.last_bad_reason = f"{where}: {reason}"
        logger.warning(
            "skipping bad row %s (%s); %d bad rows so far in this process, max_bad_rows=%d",
            where, reason, self.bad_rows, self.max_bad_rows,
        )
        if self.bad_rows > self.max_bad_rows:
            raise DataError(
                f"{self.bad_rows} bad rows in {self.source.path}, more than max_bad_rows={self.max_bad_rows}; "
                f"last one: {self.last_bad_reason}"
            ) from err


class TaskDataset(_RowEncoding, torch.utils.data.Dataset):
    """Map-style dataset: row ``i`` of a TSV/JSONL source, parsed and encoded by a task.

    Args:
        source: A :class:`~ofa.data.tsv.TSVFile` (rows go to ``task.parse_row(fields)``), a
            :class:`~ofa.data.jsonl.JSONLFile` or :class:`~ofa.data.jsonl.ImageFolderRecords` (records go to
            ``task.parse_record(record, image_root)``).
        task: The task; ``task.encode(example, tokenizer, training=training)`` makes the sample.
        tokenizer: The tokenizer.
        training: Build training targets.
        max_bad_rows: How many bad rows (per process) are skipped before :class:`~ofa.errors.DataError`.
        image_root: Folder that relative image paths of JSONL records are resolved against.

    Attributes:
        bad_rows: Bad rows seen by this process.
        last_bad_reason: ``"file:line: reason"`` of the latest bad row, or None.

    Raises:
        DataError: If the source type is not accepted, the task lacks the parse method the source needs,
            ``max_bad_rows`` is negative, or ``image_root`` is given for a source that does not use it.
    """

    def __init__(
        self,
        source: TSVFile | JSONLFile | ImageFolderRecords,
        task: _EncodesExamples,
        tokenizer: OFATokenizer,
        training: bool = False,
        max_bad_rows: int = 100,
        image_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self._setup(source, task, tokenizer, training, max_bad_rows, image_root)

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        return (f"TaskDataset({self.source!r}, task={getattr(self.task, 'name', '?')!r}, "
                f"training={self.training}, bad_rows={self.bad_rows})")

    def __getitem__(self, index: int) -> Sample | list[Sample]:
        """The sample of row ``index``, or of the next good row after it (wrapping around) if it is bad.

        Raises:
            IndexError: If ``index`` is out of range.
            DataError: When the bad-row limit is passed, or when every row is bad.
        """
        num_rows = len(self.source)
        start = range(num_rows)[index]  # IndexError out of range; negative indices count from the end
        for step in range(num_rows):
            row = (start + step) % num_rows
            if row in self._known_bad:
                continue
            sample = self._encode_row(row)
            if sample is not None:
                return sample
        raise DataError(f"no good row in {self.source.path}: all {num_rows} rows are bad; "
                        f"last one: {self.last_bad_reason}")


class ShardedTaskIterable(_RowEncoding, torch.utils.data.IterableDataset):
    """Iterable dataset over this process's contiguous shard of rows, in file order (no shuffling).

    The shard is :func:`~ofa.data.lines.shard_range` for ``shard_for_worker(rank, world_size)``: each
    (rank, DataLoader worker) pair reads a disjoint contiguous block, and together they read every row once.
    Bad rows are skipped (not replaced) under the policy in the module docstring.

    Args:
        source: See :class:`TaskDataset`.
        task: The task.
        tokenizer: The tokenizer.
        training: Build training targets.
        max_bad_rows: How many bad rows (per process) are skipped before :class:`~ofa.errors.DataError`.
        image_root: Folder that relative image paths of JSONL records are resolved against.
        rank: This process's distributed rank.
        world_size: Number of distributed processes.

    Raises:
        DataError: As :class:`TaskDataset`, or if ``rank``/``world_size`` are out of range.
    """

    def __init__(
        self,
        source: TSVFile | JSONLFile | ImageFolderRecords,
        task: _EncodesExamples,
        tokenizer: OFATokenizer,
        training: bool = False,
        max_bad_rows: int = 100,
        image_root: str | os.PathLike[str] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self._setup(source, task, tokenizer, training, max_bad_rows, image_root)
        shard_for_worker(rank, world_size)  # validates rank/world_size now, not later in a worker
        self.rank = rank
        self.world_size = world_size

    def __repr__(self) -> str:
        return (f"ShardedTaskIterable({self.source!r}, task={getattr(self.task, 'name', '?')!r}, "
                f"rank={self.rank}, world_size={self.world_size})")

    def shard(self) -> range:
        """The rows this process (rank and current DataLoader worker) reads."""
        shard_id, num_shards = shard_for_worker(self.rank, self.world_size)
        return shard_range(len(self.source), shard_id, num_shards)

    def __iter__(self) -> Iterator[Sample | list[Sample]]:
        for row in self.shard():
            if row in self._known_bad:
                continue
            sample = self._encode_row(row)
            if sample is not None:
                yield sample
