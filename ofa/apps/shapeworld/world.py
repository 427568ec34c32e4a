"""A synthetic shape world written as OFA TSV files, for quickstarts and smoke tests that need no downloads.

:func:`write_world` draws scenes (:mod:`ofa.apps.shapeworld.scene`), describes them (:mod:`ofa.apps.shapeworld.descriptions`)
and writes one TSV per task and split in the layouts the built-in tasks' ``parse_row`` reads, plus the VQA
candidate answers, the class names, a text corpus for training a BPE on the domain, and ``world.json``.
:func:`trivial_baselines` scores the answers a model that ignores the image could give, the floor a trained
model has to clear.

Example::

    from ofa.apps.shapeworld import WorldConfig, write_world, trivial_baselines
    paths = write_world("data/world", num_train=2000, num_valid=200, config=WorldConfig(seed=0))
    print(trivial_baselines("data/world"))
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Hashable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

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
from ofa.apps.shapeworld.scene import Scene, WorldConfig, WorldObject, generate_scene, render, render_indexed
from ofa.data.images import encode_image_base64
from ofa.data.tsv import TSVFile
from ofa.errors import ConfigError, DataError
from ofa.metrics.caption import simple_tokenize
from ofa.metrics.cider import cider_d
from ofa.metrics.grounding import grounding_accuracy
from ofa.metrics.vqa import soft_score
from ofa.records import Example
from ofa.tasks.caption import CaptionTask
from ofa.tasks.refcoco import RefcocoTask
from ofa.tasks.region import RegionCaptionTask
from ofa.tasks.snli_ve import LABEL_TO_ANSWER, SnliVeTask
from ofa.tasks.vqa import VqaGenTask, parse_answers

__all__ = ["WorldConfig", "WorldObject", "Scene", "Reference", "Question", "Entailment", "generate_scene", "render",
           "captions", "referring_expressions", "questions", "entailments", "class_label", "class_names",
           "answer_vocabulary", "scene_rng", "write_world", "trivial_baselines", "TASK_FILES", "SPLITS"]

logger = logging.getLogger(__name__)

FORMAT = "ofa.world.v1"
SPLITS = ("train", "valid", "pretrain")  # "pretrain": the pretraining mixture's own images
# File stem of each task's TSVs (``{stem}_{split}.tsv``) -> the registered task that reads it.
TASK_FILES = {"caption": "caption", "refcoco": "refcoco", "vqa": "vqa_gen", "snli_ve": "snli_ve",
              "classify": "image_classify", "region": "region_caption"}


def scene_rng(config: WorldConfig, split: str, index: int) -> np.random.Generator:
    """The random stream of image ``index`` of ``split``: a function of ``(config.seed, split, index)`` only, so
    validation images never share a stream with training ones and any image can be regenerated alone."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {SPLITS}")
    return np.random.default_rng([config.seed, SPLITS.index(split), index])


def _box_text(box: Sequence[int]) -> str:
    return ",".join(str(int(v)) for v in box)


def _check_field(value: str) -> str:
    assert "\t" not in value and "\n" not in value, value  # generated text never holds either
    return value


class _Rows:
    """One open TSV per task for one split, with its row counts."""

    def __init__(self, out_dir: Path, split: str) -> None:
        self.paths = {stem: out_dir / f"{stem}_{split}.tsv" for stem in TASK_FILES}
        self.files = {stem: path.open("w", encoding="utf-8", newline="\n") for stem, path in self.paths.items()}
        self.counts = {stem: 0 for stem in TASK_FILES}

    def write(self, stem: str, fields: Sequence[str]) -> None:
        self.files[stem].write("\t".join(_check_field(f) for f in fields) + "\n")
        self.counts[stem] += 1

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


class _Prompts:
    """The exact instruction texts the built-in tasks build, taken from the tasks themselves."""

    def __init__(self) -> None:
        self.caption = CaptionTask()
        self.refcoco = RefcocoTask()
        self.region = RegionCaptionTask()
        self.snli_ve = SnliVeTask()
        self.vqa = VqaGenTask(mode="beam")
        self.snli_answers = dict(LABEL_TO_ANSWER)

    def of(self, task: Any, text: str | None = None, **extra: Any) -> str:
        return task.instruction(Example(text=text, extra=extra))


def _describe(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> dict[str, Any]:
    """Every text of one image, drawn from ``rng`` in a fixed order."""
    refs = pick_references(rng, referring_expressions(scene, config), config.refs_per_image)
    regions = [scene.objects[i] for i in rng.permutation(len(scene.objects))[: config.regions_per_image]]
    return {
        "captions": captions(scene, rng, config),
        "refs": refs,
        "questions": questions(scene, rng, config, config.questions_per_image),
        "entailments": entailments(scene, rng, config, config.entailments_per_image),
        "regions": regions,
        "label": class_label(scene),
    }


def _write_image(rows: _Rows, corpus: list[str] | None, prompts: _Prompts, split: str, index: int,
                 config: WorldConfig, labels: list[str]) -> None:
    rng = scene_rng(config, split, index)
    scene = generate_scene(rng, config)
    texts = _describe(scene, rng, config)
    image = encode_image_base64(render_indexed(scene), "PNG")
    image_id = f"{split}-{index:06d}"
    objects = "&&".join(o.shape for o in scene.objects)
    lines: list[str] = []

    rows.write("caption", [f"{image_id}-c", image_id, "&&".join(texts["captions"]), objects, image])
    lines += [prompts.caption.instruction_text] + [" " + c for c in texts["captions"]]
    for k, ref in enumerate(texts["refs"]):
        rows.write("refcoco", [f"{image_id}-r{k}", image_id, ref.text, _box_text(ref.box), image])
        lines.append(prompts.of(prompts.refcoco, ref.text))
    for k, qa in enumerate(texts["questions"]):
        rows.write("vqa", [f"{image_id}-q{k}", image_id, qa.question, f"1.0|!+{qa.answer}", objects, image])
        lines += [prompts.of(prompts.vqa, qa.question), " " + qa.answer]
    for k, ent in enumerate(texts["entailments"]):
        rows.write("snli_ve", [f"{image_id}-e{k}", image_id, image, ent.hypothesis, ent.premise, ent.label])
        lines += [prompts.of(prompts.snli_ve, ent.hypothesis, premise=ent.premise),
                  " " + prompts.snli_answers[ent.label]]
    if texts["label"] is not None:
        rows.write("classify", [image, str(labels.index(texts["label"])), texts["label"]])
        lines.append(" " + texts["label"])
    for k, obj in enumerate(texts["regions"]):
        rows.write("region", [f"{image_id}-g{k}", image_id, region_caption(obj), _box_text(obj.box), image])
        lines += [prompts.of(prompts.region), " " + region_caption(obj)]
    if corpus is not None:
        corpus.extend(lines)


def _progress(total: int, desc: str, enabled: bool) -> Iterator[int]:
    if not enabled:
        return iter(range(total))
    return iter(tqdm(range(total), desc=desc, unit="img", dynamic_ncols=True))


def write_world(out_dir: str | os.PathLike[str], num_train: int, num_valid: int,
                config: WorldConfig | None = None, progress: bool = True) -> dict[str, Path]:
    """Generate a shape world and write it in OFA's TSV layouts.

    Files (``{split}`` is ``train`` and ``valid``; validation images use streams no training image uses):

    * ``caption_{split}.tsv``: ``uniq_id, image_id, captions joined by &&, object labels, image`` (task
      ``caption``; the first caption is the canonical one, which is the one caption training uses).
    * ``refcoco_{split}.tsv``: ``uniq_id, image_id, expression, "x0,y0,x1,y1", image`` (``refcoco``).
    * ``vqa_{split}.tsv``: ``question_id, image_id, question, "1.0|!+answer", object labels, image``
      (``vqa_gen``; the candidates are ``answers.txt``).
    * ``snli_ve_{split}.tsv``: ``uniq_id, image_id, image, hypothesis, premise, label`` (``snli_ve``).
    * ``classify_{split}.tsv``: ``image, label index, class name`` (``image_classify``; class names are
      ``classes.txt``; images without a clearly largest object have no row).
    * ``region_{split}.tsv``: ``uniq_id, image_id, caption, "x0,y0,x1,y1", image`` (``region_caption``).
    * ``answers.txt``, ``classes.txt``: one entry per line.
    * ``corpus.txt``: every instruction and target text of the training split, one per line, exactly as the
      tasks feed them to the tokenizer (leading spaces included), then every answer and class name.
    * ``world.json``: the config, the image counts and the rows per file.

    Args:
        out_dir: the directory (created if needed); existing files of the same names are replaced.
        num_train, num_valid: images per split.
        config: what to draw (default :class:`WorldConfig`).
        progress: show a tqdm progress bar per split.

    Returns:
        ``name -> path``: ``"caption_train"``, ..., ``"answers"``, ``"classes"``, ``"corpus"``, ``"world"``.

    Raises:
        ConfigError: if an image count is negative.
    """
    config = config or WorldConfig()
    counts = {"train": num_train, "valid": num_valid}
    for split, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"num_{split} ({n!r}) must be an int >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompts = _Prompts()
    labels = class_names(config)
    paths: dict[str, Path] = {}
    rows_per_file: dict[str, int] = {}
    corpus: list[str] = []
    for split, n in counts.items():
        rows = _Rows(out, split)
        try:
            for index in _progress(n, f"world {split}", progress):
                _write_image(rows, corpus if split == "train" else None, prompts, split, index, config, labels)
        finally:
            rows.close()
        for stem, path in rows.paths.items():
            paths[f"{stem}_{split}"] = path
            rows_per_file[f"{stem}_{split}"] = rows.counts[stem]
    answers = answer_vocabulary(config)
    corpus += [" " + a for a in answers] + [" " + c for c in labels]
    for name, lines in (("answers", answers), ("classes", labels), ("corpus", corpus)):
        paths[name] = out / f"{name}.txt"
        paths[name].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    meta = {"format": FORMAT, "config": config.to_dict(), "images": counts, "rows": rows_per_file,
            "tasks": {stem: task for stem, task in TASK_FILES.items()}}
    paths["world"] = out / "world.json"
    paths["world"].write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote a shape world of %d + %d images to %s (%s)", num_train, num_valid, out, rows_per_file)
    return paths


# -- baselines ---------------------------------------------------------------------------------------------------
def _read(path: Path, task: Any) -> list[Any]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; write it with ofa.apps.shapeworld.write_world")
    table = TSVFile(path)
    return [task.parse_row(table[i]) for i in range(len(table))]


def _column(path: Path, column: int) -> list[str]:
    table = TSVFile(path, selected_cols=[column])
    return [table[i][0] for i in range(len(table))]


def _most_common(values: Sequence[str]) -> str:
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)  # ties: alphabetical, for determinism


def trivial_baselines(data_dir: str | os.PathLike[str], split: str = "valid",
                      prior_split: str | None = "train") -> dict[str, float]:
    """Scores of image-blind answers on a written world (the floor a trained model should clear).

    * ``baseline_caption_cider``: CIDEr-D (1.0 = 100) of the single most frequent caption, given for every image,
      against that image's captions (lowercased and tokenised with :func:`ofa.metrics.caption.simple_tokenize`).
    * ``baseline_grounding_acc50``: Acc@0.5 of the whole-image box.
    * ``baseline_vqa_acc``: VQA score (:func:`ofa.metrics.vqa.soft_score`) of the most frequent answer.
    * ``baseline_vqa_acc_question_prior``: the same with the most frequent answer to each exact question text
      (a language-only model's ceiling; the overall majority for unseen questions).

    "Most frequent" is counted on ``prior_split`` when its files exist, else on ``split`` itself.

    Args:
        data_dir: the directory :func:`write_world` wrote.
        split: the split to score.
        prior_split: the split the frequent caption and answers are taken from (None: ``split``).

    Returns:
        The four scores, each in [0, 1] (CIDEr-D may exceed 1).

    Raises:
        DataError: if a file is missing or a row does not parse.
    """
    root = Path(data_dir)
    prior = prior_split if prior_split and (root / f"caption_{prior_split}.tsv").is_file() else split

    train_captions = [c.strip() for field in _column(root / f"caption_{prior}.tsv", 2) for c in field.split("&&")]
    frequent_caption = simple_tokenize(_most_common([c for c in train_captions if c]))
    references: dict[Hashable, list[str]] = {str(ex.id): [simple_tokenize(c) for c in ex.target]
                  for ex in _read(root / f"caption_{split}.tsv", CaptionTask())}
    cider, _ = cider_d(references, {k: frequent_caption for k in references})

    grounding = _read(root / f"refcoco_{split}.tsv", RefcocoTask())
    whole = [(0.0, 0.0, float(ex.image.size[0]), float(ex.image.size[1])) for ex in grounding]
    acc50 = grounding_accuracy(whole, [ex.target for ex in grounding])

    prior_questions = _column(root / f"vqa_{prior}.tsv", 2)
    prior_answers = [max(a, key=lambda k: a[k]) for a in map(parse_answers, _column(root / f"vqa_{prior}.tsv", 3))]
    majority = _most_common(prior_answers)
    by_question: dict[str, list[str]] = {}
    for question, answer in zip(prior_questions, prior_answers):
        by_question.setdefault(question, []).append(answer)
    per_question = {q: _most_common(a) for q, a in by_question.items()}
    vqa = _read(root / f"vqa_{split}.tsv", VqaGenTask(mode="beam"))
    if not vqa:
        raise DataError(f"{root / f'vqa_{split}.tsv'} has no rows")
    vqa_acc = sum(soft_score(majority, ex.target) for ex in vqa) / len(vqa)
    prior_acc = sum(soft_score(per_question.get(ex.text, majority), ex.target) for ex in vqa) / len(vqa)
    return {"baseline_caption_cider": float(cider), "baseline_grounding_acc50": float(acc50),
            "baseline_vqa_acc": float(vqa_acc), "baseline_vqa_acc_question_prior": float(prior_acc)}
