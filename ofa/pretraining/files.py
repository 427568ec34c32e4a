"""The four pretraining files of OFA (spec §5.7) and their rows.

* ``vision_language_examples.tsv``: uniq_id, image (base64), caption, question, refs, gt_objects, dataset, type,
  where type is ``caption``, ``qa`` or ``visual_grounding``; refs are answers ``conf|!+answer&&...`` for ``qa``
  and a region ``x0,y0,x1,y1`` for grounding; gt_objects are ``a&&b``.
* ``text_examples.tsv``: uniq_id, text.
* ``image_examples.tsv``: uniq_id, image (base64, 256 x 256 in OFA), VQGAN codes of the centre (space-separated).
* ``detection_examples.tsv``: uniq_id, image, ``x0,y0,x1,y1,cat_id,cat_name&&...``.

Rows are parsed into the dataclasses below; the writers produce the same layout (the shape world uses them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from PIL import Image

from ofa.data.images import decode_base64_image, encode_image_base64
from ofa.errors import DataError

__all__ = ["VL_TYPES", "VLRow", "TextRow", "ImageRow", "DetectionObject", "DetectionRow", "parse_vl_row",
           "parse_text_row", "parse_image_row", "parse_detection_row", "format_vl_row", "format_text_row",
           "format_image_row", "format_detection_row", "parse_answers", "FILE_NAMES"]

VLType = Literal["caption", "qa", "visual_grounding"]
VL_TYPES: tuple[VLType, ...] = ("caption", "qa", "visual_grounding")
FILE_NAMES = {"vision_language": "vision_language_examples.tsv", "text": "text_examples.tsv",
              "image": "image_examples.tsv", "detection": "detection_examples.tsv"}


@dataclass
class VLRow:
    """One image-text row: its ``type`` decides the examples (caption + ITM, VQA + VQA-matching, grounding +
    grounded captioning)."""

    id: str
    image: Image.Image
    caption: str
    question: str
    refs: str
    gt_objects: list[str]
    dataset: str
    type: VLType


@dataclass
class TextRow:
    id: str
    text: str


@dataclass
class ImageRow:
    id: str
    image: Image.Image
    codes: list[int]


@dataclass
class DetectionObject:
    box: tuple[float, float, float, float]
    category_id: str
    name: str


@dataclass
class DetectionRow:
    id: str
    image: Image.Image
    objects: list[DetectionObject] = field(default_factory=list)


def _columns(fields: Sequence[str], count: int, what: str) -> Sequence[str]:
    if len(fields) != count:
        raise DataError(f"{what} rows have {count} columns, got {len(fields)}")
    return fields


def parse_answers(refs: str) -> dict[str, float]:
    """``conf|!+answer&&conf|!+answer`` -> ``{answer: conf}``."""
    answers: dict[str, float] = {}
    for item in refs.split("&&"):
        conf, sep, answer = item.partition("|!+")
        try:
            value = float(conf)
        except ValueError:
            value = math.nan
        if not sep or not answer.strip() or not math.isfinite(value):
            raise DataError(f"bad answer {item!r} in {refs!r}: expected conf|!+answer")
        answers[answer.strip()] = value
    return answers


def parse_vl_row(fields: Sequence[str]) -> VLRow:
    uniq_id, image, caption, question, refs, objects, dataset, kind = _columns(fields, 8, "vision-language")
    if kind not in VL_TYPES:
        raise DataError(f"row {uniq_id!r}: type {kind!r} is not one of {list(VL_TYPES)}")
    if kind in ("caption", "visual_grounding") and not caption.strip():
        raise DataError(f"row {uniq_id!r}: a {kind} row needs a caption")
    if kind == "qa":
        if not question.strip():
            raise DataError(f"row {uniq_id!r}: a qa row needs a question")
        parse_answers(refs)
    return VLRow(id=uniq_id, image=decode_base64_image(image), caption=caption, question=question, refs=refs,
                 gt_objects=[o for o in objects.split("&&") if o.strip()], dataset=dataset,
                 type=kind)


def parse_text_row(fields: Sequence[str]) -> TextRow:
    uniq_id, text = _columns(fields, 2, "text")
    if not text.strip():
        raise DataError(f"text row {uniq_id!r} is empty")
    return TextRow(id=uniq_id, text=text)


def parse_image_row(fields: Sequence[str]) -> ImageRow:
    uniq_id, image, codes = _columns(fields, 3, "image")
    try:
        code_list = [int(c) for c in codes.split()]
    except ValueError:
        raise DataError(f"image row {uniq_id!r}: codes must be space-separated ints") from None
    if not code_list:
        raise DataError(f"image row {uniq_id!r} has no codes")
    return ImageRow(id=uniq_id, image=decode_base64_image(image), codes=code_list)


def parse_detection_row(fields: Sequence[str]) -> DetectionRow:
    uniq_id, image, labels = _columns(fields, 3, "detection")
    objects = []
    for item in labels.split("&&"):
        if not item.strip():
            continue
        parts = item.split(",", 5)
        if len(parts) != 6:
            raise DataError(f"detection row {uniq_id!r}: bad object {item!r}, expected x0,y0,x1,y1,cat_id,name")
        try:
            x0, y0, x1, y1 = (float(v) for v in parts[:4])
        except ValueError:
            raise DataError(f"detection row {uniq_id!r}: bad box in {item!r}") from None
        if not (x0 <= x1 and y0 <= y1):
            raise DataError(f"detection row {uniq_id!r}: box {parts[:4]} has x0 > x1 or y0 > y1")
        objects.append(DetectionObject(box=(x0, y0, x1, y1), category_id=parts[4], name=parts[5].strip()))
    return DetectionRow(id=uniq_id, image=decode_base64_image(image), objects=objects)


def _clean(text: str) -> str:
    return " ".join(str(text).replace("\t", " ").split())


def format_vl_row(uniq_id: Any, image: Image.Image, *, type: VLType, caption: str = "", question: str = "",
                  refs: str = "", gt_objects: Iterable[str] = (), dataset: str = "") -> str:
    """One ``vision_language_examples.tsv`` line (no newline)."""
    if type not in VL_TYPES:
        raise DataError(f"type {type!r} is not one of {list(VL_TYPES)}")
    return "\t".join([str(uniq_id), encode_image_base64(image, "PNG"), _clean(caption), _clean(question),
                      _clean(refs), "&&".join(_clean(o) for o in gt_objects), _clean(dataset), type])


def format_text_row(uniq_id: Any, text: str) -> str:
    return f"{uniq_id}\t{_clean(text)}"


def format_image_row(uniq_id: Any, image: Image.Image, codes: Iterable[int]) -> str:
    return "\t".join([str(uniq_id), encode_image_base64(image, "PNG"), " ".join(str(int(c)) for c in codes)])


def format_detection_row(uniq_id: Any, image: Image.Image, objects: Iterable[DetectionObject]) -> str:
    labels = "&&".join(f"{o.box[0]:g},{o.box[1]:g},{o.box[2]:g},{o.box[3]:g},{o.category_id},{_clean(o.name)}"
                       for o in objects)
    return "\t".join([str(uniq_id), encode_image_base64(image, "PNG"), labels])
