"""Evaluate a task on a data file: read examples (bad rows counted, logged, bounded), predict, score.

Under ``torchrun`` / the DeepSpeed launcher (a started ``torch.distributed`` process group), every rank predicts
one contiguous shard of the examples (:func:`shard_bounds`: sizes differ by at most one, none lost or doubled when
the world size does not divide the count), the predictions are gathered in input order, and rank 0 scores them: the
metrics of one process. ``ofa predict --data`` writes one JSONL file per rank and merges them in input order
(:func:`merge_prediction_shards`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence, cast

import torch.distributed as dist

from ofa.data.sources import data_format, open_source
from ofa.errors import DataError
from ofa.pipeline import Pipeline
from ofa.records import ParsesRecords, ParsesRows
from ofa.tasks.base import Example, Prediction, Task

__all__ = ["read_examples", "evaluate", "shard_bounds", "process_group", "predict_sharded", "shard_file_name",
           "write_prediction_shard", "merge_prediction_shards"]

logger = logging.getLogger(__name__)


def read_examples(path: str | Path, task: Task, *, fmt: str | None = None, image_root: str | Path | None = None,
                  max_bad_rows: int = 100, max_bad_fraction: float = 0.5, limit: int | None = None,
                  bad_rows: list[tuple[int, str]] | None = None) -> list[Example]:
    """Parse a TSV (OFA layout of ``task``) or JSONL file into examples.

    A row that cannot be parsed is logged with the file and line and skipped; more than ``max_bad_rows`` of
    them, or more than ``max_bad_fraction`` of the rows read, raise :class:`DataError` (a score over the few rows
    left would not be the file's).

    Args:
        bad_rows: if given, ``(line number, reason)`` of every skipped row is appended to it.
    """
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise DataError(f"max_bad_fraction ({max_bad_fraction!r}) must be in [0, 1]")
    path = Path(path)
    fmt = data_format(path, fmt)
    if not isinstance(task, ParsesRows if fmt == "tsv" else ParsesRecords):
        raise DataError(f"task {task.name!r} cannot read {fmt} files (it has no "
                        f"{'parse_row' if fmt == 'tsv' else 'parse_record'})")
    root = image_root if image_root is not None else path.parent
    examples: list[Example] = []
    bad = 0
    with open_source(path, fmt) as reader:
        for index in range(len(reader)):
            if limit is not None and len(examples) >= limit:
                break
            try:
                row = reader[index]
                if fmt == "tsv":
                    examples.append(cast(ParsesRows, task).parse_row(row))
                else:
                    examples.append(cast(ParsesRecords, task).parse_record(row, root))
            except Exception as exc:  # any malformed row
                bad += 1
                line = reader.row_number(index)
                reason = f"{type(exc).__name__}: {exc}"
                logger.warning("skipping bad row %s:%d (%s)", path, line, reason)
                if bad_rows is not None:
                    bad_rows.append((line, reason))
                if bad > max_bad_rows:
                    raise DataError(f"{bad} bad rows in {path} (limit {max_bad_rows}); last: {exc}") from exc
    if not examples:
        raise DataError(f"{path} yielded no usable examples ({bad} bad rows)")
    if bad > max_bad_fraction * (bad + len(examples)):
        raise DataError(f"{bad} of {bad + len(examples)} rows of {path} are bad, more than max_bad_fraction "
                        f"{max_bad_fraction:g}; fix the file or raise the limit (CLI --max-bad-fraction)")
    return examples


def shard_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, end)`` of rank ``rank``'s contiguous shard of ``count`` items: shards in rank order tile
    ``range(count)`` exactly, their sizes differing by at most one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    return count * rank // world_size, count * (rank + 1) // world_size


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the started ``torch.distributed`` process group, or ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def predict_sharded(runner: Pipeline, examples: Sequence[Example]) -> list[Prediction]:
    """Every rank of the started process group (all of them call this, with the same examples) predicts its
    shard; every rank returns all predictions, in input order."""
    rank, world = process_group()
    if world == 1:
        return runner.predict_examples(examples)
    start, end = shard_bounds(len(examples), rank, world)
    mine = runner.predict_examples(examples[start:end])
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, mine)
    predictions = [p for part in parts for p in part]
    if len(predictions) != len(examples):  # a rank read a different file: its shard bounds disagree with ours
        raise DataError(f"the {world} processes returned {len(predictions)} predictions for {len(examples)} examples;"
                        " every rank must read the same data")
    return predictions


def evaluate(task: Task, model: Any, tokenizer: Any, examples: list[Example], batch_size: int = 8,
             progress: bool | None = None, device: Any = None,
             distributed: bool = False) -> tuple[dict[str, float], list[Prediction]]:
    """Predict every example and score the predictions with the task's metric.

    Args:
        distributed: every rank of the started process group calls this with the same examples; each predicts
            its shard (on ``device``), and every rank returns the same metrics (computed once, on rank 0) and all
            predictions in input order. False (default): this process predicts everything, whatever the group
            (a trainer validating on rank 0 alone).
    """
    rank, world = process_group() if distributed else (0, 1)
    # Data is encoded exactly as training encodes it (literal <bin_K> in a data file stays a bin token).
    runner = Pipeline(task, model, tokenizer, batch_size=batch_size, progress=progress if rank == 0 else False,
                      literal_text=False, device=device)
    predictions = predict_sharded(runner, examples) if world > 1 else runner.predict_examples(examples)
    if world == 1:
        return task.score(predictions, examples), predictions
    box: list[Any] = [task.score(predictions, examples) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0], predictions


_SHARD_FILE = re.compile(r"predictions\.rank(\d{5})-of-(\d{5})\.jsonl")


def shard_file_name(rank: int, world_size: int) -> str:
    return f"predictions.rank{rank:05d}-of-{world_size:05d}.jsonl"


def write_prediction_shard(directory: str | Path, predictions: Sequence[Prediction], start: int, rank: int,
                           world_size: int) -> Path:
    """Write ``predictions`` (of examples ``start, start + 1, ...``) as JSON lines carrying their ``index``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / shard_file_name(rank, world_size)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for offset, prediction in enumerate(predictions):
            f.write(json.dumps({"index": start + offset, **prediction.to_dict()}, default=str) + "\n")
    os.replace(tmp, path)
    return path


def merge_prediction_shards(directory: str | Path, out: str | Path | None = None,
                            expected: int | None = None) -> Path:
    """Merge the ``predictions.rankRRRRR-of-WWWWW.jsonl`` files of one run into ``predictions.jsonl`` (or
    ``out``) in input order, checking that every index (``0 .. expected - 1`` when given) appears exactly once.

    Raises:
        DataError: shards of different world sizes, a missing shard, or an index missing or repeated.
    """
    directory = Path(directory)
    shards = [(int(m.group(1)), int(m.group(2)), p) for p in sorted(directory.iterdir())
              if (m := _SHARD_FILE.fullmatch(p.name))]
    worlds = {world for _, world, _ in shards}
    if len(worlds) != 1:
        raise DataError(f"{str(directory)!r} holds prediction shards of {len(worlds)} different runs "
                        f"(world sizes {sorted(worlds)})" if worlds else f"{str(directory)!r} holds no prediction "
                        "shards (predictions.rankRRRRR-of-WWWWW.jsonl)")
    world = worlds.pop()
    missing = sorted(set(range(world)) - {rank for rank, _, _ in shards})
    if missing:
        raise DataError(f"{str(directory)!r} lacks the prediction shards of ranks {missing} (of {world})")
    records: dict[int, str] = {}
    for _, _, path in shards:
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                index = int(json.loads(line)["index"])
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{str(path)}:{line_number} is not a prediction record ({exc})") from exc
            if index in records:
                raise DataError(f"example {index} is predicted twice ({str(path)}:{line_number})")
            records[index] = line
    lost = sorted(set(range(len(records) if expected is None else expected)) - set(records))
    if lost:
        raise DataError(f"the shards in {str(directory)!r} miss examples {lost[:10]}")
    if expected is not None and len(records) != expected:
        raise DataError(f"the shards in {str(directory)!r} hold {len(records)} predictions for {expected} examples")
    target = Path(out) if out is not None else directory / "predictions.jsonl"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("".join(records[i] + "\n" for i in range(len(records))), encoding="utf-8")
    os.replace(tmp, target)
    return target
