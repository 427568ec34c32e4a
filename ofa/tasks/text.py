"""A text-only task (spec §5.8): SST-2 sentiment as ``positive`` / ``negative`` answers."""

from __future__ import annotations

from typing import Any, Sequence

from ofa.errors import DataError
from ofa.metrics.classification import accuracy
from ofa.tasks.answers import AnswerTask, InferenceMode
from ofa.tasks.base import Example, Prediction
from ofa.tasks.common import require_text

__all__ = ["Sst2Task"]


class Sst2Task(AnswerTask):
    """``' is the sentiment of text " {sentence} " positive or negative?'`` -> positive / negative (no image).

    TSV layout: ``uniq_id, sentence, label`` (label ``1``/``positive`` or ``0``/``negative``).
    JSONL: ``{"id", "text", "label"}``. Metric: accuracy.
    """

    name = "sst2"
    needs_image = False
    num_columns = 3

    def __init__(self, mode: InferenceMode = "allcand", **kwargs: Any) -> None:
        kwargs.setdefault("max_len", 5)
        super().__init__(candidates=["negative", "positive"], mode=mode, **kwargs)

    def instruction(self, example: Example) -> str:
        sentence = " ".join(require_text(example.text, "sentence").split())
        return f' is the sentiment of text " {sentence} " positive or negative?'

    def answer_text(self, example: Example) -> str:
        label = str(example.target).strip().lower()
        label = {"1": "positive", "0": "negative"}.get(label, label)
        if label not in self.candidates:
            raise DataError(f"label {example.target!r} is not 0/1/negative/positive")
        return label

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        return {"accuracy": accuracy([getattr(p, "answer", "") for p in preds], [self.answer_text(r) for r in refs])}

    def parse_row(self, fields: Sequence[str]) -> Example:
        self._check_columns(fields)
        uniq_id, sentence, label = fields
        return Example(id=uniq_id, text=require_text(sentence, "sentence"), target=label)

    def parse_record(self, record: dict[str, Any], image_root: Any = None) -> Example:
        return Example(id=record.get("id"), text=record.get("text"), target=record.get("label"))
