"""Grounded captioning: a region given as location tokens in the prompt -> a description (spec §5.7)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from ofa.data.transforms import grounding_resize
from ofa.errors import DataError
from ofa.tasks.base import Example, Sample
from ofa.tasks.caption import CaptionTask
from ofa.tasks.common import parse_box, require_image, require_text

if TYPE_CHECKING:  # pragma: no cover
    from ofa.tokenization import OFATokenizer

__all__ = ["RegionCaptionTask"]


class RegionCaptionTask(CaptionTask):
    """``'  what does the region describe? region: <bin_x0> <bin_y0> <bin_x1> <bin_y1>'`` -> caption.

    The region (``Example.extra["region"]``, original pixels) is quantised like grounding targets; the image is
    resized to ``image_size`` squared. Scored like captioning.

    TSV layout (as grounding): ``uniq_id, image_id, caption, "x0,y0,x1,y1", image (base64)``.
    JSONL: ``{"id", "image", "region": [x0, y0, x1, y1], "caption"}``.
    """

    name = "region_caption"
    num_columns = 5

    def __init__(self, image_size: int = 512, max_image_size: int = 512, **kwargs: Any) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.max_image_size = max_image_size

    def transform(self, example: Example) -> tuple[torch.Tensor | None, dict[str, Any]]:
        image = require_image(example, self.name)
        tensor, ratios = grounding_resize(image, self.image_size)
        return tensor, {"original_size": image.size, "ratios": ratios}

    def encode(self, example: Example, tok: "OFATokenizer", training: bool = False) -> Sample:
        if example.extra.get("region") is None:
            raise DataError(f"example {example.id!r} has no region box (extra['region'])")
        box = parse_box(example.extra["region"])
        image = require_image(example, self.name)
        bins = tok.encode_box(box, original_size=image.size, patch_size=self.image_size,
                              max_image_size=self.max_image_size)
        prompt = tok.encode("  what does the region describe? region:") + bins
        sample = super().encode(example, tok, training)
        sample.source = [tok.bos_id] + prompt[: self.max_source_tokens] + [tok.eos_id]
        sample.meta["region"] = box
        return sample

    def instruction(self, example: Example) -> str:
        return "  what does the region describe? region:"

    def parse_row(self, fields: Sequence[str]) -> Example:
        self._check_columns(fields)
        uniq_id, image_id, caption, region, image = fields
        return Example(id=uniq_id, image=self._image_from_field(image),
                       target=[require_text(caption, "caption")],
                       extra={"image_id": image_id, "region": parse_box(region)})

    def parse_record(self, record: dict[str, Any], image_root: Any = None) -> Example:
        captions = record.get("captions", record.get("caption"))
        return Example(id=record.get("id"), image=self._image_from_record(record, image_root),
                       target=[captions] if isinstance(captions, str) else captions,
                       extra={"region": record.get("region")})
