"""Tests for ofa.pretraining.negatives: the negative captions and answers of OFA's matching tasks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from ofa.errors import DataError
from ofa.pretraining.negatives import Negatives

CAPTIONS = ["a red circle above a blue square", "a green triangle", "two yellow squares", "a blue circle"]
OBJECTS = ["circle", "square", "triangle", "star"]
TYPE2ANS = {"color": ["red", "green", "blue", "yellow"], "how many": ["1", "2", "3", "4"],
            "other": ["yes", "no", "left", "right"]}


def _negatives() -> Negatives:
    return Negatives(CAPTIONS, OBJECTS, TYPE2ANS)


def test_caption_negatives_swap_objects_40_percent_else_random_captions() -> None:
    neg, g = _negatives(), torch.Generator().manual_seed(0)
    caption = "a red circle above a blue square"
    kinds: Counter[str] = Counter()
    for _ in range(2000):
        out = neg.caption(caption, ["circle", "square"], generator=g)
        assert out != caption
        if out in CAPTIONS:
            kinds["random"] += 1
        else:
            kinds["swap"] += 1
            words, original = out.split(), caption.split()
            changed = [(a, b) for a, b in zip(original, words) if a != b]
            assert len(words) == len(original) and len(changed) == 1
            assert changed[0][0] in ("circle", "square") and changed[0][1] in OBJECTS
    assert abs(kinds["swap"] / 2000 - 0.4) < 0.04
    # No ground-truth object in the caption (or none given): always a random caption.
    assert all(neg.caption("a green triangle", ["star"], generator=g) in CAPTIONS for _ in range(50))
    assert all(neg.caption("a green triangle", generator=g) != "a green triangle" for _ in range(50))


def test_answer_negatives_follow_the_type_rules() -> None:
    neg, g = _negatives(), torch.Generator().manual_seed(1)
    outs = [neg.answer("red", 1.0, generator=g) for _ in range(1000)]
    assert all(o != "red" for o in outs)
    same_type = sum(o in TYPE2ANS["color"] for o in outs) / len(outs)
    assert abs(same_type - 0.9) < 0.04  # conf 1.0 > u + 0.1 for u < 0.9
    assert {o for o in outs if o not in TYPE2ANS["color"]} <= set(TYPE2ANS["other"])
    counts = [neg.answer("3", 1.0, generator=g) for _ in range(1000)]
    plus_minus = sum(o in ("2", "4") for o in counts) / len(counts)
    assert plus_minus > 0.4 and "3" not in counts  # u in (0.5, 0.9): 3 +- 1 (and same-type draws can be 2 or 4)
    assert {neg.answer("0", 1.0, generator=g) for _ in range(200)} <= set(TYPE2ANS["how many"]) | {"1"} | set(
        TYPE2ANS["other"])
    # Low confidence or an unknown answer: always from "other".
    assert all(neg.answer("red", 0.05, generator=g) in TYPE2ANS["other"] for _ in range(100))
    assert all(neg.answer("purple", 1.0, generator=g) in TYPE2ANS["other"] for _ in range(100))


def test_from_files_and_bad_resources(tmp_path: Path) -> None:
    (tmp_path / "all_captions.txt").write_text("\n".join(CAPTIONS) + "\n")
    (tmp_path / "object.txt").write_text("\n".join(OBJECTS) + "\n")
    (tmp_path / "type2ans.json").write_text(json.dumps(TYPE2ANS))
    neg = Negatives.from_files(tmp_path)
    assert neg.captions == CAPTIONS and neg.ans2type["2"] == "how many"
    (tmp_path / "type2ans.json").write_text(json.dumps({"color": ["red", "blue"]}))
    with pytest.raises(DataError, match="'other' type"):
        Negatives.from_files(tmp_path)
    (tmp_path / "object.txt").unlink()
    with pytest.raises(DataError, match="object.txt"):
        Negatives.from_files(tmp_path)
