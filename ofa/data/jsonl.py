"""JSON-lines data files (one JSON object per line) and image paths relative to an image folder.

This is our own, simpler alternative to OFA's TSVs: records such as ``{"id": 1, "image": "val/1.jpg",
"caption": "a dog"}`` with images kept as files under an image root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ofa.data.images import load_image
from ofa.data.lines import LineFile
from ofa.errors import DataError

__all__ = ["JSONLFile", "ImageFolderRecords", "resolve_image_path"]


class JSONLFile(LineFile):
    """A JSON-lines file with random access to its records (offset-indexed like :class:`~ofa.data.tsv.TSVFile`).

    Args:
        path: The file.

    Raises:
        DataError: If the file is missing or cannot be read.
    """

    def _parse(self, index: int, text: str) -> dict[str, Any]:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{self.path}:{index + 1}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{self.path}:{index + 1}: expected a JSON object, got {type(record).__name__}: {text[:60]!r}"
            )
        return record

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Record ``index`` as a dict.

        Raises:
            IndexError: If ``index`` is out of range.
            DataError: If the line is not UTF-8, not JSON, or not a JSON object (names file and line).
        """
        return super().__getitem__(index)


def resolve_image_path(
    record: Mapping[str, Any], root: str | os.PathLike[str] | None, key: str = "image"
) -> Path | None:
    """The path of a record's image: ``record[key]`` joined to ``root`` unless it is absolute.

    Args:
        record: The record.
        root: The image folder (None: paths are used as they are).
        key: The field that holds the image path.

    Returns:
        The path (not checked for existence), or None when the record has no image (key absent or null).

    Raises:
        DataError: If the field is not a non-empty string.
    """
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise DataError(f"record field {key!r} must be a non-empty path string, got {value!r}")
    path = Path(value)
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    return path


class ImageFolderRecords(Sequence[dict[str, Any]]):
    """In-memory records whose ``"image"`` field is a path relative to an image folder.

    ``records[i]`` is a shallow copy of the record with ``"image"`` replaced by the resolved :class:`Path`
    (records without an image are returned unchanged). It is a row source for
    :class:`~ofa.data.dataset.TaskDataset` like :class:`JSONLFile`.

    Args:
        root: The image folder.
        records: The records (dicts).
        key: The field that holds the image path.

    Raises:
        DataError: If ``records`` is not a list of dicts (names the first bad index).
    """

    def __init__(
        self, root: str | os.PathLike[str], records: Sequence[Mapping[str, Any]], key: str = "image"
    ) -> None:
        self.root = Path(root)
        self.path = self.root  # what error messages name
        self.key = key
        if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
            raise DataError(f"records must be a list of dicts, got {type(records).__name__}")
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise DataError(f"records[{i}] must be a dict, got {type(record).__name__}")
        self.records = list(records)

    @classmethod
    def from_jsonl(
        cls, path: str | os.PathLike[str], root: str | os.PathLike[str], key: str = "image"
    ) -> ImageFolderRecords:
        """All records of a JSON-lines file, resolved against ``root``."""
        return cls(root, list(JSONLFile(path)), key=key)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"ImageFolderRecords({str(self.root)!r}, records={len(self.records)})"

    def row_number(self, index: int) -> int:
        """1-based position of record ``index`` (used in error messages)."""
        return range(len(self.records))[index] + 1

    def resolve(self, record: Mapping[str, Any]) -> Path | None:
        """The image path of ``record`` under this folder (see :func:`resolve_image_path`)."""
        return resolve_image_path(record, self.root, self.key)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        record = dict(self.records[index])
        path = self.resolve(record)
        if path is not None:
            record[self.key] = path
        return record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self.records)):
            yield self[i]

    def load_image(self, index: int) -> Any:
        """The image of record ``index`` as an RGB PIL image.

        Raises:
            DataError: If the record has no image, or the file is missing or not an image (names the path).
        """
        path = self.resolve(self.records[index])
        if path is None:
            raise DataError(f"record {index} has no {self.key!r} field")
        return load_image(path)
