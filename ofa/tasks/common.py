"""Shared machinery of the built-in tasks: instruction encoding, image transforms, generation-based predict."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch

from ofa.data.images import decode_base64_image, load_image
from ofa.data.transforms import square_resize
from ofa.errors import DataError, OFAWarning
from ofa.tasks.base import Example, Prediction, Sample, default_predict

if TYPE_CHECKING:  # pragma: no cover
    from ofa.data.collate import Batch
    from ofa.generation.config import GenerationConfig
    from ofa.generation.generate import Hypothesis
    from ofa.tokenization import OFATokenizer

__all__ = ["BaseTask", "require_text", "require_image", "parse_box"]


def require_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{what} is empty or not text ({value!r})")
    return value


def require_image(example: Example, task: str) -> Any:
    if example.image is None:
        raise DataError(f"task {task!r} needs an image; example {example.id!r} has none")
    return example.image


def parse_box(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` (OFA's TSV region column) or a 4-sequence -> floats, checked."""
    try:
        values = text.split(",") if isinstance(text, str) else list(text)
        box = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:  # None, a number, a non-numeric entry
        raise DataError(f"bad box {text!r}: expected four numbers x0,y0,x1,y1") from exc
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[0] > box[2] or box[1] > box[3]:
        raise DataError(f"bad box {text!r}: expected finite x0,y0,x1,y1 with x0 <= x1 and y0 <= y1")
    return box[0], box[1], box[2], box[3]


class BaseTask:
    """Base class of the built-in tasks (plugins may use it too; only the :class:`~ofa.tasks.base.Task` protocol
    is required).

    Subclasses set ``name`` and implement :meth:`instruction`, :meth:`target_text` (or :meth:`target_ids`),
    :meth:`decode`, :meth:`score` and :meth:`generation_config`; images are square-resized to ``image_size``
    and normalised to [-1, 1] unless :meth:`transform` is overridden.
    """

    name: ClassVar[str] = "base"
    needs_image: ClassVar[bool] = True
    num_columns: ClassVar[int | None] = None
    max_source_tokens: int = 80
    #: How many truncated instructions one task object reports (as :class:`~ofa.errors.OFAWarning`) before it
    #: goes quiet: a training set with many long rows should not flood the log.
    max_truncation_warnings: ClassVar[int] = 5

    def __init__(self, image_size: int = 480) -> None:
        self.image_size = int(image_size)
        self._truncations = 0

    # -- encoding ---------------------------------------------------------------------------------------------
    def instruction(self, example: Example) -> str:
        raise NotImplementedError

    def target_text(self, example: Example) -> str:
        raise NotImplementedError

    def target_ids(self, example: Example, tok: "OFATokenizer", meta: dict[str, Any]) -> list[int]:
        """Training target ids without the final eos (default: the BPE of :meth:`target_text`)."""
        return tok.encode(self.target_text(example))

    def transform(self, example: Example) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """Image tensor ``[3, S, S]`` and meta (original size); None for text-only examples."""
        if not self.needs_image:
            return None, {}
        image = require_image(example, self.name)
        return square_resize(image, self.image_size), {"original_size": image.size}

    def encode_source(self, text: str, tok: "OFATokenizer") -> list[int]:
        """``[bos] + ids + [eos]`` of an instruction, cut to ``max_source_tokens`` (with a warning, as OFA's
        ``max_src_length`` cuts silently)."""
        ids = tok.encode(text)
        if len(ids) > self.max_source_tokens:
            self._warn_truncated(text, len(ids))
            ids = ids[: self.max_source_tokens]
        if not ids:
            raise DataError(f"the instruction {text!r} encodes to no tokens")
        return [tok.bos_id] + ids + [tok.eos_id]

    def _warn_truncated(self, text: str, n: int) -> None:
        count = getattr(self, "_truncations", 0) + 1  # subclasses that skip __init__ still count
        self._truncations = count
        if count > self.max_truncation_warnings:
            return
        preview = text if len(text) <= 60 else text[:57] + "..."
        last = "; further truncations by this task are not reported" if count == self.max_truncation_warnings else ""
        warnings.warn(f"task {self.name!r}: the instruction {preview!r} has {n} tokens; only the first "
                      f"{self.max_source_tokens} (the task's max_source_tokens) are used{last}", OFAWarning,
                      stacklevel=3)

    def encode(self, example: Example, tok: "OFATokenizer", training: bool = False) -> Sample:
        source = self.encode_source(self.instruction(example), tok)
        image, meta = self.transform(example)
        sample = Sample(id=example.id, source=source, image=image, patch_mask=image is not None, meta=meta)
        if training:
            target = self.target_ids(example, tok, meta)
            if not target:
                raise DataError(f"example {example.id!r} has an empty target")
            sample.target = target + [tok.eos_id]
            sample.prev_output = [tok.bos_id] + target
        return sample

    # -- inference --------------------------------------------------------------------------------------------
    def generation_config(self, tok: "OFATokenizer") -> "GenerationConfig":
        raise NotImplementedError

    def from_hypothesis(self, hypothesis: "Hypothesis", tok: "OFATokenizer", sample: Sample) -> Prediction:
        prediction = self.decode(hypothesis.tokens.tolist(), tok, sample)
        prediction.score = hypothesis.score
        return prediction

    def predict(self, model: Any, batch: "Batch", tok: "OFATokenizer",
                config: "GenerationConfig | None" = None) -> list[Prediction]:
        """Generate with :meth:`generation_config` (or ``config``) and turn the best hypothesis of each input into a
        prediction with :meth:`from_hypothesis` (:func:`~ofa.tasks.base.default_predict`)."""
        return default_predict(self, model, batch, tok, config, from_hypothesis=self.from_hypothesis,
                               empty=self.empty_prediction)

    def empty_prediction(self, sample: Sample) -> Prediction:
        return Prediction(id=sample.id, score=float("-inf"))

    def decode(self, ids: Sequence[int], tok: "OFATokenizer", sample: Sample | None = None) -> Prediction:
        raise NotImplementedError

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        raise NotImplementedError

    # -- readers ----------------------------------------------------------------------------------------------
    def _check_columns(self, fields: Sequence[str]) -> None:
        if self.num_columns is not None and len(fields) != self.num_columns:
            raise DataError(f"task {self.name!r} expects {self.num_columns} TSV columns, got {len(fields)}")

    @staticmethod
    def _image_from_field(value: str) -> Any:
        return decode_base64_image(value)

    @staticmethod
    def _image_from_record(record: dict[str, Any], image_root: Any) -> Any:
        if "image" not in record:
            raise DataError(f"record {record.get('id')!r} has no 'image' field")
        path = Path(record["image"])
        if image_root is not None and not path.is_absolute():
            path = Path(image_root) / path
        return load_image(path)
