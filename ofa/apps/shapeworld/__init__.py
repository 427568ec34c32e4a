"""Synthetic datasets written in OFA's file layouts (no downloads): the shape world of :mod:`ofa.apps.shapeworld.world`."""

from __future__ import annotations

from ofa.apps.shapeworld.descriptions import (
    Entailment,
    Question,
    Reference,
    answer_vocabulary,
    captions,
    class_label,
    class_names,
    entailments,
    pick_references,
    questions,
    referring_expressions,
    region_caption,
)
from ofa.apps.shapeworld.scene import (
    Background,
    Scene,
    WorldConfig,
    WorldObject,
    generate_scene,
    render,
    render_indexed,
)
from ofa.apps.shapeworld.world import TASK_FILES, scene_rng, trivial_baselines, write_world

__all__ = ["WorldConfig", "WorldObject", "Background", "Scene", "Reference", "Question", "Entailment",
           "generate_scene", "render", "render_indexed", "scene_rng", "captions", "region_caption",
           "referring_expressions", "pick_references", "questions", "entailments", "class_label", "class_names",
           "answer_vocabulary", "write_world", "trivial_baselines", "TASK_FILES"]
