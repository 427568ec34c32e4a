"""Negative samples of OFA's matching tasks (spec §5.7): captions for image-text matching, answers for
VQA-matching, drawn from ``all_captions.txt``, ``object.txt`` and ``type2ans.json``.

Two departures from the reference, both to never produce a "negative" identical to the positive: the object
swap picks a ground-truth object that occurs in the caption (the reference may pick one that does not, and its
"negative" is then the caption itself), and a random caption or answer equal to the positive is drawn again
(a few times; the last draw stands).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import torch

from ofa.errors import DataError

__all__ = ["Negatives"]

_REDRAWS = 8


def _choice(items: Sequence[str], generator: torch.Generator | None) -> str:
    return items[int(torch.randint(len(items), (), generator=generator))]


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


class Negatives:
    """Negative captions and answers.

    Args:
        captions: every caption of the corpus (``all_captions.txt``).
        objects: object words (``object.txt``).
        type2ans: answer type -> answers of that type (``type2ans.json``); must contain ``"other"``.

    Raises:
        DataError: an empty caption or object list, or no ``"other"`` answer type.
    """

    def __init__(self, captions: Sequence[str], objects: Sequence[str], type2ans: dict[str, list[str]]) -> None:
        self.captions = [c for c in (str(c).strip() for c in captions) if c]
        self.objects = [o for o in (str(o).strip() for o in objects) if o]
        if len(self.captions) < 2:
            raise DataError(f"negative sampling needs at least 2 captions, got {len(self.captions)}")
        if len(self.objects) < 2:
            raise DataError(f"negative sampling needs at least 2 object words, got {len(self.objects)}")
        if len(type2ans.get("other", [])) < 2:
            raise DataError("type2ans needs an 'other' type with at least 2 answers; got types "
                            f"{sorted(type2ans)}")
        self.type2ans = {t: [str(a) for a in answers] for t, answers in type2ans.items() if answers}
        self.ans2type = {a: t for t, answers in self.type2ans.items() for a in answers}

    @classmethod
    def from_files(cls, directory: str | os.PathLike[str]) -> "Negatives":
        """Read ``all_captions.txt``, ``object.txt`` and ``type2ans.json`` from ``directory``.

        Raises:
            DataError: a file is missing or ``type2ans.json`` is not a JSON object of lists.
        """
        root = Path(directory)
        paths = [root / "all_captions.txt", root / "object.txt", root / "type2ans.json"]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"negative-sample resources missing: {missing}")
        try:
            type2ans = json.loads(paths[2].read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{paths[2]} is not valid JSON: {exc}") from None
        if not isinstance(type2ans, dict) or not all(isinstance(v, list) for v in type2ans.values()):
            raise DataError(f"{paths[2]} must map answer types to lists of answers")
        return cls(paths[0].read_text(encoding="utf-8").splitlines(),
                   paths[1].read_text(encoding="utf-8").splitlines(), type2ans)

    def _other_than(self, pool: Sequence[str], positive: str, generator: torch.Generator | None) -> str:
        drawn = _choice(pool, generator)
        for _ in range(_REDRAWS):
            if drawn != positive:
                break
            drawn = _choice(pool, generator)
        return drawn

    def caption(self, caption: str, gt_objects: Sequence[str] = (), generator: torch.Generator | None = None) -> str:
        """A caption that does not describe the image: with probability 0.4 (when a ground-truth object word
        occurs in the caption) that word swapped for another object word, else a random corpus caption."""
        present = [o for o in gt_objects if o and re.search(rf"\b{re.escape(o)}\b", caption)]
        if present and _rand(generator) > 0.6:
            word = _choice(present, generator)
            other = self._other_than(self.objects, word, generator)
            if other != word:
                return re.sub(rf"\b{re.escape(word)}\b", other, caption)
        return self._other_than(self.captions, caption, generator)

    def answer(self, answer: str, confidence: float, generator: torch.Generator | None = None) -> str:
        """A wrong answer: with ``u ~ U(0, 1)``, if ``confidence > u + 0.1`` and the answer has a known type,
        another answer of that type (for a numeric "how many" answer and ``u > 0.5``, the answer ± 1); otherwise
        an answer of type ``"other"``."""
        u = _rand(generator)
        kind = self.ans2type.get(answer)
        if confidence > u + 0.1 and kind is not None:
            if kind == "how many" and answer.isdigit() and u > 0.5:
                value = int(answer)
                step = 1 if value == 0 or _rand(generator) < 0.5 else -1
                return str(value + step)
            return self._other_than(self.type2ans[kind], answer, generator)
        return self._other_than(self.type2ans["other"], answer, generator)
