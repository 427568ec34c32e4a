"""Shared helpers of the shape-world tests: hand-built scenes, a small written world, and an oracle that reads
the templated texts back independently of the generator and says which objects they mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from ofa.apps.shapeworld import Background, Scene, WorldConfig, WorldObject, generate_scene, scene_rng, write_world

CONFIG = WorldConfig()
RGB = dict(CONFIG.colors)
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def obj(color: str, shape: str, size: str, box: tuple[int, int, int, int]) -> WorldObject:
    return WorldObject(color=color, shape=shape, size=size, box=box, rgb=RGB[color])  # type: ignore[arg-type]


def hand_scene(*objects: WorldObject, kind: str = "stripes") -> Scene:
    return Scene(image_size=96, background=Background(kind, ((230, 230, 225), (212, 212, 207)), 8), objects=objects)


def random_scenes(count: int, config: WorldConfig = CONFIG,
                  split: str = "train") -> list[tuple[Scene, np.random.Generator]]:
    """``count`` scenes, each with the rest of its stream (for the texts)."""
    out = []
    for i in range(count):
        rng = scene_rng(config, split, i)
        out.append((generate_scene(rng, config), rng))
    return out


# -- oracle ------------------------------------------------------------------------------------------------------
def _words_filter(scene: Scene, words: Sequence[str]) -> list[int]:
    colors = [w for w in words if w in RGB]
    shapes = [w.rstrip("s") for w in words if w.rstrip("s") in ("circle", "square", "triangle")]
    sizes = [w for w in words if w in ("small", "large")]
    assert len(colors) <= 1 and len(shapes) <= 1 and len(sizes) <= 1, words
    return [i for i, o in enumerate(scene.objects)
            if (not colors or o.color == colors[0]) and (not shapes or o.shape == shapes[0])
            and (not sizes or o.size == sizes[0])]


def resolve(text: str, scene: Scene, margin_fraction: float = CONFIG.position_margin) -> list[int]:
    """Objects a referring expression (``"the top red shape"``, ``"the shape on the left"``) can mean."""
    words = text.split()
    assert words[0] == "the", text
    members = _words_filter(scene, words)
    position = {"leftmost": (0, False), "rightmost": (0, True), "top": (1, False), "bottom": (1, True)}
    used = [position[w] for w in words if w in position]
    if text.endswith("on the left") or text.endswith("on the right"):
        used.append((0, text.endswith("right")))
    if not used:
        return members
    (axis, largest), = used
    if len(members) < 2:
        return []  # a position word needs something to compare with
    order = sorted(members, key=lambda i: scene.objects[i].center[axis], reverse=largest)
    gap = abs(scene.objects[order[0]].center[axis] - scene.objects[order[1]].center[axis])
    return [order[0]] if gap >= margin_fraction * scene.image_size else []


def answer(question: str, scene: Scene, margin_fraction: float = CONFIG.position_margin) -> str:
    """The answer to a templated question, worked out from the question's words alone."""
    words = question.rstrip("?").split()
    margin = margin_fraction * scene.image_size
    if question.startswith("how many"):
        return NUMBERS[len(_words_filter(scene, words[2:-2]))]
    if question.startswith("is there"):
        return "yes" if _words_filter(scene, words[2:]) else "no"
    if question.startswith("is the"):
        phrase = " ".join(words[2: words.index("on" if "on" in words else "at")])
        (index,) = _words_filter(scene, phrase.split())
        axis = 0 if question.endswith("left or the right?") else 1
        offset = scene.objects[index].center[axis] - scene.image_size / 2
        assert abs(offset) >= margin, question
        return ("left", "right")[offset > 0] if axis == 0 else ("top", "bottom")[offset > 0]
    (index,) = _words_filter(scene, words[3:])
    target = scene.objects[index]
    return {"color": target.color, "shape": target.shape, "size": target.size}[words[1]]


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world (48 train + 16 valid images) written once for the file tests."""
    directory = tmp_path_factory.mktemp("world")
    write_world(directory, num_train=48, num_valid=16, config=WorldConfig(seed=3), progress=False)
    return directory


@pytest.fixture(scope="session")
def wh() -> Any:
    """The module-level helpers above, for test files (which cannot import this conftest by name)."""

    class _Helpers:
        config = CONFIG
        rgb = RGB
        obj = staticmethod(obj)
        hand_scene = staticmethod(hand_scene)
        random_scenes = staticmethod(random_scenes)
        resolve = staticmethod(resolve)
        answer = staticmethod(answer)

    return _Helpers
