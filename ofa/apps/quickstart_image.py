"""``ofa quickstart-image``: text-to-image on the synthetic shape world, on the CPU, in one command.

It writes a shape world (one or two objects on a flat light background, :mod:`ofa.apps.shapeworld`), trains a tiny
GumbelVQ VQGAN on its training images (:func:`ofa.vqgan.train_vqgan`), encodes every image to a code grid
with its canonical caption (:func:`ofa.vqgan.codes.write_image_gen_tsv`), trains a BPE and a small OFA
from scratch on ``image_gen`` with the real :class:`~ofa.trainer.Trainer`, samples images for held-out captions
(top-k, seeded), decodes them with the VQGAN and reranks them with the colour scorer. It writes to ``--out``:

* ``metrics.json``: the VQGAN's reconstruction error on the validation images (``vqgan_l1`` / ``vqgan_l2``)
  and that of the per-image mean colour (``baseline_vqgan_*``); the task's proxy ``code_accuracy`` (greedy
  decoding against the reference grids) and the most-frequent-code baselines; ``color_match``, the fraction of
  samples that show exactly the colours their caption names (:class:`~ofa.metrics.color_check.ColorCheck`), next to
  the same fraction for code grids drawn at random from the training codes' frequencies and for the samples
  judged against another caption; ``order_accuracy`` (two named colours in caption order, left to right);
  step counts and minutes;
* ``gallery.png``: per held-out caption the ground truth, its VQGAN reconstruction and the samples, best first;
* ``checkpoint/`` (model + tokenizer) and ``vqgan/``, loadable by ``ofa generate-image --checkpoint
  out/checkpoint --vqgan out/vqgan "a large red circle"``;
* ``data/``: the world's TSVs and the code TSVs ``image_gen_{train,valid}.tsv``; ``train/``: the trainer's logs.

The VQGAN downsamples by 4 by default (32 px images -> 8x8 code grids), not by 8 as OFA's: at 32 px an f8 grid
is 4x4 and each code has to carry colour *and* the geometry of an object edge; in the time budget such a model
learns the shapes but renders every object in one mean colour. f4 at 32 px has the 8x8 grid of f8 at 64 px at a
quarter of the cost. ``vqgan_factor=8`` is still accepted.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from PIL import Image, ImageDraw

from ofa.apps.quickstart import seeded_test_model
from ofa.apps.shapeworld import WorldConfig, write_world
from ofa.builders import PRESETS
from ofa.config import with_overrides
from ofa.data.image_text import read_image_text
from ofa.errors import ConfigError
from ofa.metrics.color_check import ColorCheck
from ofa.pipeline import Pipeline
from ofa.tasks.image_gen import INSTRUCTION, ImageGenPrediction, ImageGenTask
from ofa.tokenization import OFATokenizer
from ofa.trainer import TaskSpec, Trainer, TrainerConfig
from ofa.vqgan import VQGANConfig, images_from_pil, reconstruction_error, train_vqgan
from ofa.vqgan.codes import write_image_gen_tsv
from ofa.vqgan.train import vqgan_seconds_per_step

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ofa.metrics.color_check import ColorCheck

__all__ = ["ImageQuickstartConfig", "run_image_quickstart", "IMAGE_QUICKSTART_MODEL"]

logger = logging.getLogger(__name__)

# A small text-to-image OFA: 3+3 layers of width 128 and no ResNet stem (image_gen reads no image).
IMAGE_QUICKSTART_MODEL: dict[str, Any] = dict(
    embed_dim=128, num_heads=4, encoder_layers=3, decoder_layers=3, ffn_dim=512, resnet=None, dropout=0.0,
    encoder_drop_path_rate=0.0, decoder_drop_path_rate=0.0, patch_image_size=32,
)

# Shares of the time budget when step counts are not given; the rest is world, encoding, validation, samples.
# Each phase is sized to its own share, so one that runs slow (a busier machine) lengthens the run instead of
# starving the next.
_VQGAN_SHARE = 0.45
_RESERVE_SHARE = 0.12


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ImageQuickstartConfig:
    """Sizes and schedule of the text-to-image quickstart (defaults: the ~10-minute run on 2 CPU cores).

    World: ``num_train`` / ``num_valid`` images of ``image_size`` px with ``min_objects``..``max_objects``
    objects whose sides are ``small_size`` / ``large_size`` fractions of the image, on flat backgrounds.

    VQGAN: ``num_codes`` codes, downsampling ``vqgan_factor`` (grid side ``image_size / vqgan_factor``),
    ``vqgan_channels`` wide, ``vqgan_steps`` Adam steps (None: sized to the time budget) of
    ``vqgan_batch_size`` images at ``vqgan_lr`` with an L2 reconstruction loss.

    Text-to-image model: ``model`` (OFAConfig overrides of ``ofa-test``), ``bpe_vocab`` BPE tokens,
    ``t2i_steps`` (None: sized to the time budget) of ``micro_batch_size`` captions at ``lr``.

    Samples: ``num_samples`` per caption (top-``top_k``, seeded by ``seed``) for ``num_eval_captions`` held-out
    captions (the metrics); the first ``num_gallery`` of them go to the gallery.

    ``minutes`` is the time budget that sizes the step counts left as None (the run takes about that long).
    ``num_threads``: torch threads for the run (None: the faster of one thread and torch's default, timed on
    VQGAN steps; these small convolutions often run slower on several threads of a busy machine than on one).

    Raises:
        ConfigError: for a value out of range, naming it and what is accepted.
    """

    out: str = "quickstart_image"
    minutes: float = 10.0
    num_train: int = 4000
    num_valid: int = 200
    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 2
    small_size: tuple[float, float] = (0.18, 0.24)
    large_size: tuple[float, float] = (0.3, 0.38)
    num_codes: int = 128
    vqgan_factor: int = 4
    vqgan_channels: int = 32
    vqgan_steps: int | None = None
    vqgan_batch_size: int = 16
    vqgan_lr: float = 1e-3
    bpe_vocab: int = 300
    t2i_steps: int | None = None
    micro_batch_size: int = 32
    lr: float = 1e-3
    warmup_ratio: float = 0.05
    model: dict[str, Any] = field(default_factory=lambda: dict(IMAGE_QUICKSTART_MODEL))
    num_samples: int = 8
    top_k: int = 10
    num_eval_captions: int = 64
    num_gallery: int = 8
    num_threads: int | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        positive_ints = ("num_train", "num_valid", "image_size", "num_codes", "vqgan_channels", "vqgan_batch_size",
                         "micro_batch_size", "num_samples", "top_k", "num_eval_captions", "num_gallery")
        for name in positive_ints:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"ImageQuickstartConfig.{name} ({value!r}) must be an int >= 1")
        for name in ("vqgan_steps", "t2i_steps"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ConfigError(f"ImageQuickstartConfig.{name} ({value!r}) must be an int >= 1, or None to size "
                                  "it to the time budget (minutes)")
        if self.num_threads is not None and (not _is_int(self.num_threads) or self.num_threads < 1):
            raise ConfigError(f"ImageQuickstartConfig.num_threads ({self.num_threads!r}) must be an int >= 1, or "
                              "None to time one thread against torch's default and keep the faster")
        for name in ("minutes", "vqgan_lr", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"ImageQuickstartConfig.{name} ({value!r}) must be a positive number")
        if not isinstance(self.warmup_ratio, (int, float)) or not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"ImageQuickstartConfig.warmup_ratio ({self.warmup_ratio!r}) must be in [0, 1)")
        if self.vqgan_factor not in (2, 4, 8, 16):
            raise ConfigError(f"ImageQuickstartConfig.vqgan_factor ({self.vqgan_factor!r}) must be 2, 4, 8 or 16")
        if self.image_size % self.vqgan_factor:
            raise ConfigError(f"ImageQuickstartConfig.image_size ({self.image_size}) must be a multiple of "
                              f"vqgan_factor ({self.vqgan_factor})")
        if self.num_codes < 2:
            raise ConfigError(f"ImageQuickstartConfig.num_codes ({self.num_codes}) must be >= 2")
        if self.vqgan_channels % 32:
            raise ConfigError(f"ImageQuickstartConfig.vqgan_channels ({self.vqgan_channels}) must be a multiple of "
                              "32 (the VQGAN's GroupNorm has 32 groups)")
        if not _is_int(self.bpe_vocab) or self.bpe_vocab < 256:
            raise ConfigError(f"ImageQuickstartConfig.bpe_vocab ({self.bpe_vocab!r}) must be an int >= 256 "
                              "(the byte alphabet)")
        if self.num_gallery > self.num_eval_captions or self.num_eval_captions > self.num_valid:
            raise ConfigError(f"ImageQuickstartConfig needs num_gallery ({self.num_gallery}) <= num_eval_captions "
                              f"({self.num_eval_captions}) <= num_valid ({self.num_valid})")
        if not isinstance(self.model, dict):
            raise ConfigError(f"ImageQuickstartConfig.model ({self.model!r}) must be a dict of OFAConfig overrides")
        if "code_image_size" in self.model or "vocab_size" in self.model:
            raise ConfigError("ImageQuickstartConfig.model must not set code_image_size or vocab_size: they follow "
                              "from image_size / vqgan_factor and from the tokenizer")
        self.world_config()  # WorldConfig checks sizes and object counts (ConfigError naming the field)
        # Fail now, not after the VQGAN has trained: unknown keys, bad sizes, a grid the model cannot hold.
        with_overrides(PRESETS["ofa-test"], {**self.model, "code_image_size": 8 * self.grid_size})

    @property
    def grid_size(self) -> int:
        """Side of the code grid (``image_size / vqgan_factor``)."""
        return self.image_size // self.vqgan_factor

    def world_config(self) -> Any:
        """The :class:`~ofa.apps.shapeworld.WorldConfig` of the images: flat backgrounds, few objects."""
        return WorldConfig(image_size=self.image_size, min_objects=self.min_objects, max_objects=self.max_objects,
                           small_size=self.small_size, large_size=self.large_size, background_contrast=0,
                           refs_per_image=0, questions_per_image=0, entailments_per_image=0, regions_per_image=0,
                           seed=self.seed)

    def vqgan_config(self) -> Any:
        """The :class:`~ofa.vqgan.VQGANConfig`: no attention, one ResNet block per level."""
        levels = int(math.log2(self.vqgan_factor))
        width = self.vqgan_channels
        # kl_weight 1e-3 (taming's gumbel_f8 uses 1e-8) keeps more of a small codebook in use.
        return VQGANConfig(num_codes=self.num_codes, embed_dim=width, z_channels=width, channels=width,
                           channel_mult=(1,) + (2,) * levels, num_res_blocks=1, attn_resolutions=(),
                           resolution=self.image_size, kl_weight=1e-3)


def _pick_threads(images: Any, config: ImageQuickstartConfig) -> tuple[int, float]:
    """The torch thread count to run with and the VQGAN's seconds per step with it."""
    default = torch.get_num_threads()
    candidates = [config.num_threads] if config.num_threads is not None else sorted({1, default})
    timings: dict[int, float] = {}
    for threads in candidates:  # one thread first: oversubscribed threads can be many times slower
        torch.set_num_threads(threads)
        limit = 6 * 1.5 * timings[1] if 1 in timings else math.inf
        timings[threads] = vqgan_seconds_per_step(images, config.vqgan_config(), lr=config.vqgan_lr,
                                                  batch_size=config.vqgan_batch_size, limit=limit)
    # Several threads must win clearly: a machine that is busy now tends to get busier, not idler.
    best = min(timings, key=lambda t: timings[t] * (1.0 if t == 1 else 1.1))
    torch.set_num_threads(best)
    logger.info("VQGAN seconds per step by torch threads: %s; running with %d", timings, best)
    return best, timings[best]


def _t2i_steps(config: ImageQuickstartConfig, make_trainer: Any) -> int:
    """Time a few text-to-image steps and size the run to its share of the budget."""
    if config.t2i_steps is not None:
        return config.t2i_steps
    trainer = make_trainer(10_000)
    trainer.train_step()  # warm-up
    start = time.perf_counter()
    probe = 4
    for _ in range(probe):
        trainer.train_step()
    per_step = (time.perf_counter() - start) / probe
    return max(int((1.0 - _VQGAN_SHARE - _RESERVE_SHARE) * config.minutes * 60 / per_step), 20)


def _mean_color_error(images: Any) -> dict[str, float]:
    """Reconstruction error of the trivial reconstruction: every pixel set to its image's mean colour."""
    diff = images - images.mean(dim=(2, 3), keepdim=True)
    return {"l1": float(diff.abs().mean()), "l2": float((diff**2).mean())}


def _read_codes(path: Path) -> list[tuple[str, list[int], str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        uid, codes, caption = line.split("\t")
        rows.append((uid, [int(c) for c in codes.split()], caption))
    return rows


def _code_baselines(train: list[tuple[str, list[int], str]], valid: list[tuple[str, list[int], str]]
                    ) -> dict[str, float]:
    """Code accuracy of predicting the most frequent training code everywhere, and per grid position."""
    counts = Counter(c for _, codes, _ in train for c in codes)
    top = counts.most_common(1)[0][0]
    size = len(train[0][1])
    per_position = [Counter(codes[i] for _, codes, _ in train).most_common(1)[0][0] for i in range(size)]
    total = sum(len(codes) for _, codes, _ in valid)
    return {
        "baseline_code_accuracy": sum(c == top for _, codes, _ in valid for c in codes) / total,
        "baseline_code_accuracy_per_position": sum(codes[i] == per_position[i] for _, codes, _ in valid
                                                   for i in range(size)) / total,
    }


def _color_metrics(check: "ColorCheck", captions: list[str], samples: list[list["Image.Image"]],
                   truth: list["Image.Image"], recon: list["Image.Image"], random_grids: list["Image.Image"]
                   ) -> dict[str, float | None]:
    """The colour statistics of ``metrics.json`` (see the module docstring)."""
    def rate(pairs: list[tuple["Image.Image", str]]) -> float:
        return sum(check.matches(image, caption) for image, caption in pairs) / max(len(pairs), 1)

    n = len(captions)
    shuffled = [captions[(i + 1) % n] for i in range(n)]  # another held-out caption: chance given the samples
    per_sample = [(image, captions[i]) for i in range(n) for image in samples[i]]
    orders = [check.left_to_right(image, caption) for image, caption in per_sample]
    judged = [o for o in orders if o is not None]
    return {
        "color_match": rate(per_sample),
        "color_match_reranked_top1": rate([(samples[i][0], captions[i]) for i in range(n)]),
        "color_match_ground_truth": rate(list(zip(truth, captions))),
        "color_match_reconstruction": rate(list(zip(recon, captions))),
        "baseline_color_match_random_codes": rate([(image, captions[i // (len(random_grids) // n)])
                                                   for i, image in enumerate(random_grids)]),
        "baseline_color_match_shuffled_captions": rate([(image, shuffled[i]) for i in range(n)
                                                        for image in samples[i]]),
        "order_accuracy": sum(judged) / len(judged) if judged else None,
        "order_pairs": float(len(judged)),
    }


def _gallery(path: Path, captions: list[str], truth: list["Image.Image"], recon: list["Image.Image"],
             samples: list[list["Image.Image"]], matched: list[list[bool]], scale: int = 3) -> None:
    """One row per caption: its text, the ground truth, the VQGAN reconstruction, then the samples (best first)
    with a bar under each: green when the sample shows exactly the caption's colours, grey otherwise."""
    side = truth[0].width * scale
    gap, text_h, bar_h, head_h = 6, 14, 5, 44
    columns = 2 + max(len(row) for row in samples)
    width = gap + columns * (side + gap) + 2 * gap
    row_h = text_h + side + bar_h + 2 * gap
    sheet = Image.new("RGB", (width, head_h + row_h * len(captions)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 4), "text-to-image on the shape world (held-out captions)", fill="black")
    draw.text((gap, 18), "ground truth | VQGAN reconstruction | samples reranked by the colour scorer, best first",
              fill=(60, 60, 60))
    draw.text((gap, 30), "bar under a sample: green = exactly the caption's colours, grey = not", fill=(60, 60, 60))
    for row, caption in enumerate(captions):
        y = head_h + row * row_h
        draw.text((gap, y), caption, fill="black")
        y += text_h
        tiles = [truth[row], recon[row]] + samples[row]
        for col, image in enumerate(tiles):
            x = gap + col * (side + gap) + (2 * gap if col >= 2 else 0)
            sheet.paste(image.convert("RGB").resize((side, side), Image.Resampling.NEAREST), (x, y))
            if col >= 2:
                color = (40, 170, 70) if matched[row][col - 2] else (200, 200, 200)
                draw.rectangle([x, y + side + 2, x + side - 1, y + side + 1 + bar_h], fill=color)
    sheet.save(path)


def run_image_quickstart(config: ImageQuickstartConfig) -> dict[str, float | None]:
    """Run the text-to-image quickstart end to end; returns the metrics written to ``metrics.json``.

    ``order_accuracy`` is None when no sample shows both colours of a two-colour caption. Torch's thread count
    (see ``num_threads``) is restored on return.
    """
    threads = torch.get_num_threads()
    try:
        return _run(config)
    finally:
        torch.set_num_threads(threads)


def _run(config: ImageQuickstartConfig) -> dict[str, float | None]:
    started = time.perf_counter()
    budget = config.minutes * 60
    out, data = Path(config.out), Path(config.out) / "data"
    out.mkdir(parents=True, exist_ok=True)
    world = config.world_config()
    logger.info("writing the shape world to %s", data)
    paths = write_world(data, config.num_train, config.num_valid, world, progress=config.progress)

    # 1. The VQGAN.
    size, grid = config.image_size, config.grid_size
    train_images = images_from_pil([r.image for r in read_image_text(paths["caption_train"], text_column=None,
                                                                      id_column=None)], size)
    valid_records = list(read_image_text(paths["caption_valid"]))
    valid_images = images_from_pil([r.image for r in valid_records], size)
    threads, per_step = _pick_threads(train_images, config)
    vqgan_steps = config.vqgan_steps
    if vqgan_steps is None:
        vqgan_steps = max(int(_VQGAN_SHARE * budget / per_step), 50)
    logger.info("training the VQGAN for %d steps", vqgan_steps)
    vqgan_started = time.perf_counter()
    vqgan = train_vqgan(train_images, config.vqgan_config(), steps=vqgan_steps, lr=config.vqgan_lr,
                        batch_size=config.vqgan_batch_size, temperature=(0.5, 1.0 / 16), reconstruction="l2",
                        out_dir=out / "vqgan", log_every=50, seed=config.seed, progress=config.progress).model
    vqgan_seconds = time.perf_counter() - vqgan_started
    recon_error = reconstruction_error(vqgan, valid_images)

    # 2. Code grids with their canonical (first) captions.
    code_files = {split: data / f"image_gen_{split}.tsv" for split in ("train", "valid")}
    for split, path in code_files.items():
        write_image_gen_tsv(paths[f"caption_{split}"], path, vqgan, captions="first", progress=config.progress)
    train_rows, valid_rows = _read_codes(code_files["train"]), _read_codes(code_files["valid"])

    # 3. Tokenizer and the text-to-image model.
    tok = OFATokenizer.train([INSTRUCTION + caption for _, _, caption in train_rows], vocab_size=config.bpe_vocab,
                             num_codes=config.num_codes, num_bins=16)
    task_spec = TaskSpec(name="image_gen", train_data=str(code_files["train"]), valid_data=str(code_files["valid"]),
                         options={"grid_size": grid, "num_samples": 1, "top_k": 1})  # greedy validation

    def make_trainer(max_steps: int) -> Trainer:
        model = seeded_test_model(tok, config.seed, location_init=False, code_image_size=8 * grid, **config.model)
        trainer_config = TrainerConfig(
            output_dir=str(out / "train"), tasks=(task_spec,), micro_batch_size=config.micro_batch_size,
            max_steps=max_steps, lr=config.lr, warmup_ratio=config.warmup_ratio,
            criterion={"name": "ce", "label_smoothing": 0.0},
            clip_norm=1.0, seed=config.seed, log_every=10, save_every=max_steps, validate_every=max_steps,
            valid_max_examples=config.num_valid, valid_batch_size=64, keep_last=1, best_metric=None)
        return Trainer(trainer_config, model=model, tokenizer=tok, overwrite=True, progress=config.progress)

    t2i_steps = _t2i_steps(config, make_trainer)
    logger.info("training the text-to-image model for %d steps", t2i_steps)
    t2i_started = time.perf_counter()
    trainer = make_trainer(t2i_steps)
    valid = trainer.train()
    t2i_seconds = time.perf_counter() - t2i_started
    checkpoint = out / "checkpoint"
    model = trainer.model.eval()
    model.save_pretrained(checkpoint)
    tok.save_pretrained(checkpoint)

    # 4. Samples for held-out captions, decoded and reranked by colour; baselines.
    count = config.num_eval_captions
    captions = [caption for _, _, caption in valid_rows[:count]]
    task = ImageGenTask(grid_size=grid, num_samples=config.num_samples, top_k=config.top_k, seed=config.seed,
                        vqgan=vqgan, scorer="color")
    runner = Pipeline(task, model, tok, batch_size=8, progress=config.progress)
    predictions = runner.predict_examples(runner.examples(None, captions))
    samples = [list(cast(ImageGenPrediction, p).images) for p in predictions]  # what ImageGenTask predicts
    truth = [r.image.convert("RGB") for r in valid_records[:count]]
    recon = vqgan.codes_to_pil(torch.tensor([codes for _, codes, _ in valid_rows[:count]]), grid)
    frequencies = Counter(c for _, codes, _ in train_rows for c in codes)
    rng = random.Random(config.seed)
    codes, weights = zip(*sorted(frequencies.items()))
    random_grids = vqgan.codes_to_pil(torch.tensor(
        [rng.choices(codes, weights=weights, k=grid * grid) for _ in range(count * config.num_samples)]), grid)
    check = ColorCheck(world.colors)

    metrics: dict[str, float | None] = {
        "vqgan_l1": recon_error["l1"], "vqgan_l2": recon_error["l2"],
        **{f"baseline_vqgan_{k}": v for k, v in _mean_color_error(valid_images).items()},
        "vqgan_codes_used": recon_error["codes_used"],
        "code_accuracy": float(valid.get("code_accuracy", float("nan"))),
        **_code_baselines(train_rows, valid_rows),
        **_color_metrics(check, captions, samples, truth, recon, random_grids),
        "image_size": float(size), "grid_size": float(grid), "num_codes": float(config.num_codes),
        "vqgan_steps": float(vqgan_steps), "t2i_steps": float(t2i_steps), "eval_captions": float(count),
        "samples_per_caption": float(config.num_samples), "threads": float(threads),
        "vqgan_minutes": vqgan_seconds / 60, "t2i_minutes": t2i_seconds / 60,
    }
    shown = config.num_gallery
    matched = [[check.matches(image, caption) for image in row] for row, caption in zip(samples, captions)]
    _gallery(out / "gallery.png", captions[:shown], truth[:shown], recon[:shown], samples[:shown], matched[:shown])
    metrics["minutes"] = (time.perf_counter() - started) / 60
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
