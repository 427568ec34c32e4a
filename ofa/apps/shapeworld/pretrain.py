"""The shape world's pretraining files: OFA's four pretraining TSVs and negative resources (spec §5.7).

Pretraining images are drawn from their own stream (split ``"pretrain"``), so no fine-tuning or validation
image of :func:`~ofa.apps.shapeworld.write_world` appears in them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from tqdm.auto import tqdm

from ofa.apps.shapeworld.descriptions import (
    answer_vocabulary,
    captions,
    pick_references,
    questions,
    referring_expressions,
)
from ofa.apps.shapeworld.scene import WorldConfig, generate_scene, render_indexed
from ofa.apps.shapeworld.world import scene_rng
from ofa.errors import ConfigError
from ofa.pretraining.files import (
    FILE_NAMES,
    DetectionObject,
    format_detection_row,
    format_image_row,
    format_text_row,
    format_vl_row,
)
from ofa.pretraining.transforms import middle_box
from ofa.vqgan.codes import encode_images_to_codes

if TYPE_CHECKING:  # pragma: no cover
    from ofa.vqgan import VQGAN

__all__ = ["write_pretraining_files", "QUESTION_TYPES"]

# Question kind -> answer type of type2ans.json ("how many" gets the +-1 rule; the rest is "other").
QUESTION_TYPES = {"color": "what color", "count": "how many", "count_color": "how many",
                  "count_shape": "how many", "shape": "what shape", "size": "what size"}


def _progress(total: int, desc: str, enabled: bool) -> Iterator[int]:
    if not enabled:
        return iter(range(total))
    return iter(tqdm(range(total), desc=desc, unit="img", dynamic_ncols=True))


def write_pretraining_files(out_dir: str | os.PathLike[str], num_images: int, config: WorldConfig | None = None, *,
                            vqgan: "VQGAN | None" = None, aux_image_size: int | None = None,
                            progress: bool = True) -> dict[str, Path]:
    """Write a pretraining mixture of ``num_images`` scenes.

    Per scene: one caption row, one qa row per question and one grounding row per referring expression in
    ``vision_language_examples.tsv``; every caption, question and answer sentence in ``text_examples.tsv``; the
    scene's objects (box and ``"size color shape"`` name) in ``detection_examples.tsv``; with a ``vqgan``, the
    image at ``aux_image_size`` and the codes of its middle half in ``image_examples.tsv``. Negative resources:
    ``all_captions.txt``, ``object.txt`` (shape and colour words, which the object swap exchanges) and
    ``type2ans.json`` (answers by question type, see :data:`QUESTION_TYPES`).

    Args:
        out_dir: the directory (created if needed).
        num_images: scenes to draw.
        config: the world (default :class:`WorldConfig`).
        vqgan: encodes the infilling targets (its resolution must be ``aux_image_size / 2``); None writes no
            image file.
        aux_image_size: side of the infilling images (default: twice the VQGAN resolution).
        progress: show a progress bar.

    Returns:
        ``kind -> path`` for ``vision_language``, ``text``, ``detection``, (``image``) and ``negatives`` (the
        directory).

    Raises:
        ConfigError: ``num_images < 1``, or an ``aux_image_size`` that does not fit the VQGAN.
    """
    config = config or WorldConfig()
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ConfigError(f"num_images ({num_images!r}) must be an int >= 1")
    side = None
    if vqgan is not None:
        resolution = int(vqgan.config.resolution)
        side = aux_image_size or 2 * resolution
        x0, _, x1, _ = middle_box(side)
        if x1 - x0 != resolution:
            raise ConfigError(f"aux_image_size ({side}) must be twice the VQGAN resolution ({resolution}): the "
                              "codes cover the middle half of the image")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in FILE_NAMES.items() if kind != "image" or vqgan is not None}
    files = {kind: path.open("w", encoding="utf-8") for kind, path in paths.items()}
    all_captions: list[str] = []
    type2ans: dict[str, set[str]] = {"other": set()}
    try:
        for index in _progress(num_images, "pretraining world", progress):
            rng = scene_rng(config, "pretrain", index)
            scene = generate_scene(rng, config)
            image = render_indexed(scene).convert("RGB")
            uid = f"pretrain-{index:06d}"
            words = sorted({o.shape for o in scene.objects} | {o.color for o in scene.objects})
            texts = captions(scene, rng, config)
            all_captions += texts
            lines = [format_vl_row(f"{uid}-c", image, type="caption", caption=texts[0], gt_objects=words,
                                   dataset="shapeworld")]
            for k, qa in enumerate(questions(scene, rng, config, config.questions_per_image)):
                lines.append(format_vl_row(f"{uid}-q{k}", image, type="qa", question=qa.question,
                                           refs=f"1.0|!+{qa.answer}", gt_objects=words, dataset="shapeworld"))
                type2ans.setdefault(QUESTION_TYPES.get(qa.kind, "other"), set()).add(qa.answer)
            for k, ref in enumerate(pick_references(rng, referring_expressions(scene, config),
                                                    config.refs_per_image)):
                lines.append(format_vl_row(f"{uid}-r{k}", image, type="visual_grounding", caption=ref.text,
                                           refs=",".join(str(v) for v in ref.box), dataset="shapeworld"))
            files["vision_language"].write("".join(line + "\n" for line in lines))
            for k, text in enumerate(texts):
                files["text"].write(format_text_row(f"{uid}-t{k}", text) + "\n")
            objects = [DetectionObject(box=(float(o.box[0]), float(o.box[1]), float(o.box[2]), float(o.box[3])),
                                       category_id=o.shape, name=o.description) for o in scene.objects]
            files["detection"].write(format_detection_row(f"{uid}-d", image, objects) + "\n")
            if vqgan is not None and side is not None:
                files["image"].write(_image_row(vqgan, f"{uid}-i", image, side) + "\n")
    finally:
        for handle in files.values():
            handle.close()
    for answer in answer_vocabulary(config):
        if not any(answer in answers for answers in type2ans.values()):
            type2ans["other"].add(answer)
    (out / "all_captions.txt").write_text("".join(c + "\n" for c in dict.fromkeys(all_captions)), encoding="utf-8")
    object_words = list(config.shapes) + [name for name, _ in config.colors]
    (out / "object.txt").write_text("".join(w + "\n" for w in object_words), encoding="utf-8")
    (out / "type2ans.json").write_text(json.dumps({t: sorted(a) for t, a in sorted(type2ans.items())}, indent=1)
                                       + "\n", encoding="utf-8")
    return {**paths, "negatives": out}


def _image_row(vqgan: Any, uid: str, image: Any, side: int) -> str:
    resized = image.resize((side, side))
    x0, y0, x1, y1 = middle_box(side)
    (codes,) = encode_images_to_codes(vqgan, [resized.crop((x0, y0, x1, y1))], image_size=x1 - x0)
    return format_image_row(uid, resized, codes)
