"""The examples of OFA's unified pretraining (spec §5.7), built from the rows of the four pretraining files.

Every image-text row gives two samples for the first forward pass of a step (``part`` 0, "v1"): caption +
image-text matching, VQA + VQA-matching, or grounding + grounded captioning. Text infilling, image infilling
and detection samples go to the second pass (``part`` 1, "v2"), with loss weight 2.0 (spec §6.1).
"""

from __future__ import annotations

from typing import Any

import torch

from ofa.data.text import pre_caption, pre_question
from ofa.data.transforms import text_only_image
from ofa.errors import DataError
from ofa.pretraining.files import DetectionRow, ImageRow, TextRow, VLRow, parse_answers
from ofa.pretraining.masking import SpanMasking
from ofa.pretraining.negatives import Negatives
from ofa.pretraining.transforms import (
    detection_transform,
    grounding_transform,
    image_text_transform,
    infilling_transform,
    pretraining_augment,
)
from ofa.records import Sample

__all__ = ["PretrainExamples", "V1", "V2", "INSTRUCTIONS", "TEXT_INFILLING"]

V1, V2 = 0, 1  # Sample.part of the two forward passes

INSTRUCTIONS = {
    "caption": " what does the image describe?",
    "itm": ' does the image describe " {} "?',
    "vqa_match": ' what is the answer to question " {} ". is " {} "?',
    "grounding": ' which region does the text " {} " describe?',
    "grounded_caption": "  what does the region describe? region:",
    "image_infilling": " what is the image in the middle part?",
    "detection": " what are the objects in the image?",
}
TEXT_INFILLING = (' what is the complete text of "', ' "?')  # the masked text goes between the two
_AUX_WEIGHT = 2.0  # text infilling, image infilling and detection (spec §6.1)


def _coin(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


class PretrainExamples:
    """Builds pretraining samples.

    Args:
        tok: the tokenizer (its vocabulary needs ``<mask>``, location bins and image codes).
        negatives: negative captions and answers (needed for caption and qa rows).
        image_size: patch size of image-text samples (OFA: 384).
        aux_image_size: image size of text-only, image-infilling and detection samples (OFA: 256).
        max_image_size: the box normaliser of grounding and detection (OFA: 512).
        max_src_length / max_tgt_length: words kept of questions/captions in sources / targets (OFA: 80 / 30).
        mask_ratio / poisson_lambda: text-infilling span masking (OFA: 0.3 / 3).
        max_text_tokens: text-infilling texts keep their last this many tokens of the first 512 (OFA: 256).
        augment: apply OFA's ``RandomAugment(2, 7)`` to caption / matching / VQA images (OFA: on).
    """

    def __init__(self, tok: Any, negatives: Negatives | None, *, image_size: int = 384, aux_image_size: int = 256,
                 max_image_size: float = 512, max_src_length: int = 80, max_tgt_length: int = 30,
                 mask_ratio: float = 0.3, poisson_lambda: float = 3.0, max_text_tokens: int = 256,
                 augment: bool = True) -> None:
        self.tok = tok
        self.negatives = negatives
        self.image_size = int(image_size)
        self.aux_image_size = int(aux_image_size)
        self.max_image_size = float(max_image_size)
        self.max_src_length = int(max_src_length)
        self.max_tgt_length = int(max_tgt_length)
        self.max_text_tokens = int(max_text_tokens)
        self.masking = SpanMasking(tok.vocab.mask_id, mask_ratio, poisson_lambda)
        self.augment = pretraining_augment(self.image_size) if augment else None

    # -- pieces -----------------------------------------------------------------------------------------------
    def _source(self, text_or_ids: str | list[int]) -> list[int]:
        ids = self.tok.encode(text_or_ids) if isinstance(text_or_ids, str) else list(text_or_ids)
        if not ids:
            raise DataError(f"the instruction {text_or_ids!r} encodes to no tokens")
        return [self.tok.bos_id, *ids, self.tok.eos_id]

    def _sample(self, uid: str, kind: str, source: str | list[int], target: list[int], image: torch.Tensor,
                *, patch_mask: bool = True, weight: float = 1.0, part: int = V1, code_mask: bool = False) -> Sample:
        if not target:
            raise DataError(f"row {uid!r}: the {kind} target is empty")
        target_ids = [*target, self.tok.eos_id]
        return Sample(id=f"{uid}#{kind}", source=self._source(source), image=image, patch_mask=patch_mask,
                      target=target_ids, prev_output=[self.tok.bos_id, *target], code_mask=code_mask,
                      weight=float(weight), part=part, meta={"kind": kind})

    def _bins(self, box: tuple[float, float, float, float]) -> list[int]:
        return list(self.tok.encode_box(box, max_image_size=self.max_image_size))

    def _negatives(self, uid: str) -> Negatives:
        if self.negatives is None:
            raise DataError(f"row {uid!r}: image-text matching needs negative-sample resources (negatives=DIR with "
                            "all_captions.txt, object.txt, type2ans.json)")
        return self.negatives

    # -- v1: image-text rows ----------------------------------------------------------------------------------
    def vision_language(self, row: VLRow, generator: torch.Generator | None = None) -> list[Sample]:
        """The two v1 samples of an image-text row."""
        if row.type == "visual_grounding":
            return self._grounding(row, generator)
        negatives = self._negatives(row.id)  # needed on every draw, so a missing resource fails at once
        image = image_text_transform(row.image, self.image_size, generator, self.augment)
        if row.type == "caption":
            caption = pre_caption(row.caption, self.max_tgt_length)
            target = self.tok.encode(f" {caption}")
            if row.dataset == "cc12m":  # noisy alt-texts: the first two target tokens are not trained
                target[:2] = [self.tok.pad_id] * min(2, len(target))
            main = self._sample(row.id, "caption", INSTRUCTIONS["caption"], target, image)
            src_caption = pre_caption(row.caption, self.max_src_length)
            positive = _coin(generator) >= 0.5
            shown = src_caption if positive else negatives.caption(src_caption, row.gt_objects, generator)
            match = self._sample(row.id, "itm", INSTRUCTIONS["itm"].format(shown),
                                 self.tok.encode(" yes" if positive else " no"), image)
            return [main, match]
        answers = parse_answers(row.refs)
        answer = max(answers, key=lambda a: answers[a])
        confidence = answers[answer]
        question = pre_question(row.question, self.max_src_length)
        main = self._sample(row.id, "vqa", f" {question}", self.tok.encode(f" {answer}"), image, weight=confidence)
        positive = _coin(generator) >= 0.5
        shown = answer if positive else negatives.answer(answer, confidence, generator)
        match = self._sample(row.id, "vqa_match", INSTRUCTIONS["vqa_match"].format(question, shown),
                             self.tok.encode(" yes" if positive else " no"), image)
        return [main, match]

    def _grounding(self, row: VLRow, generator: torch.Generator | None) -> list[Sample]:
        try:
            x0, y0, x1, y1 = (float(v) for v in row.refs.split(","))
        except ValueError:
            raise DataError(f"row {row.id!r}: region {row.refs!r} is not x0,y0,x1,y1") from None
        image, box = grounding_transform(row.image, (x0, y0, x1, y1), self.image_size, generator)
        bins = self._bins(box)
        caption = pre_caption(row.caption, self.max_src_length)
        grounding = self._sample(row.id, "grounding", INSTRUCTIONS["grounding"].format(caption), bins, image)
        region_source = self.tok.encode(INSTRUCTIONS["grounded_caption"]) + bins
        described = self.tok.encode(f" {pre_caption(row.caption, self.max_tgt_length)}")
        return [grounding, self._sample(row.id, "grounded_caption", region_source, described, image)]

    # -- v2: text, image and detection rows -------------------------------------------------------------------
    def text_infilling(self, row: TextRow, generator: torch.Generator | None = None) -> Sample:
        """Span-masked text in, the whole text out (no image: a zero image with ``patch_mask=False``)."""
        ids = self.tok.encode(f" {row.text.lower()}")[:512][-self.max_text_tokens:]
        if not ids:
            raise DataError(f"text row {row.id!r} encodes to no tokens")
        item = [self.tok.bos_id, *ids, self.tok.eos_id]
        masked = self.masking(item, self.tok.word_starts(item), generator).tokens
        before, after = TEXT_INFILLING
        source = [*self.tok.encode(before), *masked[1:-1], *self.tok.encode(after)]
        return self._sample(row.id, "text_infilling", source, ids, text_only_image(self.aux_image_size),
                            patch_mask=False, weight=_AUX_WEIGHT, part=V2)

    def image_infilling(self, row: ImageRow) -> Sample:
        """The image with its middle zeroed in, the middle's VQGAN codes out (``code_mask``)."""
        side = int(round(len(row.codes) ** 0.5))
        if side * side != len(row.codes):
            raise DataError(f"image row {row.id!r} has {len(row.codes)} codes, not a square grid")
        image = infilling_transform(row.image, self.aux_image_size)
        return self._sample(row.id, "image_infilling", INSTRUCTIONS["image_infilling"],
                            list(self.tok.encode_codes(row.codes)), image, weight=_AUX_WEIGHT, part=V2,
                            code_mask=True)

    def detection(self, row: DetectionRow, generator: torch.Generator | None = None) -> Sample | None:
        """Every visible object as 4 bins and its name; None when the crop shows no object."""
        image, kept, boxes = detection_transform(row.image, [o.box for o in row.objects], self.aux_image_size,
                                                 generator)
        if not kept:
            return None
        target: list[int] = []
        for index, box in zip(kept, boxes):
            target += self._bins(box) + self.tok.encode(f" {row.objects[index].name}")
        return self._sample(row.id, "detection", INSTRUCTIONS["detection"], target, image, weight=_AUX_WEIGHT,
                            part=V2)
