"""VQA answer normalisation and accuracy, checked on cases worked out by hand."""

from __future__ import annotations

import pytest

from ofa.errors import DataError
from ofa.metrics import normalize_answer, soft_score, vqa_accuracy, vqa_score


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("yes.", "yes"),
        ("Yes", "yes"),
        ("Two", "2"),
        ("two dogs", "2 dogs"),
        ("none", "0"),
        ("the dog", "dog"),
        ("A dog", "dog"),
        ("an apple", "apple"),
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("Its", "its"),  # a real word, not a contraction
        ("1,000", "1000"),  # a digit-comma-digit anywhere deletes all listed punctuation
        ("3.5", "3.5"),  # a period before a digit stays
        ("end. ", "end"),
        ("red, white", "red white"),  # ", " touches a space: deleted
        ("black/white", "black white"),  # no space next to "/": replaced by a space
        ("t-shirt", "t shirt"),
        ("yes!", "yes"),
        ("  Left\tside\n", "left side"),
        ("st. louis", "st louis"),
        ("the the", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        # 10 annotators, leave one out, min(1, matches among the other 9 / 3), averaged:
        (0, 0.0),
        (1, 0.3),  # 9 subsets keep the match (1/3 each), 1 loses it (0): 3/10
        (2, 0.6),  # 8 subsets x 2/3 + 2 subsets x 1/3 = 6/10
        (3, 0.9),  # 7 subsets x 1 + 3 subsets x 2/3 = 9/10
        (4, 1.0),  # every subset keeps >= 3 matches
        (10, 1.0),
    ],
)
def test_vqa_accuracy_ten_annotators(matches: int, expected: float) -> None:
    answers = ["yes"] * matches + ["no"] * (10 - matches)
    assert vqa_accuracy("yes", answers) == pytest.approx(expected)


def test_vqa_accuracy_normalized_mode_normalises_both_sides() -> None:
    assert vqa_accuracy("Two.", ["2", "two", "2 ", "3"] + ["three"] * 6, mode="normalized") == pytest.approx(0.9)
    assert vqa_accuracy("the dog", ["dog"] * 10, mode="normalized") == 1.0
    assert vqa_accuracy("dont", ["don't"] * 4 + ["no"] * 6, mode="normalized") == 1.0


def test_vqa_accuracy_official_normalises_only_when_annotators_disagree() -> None:
    # issue #14 item 8: as vqaEval.py, unanimous answers are compared raw (after strip) -> "Yes" scores 0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("Yes", ["yes"] * 10, mode="normalized") == 1.0
    assert vqa_accuracy("the dog", ["dog"] * 10) == 0.0
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0  # whitespace is always stripped
    # disagreeing annotators: both sides normalised
    assert vqa_accuracy("Two.", ["2", "two", "2 ", "3"] + ["three"] * 6) == pytest.approx(0.9)
    assert vqa_accuracy("dont", ["don't"] * 4 + ["no"] * 6) == 1.0
    with pytest.raises(DataError, match="'strict'"):
        vqa_accuracy("yes", ["yes"], mode="strict")


def test_official_period_rule_deletes_at_most_32_periods() -> None:
    text = "a" + "." * 40 + "b"
    assert normalize_answer(text) == "a" + "." * 8 + "b"  # re.sub(..., re.UNICODE): count=32
    assert normalize_answer(text, official=False) == "ab"


def test_vqa_accuracy_takes_vqa_answer_dicts_and_leaves_out_exactly_one() -> None:
    dicts = [{"answer": "cat", "answer_id": i + 1, "answer_confidence": "yes"} for i in range(3)]
    dicts += [{"answer": "dog", "answer_id": i + 4, "answer_confidence": "yes"} for i in range(7)]
    # each "cat" term sees the 2 other cats: min(1, 2/3); each "dog" term sees 3 cats: 1
    expected = (3 * (2 / 3) + 7 * 1.0) / 10
    assert vqa_accuracy("cat", dicts) == pytest.approx(expected)
    assert vqa_accuracy("cat", [d["answer"] for d in dicts]) == pytest.approx(expected)
    with pytest.raises(DataError, match="answer dict"):
        vqa_accuracy("cat", [{"text": "cat"}])


def test_vqa_accuracy_fewer_than_ten_answers() -> None:
    # 3 answers, 2 match: leaving out a match gives 1/3, leaving out the miss gives 2/3 -> (1/3 + 1/3 + 2/3) / 3.
    assert vqa_accuracy("cat", ["cat", "cat", "dog"]) == pytest.approx(4 / 9)
    assert vqa_accuracy("cat", ["cat"]) == 0.0  # leave-one-out over a single answer leaves nobody


def test_vqa_score_is_the_mean_over_questions() -> None:
    answers = {1: ["yes"] * 10, 2: ["2"] * 2 + ["3"] * 8, 3: ["red"] * 10}
    assert vqa_score({1: "Yes", 2: "two", 3: "blue"}, answers, mode="normalized") == pytest.approx((1.0 + 0.6) / 3)
    assert vqa_score({1: "yes", 2: "two", 3: "blue"}, answers) == pytest.approx((1.0 + 0.6 + 0.0) / 3)
    assert vqa_score({1: "Yes", 2: "two", 3: "blue"}, answers) == pytest.approx((0.0 + 0.6 + 0.0) / 3)
    with pytest.raises(DataError, match="no answers"):
        vqa_score({4: "yes"}, answers)
    with pytest.raises(DataError, match="nothing to score"):
        vqa_score({}, answers)


def test_soft_score() -> None:
    confs = {"yes": 1.0, "2": 0.6, "the cat": 0.3}
    assert soft_score("Yes.", confs) == 1.0
    assert soft_score("two", confs) == 0.6
    assert soft_score("cat", confs) == 0.3
    assert soft_score("no", confs) == 0.0
    assert soft_score("2", {"two": 0.3, "2": 0.9}) == 0.9  # answers that normalise alike: the larger counts
    with pytest.raises(DataError, match="finite number"):
        soft_score("yes", {"yes": float("nan")})


def test_bad_inputs_raise() -> None:
    with pytest.raises(DataError, match="at least one"):
        vqa_accuracy("yes", [])
    with pytest.raises(DataError, match="list of strings"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(DataError, match="must be a str"):
        normalize_answer(3)  # type: ignore[arg-type]
