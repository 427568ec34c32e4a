"""The ``pretrain`` task: OFA's unified pretraining mixture read from its four files (spec §5.7).

The task's training data (``train_data``) is ``vision_language_examples.tsv``; the other files and the negative
resources are task options. Row ``i`` of the image-text file gives its two samples for the first forward pass;
every ``extras_every``-th row (``i % extras_every == 0``, OFA: every 8th row read) adds, for the second pass,
two text-infilling samples (text rows ``2j`` and ``2j + 1`` with ``j = i // extras_every``), one image-infilling
sample (image row ``j``) and one detection sample (detection row ``j``), each file read cyclically. Using the
row index instead of the read order keeps the mixture the same under shuffling, sharding and resumption.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from ofa.data.text import pre_caption
from ofa.data.tsv import TSVFile
from ofa.errors import DataError
from ofa.generation.config import GenerationConfig
from ofa.pretraining.examples import PretrainExamples
from ofa.pretraining.files import VLRow, parse_detection_row, parse_image_row, parse_text_row, parse_vl_row
from ofa.pretraining.negatives import Negatives
from ofa.records import Example, Prediction, Sample

__all__ = ["PretrainTask", "PretrainPrediction"]


@dataclass
class PretrainPrediction(Prediction):
    """The decoded text of a pretraining sample (captions, answers, infilled text)."""

    text: str = ""


def _optional_file(path: str | os.PathLike[str] | None, what: str) -> TSVFile | None:
    if path is None:
        return None
    source = TSVFile(path)
    if len(source) == 0:
        raise DataError(f"the {what} file {str(path)!r} has no rows")
    return source


class PretrainTask:
    """OFA's pretraining mixture as a task (register name ``pretrain``).

    Args:
        negatives: directory with ``all_captions.txt``, ``object.txt`` and ``type2ans.json`` (needed by caption
            and qa rows for their matching samples).
        text_data / image_data / detection_data: ``text_examples.tsv``, ``image_examples.tsv``,
            ``detection_examples.tsv``; a missing one leaves its samples out.
        extras_every: rows per set of second-pass samples (OFA: 8).
        image_size, aux_image_size, max_image_size, max_src_length, max_tgt_length, mask_ratio, poisson_lambda,
        augment:
            see :class:`~ofa.pretraining.examples.PretrainExamples`.
    """

    name: ClassVar[str] = "pretrain"

    def __init__(self, negatives: str | os.PathLike[str] | None = None, text_data: str | None = None,
                 image_data: str | None = None, detection_data: str | None = None, *, extras_every: int = 8,
                 image_size: int = 384, aux_image_size: int = 256, max_image_size: float = 512,
                 max_src_length: int = 80, max_tgt_length: int = 30, mask_ratio: float = 0.3,
                 poisson_lambda: float = 3.0, augment: bool = True) -> None:
        if isinstance(extras_every, bool) or not isinstance(extras_every, int) or extras_every < 1:
            raise DataError(f"extras_every must be an int >= 1, got {extras_every!r}")
        self.negatives = None if negatives is None else Negatives.from_files(negatives)
        self.text_data = _optional_file(text_data, "text")
        self.image_data = _optional_file(image_data, "image")
        self.detection_data = _optional_file(detection_data, "detection")
        self.extras_every = extras_every
        self.options: dict[str, Any] = dict(image_size=image_size, aux_image_size=aux_image_size, max_image_size=max_image_size,
                            max_src_length=max_src_length, max_tgt_length=max_tgt_length, mask_ratio=mask_ratio,
                            poisson_lambda=poisson_lambda, augment=augment)
        self._builders: dict[int, PretrainExamples] = {}

    def _examples(self, tok: Any) -> PretrainExamples:
        builder = self._builders.get(id(tok))
        if builder is None:
            builder = self._builders[id(tok)] = PretrainExamples(tok, self.negatives, **self.options)
        return builder

    # -- reading ----------------------------------------------------------------------------------------------
    def parse_row(self, fields: Sequence[str]) -> Example:
        row = parse_vl_row(fields)
        return Example(id=row.id, image=row.image, text=row.caption, extra={"row": row})

    # -- encoding ---------------------------------------------------------------------------------------------
    def encode_group(self, example: Example, tok: Any, training: bool, index: int) -> list[Sample]:
        """The row's two first-pass samples, plus the second-pass samples on every ``extras_every``-th row."""
        row = example.extra.get("row")
        if not isinstance(row, VLRow):
            raise DataError(f"example {example.id!r} was not read by the pretrain task (no parsed row)")
        builder = self._examples(tok)
        samples = builder.vision_language(row)
        if training and index % self.extras_every == 0:
            j = index // self.extras_every
            if self.text_data is not None:
                for k in (2 * j, 2 * j + 1):
                    samples.append(builder.text_infilling(parse_text_row(self.text_data[k % len(self.text_data)])))
            if self.image_data is not None:
                samples.append(builder.image_infilling(parse_image_row(self.image_data[j % len(self.image_data)])))
            if self.detection_data is not None:
                detection = builder.detection(parse_detection_row(
                    self.detection_data[j % len(self.detection_data)]))
                if detection is not None:
                    samples.append(detection)
        if not training:
            for s in samples:
                s.target = s.prev_output = None
        return samples

    def encode(self, example: Example, tok: Any, training: bool = False) -> Sample:
        """The row's main sample (caption, VQA or grounding), with the example's id."""
        sample = self.encode_group(example, tok, training, index=1)[0]
        sample.id = example.id
        return sample

    # -- inference --------------------------------------------------------------------------------------------
    def generation_config(self, tok: Any) -> GenerationConfig:
        return GenerationConfig(beam_size=5, max_len_b=int(self.options["max_tgt_length"]) + 2)

    def decode(self, ids: Sequence[int], tok: Any, sample: Sample | None = None) -> Prediction:
        return PretrainPrediction(id=None if sample is None else sample.id, text=tok.decode(ids).strip())

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        """Exact match of the decoded main output with the caption of caption rows (a smoke metric: pretraining
        is judged by what it transfers, see ``ofa quickstart-pretrain``)."""
        hits = total = 0
        for pred, ref in zip(preds, refs):
            row = ref.extra.get("row")
            if isinstance(row, VLRow) and row.type == "caption":
                total += 1
                hits += getattr(pred, "text", None) == pre_caption(row.caption, int(self.options["max_tgt_length"]))
        return {"caption_exact": hits / total if total else 0.0}
