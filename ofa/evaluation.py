"""Evaluate a task on a data file: read examples (bad rows counted, logged, bounded), predict, score."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from ofa.data.sources import data_format, open_source
from ofa.errors import DataError
from ofa.pipeline import Pipeline
from ofa.records import ParsesRecords, ParsesRows
from ofa.tasks.base import Example, Prediction, Task

__all__ = ["read_examples", "evaluate"]

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


def evaluate(task: Task, model: Any, tokenizer: Any, examples: list[Example], batch_size: int = 8,
             progress: bool | None = None) -> tuple[dict[str, float], list[Prediction]]:
    """Predict every example and score the predictions with the task's metric."""
    # Data is encoded exactly as training encodes it (literal <bin_K> in a data file stays a bin token).
    runner = Pipeline(task, model, tokenizer, batch_size=batch_size, progress=progress, literal_text=False)
    predictions = runner.predict_examples(examples)
    return task.score(predictions, examples), predictions
