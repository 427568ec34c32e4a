"""Images with their texts from a TSV (base64 image column, OFA layout) or a JSONL file (image paths).

Used where a whole file of images is needed at once: training a VQGAN on a new image domain and turning a
caption file into image-code targets (``ofa train-vqgan``, ``ofa encode-images``). The defaults read OFA's
caption TSV (``uniq_id, image_id, captions joined by &&, object labels, image``), which is also what
:func:`ofa.apps.shapeworld.write_world` writes as ``caption_{split}.tsv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal

from ofa.data.images import decode_base64_image, load_image
from ofa.data.sources import data_format, open_source
from ofa.data.tsv import TSVFile
from ofa.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["ImageTextRecord", "read_image_text"]


@dataclass
class ImageTextRecord:
    """One image (RGB) with its id and texts (several captions of one image, or none)."""

    id: str
    image: "Image.Image"
    texts: list[str] = field(default_factory=list)


def _column(fields: list[str], index: int, what: str, where: str) -> str:
    try:
        return fields[index]
    except IndexError:
        raise DataError(f"{where}: the row has {len(fields)} columns, the {what} column is {index}") from None


def read_image_text(
    path: str | os.PathLike[str],
    *,
    fmt: Literal["tsv", "jsonl"] | None = None,
    id_column: int | None = 0,
    text_column: int | None = 2,
    image_column: int = -1,
    text_separator: str = "&&",
    image_root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> Iterator[ImageTextRecord]:
    """Yield the images of a TSV or JSONL file with their texts, in file order.

    Args:
        path: the file.
        fmt: ``"tsv"`` or ``"jsonl"`` (default: from the extension, ``.jsonl``/``.json`` -> JSONL).
        id_column / text_column / image_column: TSV column indices (negative counts from the end);
            ``id_column=None`` numbers the rows, ``text_column=None`` reads no text.
        text_separator: several texts in one TSV cell are joined by it (OFA joins captions with ``&&``).
        image_root: JSONL image paths are relative to it (default: the file's folder). JSONL records hold
            ``"image"`` (a path), ``"caption"`` (a string) or ``"captions"`` (a list) and optionally ``"id"``.
        limit: stop after this many images.

    Raises:
        DataError: for a missing file, a short row, an unreadable image or a record without an image (naming
            the file and line).
    """
    p = Path(path)
    fmt = data_format(p, fmt)
    if limit is not None and limit < 0:
        raise DataError(f"limit ({limit}) must be >= 0")
    source = open_source(p, fmt)
    root = Path(image_root) if image_root is not None else p.parent
    for index in range(len(source)):
        if limit is not None and index >= limit:
            return
        where = f"{p}:{index + 1}"
        if isinstance(source, TSVFile):
            row = source[index]
            uid = str(index) if id_column is None else _column(row, id_column, "id", where)
            texts = [] if text_column is None else _column(row, text_column, "text", where).split(text_separator)
            try:
                image = decode_base64_image(_column(row, image_column, "image", where))
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from exc
        else:
            record = source[index]
            value = record.get("image")
            if not isinstance(value, str) or not value:
                raise DataError(f"{where}: the record has no 'image' path")
            image_path = Path(value) if Path(value).is_absolute() else root / value
            image = load_image(image_path)
            uid = str(record.get("id", index))
            raw = record.get("captions", record.get("caption", record.get("text")))
            texts = [raw] if isinstance(raw, str) else [str(t) for t in raw] if isinstance(raw, list) else []
        texts = [" ".join(t.split()) for t in texts if t.strip()]
        yield ImageTextRecord(id=uid, image=image, texts=texts)
