"""OFA's TSV data files (spec §5.0): one example per line, tab-separated columns, images in base64.

``selected_cols`` picks and orders the columns a task reads, e.g. caption stage 1 uses ``(0, 4, 2)``
(uniq_id, image, caption). Each distributed rank (and DataLoader worker) reads one contiguous slice of rows;
see :func:`shard_range` and :func:`shard_for_worker`.
"""

from __future__ import annotations

import os
from typing import Sequence

from ofa.data.lines import LineFile, shard_for_worker, shard_range
from ofa.errors import DataError

__all__ = ["TSVFile", "shard_range", "shard_for_worker"]


class TSVFile(LineFile):
    """A TSV file with random access to its rows.

    The byte offsets of all rows are indexed once, at construction; ``tsv[i]`` then reads one row.

    Args:
        path: The file.
        selected_cols: Column indices to return, in this order (default: every column of the row).
        separator: The column separator.

    Raises:
        DataError: If the file is missing, ``selected_cols`` has a negative or non-int entry, or ``separator``
            is empty or contains a newline.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        selected_cols: Sequence[int] | None = None,
        separator: str = "\t",
    ) -> None:
        if selected_cols is not None:
            if isinstance(selected_cols, (str, bytes)) or not isinstance(selected_cols, Sequence):
                raise DataError(f"selected_cols must be a sequence of column indices, got {selected_cols!r}")
            cols = tuple(selected_cols)
            if not cols or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in cols):
                raise DataError(f"selected_cols must be non-empty ints >= 0, got {list(selected_cols)!r}")
            self.selected_cols: tuple[int, ...] | None = cols
        else:
            self.selected_cols = None
        if not isinstance(separator, str) or not separator or "\n" in separator or "\r" in separator:
            raise DataError(f"separator must be a non-empty str without line breaks, got {separator!r}")
        self.separator = separator
        super().__init__(path)

    def __repr__(self) -> str:
        cols = "" if self.selected_cols is None else f", selected_cols={list(self.selected_cols)}"
        return f"TSVFile({str(self.path)!r}, rows={len(self)}{cols})"

    def _parse(self, index: int, text: str) -> list[str]:
        fields = text.split(self.separator)
        if self.selected_cols is None:
            return fields
        needed = max(self.selected_cols) + 1
        if len(fields) < needed:
            raise DataError(
                f"{self.path}:{index + 1}: row has {len(fields)} columns, selected_cols "
                f"{list(self.selected_cols)} needs at least {needed}"
            )
        return [fields[c] for c in self.selected_cols]

    def __getitem__(self, index: int) -> list[str]:
        """The selected columns of row ``index``, as strings, in ``selected_cols`` order.

        Raises:
            IndexError: If ``index`` is out of range.
            DataError: If the row is not UTF-8 or lacks a selected column (names file and line).
        """
        return super().__getitem__(index)
