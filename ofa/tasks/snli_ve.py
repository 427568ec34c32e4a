"""Visual entailment (SNLI-VE; spec §5.4): does the image (and premise) imply the hypothesis? yes / no / maybe."""

from __future__ import annotations

from typing import Any, Sequence

from ofa.data.text import pre_caption
from ofa.errors import DataError
from ofa.metrics.classification import accuracy
from ofa.tasks.answers import AnswerTask, InferenceMode
from ofa.tasks.base import Example, Prediction
from ofa.tasks.common import require_text

__all__ = ["SnliVeTask", "LABEL_TO_ANSWER"]

LABEL_TO_ANSWER = {"contradiction": "no", "entailment": "yes", "neutral": "maybe"}


class SnliVeTask(AnswerTask):
    """``' can image and text1 " {premise} " imply text2 " {hypothesis} "?'`` -> yes / no / maybe.

    With ``add_caption=False`` (no premise): ``' does the image describe " {hypothesis} "?'``. Metric: accuracy.

    TSV layout: ``uniq_id, image_id, image (base64), hypothesis, caption (premise), label``.
    JSONL: ``{"id", "image", "hypothesis", "premise", "label"}``.
    """

    name = "snli_ve"
    num_columns = 6

    def __init__(self, mode: InferenceMode = "allcand", add_caption: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("max_len", 5)
        super().__init__(candidates=["no", "yes", "maybe"], mode=mode, **kwargs)
        self.add_caption = add_caption

    def instruction(self, example: Example) -> str:
        hypothesis = pre_caption(require_text(example.text, "hypothesis"), 80)
        premise = example.extra.get("premise")
        if self.add_caption and premise:
            return f' can image and text1 " {pre_caption(premise, 80)} " imply text2 " {hypothesis} "?'
        return f' does the image describe " {hypothesis} "?'

    def answer_text(self, example: Example) -> str:
        label = str(example.target)
        answer = LABEL_TO_ANSWER.get(label, label)
        if answer not in self.candidates:
            raise DataError(f"example {example.id!r}: label {label!r} is not one of {sorted(LABEL_TO_ANSWER)} or "
                            f"{self.candidates}")
        return answer

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        return {"accuracy": accuracy([getattr(p, "answer", "") for p in preds],
                                     [self.answer_text(r) for r in refs])}

    def parse_row(self, fields: Sequence[str]) -> Example:
        self._check_columns(fields)
        uniq_id, image_id, image, hypothesis, premise, label = fields
        return Example(id=uniq_id, image=self._image_from_field(image), text=require_text(hypothesis, "hypothesis"),
                       target=label.strip(), extra={"image_id": image_id, "premise": premise})

    def parse_record(self, record: dict[str, Any], image_root: Any = None) -> Example:
        return Example(id=record.get("id"), image=self._image_from_record(record, image_root),
                       text=record.get("hypothesis"), target=record.get("label"),
                       extra={"premise": record.get("premise")})
