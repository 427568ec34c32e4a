"""Image captioning (COCO Karpathy split as OFA fine-tunes it; spec §5.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, Sequence

from ofa.data.text import strip_punctuation
from ofa.errors import DataError
from ofa.generation.config import GenerationConfig
from ofa.metrics.caption import caption_scores
from ofa.tasks.base import Example, Prediction, Sample
from ofa.tasks.common import BaseTask, require_text

if TYPE_CHECKING:  # pragma: no cover
    from ofa.generation.config import GenerationConfig
    from ofa.metrics.caption import TokenizerName
    from ofa.tokenization import OFATokenizer

__all__ = ["CaptionTask", "CaptionPrediction"]


@dataclass
class CaptionPrediction(Prediction):
    """A caption and its (length-normalised) beam score."""

    text: str = ""


def _clean(text: str) -> str:
    return " ".join(strip_punctuation(text).split())


class CaptionTask(BaseTask):
    """``" what does the image describe?"`` -> caption.

    Args:
        image_size: square input size (480 in OFA's fine-tuning).
        max_target_words: training captions are cut to this many words (20).
        beam_size, max_len, no_repeat_ngram_size: inference settings (5, 16, 3 as in OFA).
        tokenizer: pycocoevalcap tokenization for :meth:`score` (``"auto"``: PTB with Java, else Java-free).
        metrics: what :meth:`score` computes (see :func:`ofa.metrics.caption.caption_scores`); METEOR starts
            a Java process, so leave it out for quick checks.

    TSV layout: ``uniq_id, image_id, caption, object labels, image (base64)``; several reference captions are
    joined with ``&&``. JSONL: ``{"id", "image", "caption" or "captions"}``.
    """

    name = "caption"
    num_columns = 5
    instruction_text = " what does the image describe?"

    def __init__(self, image_size: int = 480, max_target_words: int = 20, beam_size: int = 5, max_len: int = 16,
                 no_repeat_ngram_size: int = 3, tokenizer: "TokenizerName" = "auto",
                 metrics: Sequence[str] = ("BLEU", "METEOR", "ROUGE_L", "CIDEr")) -> None:
        super().__init__(image_size)
        self.max_target_words = max_target_words
        self.beam_size = beam_size
        self.max_len = max_len
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.tokenizer = tokenizer
        self.metrics = tuple(metrics)

    def instruction(self, example: Example) -> str:
        return self.instruction_text

    def references(self, example: Example) -> list[str]:
        target = example.target
        captions = [target] if isinstance(target, str) else list(target or [])
        captions = [c for c in captions if isinstance(c, str) and c.strip()]
        if not captions:
            raise DataError(f"example {example.id!r} has no reference caption")
        return captions

    def target_text(self, example: Example) -> str:
        caption = _clean(self.references(example)[0])
        words = caption.split()[: self.max_target_words]
        return " " + " ".join(words)

    def encode(self, example: Example, tok: "OFATokenizer", training: bool = False) -> Sample:
        sample = super().encode(example, tok, training)
        if example.target is not None:
            sample.meta["references"] = [_clean(c) for c in self.references(example)]
        return sample

    def generation_config(self, tok: "OFATokenizer") -> "GenerationConfig":
        return GenerationConfig(beam_size=self.beam_size, max_len_b=self.max_len, min_len=1,
                                no_repeat_ngram_size=self.no_repeat_ngram_size)

    def decode(self, ids: Sequence[int], tok: "OFATokenizer", sample: Sample | None = None) -> CaptionPrediction:
        return CaptionPrediction(id=None if sample is None else sample.id, text=_clean(tok.decode(list(ids))))

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        references: dict[Hashable, list[str]] = {str(ex.id): self.references(ex) for ex in refs}
        candidates: dict[Hashable, str] = {str(p.id): str(getattr(p, "text", "")) for p in preds}
        return caption_scores(references, candidates, tokenizer=self.tokenizer, metrics=self.metrics)

    def parse_row(self, fields: Sequence[str]) -> Example:
        self._check_columns(fields)
        uniq_id, image_id, caption, _labels, image = fields
        captions = [c.strip() for c in require_text(caption, "caption").split("&&") if c.strip()]
        return Example(id=uniq_id, image=self._image_from_field(image), target=captions,
                       extra={"image_id": image_id})

    def parse_record(self, record: dict[str, Any], image_root: Any = None) -> Example:
        captions = record.get("captions", record.get("caption"))
        return Example(id=record.get("id"), image=self._image_from_record(record, image_root),
                       target=[captions] if isinstance(captions, str) else captions)
