"""Generative VQA (VQAv2 as OFA fine-tunes it: ``vqa_gen``; spec §5.3)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from ofa.data.text import pre_question
from ofa.errors import DataError
from ofa.metrics.vqa import soft_score, vqa_accuracy
from ofa.tasks.answers import AnswerTask, InferenceMode
from ofa.tasks.base import Example, Prediction
from ofa.tasks.common import require_text

__all__ = ["VqaGenTask", "parse_answers"]


def parse_answers(text: str) -> dict[str, float]:
    """OFA's answer column ``"conf|!+answer&&conf|!+answer..."`` -> ``{answer: confidence}``."""
    answers: dict[str, float] = {}
    for item in require_text(text, "answers").split("&&"):
        if "|!+" not in item:
            raise DataError(f"bad answer entry {item!r}: expected 'confidence|!+answer'")
        conf, answer = item.split("|!+", 1)
        try:
            value = float(conf)
        except ValueError as exc:
            raise DataError(f"bad answer confidence {conf!r} in {item!r}") from exc
        if not (math.isfinite(value) and value >= 0):  # it becomes a loss weight: inf/NaN/negative would poison it
            raise DataError(f"bad answer confidence {conf!r} in {item!r}: expected a finite number >= 0")
        answers[answer] = value
    return answers


class VqaGenTask(AnswerTask):
    """Question (+ optional object labels) -> answer, by generation, trie-constrained generation or ranking.

    Args:
        candidates: the answer list (``trainval_ans2label`` keys in OFA).
        mode: ``"allcand"``, ``"trie"`` or ``"beam"`` (see :class:`AnswerTask`); default ``"allcand"`` with
            candidates, ``"beam"`` without.
        add_object: append ``" object: o1 o2 ..."`` (the first ``max_objects`` labels) to the question.

    Targets: ``Example.target`` is ``{answer: confidence}`` (OFA's TSV; the sample weight is the best answer's
    confidence) or a list of annotator answers (official VQA format). Metric: the official VQA accuracy for
    annotator lists, the confidence of the predicted answer for ``{answer: conf}`` targets (OFA's validation).

    TSV layout: ``question_id, image_id, question, answers, object labels ("a&&b"), image (base64)``.
    JSONL: ``{"id", "image", "question", "answers": [...] or {answer: conf}}``.
    """

    name = "vqa_gen"
    num_columns = 6

    def __init__(self, candidates: Sequence[str] | None = None, mode: InferenceMode | None = None,
                 add_object: bool = False, max_objects: int = 30, **kwargs: Any) -> None:
        if mode is None:  # OFA's default is allcand; without a candidate list only open generation is possible
            mode = "allcand" if candidates else "beam"
        super().__init__(candidates=candidates, mode=mode, **kwargs)
        self.add_object = add_object
        self.max_objects = max_objects

    def instruction(self, example: Example) -> str:
        question = pre_question(require_text(example.text, "question"), 80)
        if not question.endswith("?"):
            question += "?"
        text = " " + question
        objects = example.extra.get("objects") or []
        if self.add_object and objects:
            text += " object: " + " ".join(objects[: self.max_objects])
        return text

    def _confidences(self, example: Example) -> dict[str, float]:
        target = example.target
        if isinstance(target, dict) and target:
            return {str(k): float(v) for k, v in target.items()}
        if isinstance(target, (list, tuple)) and target:
            return {a: vqa_accuracy(a, list(target)) for a in set(target)}
        raise DataError(f"example {example.id!r} has no answers")

    def answer_text(self, example: Example) -> str:
        confidences = self._confidences(example)
        return max(confidences, key=lambda a: confidences[a])

    def answer_weight(self, example: Example) -> float:
        return max(self._confidences(example).values())

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        if len(preds) != len(refs):
            raise DataError(f"{len(preds)} predictions for {len(refs)} references")
        total = 0.0
        for pred, ref in zip(preds, refs):
            answer = getattr(pred, "answer", "")
            if isinstance(ref.target, dict):
                total += soft_score(answer, ref.target)
            else:
                total += vqa_accuracy(answer, list(ref.target))
        return {"vqa_acc": total / max(len(refs), 1)}

    def parse_row(self, fields: Sequence[str]) -> Example:
        self._check_columns(fields)
        qid, image_id, question, answers, objects, image = fields
        return Example(id=qid, image=self._image_from_field(image), text=require_text(question, "question"),
                       target=parse_answers(answers),
                       extra={"image_id": image_id, "objects": [o for o in objects.split("&&") if o]})

    def parse_record(self, record: dict[str, Any], image_root: Any = None) -> Example:
        return Example(id=record.get("id"), image=self._image_from_record(record, image_root),
                       text=record.get("question"), target=record.get("answers"),
                       extra={"objects": record.get("objects") or []})
