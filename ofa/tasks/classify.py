"""Image classification by answering with the class name (ImageNet-1K as OFA fine-tunes it; spec §5.5)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ofa.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageNetTrainTransform, square_resize
from ofa.errors import ConfigError, DataError
from ofa.metrics.classification import accuracy
from ofa.tasks.answers import AnswerTask, InferenceMode
from ofa.tasks.base import Example, Prediction
from ofa.tasks.common import require_image

__all__ = ["ImageClassifyTask"]


class ImageClassifyTask(AnswerTask):
    """``" what does the image describe?"`` -> a class name, chosen among ``class_names``.

    Images use the ImageNet mean/std (as OFA's ImageNet fine-tuning); training applies
    :class:`ofa.data.transforms.ImageNetTrainTransform` when ``augment=True``. Metric: top-1 accuracy.

    TSV layout: ``image (base64), label index, class name``. JSONL: ``{"id", "image", "label": name}``.
    """

    name = "image_classify"
    num_columns = 3
    instruction_text = " what does the image describe?"

    def __init__(self, class_names: Sequence[str] | None = None, mode: InferenceMode = "allcand",
                 augment: bool = False, **kwargs: Any) -> None:
        if not class_names:
            raise ConfigError("image_classify needs class_names (the candidate labels)")
        super().__init__(candidates=list(class_names), mode=mode, prompt_type="none", **kwargs)
        self.augment = augment
        self._train_transform: Any = None

    def instruction(self, example: Example) -> str:
        return self.instruction_text

    def transform(self, example: Example) -> tuple[torch.Tensor | None, dict[str, Any]]:
        image = require_image(example, self.name)
        if self.augment:
            if self._train_transform is None:
                self._train_transform = ImageNetTrainTransform(self.image_size)
            return self._train_transform(image), {"original_size": image.size}
        return square_resize(image, self.image_size, IMAGENET_MEAN, IMAGENET_STD), {"original_size": image.size}

    def answer_text(self, example: Example) -> str:
        label = str(example.target)
        if label not in self.candidates:
            raise DataError(f"label {label!r} is not one of the {len(self.candidates)} class names")
        return label

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        return {"top1": accuracy([getattr(p, "answer", "") for p in preds], [str(r.target) for r in refs])}

    def parse_row(self, fields: Sequence[str]) -> Example:
        self._check_columns(fields)
        image, label_index, name = fields
        return Example(id=label_index, image=self._image_from_field(image), target=name.strip())

    def parse_record(self, record: dict[str, Any], image_root: Any = None) -> Example:
        return Example(id=record.get("id"), image=self._image_from_record(record, image_root),
                       target=record.get("label"))
