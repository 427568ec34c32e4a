"""The written shape world: deterministic bytes, rows the real task readers parse and encode, held-out validation
images, the side files, and image-blind baselines that stay far from a solved task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ofa
from ofa.apps.shapeworld import (
    TASK_FILES,
    WorldConfig,
    answer_vocabulary,
    generate_scene,
    render,
    scene_rng,
    trivial_baselines,
    write_world,
)
from ofa.data.tsv import TSVFile
from ofa.errors import ConfigError, DataError


def _tasks(directory: Path) -> dict[str, Any]:
    answers = (directory / "answers.txt").read_text().splitlines()
    classes = (directory / "classes.txt").read_text().splitlines()
    options = {"vqa_gen": {"candidates": answers}, "image_classify": {"class_names": classes}}
    return {stem: ofa.get_task(name, **options.get(name, {})) for stem, name in TASK_FILES.items()}


def _rows(path: Path) -> list[list[str]]:
    table = TSVFile(path)
    return [table[i] for i in range(len(table))]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = write_world(tmp_path / "a", 6, 3, WorldConfig(seed=11), progress=False)
    second = write_world(tmp_path / "b", 6, 3, WorldConfig(seed=11), progress=False)
    other = write_world(tmp_path / "c", 6, 3, WorldConfig(seed=12), progress=False)
    assert set(first) == set(second) == set(other)
    for name, path in first.items():
        assert path.read_bytes() == second[name].read_bytes(), name
    for name in ("caption_train", "refcoco_train", "vqa_valid", "snli_ve_valid", "region_train"):
        assert first[name].read_bytes() != other[name].read_bytes(), name


def test_returned_paths_and_side_files(world_dir: Path) -> None:
    names = {p.name for p in world_dir.iterdir()}
    for stem in TASK_FILES:
        assert {f"{stem}_train.tsv", f"{stem}_valid.tsv"} <= names
    assert {"answers.txt", "classes.txt", "corpus.txt", "world.json"} <= names
    meta = json.loads((world_dir / "world.json").read_text())
    assert meta["images"] == {"train": 48, "valid": 16}
    assert WorldConfig.from_dict(meta["config"]) == WorldConfig(seed=3)
    for name, count in meta["rows"].items():
        assert len(_rows(world_dir / f"{name}.tsv")) == count
    assert meta["rows"]["caption_train"] == 48 and meta["rows"]["refcoco_valid"] == 32
    assert (world_dir / "answers.txt").read_text().splitlines() == answer_vocabulary(WorldConfig())
    assert (world_dir / "classes.txt").read_text().splitlines() == ["circle", "square", "triangle"]


@pytest.mark.parametrize("split", ["train", "valid"])
def test_every_row_parses_with_the_task_readers(world_dir: Path, split: str, wh: Any) -> None:
    tasks = _tasks(world_dir)
    answers = set(tasks["vqa"].candidates)
    for stem, task in tasks.items():
        rows = _rows(world_dir / f"{stem}_{split}.tsv")
        assert rows, stem
        for fields in rows:
            example = task.parse_row(fields)
            assert example.image.size == (96, 96)
            if stem == "caption":
                assert len(example.target) >= 3 and example.target[0].startswith("a")
            elif stem in ("refcoco", "region"):
                box = example.target if stem == "refcoco" else example.extra["region"]
                assert 0 <= box[0] < box[2] <= 96 and 0 <= box[1] < box[3] <= 96
            elif stem == "vqa":
                assert list(example.target.values()) == [1.0] and set(example.target) <= answers
                assert example.extra["objects"]
            elif stem == "snli_ve":
                assert example.target in ("entailment", "contradiction", "neutral")
                assert example.extra["premise"]
            elif stem == "classify":
                assert example.target in task.candidates
                assert task.candidates[int(fields[1])] == example.target


def test_first_rows_encode_for_training(world_dir: Path) -> None:
    tok = ofa.OFATokenizer.from_test_assets()
    for stem, task in _tasks(world_dir).items():
        example = task.parse_row(_rows(world_dir / f"{stem}_train.tsv")[0])
        sample = task.encode(example, tok, training=True)
        assert sample.source and sample.target and sample.image is not None, stem


def test_rows_describe_their_image(world_dir: Path, wh: Any) -> None:
    """Regenerate each scene from its stream: the TSV image is its rendering, the box is one of its objects,
    and the expression / answer follow from the scene."""
    config = WorldConfig(seed=3)
    tasks = _tasks(world_dir)
    scenes = {f"train-{i:06d}": generate_scene(scene_rng(config, "train", i), config) for i in range(48)}
    for fields in _rows(world_dir / "refcoco_train.tsv"):
        example = tasks["refcoco"].parse_row(fields)
        scene = scenes[example.extra["image_id"]]
        assert np.array_equal(np.asarray(example.image), np.asarray(render(scene)))
        (index,) = wh.resolve(example.text, scene)
        assert tuple(scene.objects[index].box) == tuple(int(v) for v in example.target)
    for fields in _rows(world_dir / "vqa_train.tsv"):
        example = tasks["vqa"].parse_row(fields)
        scene = scenes[example.extra["image_id"]]
        assert list(example.target) == [wh.answer(example.text, scene)]


def test_validation_images_are_held_out(world_dir: Path) -> None:
    train = {fields[4] for fields in _rows(world_dir / "caption_train.tsv")}
    valid = {fields[4] for fields in _rows(world_dir / "caption_valid.tsv")}
    assert len(train) == 48 and len(valid) == 16
    assert not train & valid


def test_corpus_holds_prompts_and_targets(world_dir: Path) -> None:
    corpus = (world_dir / "corpus.txt").read_text().splitlines()
    text = set(corpus)
    assert " what does the image describe?" in text
    assert "  what does the region describe? region:" in text
    assert any(line.startswith(' which region does the text " the ') for line in corpus)
    assert any(line.startswith(' can image and text1 " ') and ' imply text2 " ' in line for line in corpus)
    assert any(line.startswith(" how many ") and line.endswith("?") for line in corpus)
    first = _rows(world_dir / "caption_train.tsv")[0][2].split("&&")
    assert all(" " + c in text for c in first)
    assert {" " + a for a in answer_vocabulary(WorldConfig())} | {" yes", " no", " maybe"} <= text
    assert not any("valid-" in line for line in corpus)


def test_baselines_are_far_from_solved(world_dir: Path) -> None:
    scores = trivial_baselines(world_dir)
    assert set(scores) >= {"baseline_caption_cider", "baseline_grounding_acc50", "baseline_vqa_acc"}
    assert scores["baseline_grounding_acc50"] < 0.3
    assert 0.0 < scores["baseline_vqa_acc"] < 0.5
    assert scores["baseline_vqa_acc"] <= scores["baseline_vqa_acc_question_prior"] < 0.8
    assert 0.0 <= scores["baseline_caption_cider"] < 1.0


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        write_world(tmp_path, -1, 2, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        trivial_baselines(tmp_path / "missing")
