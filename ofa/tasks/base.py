"""The Task protocol and the records that flow between data, model and metrics.

A task turns raw data into unified token sequences and back: ``Example`` (raw) -> :meth:`Task.encode` ->
``Sample`` (ids + image tensor) -> collate -> model -> ids -> :meth:`Task.decode` -> ``Prediction`` ->
:meth:`Task.score`. It never runs a training loop, a backward pass or an optimizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import torch

from ofa.generation.config import GenerationConfig
from ofa.generation.generate import generate
from ofa.records import Example, ParsesRecords, ParsesRows, Prediction, Sample

if TYPE_CHECKING:  # pragma: no cover
    from ofa.data.collate import Batch
    from ofa.generation.generate import Hypothesis
    from ofa.tokenization import OFATokenizer

__all__ = ["Example", "Sample", "Prediction", "Task", "REQUIRED_MEMBERS", "Predicts", "ParsesRows", "ParsesRecords",
           "ConstrainsTraining", "GeneratesImages", "default_predict", "predict"]


@runtime_checkable
class Task(Protocol):
    """What the library needs from a task; built-in tasks and plugins implement it.

    Members:
        name: the registry name users type (``caption``, ``refcoco``, ...).
        encode: raw example -> :class:`Sample` (``training=True`` also builds target/prev_output).
        decode: generated ids (+ the sample's meta) -> :class:`Prediction`.
        score: predictions + reference examples -> metrics.
        generation_config: decoding settings for this task and tokenizer.
    Optional capabilities are small protocols of their own, checked with ``isinstance``: :class:`Predicts` (a
    task with its own inference, e.g. ranking candidates; others get :func:`default_predict`),
    :class:`~ofa.records.ParsesRows` / :class:`~ofa.records.ParsesRecords` (read TSV rows / JSONL records),
    :class:`ConstrainsTraining` (a training-time logit range), :class:`GeneratesImages` (text-to-image tasks,
    needed by CLIP-SCST).
    """

    @property
    def name(self) -> str:
        """The registry name users type (a class attribute on :class:`BaseTask`)."""
        ...

    def encode(self, example: Example, tok: "OFATokenizer", training: bool = False) -> Sample: ...

    def decode(self, ids: Sequence[int], tok: "OFATokenizer", sample: Sample | None = None) -> Prediction: ...

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]: ...

    def generation_config(self, tok: "OFATokenizer") -> "GenerationConfig": ...


REQUIRED_MEMBERS: tuple[str, ...] = ("name", "encode", "decode", "score", "generation_config")


@runtime_checkable
class Predicts(Protocol):
    """A task with its own inference (ranking candidates, sampling images, ...) instead of :func:`default_predict`."""

    def predict(self, model: Any, batch: "Batch", tok: "OFATokenizer") -> list[Prediction]: ...


@runtime_checkable
class ConstrainsTraining(Protocol):
    """A task whose training logits (and label smoothing) are restricted to ids 0-3 plus ``[start, stop)``
    (OFA's ``constraint_range``, e.g. the image codes of text-to-image)."""

    def training_constraint_range(self, tok: "OFATokenizer") -> tuple[int, int]: ...


@runtime_checkable
class GeneratesImages(Protocol):
    """A text-to-image task, as CLIP-SCST needs it: the code grid side, a check of model and tokenizer, and the
    caption text of a sample (what the image scorer compares the generated image with)."""

    grid_size: int

    def check_model(self, model: Any, tok: "OFATokenizer") -> None: ...

    def sample_caption(self, sample: Sample, tok: "OFATokenizer") -> str: ...


def default_predict(task: Task, model: Any, batch: "Batch", tok: "OFATokenizer",
                    config: GenerationConfig | None = None, *,
                    from_hypothesis: Callable[["Hypothesis", "OFATokenizer", Sample], Prediction] | None = None,
                    empty: Callable[[Sample], Prediction] | None = None) -> list[Prediction]:
    """Generate with the task's :meth:`~Task.generation_config` (or ``config``), then decode the best hypothesis
    of each input with :meth:`~Task.decode`; its score becomes the prediction's. An input without hypotheses gets
    a plain :class:`Prediction` scored ``-inf``.

    The batch's forced decoder prefixes and image-code rows (``code_masks``) are passed to the search.

    Args:
        from_hypothesis: turns a hypothesis into a prediction instead of decode + score (tasks that strip a
            prompt or read boxes from it).
        empty: the prediction of an input without hypotheses.
    """
    config = config or task.generation_config(tok)
    code_masks: torch.Tensor | None = batch.code_masks if bool(batch.code_masks.any()) else None
    hypos = generate(model, batch.src_tokens, patch_images=batch.patch_images, patch_masks=batch.patch_masks,
                     config=config, prefix_tokens=batch.prefix_tokens, code_masks=code_masks)
    out: list[Prediction] = []
    for sample, hyps in zip(batch.samples, hypos):
        if not hyps:
            out.append(empty(sample) if empty is not None else Prediction(id=sample.id, score=float("-inf")))
        elif from_hypothesis is not None:
            out.append(from_hypothesis(hyps[0], tok, sample))
        else:
            prediction = task.decode(hyps[0].tokens.tolist(), tok, sample)
            prediction.score = hyps[0].score
            out.append(prediction)
    return out


def predict(task: Task, model: Any, batch: "Batch", tok: "OFATokenizer") -> list[Prediction]:
    """The task's own :meth:`Predicts.predict` when it has one, else :func:`default_predict`."""
    if isinstance(task, Predicts):
        return task.predict(model, batch, tok)
    return default_predict(task, model, batch, tok)
