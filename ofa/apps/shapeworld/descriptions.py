"""Texts about a shape-world scene: captions, referring expressions, questions, entailment hypotheses, class labels.

Every text is templated from a small, closed vocabulary (the config's colour and shape names, ``small``/``large``,
a few position words, number words), so a tiny model can learn the whole language. Each text is true of the
scene by construction: a referring expression or a question about "the circle" is only produced when exactly
one object fits it, and position words are only used when the centres are at least
``config.position_margin * image_size`` apart. All randomness comes from the ``rng`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence, TypeVar

import numpy as np

from ofa.apps.shapeworld.scene import Scene, WorldConfig, WorldObject

__all__ = ["Reference", "Question", "Entailment", "NUMBER_WORDS", "NEUTRAL_ADJECTIVES", "BACKGROUND_WORDS",
           "number_word", "captions", "region_caption", "referring_expressions", "pick_references", "questions",
           "entailments", "class_label", "class_names", "answer_vocabulary", "EntailmentLabel"]

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Properties an image of flat shapes can neither show nor rule out: hypotheses using them are "neutral".
NEUTRAL_ADJECTIVES = ("shiny", "heavy", "wooden", "soft", "warm")
BACKGROUND_WORDS = {"noise": "speckled", "stripes": "striped", "checker": "checkered"}
EntailmentLabel = Literal["entailment", "contradiction", "neutral"]
_T = TypeVar("_T")
# The largest object names the image's class only when its side is this many times every other side.
_CLASS_SIDE_RATIO = 1.25


@dataclass(frozen=True)
class Reference:
    """A referring expression that fits exactly one object: ``index`` into ``scene.objects`` and its ``box``.
    ``kind`` is ``"attribute"`` (colour / shape / size words) or ``"position"`` (leftmost, top, ...)."""

    text: str
    index: int
    box: tuple[int, int, int, int]
    kind: str


@dataclass(frozen=True)
class Question:
    """A VQA question with its single correct answer; ``kind`` names the template (``"color"``, ``"count"``, ...)."""

    question: str
    answer: str
    kind: str


@dataclass(frozen=True)
class Entailment:
    """A hypothesis, the premise caption it is read with, and the label the image gives it."""

    hypothesis: str
    premise: str
    label: EntailmentLabel


def number_word(n: int) -> str:
    """``2`` -> ``"two"`` (0..10)."""
    return NUMBER_WORDS[n]


def _plural(shape: str) -> str:
    return shape + "s"


def _phrase(color: str | None = None, shape: str | None = None, size: str | None = None) -> str:
    """Noun phrase of a filter: ``("red", None, "small")`` -> ``"small red shape"``."""
    return " ".join(w for w in (size, color, shape or "shape") if w)


def _select(objects: Sequence[WorldObject], color: str | None = None, shape: str | None = None,
            size: str | None = None) -> list[int]:
    return [i for i, o in enumerate(objects)
            if (color is None or o.color == color) and (shape is None or o.shape == shape)
            and (size is None or o.size == size)]


def _pick(rng: np.random.Generator, items: Sequence[_T]) -> _T:
    return items[int(rng.integers(len(items)))]


def _margin(scene: Scene, config: WorldConfig) -> float:
    return config.position_margin * scene.image_size


def _extreme(objects: Sequence[WorldObject], members: Sequence[int], axis: int, largest: bool,
             margin: float) -> int | None:
    """The member with the smallest (or largest) centre along ``axis``, if it beats the runner-up by ``margin``."""
    if len(members) < 2:
        return None
    order = sorted(members, key=lambda i: objects[i].center[axis], reverse=largest)
    gap = abs(objects[order[0]].center[axis] - objects[order[1]].center[axis])
    return order[0] if gap >= margin else None


def _side(obj: WorldObject, scene: Scene, axis: int, margin: float) -> int:
    """-1 (left / top), +1 (right / bottom) or 0 (too close to the middle to say)."""
    offset = obj.center[axis] - scene.image_size / 2.0
    return 0 if abs(offset) < margin else (1 if offset > 0 else -1)


# -- captions ----------------------------------------------------------------------------------------------------
def _where(obj: WorldObject, scene: Scene) -> str:
    x = obj.center[0] / scene.image_size
    return "on the left" if x < 1 / 3 else ("on the right" if x > 2 / 3 else "in the middle")


def _relation(a: WorldObject, b: WorldObject, margin: float) -> str | None:
    """``"above"`` / ``"below"`` / ``"to the left of"`` / ``"to the right of"`` for ``a`` w.r.t. ``b``, by the
    larger centre offset, or None if neither offset reaches ``margin``."""
    dx, dy = b.center[0] - a.center[0], b.center[1] - a.center[1]
    if abs(dy) >= abs(dx) and abs(dy) >= margin:
        return "above" if dy > 0 else "below"
    if abs(dx) >= margin:
        return "to the left of" if dx > 0 else "to the right of"
    return None


def _a(phrase: str) -> str:
    """``"orange circle"`` -> ``"an orange circle"``; ``"red circle"`` -> ``"a red circle"``."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _groups(objects: Sequence[WorldObject], order: Iterable[int]) -> str:
    """``"two blue triangles and a purple square"``: objects by colour and shape, in order of first appearance."""
    counts: dict[tuple[str, str], int] = {}
    for i in order:
        key = (objects[int(i)].color, objects[int(i)].shape)
        counts[key] = counts.get(key, 0) + 1
    return " and ".join(_a(f"{c} {s}") if n == 1 else f"{number_word(n)} {c} {_plural(s)}"
                        for (c, s), n in counts.items())


def captions(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> list[str]:
    """Several captions of the whole image, distinct, without punctuation.

    The first one is canonical and fully determined by the scene (every object as ``"a size color shape"``,
    left to right, joined by ``"and"``). The others vary: colours and shapes with the background
    (``"two blue triangles and a purple square on a striped background"``), positions (``"a large red circle on
    the left and ..."``), and the object count with a spatial relation between two objects (``"two shapes a small
    green triangle above a large red square"``).
    """
    objects = sorted(scene.objects, key=lambda o: o.center)
    count = len(objects)
    canonical = " and ".join(_a(o.description) for o in objects)
    background = BACKGROUND_WORDS[scene.background.kind]
    out = [canonical,
           f"{_groups(objects, rng.permutation(count))} on {_a(background)} background",
           " and ".join(f"{_a(o.description)} {_where(o, scene)}" for o in objects)]
    margin = _margin(scene, config)
    pairs = [(a, b, r) for a in objects for b in objects if a is not b
             for r in [_relation(a, b, margin)] if r is not None]
    if count == 1:
        out.append(f"one shape {canonical}")
    elif pairs:
        a, b, relation = _pick(rng, pairs)
        out.append(f"{number_word(count)} shapes {_a(a.description)} {relation} {_a(b.description)}")
    else:
        out.append(f"{number_word(count)} shapes {canonical}")
    return list(dict.fromkeys(out))


def region_caption(obj: WorldObject) -> str:
    """What a region shows: ``"a small red circle"``."""
    return _a(obj.description)


# -- referring expressions ---------------------------------------------------------------------------------------
_ATTRIBUTE_FILTERS = ((False, True, False), (True, False, False), (True, True, False), (False, True, True),
                      (False, False, True), (True, False, True), (True, True, True))  # (color, shape, size)
_POSITION_WORDS = ((0, False, "leftmost"), (0, True, "rightmost"), (1, False, "top"), (1, True, "bottom"))


def referring_expressions(scene: Scene, config: WorldConfig) -> list[Reference]:
    """Every templated expression that fits exactly one object of the scene.

    Attribute expressions (``"the circle"``, ``"the red shape"``, ``"the small red circle"``, ...) name a
    combination of colour, shape and size that only one object has. Position expressions (``"the leftmost
    shape"``, ``"the top circle"``, ``"the bottom red shape"``, ``"the shape on the right"`` with two objects)
    pick the extreme one of two or more objects that share a phrase, when it leads the runner-up by
    ``config.position_margin``.
    """
    objects = scene.objects
    out: dict[str, Reference] = {}
    for i, obj in enumerate(objects):
        for use_color, use_shape, use_size in _ATTRIBUTE_FILTERS:
            words = dict(color=obj.color if use_color else None, shape=obj.shape if use_shape else None,
                         size=obj.size if use_size else None)
            if _select(objects, **words) == [i]:
                text = "the " + _phrase(**words)
                out.setdefault(text, Reference(text, i, obj.box, "attribute"))
    margin = _margin(scene, config)
    groups: dict[str, list[int]] = {"shape": list(range(len(objects)))}
    for obj in objects:
        groups.setdefault(obj.shape, _select(objects, shape=obj.shape))
        groups.setdefault(f"{obj.color} shape", _select(objects, color=obj.color))
    for phrase, members in groups.items():
        for axis, largest, word in _POSITION_WORDS:
            winner = _extreme(objects, members, axis, largest, margin)
            if winner is None:
                continue
            texts = [f"the {word} {phrase}"]
            if phrase == "shape" and axis == 0 and len(objects) == 2:
                texts.append(f"the shape on the {'right' if largest else 'left'}")
            for text in texts:
                out.setdefault(text, Reference(text, winner, objects[winner].box, "position"))
    return list(out.values())


def pick_references(rng: np.random.Generator, references: Sequence[Reference], count: int,
                    position_rate: float = 0.3) -> list[Reference]:
    """Up to ``count`` references spread over the objects (a different object each while they last); for each,
    a position expression with probability ``position_rate`` when one exists."""
    by_object: dict[int, list[Reference]] = {}
    for ref in references:
        by_object.setdefault(ref.index, []).append(ref)
    keys = [list(by_object)[i] for i in rng.permutation(len(by_object))]
    chosen: list[Reference] = []
    for round_ in range(count):
        if not keys:
            break
        left = [r for r in by_object[keys[round_ % len(keys)]] if r not in chosen]
        if not left:
            continue
        positional = [r for r in left if r.kind == "position"]
        pool = positional if positional and rng.random() < position_rate else \
            ([r for r in left if r.kind == "attribute"] or left)
        chosen.append(_pick(rng, pool))
    return chosen


# -- questions ---------------------------------------------------------------------------------------------------
def _unique_phrases(scene: Scene, index: int) -> list[str]:
    """Phrases (``"circle"``, ``"red shape"``, ``"red circle"``, ``"small red circle"``) that fit only ``index``."""
    obj = scene.objects[index]
    out = []
    for words in (dict(shape=obj.shape), dict(color=obj.color), dict(color=obj.color, shape=obj.shape),
                  dict(color=obj.color, shape=obj.shape, size=obj.size)):
        if _select(scene.objects, **words) == [index]:
            out.append(_phrase(**words))
    return out


def _q_color(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Question | None:
    options = []
    for i, o in enumerate(scene.objects):
        if _select(scene.objects, shape=o.shape) == [i]:
            options.append((f"what color is the {o.shape}?", o.color))
        if _select(scene.objects, shape=o.shape, size=o.size) == [i]:
            options.append((f"what color is the {o.size} {o.shape}?", o.color))
    return Question(*_pick(rng, options), kind="color") if options else None


def _q_shape(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Question | None:
    options = []
    for i, o in enumerate(scene.objects):
        if _select(scene.objects, color=o.color) == [i]:
            options.append((f"what shape is the {o.color} object?", o.shape))
        if _select(scene.objects, color=o.color, size=o.size) == [i]:
            options.append((f"what shape is the {o.size} {o.color} object?", o.shape))
    return Question(*_pick(rng, options), kind="shape") if options else None


def _q_size(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Question | None:
    options = [(f"what size is the {o.color} {o.shape}?", o.size) for i, o in enumerate(scene.objects)
               if _select(scene.objects, color=o.color, shape=o.shape) == [i]]
    return Question(*_pick(rng, options), kind="size") if options else None


def _q_count(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Question | None:
    return Question("how many shapes are there?", number_word(len(scene.objects)), kind="count")


def _q_count_color(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Question | None:
    # Half the time a colour that is present, so the answers are not mostly "zero".
    pool = [o.color for o in scene.objects] if rng.random() < 0.5 else list(config.color_names)
    color = _pick(rng, pool)
    return Question(f"how many {color} shapes are there?", number_word(len(_select(scene.objects, color=color))),
                    kind="count_color")


def _q_count_shape(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Question | None:
    shape = _pick(rng, config.shapes)
    return Question(f"how many {_plural(shape)} are there?", number_word(len(_select(scene.objects, shape=shape))),
                    kind="count_shape")


def _q_side(axis: int) -> Callable[[Scene, np.random.Generator, WorldConfig], Question | None]:
    words = ("left", "right") if axis == 0 else ("top", "bottom")
    template = "is the {} on the left or the right?" if axis == 0 else "is the {} at the top or the bottom?"

    def make(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Question | None:
        margin = _margin(scene, config)
        options = []
        for i, obj in enumerate(scene.objects):
            side = _side(obj, scene, axis, margin)
            if side != 0:
                options += [(template.format(p), words[side > 0]) for p in _unique_phrases(scene, i)]
        kind = "horizontal" if axis == 0 else "vertical"
        return Question(*_pick(rng, options), kind=kind) if options else None

    return make


def _q_exists(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Question | None:
    present = sorted({(o.color, o.shape) for o in scene.objects})
    if rng.random() < 0.5:
        color, shape = _pick(rng, present)
        return Question(f"is there {_a(color + ' ' + shape)}?", "yes", kind="exists")
    absent = [(c, s) for c in config.color_names for s in config.shapes if (c, s) not in present]
    if not absent:
        return None
    color, shape = _pick(rng, absent)
    return Question(f"is there {_a(color + ' ' + shape)}?", "no", kind="exists")


_QUESTION_KINDS = (_q_color, _q_shape, _q_size, _q_count, _q_count_color, _q_count_shape, _q_side(0), _q_side(1),
                   _q_exists)


def questions(scene: Scene, rng: np.random.Generator, config: WorldConfig, count: int) -> list[Question]:
    """Up to ``count`` questions of different kinds (chosen at random among those the scene allows).

    Kinds: colour of a uniquely named shape, shape of a uniquely coloured object, size, three counts (all,
    by colour, by shape), left/right and top/bottom of a uniquely named object, and "is there a ...?" (yes or
    no with equal probability). Answers are single words from :func:`answer_vocabulary`.
    """
    out: list[Question] = []
    for k in rng.permutation(len(_QUESTION_KINDS)):
        if len(out) >= count:
            break
        question = _QUESTION_KINDS[k](scene, rng, config)
        if question is not None:
            out.append(question)
    return out


# -- entailment --------------------------------------------------------------------------------------------------
def _count_phrase(n: int) -> str:
    return f"there is {number_word(n)} shape" if n == 1 else f"there are {number_word(n)} shapes"


def _entailed(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> list[str]:
    objs = scene.objects
    out = [f"there is {_a(o.color + ' ' + o.shape)}" for o in objs] + [f"there is a {o.size} {o.shape}" for o in objs]
    out.append(_count_phrase(len(objs)))
    out += [f"the {o.shape} is {o.color}" for i, o in enumerate(objs) if _select(objs, shape=o.shape) == [i]]
    return out


def _contradicted(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> list[str]:
    objs = scene.objects
    present = {(o.color, o.shape) for o in objs}
    out = [f"there is {_a(c + ' ' + s)}" for c in config.color_names for s in config.shapes if (c, s) not in present]
    out += [_count_phrase(n) for n in range(config.min_objects, config.max_objects + 1) if n != len(objs)]
    out += [f"the {o.shape} is {c}" for i, o in enumerate(objs) if _select(objs, shape=o.shape) == [i]
            for c in config.color_names if c != o.color]
    return out


def _neutral(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> list[str]:
    return [f"the {o.color} {o.shape} is {adj}" for o in scene.objects for adj in NEUTRAL_ADJECTIVES]


_LABELS: tuple[EntailmentLabel, ...] = ("entailment", "contradiction", "neutral")
_HYPOTHESES: dict[str, Callable[[Scene, np.random.Generator, WorldConfig], list[str]]] = {
    "entailment": _entailed, "contradiction": _contradicted, "neutral": _neutral}


def entailments(scene: Scene, rng: np.random.Generator, config: WorldConfig, count: int) -> list[Entailment]:
    """``count`` hypotheses whose labels cycle through entailment, contradiction and neutral (shuffled per image),
    each with a premise drawn from :func:`captions`.

    Entailed: ``"there is a red circle"``, ``"there are two shapes"``, ``"the circle is red"``. Contradicted: an
    absent colour and shape, a wrong count, a wrong colour. Neutral: ``"the red circle is shiny"`` (any of
    :data:`NEUTRAL_ADJECTIVES` about a present object: nothing in the image can confirm or deny it).
    """
    labels = [_LABELS[i] for i in rng.permutation(3)]
    premises = captions(scene, rng, config)
    out: list[Entailment] = []
    for k in range(count):
        label = labels[k % 3]
        options = [h for h in _HYPOTHESES[label](scene, rng, config) if h not in {e.hypothesis for e in out}]
        if options:
            out.append(Entailment(_pick(rng, options), _pick(rng, premises), label))
    return out


# -- classification and answer lists -----------------------------------------------------------------------------
def class_label(scene: Scene) -> str | None:
    """The shape of the largest object, or None when no object is clearly the largest (its side must be at least
    1.25 times every other side)."""
    sides = sorted(((o.box[2] - o.box[0], o.shape) for o in scene.objects), reverse=True)
    if len(sides) > 1 and sides[0][0] < _CLASS_SIDE_RATIO * sides[1][0]:
        return None
    return sides[0][1]


def class_names(config: WorldConfig) -> list[str]:
    """The classification labels: the config's shapes, in order (the TSV's label index points into this list)."""
    return list(config.shapes)


def answer_vocabulary(config: WorldConfig) -> list[str]:
    """Every answer :func:`questions` can give (the VQA candidate list), without duplicates."""
    words = [*config.color_names, *config.shapes, "small", "large",
             *NUMBER_WORDS[: config.max_objects + 1], "left", "right", "top", "bottom", "yes", "no"]
    return list(dict.fromkeys(words))
