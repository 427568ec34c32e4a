"""Random access to the lines of a text file through a byte-offset index, and row sharding.

:class:`LineFile` is the shared base of :class:`~ofa.data.tsv.TSVFile` and :class:`~ofa.data.jsonl.JSONLFile`:
it scans the file once (in binary, with numpy) to record where every line starts, then reads any line with one
positioned read. It holds no open file across ``fork``/pickling, so DataLoader workers each open their own.
"""

from __future__ import annotations

import logging
import operator
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Protocol, TypeVar, runtime_checkable

import numpy as np
from torch.utils.data import get_worker_info

from ofa.errors import DataError

__all__ = ["LineFile", "RowSource", "shard_range", "shard_for_worker"]

logger = logging.getLogger(__name__)

RowT = TypeVar("RowT", covariant=True)

_CHUNK_BYTES = 64 << 20  # index in 64 MiB chunks: bounded memory, numpy-speed newline search


@runtime_checkable
class RowSource(Protocol[RowT]):
    """What :class:`~ofa.data.dataset.TaskDataset` reads rows from."""

    path: Path

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> RowT: ...

    def row_number(self, index: int) -> int: ...


def _check_int(value: object, what: str, low: int) -> int:
    if isinstance(value, bool):
        raise DataError(f"{what} must be an int >= {low}, got {value!r}")
    try:
        value = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"{what} must be an int >= {low}, got {value!r}") from None
    if value < low:
        raise DataError(f"{what} must be an int >= {low}, got {value!r}")
    return value


def shard_range(num_rows: int, shard_id: int, num_shards: int) -> range:
    """The contiguous slice of rows that shard ``shard_id`` of ``num_shards`` reads.

    The shards are disjoint, cover ``range(num_rows)`` in order, and their sizes differ by at most one (the
    first ``num_rows % num_shards`` shards get one extra row). A shard may be empty when there are more shards
    than rows.

    Args:
        num_rows: Number of rows in the file (>= 0).
        shard_id: This shard, in ``[0, num_shards)``.
        num_shards: Number of shards (>= 1).

    Returns:
        The row indices of the shard.

    Raises:
        DataError: If an argument is not an int or is out of range.
    """
    num_rows = _check_int(num_rows, "num_rows", 0)
    num_shards = _check_int(num_shards, "num_shards", 1)
    shard_id = _check_int(shard_id, "shard_id", 0)
    if shard_id >= num_shards:
        raise DataError(f"shard_id ({shard_id}) must be in [0, num_shards={num_shards})")
    base, extra = divmod(num_rows, num_shards)
    start = shard_id * base + min(shard_id, extra)
    return range(start, start + base + (1 if shard_id < extra else 0))


def shard_for_worker(rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """``(shard_id, num_shards)`` for this process: one shard per (distributed rank, DataLoader worker).

    ``shard_id = rank * num_workers + worker_id`` and ``num_shards = world_size * num_workers``, where the
    worker id and count come from :func:`torch.utils.data.get_worker_info` (``0`` and ``1`` outside a worker).
    The shards of one rank are therefore adjacent, and each rank reads one contiguous block of the file.

    Args:
        rank: This process's distributed rank, in ``[0, world_size)``.
        world_size: Number of distributed processes (>= 1).

    Raises:
        DataError: If ``rank`` or ``world_size`` is out of range.
    """
    world_size = _check_int(world_size, "world_size", 1)
    rank = _check_int(rank, "rank", 0)
    if rank >= world_size:
        raise DataError(f"rank ({rank}) must be in [0, world_size={world_size})")
    info = get_worker_info()
    worker_id, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
    return rank * num_workers + worker_id, world_size * num_workers


def _index_lines(path: Path) -> np.ndarray:
    """Line bounds: row ``i`` is bytes ``[bounds[i], bounds[i + 1] - 1)`` (the ``-1`` drops its newline)."""
    starts = [np.zeros(1, dtype=np.int64)]
    size = 0
    last_byte = b""
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK_BYTES)
            if not chunk:
                break
            newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 0x0A)
            starts.append(newlines.astype(np.int64) + (size + 1))
            size += len(chunk)
            last_byte = chunk[-1:]
    bounds = np.concatenate(starts)
    if size and last_byte != b"\n":
        bounds = np.append(bounds, np.int64(size + 1))  # the last line has no newline: pretend it has
    # The file ending in "\n" makes bounds end at `size`: no line follows, so nothing to drop there.
    return bounds


class LineFile:
    """Base of line-oriented data files: a byte-offset index built once, then random access to rows.

    Trailing empty lines are not rows; an empty line elsewhere is a row (and a bad one for TSV/JSONL). Line
    endings may be ``\\n`` or ``\\r\\n``; a UTF-8 byte-order mark at the start of the file is ignored.

    Args:
        path: The file.

    Raises:
        DataError: If the file does not exist or cannot be read.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            reason = "is a directory" if self.path.is_dir() else "does not exist"
            raise DataError(f"data file {str(self.path)!r} {reason}")
        started = time.perf_counter()
        try:
            bounds = _index_lines(self.path)
        except OSError as err:
            raise DataError(f"data file {str(self.path)!r} cannot be read ({err.strerror or err})") from err
        self._bounds = bounds
        self._num_rows = len(bounds) - 1
        self._handle: Any = None
        self._handle_pid = -1
        self._lock = threading.Lock()
        self._drop_trailing_empty_lines()
        logger.debug("indexed %d rows of %s in %.3f s", self._num_rows, self.path,
                     time.perf_counter() - started)

    def _drop_trailing_empty_lines(self) -> None:
        while self._num_rows > 0:
            length = self._row_length(self._num_rows - 1)
            if length > 1 or (length == 1 and self._read(self._num_rows - 1) != b"\r"):
                break
            self._num_rows -= 1
        self._bounds = self._bounds[: self._num_rows + 1]

    # -- pickling: never share an open file with another process -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_handle_pid"] = -1
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close this process's file handle (it reopens on the next read)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> LineFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sizes and indices ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_rows

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, rows={self._num_rows})"

    def _check_index(self, index: int) -> int:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"row index must be an int, got {type(index).__name__}") from None
        if i < 0:
            i += self._num_rows
        if not 0 <= i < self._num_rows:
            raise IndexError(f"row index {index} out of range for {self._num_rows} rows of {self.path}")
        return i

    def row_number(self, index: int) -> int:
        """The 1-based line number of row ``index`` in the file (for error messages)."""
        return self._check_index(index) + 1

    def where(self, index: int) -> str:
        """``"path:line"`` of row ``index``."""
        return f"{self.path}:{self.row_number(index)}"

    def _row_length(self, i: int) -> int:
        return int(self._bounds[i + 1] - self._bounds[i] - 1)

    # -- reading -------------------------------------------------------------------------------------------------
    def _read(self, i: int) -> bytes:
        offset, length = int(self._bounds[i]), self._row_length(i)
        pid = os.getpid()
        if self._handle is None or self._handle_pid != pid:
            # A handle inherited through fork shares its offset with the parent: open our own.
            self._handle = self.path.open("rb")
            self._handle_pid = pid
        fd = self._handle.fileno()
        if hasattr(os, "pread"):
            parts = []
            while length > 0:
                part = os.pread(fd, length, offset)
                if not part:
                    break
                parts.append(part)
                offset += len(part)
                length -= len(part)
            data = b"".join(parts)
        else:  # pragma: no cover - platforms without pread
            with self._lock:
                self._handle.seek(offset)
                data = self._handle.read(length)
                length -= len(data)
        if length > 0:
            raise DataError(f"{self.path}:{i + 1}: the file is shorter than when it was indexed (changed?)")
        return data

    def raw(self, index: int) -> bytes:
        """The bytes of row ``index``, without its line ending."""
        i = self._check_index(index)
        data = self._read(i)
        return data[:-1] if data.endswith(b"\r") else data

    def text(self, index: int) -> str:
        """Row ``index`` decoded as UTF-8, without its line ending.

        Raises:
            DataError: If the row is not valid UTF-8 (names file and line).
        """
        i = self._check_index(index)
        data = self.raw(i)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{self.path}:{i + 1}: not valid UTF-8 at byte {err.start} of the line") from None
        return text[1:] if i == 0 and text.startswith("\ufeff") else text

    def _parse(self, index: int, text: str) -> Any:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        i = self._check_index(index)
        return self._parse(i, self.text(i))

    def __iter__(self) -> Iterator[Any]:
        for i in range(self._num_rows):
            yield self[i]

    def iter_shard(self, shard_id: int, num_shards: int) -> Iterator[Any]:
        """Rows of one contiguous shard, in file order (see :func:`shard_range`).

        Raises:
            DataError: On a bad shard spec, or when a row cannot be parsed.
        """
        for i in shard_range(self._num_rows, shard_id, num_shards):
            yield self[i]
