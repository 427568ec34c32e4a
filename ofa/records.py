"""The records that flow between data readers, tasks, the model and metrics.

``Example`` (raw) -> task encode -> ``Sample`` (ids + image tensor) -> collate -> model -> ids -> task decode ->
``Prediction`` -> task score. They live below both :mod:`ofa.data` and :mod:`ofa.tasks` so that readers and
collation need no task code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

import torch

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["Example", "Sample", "Prediction", "ParsesRows", "ParsesRecords", "EncodesGroups"]


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
        part: which forward pass of a training step the sample joins (0 for every task but pretraining, whose
            text/image-infilling and detection samples take a second pass: ``ofa.pretraining``).
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
    part: int = 0


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
class ParsesRows(Protocol):
    """A task that reads rows of its OFA TSV layout (the fields of one line, split on tabs)."""

    def parse_row(self, fields: Sequence[str]) -> Example: ...


@runtime_checkable
class EncodesGroups(Protocol):
    """A task whose training rows each give several samples (OFA pretraining: two per image-text row, plus the
    text/image-infilling and detection samples every few rows). ``index`` is the row's index in its file."""

    def encode_group(self, example: Example, tok: Any, training: bool, index: int) -> list[Sample]: ...


@runtime_checkable
class ParsesRecords(Protocol):
    """A task that reads JSON-lines records; relative image paths resolve against ``image_root``."""

    def parse_record(self, record: Mapping[str, Any], image_root: Any = None) -> Example: ...
