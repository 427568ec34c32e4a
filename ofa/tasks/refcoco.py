"""Visual grounding / referring expressions (RefCOCO, RefCOCO+, RefCOCOg; spec §5.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ofa.data.text import pre_caption
from ofa.data.transforms import grounding_resize
from ofa.errors import DataError, GenerationError
from ofa.generation.boxes import hypothesis_to_box, location_constraint
from ofa.generation.config import GenerationConfig
from ofa.metrics.grounding import grounding_hit
from ofa.tasks.base import Example, Prediction, Sample
from ofa.tasks.common import BaseTask, parse_box, require_image, require_text
from ofa.tokenization.boxes import bins_to_box

if TYPE_CHECKING:  # pragma: no cover
    from ofa.generation.config import GenerationConfig
    from ofa.generation.generate import Hypothesis
    from ofa.tokenization import OFATokenizer

__all__ = ["RefcocoTask", "GroundingPrediction"]


@dataclass
class GroundingPrediction(Prediction):
    """A box ``(x0, y0, x1, y1)`` in original-image pixels, with the confidence of its four location tokens
    (see :mod:`ofa.generation.boxes`), the bins, and the beam score."""

    box: tuple[float, float, float, float] | None = None
    confidence: float | None = None
    bins: tuple[int, int, int, int] | None = None


def _is_ordered(box: Sequence[float]) -> bool:
    """Whether a predicted box has x0 <= x1 and y0 <= y1. A model can emit one that has not; OFA's hit rule needs
    a positive intersection width and height, which such a box never has, so it scores as a miss."""
    return box[0] <= box[2] and box[1] <= box[3]


class RefcocoTask(BaseTask):
    """``' which region does the text " {expression} " describe?'`` -> 4 location tokens.

    Args:
        image_size: images are resized to exactly this square (512), boxes scaled by the same ratios.
        max_image_size: normaliser of the box quantisation (512, spec §4.4).
        beam_size: 5; outputs are exactly 4 tokens (min_len = max_len = 4).
        no_repeat_ngram_size: 3, as OFA's RefCOCO evaluation script (0 turns it off, as its in-training
            validation).
        constrain_to_bins: restrict decoding to location tokens. The reference applies no constraint (a trained
            model emits bins anyway); it is on by default because it can only turn a malformed output into a box.

    TSV layout: ``uniq_id, image_id, expression, "x0,y0,x1,y1", image (base64)``.
    JSONL: ``{"id", "image", "text", "box": [x0, y0, x1, y1]}``.
    """

    name = "refcoco"
    num_columns = 5

    def __init__(self, image_size: int = 512, max_image_size: int = 512, beam_size: int = 5,
                 no_repeat_ngram_size: int = 3, constrain_to_bins: bool = True) -> None:
        super().__init__(image_size)
        self.max_image_size = max_image_size
        self.beam_size = beam_size
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.constrain_to_bins = constrain_to_bins

    def instruction(self, example: Example) -> str:
        text = pre_caption(require_text(example.text, "referring expression"), 80)
        return f' which region does the text " {text} " describe?'

    def transform(self, example: Example) -> tuple[torch.Tensor | None, dict[str, Any]]:
        image = require_image(example, self.name)
        tensor, ratios = grounding_resize(image, self.image_size)
        return tensor, {"original_size": image.size, "ratios": ratios}

    def target_ids(self, example: Example, tok: "OFATokenizer", meta: dict[str, Any]) -> list[int]:
        if example.target is None:
            raise DataError(f"example {example.id!r} has no box")
        box = parse_box(example.target)
        return tok.encode_box(box, original_size=meta["original_size"], patch_size=self.image_size,
                              max_image_size=self.max_image_size)

    def generation_config(self, tok: "OFATokenizer") -> "GenerationConfig":
        processors = (location_constraint(tok.vocab),) if self.constrain_to_bins else ()
        return GenerationConfig(beam_size=self.beam_size, max_len_b=4, min_len=4,
                                no_repeat_ngram_size=self.no_repeat_ngram_size, processors=processors)

    def from_hypothesis(self, hypothesis: "Hypothesis", tok: "OFATokenizer", sample: Sample) -> Prediction:
        try:
            box = hypothesis_to_box(hypothesis, tok.vocab, sample.meta["original_size"], self.image_size,
                                    self.max_image_size)
        except GenerationError:
            return GroundingPrediction(id=sample.id, score=hypothesis.score)
        return GroundingPrediction(id=sample.id, score=box.score, box=box.box, confidence=box.confidence,
                                   bins=box.bins)

    def decode(self, ids: Sequence[int], tok: "OFATokenizer", sample: Sample | None = None) -> GroundingPrediction:
        ids = list(ids)
        bins = [tok.vocab.bin_index(i) for i in ids[:4] if i in tok.vocab.bin_range()]
        if len(bins) < 4 or sample is None:
            return GroundingPrediction(id=None if sample is None else sample.id)
        box = bins_to_box(bins, sample.meta["original_size"], self.image_size, tok.vocab.num_bins,
                          self.max_image_size)
        return GroundingPrediction(id=sample.id, box=tuple(box), bins=tuple(bins))  # type: ignore[arg-type]

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        if len(preds) != len(refs):
            raise DataError(f"{len(preds)} predictions for {len(refs)} references")
        hits = []
        for pred, ref in zip(preds, refs):
            box = getattr(pred, "box", None)
            hits.append(float(box is not None and _is_ordered(box) and grounding_hit(box, parse_box(ref.target))))
        return {"acc@0.5": sum(hits) / max(len(hits), 1)}

    def parse_row(self, fields: Sequence[str]) -> Example:
        self._check_columns(fields)
        uniq_id, image_id, text, region, image = fields
        return Example(id=uniq_id, image=self._image_from_field(image), text=require_text(text, "expression"),
                       target=parse_box(region), extra={"image_id": image_id})

    def parse_record(self, record: dict[str, Any], image_root: Any = None) -> Example:
        box = record.get("box")
        return Example(id=record.get("id"), image=self._image_from_record(record, image_root),
                       text=record.get("text"), target=None if box is None else parse_box(box))
