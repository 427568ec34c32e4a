"""``count_objects``: "how many objects are in the image?" answered with a number word.

Written against ofa's public API only: the Task protocol members (name, encode, decode, score,
generation_config), ofa.tasks.base records, ofa.data transforms, and ofa.generation for a trie over the
allowed answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ofa.data.transforms import square_resize
from ofa.errors import DataError
from ofa.generation import GenerationConfig, Trie, TrieConstraint
from ofa.tasks.base import Example, Prediction, Sample

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@dataclass
class CountPrediction(Prediction):
    """The predicted count (None when the answer is not a number word) and the answer text."""

    count: int | None = None
    answer: str = ""


class CountObjectsTask:
    """Count objects: the answer is one of ``zero`` ... ``ten``; metric: exact-count accuracy and mean abs error.

    TSV layout: ``uniq_id, count, image (base64)``.
    """

    name = "count_objects"
    instruction = " how many objects are in the image?"

    def __init__(self, image_size: int = 256, max_count: int = 10) -> None:
        self.image_size = image_size
        self.answers = NUMBER_WORDS[: max_count + 1]

    def encode(self, example: Example, tok: Any, training: bool = False) -> Sample:
        if example.image is None:
            raise DataError(f"count_objects needs an image (example {example.id!r})")
        source = tok.encode_source(self.instruction)
        sample = Sample(id=example.id, source=source, image=square_resize(example.image, self.image_size),
                        patch_mask=True, meta={"original_size": example.image.size})
        if training:
            try:
                count = int(example.target)
            except (TypeError, ValueError) as exc:
                raise DataError(f"count_objects example {example.id!r} has no integer count "
                                f"({example.target!r})") from exc
            if not 0 <= count < len(self.answers):
                raise DataError(f"count {count} is outside 0..{len(self.answers) - 1}")
            answer = tok.encode(" " + self.answers[count])
            sample.target = answer + [tok.eos_id]
            sample.prev_output = [tok.bos_id] + answer
        return sample

    def generation_config(self, tok: Any) -> GenerationConfig:
        trie = Trie.from_answers([tok.encode(" " + a) for a in self.answers], tok.bos_id, tok.eos_id)
        return GenerationConfig(beam_size=3, max_len_b=4, normalize_scores=False,
                                processors=(TrieConstraint(trie, tok.bos_id),))

    def decode(self, ids: Sequence[int], tok: Any, sample: Sample | None = None) -> CountPrediction:
        answer = tok.decode(list(ids)).strip()
        count = self.answers.index(answer) if answer in self.answers else None
        return CountPrediction(id=None if sample is None else sample.id, answer=answer, count=count)

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        if len(preds) != len(refs) or not refs:
            raise DataError(f"{len(preds)} predictions for {len(refs)} references")
        exact = [float(getattr(p, "count", None) == int(r.target)) for p, r in zip(preds, refs)]
        errors = [abs((getattr(p, "count", None) or 0) - int(r.target)) for p, r in zip(preds, refs)]
        return {"count_accuracy": sum(exact) / len(exact), "count_mae": sum(errors) / len(errors)}

    def parse_row(self, fields: Sequence[str]) -> Example:
        from ofa.data.images import decode_base64_image

        if len(fields) != 3:
            raise DataError(f"count_objects expects 3 TSV columns, got {len(fields)}")
        uniq_id, count, image = fields
        return Example(id=uniq_id, image=decode_base64_image(image), target=int(count))
