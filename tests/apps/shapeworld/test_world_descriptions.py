"""Shape-world texts: every referring expression names exactly one object, every answer is right and in the
vocabulary, yes/no is balanced, entailment labels and class labels follow the scene."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ofa.apps.shapeworld import (
    answer_vocabulary,
    captions,
    class_label,
    class_names,
    entailments,
    pick_references,
    questions,
    referring_expressions,
)


def test_referring_expressions_are_unique_and_cover_both_kinds(wh: Any) -> None:
    kinds: Counter[str] = Counter()
    for scene, _ in wh.random_scenes(400):
        refs = referring_expressions(scene, wh.config)
        assert refs, scene  # the full "size color shape" description always fits exactly one object
        assert len({r.text for r in refs}) == len(refs)
        for ref in refs:
            assert wh.resolve(ref.text, scene) == [ref.index], (ref, scene)
            assert ref.box == scene.objects[ref.index].box
            kinds[ref.kind] += 1
    assert kinds["attribute"] > 0 and kinds["position"] > 0


def test_hand_built_references(wh: Any) -> None:
    scene = wh.hand_scene(wh.obj("red", "circle", "large", (5, 5, 35, 35)),
                          wh.obj("red", "circle", "small", (60, 8, 74, 22)),
                          wh.obj("blue", "square", "small", (40, 70, 54, 84)))
    texts = {r.text: r.index for r in referring_expressions(scene, wh.config)}
    assert texts["the square"] == 2 and texts["the blue shape"] == 2
    assert texts["the large circle"] == 0 and texts["the small red circle"] == 1
    assert texts["the rightmost circle"] == 1 and texts["the leftmost shape"] == 0
    assert texts["the bottom shape"] == 2
    for ambiguous in ("the circle", "the red shape", "the red circle", "the small shape", "the top shape"):
        assert ambiguous not in texts  # two circles / two red shapes / two small ones; the two tops only 5 px apart
    # Two objects: "the shape on the left / right".
    pair = wh.hand_scene(wh.obj("green", "triangle", "large", (60, 30, 90, 60)),
                         wh.obj("green", "triangle", "small", (5, 40, 20, 55)))
    texts = {r.text: r.index for r in referring_expressions(pair, wh.config)}
    assert texts["the shape on the left"] == 1 and texts["the shape on the right"] == 0


def test_pick_references_spreads_over_objects(wh: Any) -> None:
    for scene, rng in wh.random_scenes(100):
        refs = referring_expressions(scene, wh.config)
        picked = pick_references(rng, refs, 2)
        assert len(picked) == 2 and picked[0] != picked[1]
        if len(scene.objects) > 1:
            assert picked[0].index != picked[1].index
        assert all(p in refs for p in picked)


def test_hand_built_answers(wh: Any) -> None:
    scene = wh.hand_scene(wh.obj("red", "circle", "large", (5, 5, 35, 35)),
                          wh.obj("blue", "square", "small", (70, 70, 84, 84)),
                          wh.obj("red", "triangle", "small", (60, 8, 74, 22)))
    asked: dict[str, str] = {}
    for seed in range(300):
        for q in questions(scene, np.random.default_rng(seed), wh.config, 9):
            assert asked.setdefault(q.question, q.answer) == q.answer
    expected = {
        "how many shapes are there?": "three",
        "how many red shapes are there?": "two",
        "how many blue shapes are there?": "one",
        "how many green shapes are there?": "zero",
        "how many circles are there?": "one",
        "what color is the circle?": "red",
        "what color is the square?": "blue",
        "what shape is the blue object?": "square",
        "what shape is the large red object?": "circle",
        "what size is the red triangle?": "small",
        "is the square on the left or the right?": "right",
        "is the circle at the top or the bottom?": "top",
        "is there a blue square?": "yes",
        "is there a red square?": "no",
    }
    for question, answer in expected.items():
        assert asked.get(question) == answer, question
    assert "what shape is the red object?" not in asked  # two red objects
    assert "is there an orange circle?" in asked or "is there an orange square?" in asked


def test_answers_are_right_and_in_vocabulary(wh: Any) -> None:
    vocab = set(answer_vocabulary(wh.config))
    kinds: Counter[str] = Counter()
    for scene, rng in wh.random_scenes(500):
        qs = questions(scene, rng, wh.config, 4)
        assert 1 <= len(qs) <= 4 and len({q.kind for q in qs}) == len(qs)
        for q in qs:
            assert q.answer in vocab
            assert wh.answer(q.question, scene) == q.answer, (q, scene)
            kinds[q.kind] += 1
    assert set(kinds) == {"color", "shape", "size", "count", "count_color", "count_shape", "horizontal",
                          "vertical", "exists"}


def test_yes_no_balanced(wh: Any) -> None:
    answers = Counter(q.answer for scene, rng in wh.random_scenes(1500)
                      for q in questions(scene, rng, wh.config, 9) if q.kind == "exists")
    assert set(answers) == {"yes", "no"}
    assert 0.4 <= answers["yes"] / (answers["yes"] + answers["no"]) <= 0.6


def test_answer_vocabulary_and_classes(wh: Any) -> None:
    vocab = answer_vocabulary(wh.config)
    assert len(vocab) == len(set(vocab))
    assert {"red", "circle", "small", "zero", "three", "left", "bottom", "yes", "no"} <= set(vocab)
    assert "four" not in vocab  # at most three objects
    assert class_names(wh.config) == ["circle", "square", "triangle"]


def test_captions(wh: Any) -> None:
    scene = wh.hand_scene(wh.obj("orange", "circle", "large", (5, 5, 35, 35)),
                          wh.obj("blue", "square", "small", (70, 70, 84, 84)))
    caps = captions(scene, np.random.default_rng(0), wh.config)
    assert caps[0] == "a large orange circle and a small blue square"
    assert len(caps) == len(set(caps)) >= 3
    assert "a large orange circle on the left and a small blue square on the right" in caps
    assert any(c.startswith("two shapes ") for c in caps)
    assert any(c.endswith("on a striped background") for c in caps)
    for scene, rng in wh.random_scenes(200):
        caps = captions(scene, rng, wh.config)
        assert all(c == c.lower() and c.replace(" ", "").isalpha() for c in caps)
        # Every object appears in the canonical caption, left to right.
        ordered = sorted(scene.objects, key=lambda o: o.center)
        assert caps[0] == " and ".join("a " + o.description for o in ordered)


def test_entailment_labels(wh: Any) -> None:
    scene = wh.hand_scene(wh.obj("red", "circle", "large", (5, 5, 35, 35)),
                          wh.obj("blue", "square", "small", (70, 70, 84, 84)))
    premises = {c for seed in range(100) for c in captions(scene, np.random.default_rng(seed), wh.config)}
    seen: dict[str, str] = {}
    for seed in range(200):
        ents = entailments(scene, np.random.default_rng(seed), wh.config, 3)
        assert sorted(e.label for e in ents) == ["contradiction", "entailment", "neutral"]
        for e in ents:
            assert seen.setdefault(e.hypothesis, e.label) == e.label
            assert e.premise in premises
    assert seen["there is a red circle"] == "entailment"
    assert seen["there are two shapes"] == "entailment"
    assert seen["the square is blue"] == "entailment"
    assert seen["there is a blue circle"] == "contradiction"
    assert seen["there are three shapes"] == "contradiction"
    assert seen["the circle is green"] == "contradiction"
    neutral = [h for h, label in seen.items() if label == "neutral"]
    assert neutral and all(h.startswith(("the red circle is ", "the blue square is ")) for h in neutral)


def test_class_label(wh: Any) -> None:
    one = wh.hand_scene(wh.obj("red", "triangle", "small", (5, 5, 17, 17)))
    assert class_label(one) == "triangle"
    clear = wh.hand_scene(wh.obj("red", "circle", "small", (5, 5, 17, 17)),
                          wh.obj("blue", "square", "large", (40, 40, 70, 70)))
    assert class_label(clear) == "square"
    close = wh.hand_scene(wh.obj("red", "circle", "large", (5, 5, 35, 35)),
                          wh.obj("blue", "square", "large", (40, 40, 72, 72)))
    assert class_label(close) is None  # 32 vs 30 px: no clearly largest object
