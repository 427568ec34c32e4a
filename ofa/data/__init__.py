"""Data: readers for OFA's TSV and JSON-lines files, images, text normalisation, transforms, datasets, collate.

Names are loaded on first access (``ofa.data.TSVFile``), so importing :mod:`ofa.data` does not import
torchvision; import submodules directly in library code (``from ofa.data.text import pre_caption``). The
collate function is ``ofa.data.collate.collate`` (not re-exported: ``ofa.data.collate`` is the module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "decode_base64_image",
    "encode_image_base64",
    "load_image",
    "pre_caption",
    "pre_question",
    "strip_punctuation",
    "OFA_MEAN",
    "OFA_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize",
    "square_resize",
    "grounding_resize",
    "ImageNetTrainTransform",
    "text_only_image",
    "LineFile",
    "TSVFile",
    "JSONLFile",
    "ImageFolderRecords",
    "resolve_image_path",
    "shard_range",
    "shard_for_worker",
    "TaskDataset",
    "ShardedTaskIterable",
    "Batch",
    "ImageTextRecord",
    "read_image_text",
]

_LAZY = {
    "decode_base64_image": "ofa.data.images",
    "encode_image_base64": "ofa.data.images",
    "load_image": "ofa.data.images",
    "pre_caption": "ofa.data.text",
    "pre_question": "ofa.data.text",
    "strip_punctuation": "ofa.data.text",
    "OFA_MEAN": "ofa.data.transforms",
    "OFA_STD": "ofa.data.transforms",
    "IMAGENET_MEAN": "ofa.data.transforms",
    "IMAGENET_STD": "ofa.data.transforms",
    "normalize": "ofa.data.transforms",
    "square_resize": "ofa.data.transforms",
    "grounding_resize": "ofa.data.transforms",
    "ImageNetTrainTransform": "ofa.data.transforms",
    "text_only_image": "ofa.data.transforms",
    "LineFile": "ofa.data.lines",
    "TSVFile": "ofa.data.tsv",
    "JSONLFile": "ofa.data.jsonl",
    "ImageFolderRecords": "ofa.data.jsonl",
    "resolve_image_path": "ofa.data.jsonl",
    "shard_range": "ofa.data.lines",
    "shard_for_worker": "ofa.data.lines",
    "TaskDataset": "ofa.data.dataset",
    "ShardedTaskIterable": "ofa.data.dataset",
    "Batch": "ofa.data.collate",
    "ImageTextRecord": "ofa.data.image_text",
    "read_image_text": "ofa.data.image_text",
}

if TYPE_CHECKING:  # pragma: no cover
    from ofa.data.collate import Batch
    from ofa.data.dataset import ShardedTaskIterable, TaskDataset
    from ofa.data.image_text import ImageTextRecord, read_image_text
    from ofa.data.images import decode_base64_image, encode_image_base64, load_image
    from ofa.data.jsonl import ImageFolderRecords, JSONLFile, resolve_image_path
    from ofa.data.lines import LineFile, shard_for_worker, shard_range
    from ofa.data.text import pre_caption, pre_question, strip_punctuation
    from ofa.data.transforms import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        OFA_MEAN,
        OFA_STD,
        ImageNetTrainTransform,
        grounding_resize,
        normalize,
        square_resize,
        text_only_image,
    )
    from ofa.data.tsv import TSVFile


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ofa.data' has no attribute {name!r}")
    # import cost: public names load on first use
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
