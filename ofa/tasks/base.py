"""The Task protocol and the records that flow between data, model and metrics.

A task turns raw data into unified token sequences and back: ``Example`` (raw) -> :meth:`Task.encode` ->
``Sample`` (ids + image tensor) -> collate -> model -> ids -> :meth:`Task.decode` -> ``Prediction`` ->
:meth:`Task.score`. It never runs a training loop, a backward pass or an optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import torch

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ofa.generation.config import GenerationConfig
    from ofa.tokenization import OFATokenizer

__all__ = ["Example", "Sample", "Prediction", "Task", "REQUIRED_MEMBERS"]


@dataclass
class Example:
    """One raw record, as a reader produced it (TSV row, JSONL record, or user input).

    Attributes:
        id: the record's id (``uniq_id`` / ``question_id`` in OFA's TSVs).
        image: the image, RGB (None for text-only tasks).
        text: the task's main text input: caption prompt text, question, referring expression, hypothesis,
            class name prompt or prompt for generation (None when the task has a fixed instruction).
        target: the reference output: list of captions, ``{answer: confidence}``, a box ``(x0, y0, x1, y1)``
            in original pixels, a label string, a code grid; None at inference.
        extra: task-specific fields (premise, a region box, object labels, ...).
    """

    id: Any = None
    image: "Image.Image | None" = None
    text: str | None = None
    target: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    """One encoded example, ready to be collated.

    Attributes:
        id: the example's id.
        source: encoder input ids, ``[<s>] + instruction + [</s>]``.
        image: ``[3, H, W]`` normalised tensor (a zero image with ``patch_mask=False`` for text-only samples
            in a mixed batch), or None.
        patch_mask: whether the image is real.
        target: training target ids ending with ``</s>`` (positions to ignore are ``<pad>``), or None.
        prev_output: decoder input ids starting with ``<s>`` (same length as ``target``), or None.
        decoder_prompt: forced decoder prefix for generation/ranking starting with ``<s>`` (VQA prompts), or None.
        code_mask: the target is a sequence of image codes.
        weight: per-sample loss weight (VQA answer confidence).
        constraint: per target position, the allowed next ids (trie tasks), or None.
        meta: what decode/score need later (original image size, resize ratios, references, ...).
    """

    id: Any
    source: list[int]
    image: torch.Tensor | None = None
    patch_mask: bool = False
    target: list[int] | None = None
    prev_output: list[int] | None = None
    decoder_prompt: list[int] | None = None
    code_mask: bool = False
    weight: float = 1.0
    constraint: list[list[int]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """Base of every task's typed prediction."""

    id: Any = None
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (used by the CLI's JSON lines)."""
        return {key: _plain(value) for key, value in self.__dict__.items()}


def _plain(value: Any) -> Any:
    """Tensors -> nested lists and tuples -> lists, recursively (so lists of code grids serialise too)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@runtime_checkable
class Task(Protocol):
    """What the library needs from a task; built-in tasks and plugins implement it.

    Members:
        name: the registry name users type (``caption``, ``refcoco``, ...).
        encode: raw example -> :class:`Sample` (``training=True`` also builds target/prev_output).
        decode: generated ids (+ the sample's meta) -> :class:`Prediction`.
        score: predictions + reference examples -> metrics.
        generation_config: decoding settings for this task and tokenizer.
    Optional members used when present: ``predict(model, batch, tok)`` (a task that ranks candidates
    instead of generating), ``parse_row(fields)`` (read one TSV row), ``parse_record(record, root)``
    (read one JSONL record), ``image_size``.
    """

    name: str

    def encode(self, example: Example, tok: "OFATokenizer", training: bool = False) -> Sample: ...

    def decode(self, ids: Sequence[int], tok: "OFATokenizer", sample: Sample | None = None) -> Prediction: ...

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]: ...

    def generation_config(self, tok: "OFATokenizer") -> "GenerationConfig": ...


REQUIRED_MEMBERS: tuple[str, ...] = ("name", "encode", "decode", "score", "generation_config")
