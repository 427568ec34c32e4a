"""One place that turns a data file path into a row source: the format from the extension (or as given), the
reader for it, and where relative image paths of JSONL records resolve."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from ofa.data.jsonl import JSONLFile
from ofa.data.tsv import TSVFile
from ofa.errors import DataError

__all__ = ["DataFormat", "FORMATS", "data_format", "open_source", "image_root_for"]

DataFormat = Literal["tsv", "jsonl"]
FORMATS: tuple[DataFormat, ...] = ("tsv", "jsonl")
_JSONL_SUFFIXES = (".jsonl", ".json")


def data_format(path: str | os.PathLike[str], fmt: str | None = None) -> DataFormat:
    """``fmt`` checked, or the format the extension says (``.jsonl`` / ``.json`` -> JSONL, anything else TSV).

    Raises:
        DataError: ``fmt`` is neither ``"tsv"`` nor ``"jsonl"``.
    """
    if fmt is None:
        return "jsonl" if Path(path).suffix in _JSONL_SUFFIXES else "tsv"
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; accepted: 'tsv', 'jsonl'")
    return fmt


def open_source(path: str | os.PathLike[str], fmt: str | None = None) -> TSVFile | JSONLFile:
    """The offset-indexed reader of a TSV or JSONL file.

    Raises:
        DataError: the file does not exist, or ``fmt`` is unknown.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} does not exist")
    return JSONLFile(p) if data_format(p, fmt) == "jsonl" else TSVFile(p)


def image_root_for(path: str | os.PathLike[str], fmt: str | None = None,
                   image_root: str | os.PathLike[str] | None = None) -> Path | None:
    """Where image paths of a file's records resolve: ``image_root`` when given, else the file's folder for
    JSONL, and None for TSV (its rows hold the images)."""
    if image_root is not None:
        return Path(image_root)
    return Path(path).parent if data_format(path, fmt) == "jsonl" else None
