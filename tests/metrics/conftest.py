"""Shared data for the metric tests: a small hand-written COCO-style caption set."""

from __future__ import annotations

import pytest

# Five scored images with 2-5 references each, plus one reference-only image that must be ignored.
COCO_REFS: dict[int, list[str]] = {
    1: ["A man riding a wave on top of a surfboard.",
        "A surfer rides a large wave in the ocean.",
        "Man on a surfboard riding an ocean wave!"],
    2: ["Two dogs playing with a frisbee in the park.",
        "A couple of dogs running on the grass, chasing a frisbee.",
        "Two brown dogs play in a grassy field."],
    3: ["A kitchen with white cabinets and a stove.",
        "The kitchen has a stove, a sink and some cabinets.",
        "A clean kitchen with appliances; nobody's there.",
        "An empty kitchen with wooden floors.",
        "A small kitchen with a window above the sink."],
    4: ["A plate of food with broccoli and rice.",
        "A dish of rice, chicken and broccoli."],
    5: ["A red double-decker bus driving down the street.",
        "A bus that's going down a city street.",
        "A large red bus on a road in London (England).",
        "The double decker bus is red."],
    6: ["An unused reference for an image without a candidate."],
}
COCO_CANDS: dict[int, str] = {
    1: "A man riding a wave on a surfboard.",
    2: "Two dogs playing with a frisbee.",
    3: "A kitchen with a stove and a sink.",
    4: "A plate of food with broccoli.",
    5: "A red bus driving down a street.",
}

@pytest.fixture(scope="session")
def coco_refs() -> dict[int, list[str]]:
    return {k: list(v) for k, v in COCO_REFS.items()}


@pytest.fixture(scope="session")
def coco_cands() -> dict[int, str]:
    return dict(COCO_CANDS)
