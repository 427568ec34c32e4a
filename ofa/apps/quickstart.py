"""``ofa quickstart``: the whole library on the CPU in one command, no downloads.

It writes a synthetic shape world (:mod:`ofa.apps.shapeworld`) as OFA TSVs, trains a BPE on its text, builds a small
OFA from scratch, trains it on captioning + grounding + VQA + grounded captioning with the real
:class:`~ofa.trainer.Trainer`, evaluates the held-out images with the real metrics, and writes to ``--out``:

* ``metrics.json``: ``caption_cider``, ``grounding_acc50``, ``vqa_acc`` and the trivial baselines
  (``baseline_*``: most frequent caption, whole-image box, majority answer);
* ``curve.png``: the training loss curve; ``gallery.png``: held-out images with predicted captions and boxes;
* ``checkpoint/``: model + tokenizer, loadable by ``ofa predict --checkpoint``;
* ``data/``: the world's TSVs; ``train/``: the trainer's logs and checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image, ImageDraw

from ofa import evaluation
from ofa.apps.shapeworld import trivial_baselines, write_world
from ofa.apps.shapeworld.world import WorldConfig
from ofa.builders import build_model, init_location_embeddings
from ofa.data.tsv import TSVFile
from ofa.errors import ConfigError
from ofa.model import OFAModel
from ofa.pipeline import Pipeline
from ofa.records import ParsesRows
from ofa.tasks import get_task
from ofa.tasks.refcoco import GroundingPrediction
from ofa.tokenization import OFATokenizer
from ofa.trainer import TaskSpec, Trainer, TrainerConfig

__all__ = ["QuickstartConfig", "run_quickstart", "prepare_quickstart", "QUICKSTART_MODEL", "QUICKSTART_TEXT_METRICS",
           "seeded_test_model"]

logger = logging.getLogger(__name__)

# A small OFA: every block of the real model at a size that trains on two CPU cores in minutes.
# init_std 0.1 (about embed_dim ** -0.5), not OFA's BERT-style 0.02: at width 128 and 0.02 the image -> cross-attention
# -> logit path starts so small that the decoder learns the caption template and then ignores the image for
# thousands of steps (measured, captions of one-object images: colour-word NLL still at chance, 1.85, after 300
# steps at lr 1e-3 with 0.02; 0.02 after 175 steps with 0.1).
QUICKSTART_MODEL: dict[str, Any] = dict(
    embed_dim=128, num_heads=4, encoder_layers=3, decoder_layers=3, ffn_dim=512,
    resnet={"layers": (1, 1, 1), "width": 16}, dropout=0.0, encoder_drop_path_rate=0.0, decoder_drop_path_rate=0.0,
    code_image_size=64, patch_image_size=96, entangle_position_embedding=True, init_std=0.1,
)


# The caption metrics of the quickstarts' validations: no METEOR. They report CIDEr, and METEOR's Java process costs
# seconds to start (7 s of a 7.8 s evaluation of 16 captions, measured), twice per evaluation, which a slow machine
# pays from its 10 minutes; in the pretraining quickstart it took 10 s of each 100-caption evaluation.
QUICKSTART_TEXT_METRICS = ("BLEU", "ROUGE_L", "CIDEr")

# The tasks the quickstart can train and the world's TSV prefix of each.
_TASK_FILES = {"caption": "caption", "refcoco": "refcoco", "vqa_gen": "vqa", "region_caption": "region",
               "image_classify": "classify"}


@dataclass(frozen=True)
class QuickstartConfig:
    """Sizes and schedule of the quickstart (defaults: the ~10-minute run).

    ``model`` holds :func:`~ofa.builders.build_model` overrides, ``world`` :class:`~ofa.apps.shapeworld.WorldConfig`
    fields other than ``image_size`` and ``seed`` (which come from this config), and ``task_ratios`` the
    sampling weights of the trained tasks (some of ``caption``, ``refcoco``, ``vqa_gen``, ``region_caption``,
    ``image_classify``: the shape of the largest object).
    """

    out: str = "quickstart"
    minutes: float = 10.0
    # 10000 images, not 2000: with 2000 the model memorised them (3000 steps: grounding Acc@0.5 0.88 on training
    # images, 0.60 held out; VQA 0.87 / 0.70). The world costs ~2 s per 1000 images to write.
    num_train: int = 10000
    num_valid: int = 200
    image_size: int = 96
    num_bins: int = 64
    num_codes: int = 16
    bpe_vocab: int = 400
    # 32: at equal wall time (640 steps of 32 = 1020 of 16 = 1490 of 8 at 2 threads), seeds 0 and 1 gave mean CIDEr
    # 3.03 / 3.24 / 3.09, Acc@0.5 0.32 / 0.32 / 0.34, VQA 0.605 / 0.63 / 0.58: no size is clearly better (measured).
    micro_batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-4
    warmup_ratio: float = 0.05
    label_smoothing: float = 0.05
    # Grounded captioning (name the object in a given box) is trained too: it teaches the inverse of grounding and
    # raised held-out VQA from 0.69 to 0.735 at 3000 steps (grounding 0.665 -> 0.65, within noise; measured).
    task_ratios: dict[str, float] = field(default_factory=lambda: {"caption": 1.0, "region_caption": 1.0,
                                                                   "refcoco": 2.0, "vqa_gen": 2.0})
    max_steps: int | None = None
    valid_max_examples: int = 200
    seed: int = 0
    model: dict[str, Any] = field(default_factory=lambda: dict(QUICKSTART_MODEL))
    # Ordered (Fourier) start for the bin tokens and image positions (ofa.builders.init_location_embeddings):
    # grounding Acc@0.5 after 640 steps 0.05 -> 0.36, VQA 0.57 -> 0.585, CIDEr 3.15 -> 3.31 (measured).
    location_init: bool = True
    world: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.minutes > 0:
            raise ConfigError(f"QuickstartConfig.minutes ({self.minutes!r}) must be > 0")
        for name in ("num_train", "num_valid", "micro_batch_size", "grad_accum", "valid_max_examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"QuickstartConfig.{name} ({getattr(self, name)!r}) must be >= 1")
        if self.num_train < self.micro_batch_size:
            raise ConfigError(f"QuickstartConfig.num_train ({self.num_train}) must be at least micro_batch_size "
                              f"({self.micro_batch_size})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"QuickstartConfig.max_steps ({self.max_steps!r}) must be >= 1 or None (sized to "
                              f"the time budget)")
        if not self.lr > 0:
            raise ConfigError(f"QuickstartConfig.lr ({self.lr!r}) must be > 0")
        unknown = sorted(set(self.task_ratios) - set(_TASK_FILES))
        if unknown or not self.task_ratios or not all(r > 0 for r in self.task_ratios.values()):
            raise ConfigError(f"QuickstartConfig.task_ratios ({self.task_ratios!r}) needs positive ratios for "
                              f"some of {sorted(_TASK_FILES)}")
        allowed = {f.name for f in dataclasses.fields(WorldConfig)} - {"image_size", "seed"}
        unknown = sorted(set(self.world) - allowed)
        if unknown:
            raise ConfigError(f"QuickstartConfig.world has unknown keys {unknown}; accepted: {sorted(allowed)} "
                              f"(image_size and seed come from the quickstart config)")


def seeded_test_model(tok: OFATokenizer, seed: int, *, location_init: bool, **options: Any) -> OFAModel:
    """The quickstarts' fresh model: ``ofa-test`` sized to ``tok`` with ``options`` as overrides, its random weights
    drawn after ``torch.manual_seed(seed)`` (so every trainer built from it starts from the same weights), and the
    ordered start of :func:`~ofa.builders.init_location_embeddings` when ``location_init``."""
    torch.manual_seed(seed)
    model = build_model("ofa-test", vocab_size=len(tok), **options)
    if location_init:
        init_location_embeddings(model, tok.vocab.bin_range())
    return model


def _tokenizer(corpus: Path, config: QuickstartConfig) -> Any:
    lines = [line for line in corpus.read_text().splitlines() if line.strip()]
    return OFATokenizer.train(lines, vocab_size=config.bpe_vocab, num_codes=config.num_codes,
                              num_bins=config.num_bins)


@dataclass(frozen=True)
class _RunPlan:
    """How the run fits its budget on this machine: measured costs and what follows from them."""

    steps: int
    seconds_per_step: float
    eval_seconds: float  # the final evaluation and pictures, estimated from a timed sample
    train_seconds: float  # the training deadline


def _time_evaluation(trainer: Trainer, sample: int = 32) -> float:
    """Seconds the final evaluation (every task's validation examples, then the gallery's 16 predictions) will take
    on this machine, from timing ``sample`` examples of each task with the probe's barely trained model. Such a model
    writes captions to their length limit, and a batch of ``sample`` costs more per example than the evaluation's
    batches of 64, so the estimate errs long."""
    total = 0.0
    trainer.model.eval()
    for task, examples in zip(trainer.tasks, trainer.valid_examples):
        if not examples:
            continue
        part = examples[:sample]
        start = time.perf_counter()
        evaluation.evaluate(task, trainer.model, trainer.tokenizer, part, batch_size=sample, progress=False)
        per_example = (time.perf_counter() - start) / len(part)
        total += per_example * (len(examples) + (8 if task.name in ("caption", "refcoco") else 0))
    return total


def _plan_run(config: QuickstartConfig, trainer_factory: Any, started: float) -> _RunPlan:
    """Time a few training steps and a sample of the evaluation, then size the run to the time budget: training
    gets what is left once the data, the BPE, this probe, the estimated evaluation (plus 15%) and a 3% margin are
    taken out. A machine three times slower trains a third of the steps and still finishes on time (the deadline
    stops training early if it slows down further mid-run)."""
    if config.max_steps is not None:
        return _RunPlan(config.max_steps, float("nan"), float("nan"), float("nan"))
    trainer = trainer_factory(10_000)
    for _ in range(2):  # warm-up
        trainer.train_step()
    start = time.perf_counter()
    # Steps of different tasks differ in cost: with 8 probe steps the default run trained 3663 steps and finished
    # in 8.0 of its 10 minutes; with 24 it trained 4562 and finished in 9.95 (both measured, idle machine).
    # The probe is bounded too: at most 5% of the budget after 4 steps (on a machine slowed 15x by another job,
    # 24 steps took longer than a 1.25-minute budget; measured).
    probe, budget = 0, config.minutes * 60
    while probe < 24 and (probe < 4 or time.perf_counter() - start < 0.05 * budget):
        trainer.train_step()
        probe += 1
    per_step = (time.perf_counter() - start) / probe
    eval_seconds = _time_evaluation(trainer)
    train_seconds = budget * 0.97 - 1.15 * eval_seconds - (time.perf_counter() - started)
    return _RunPlan(max(int(train_seconds / per_step), 20), per_step, eval_seconds, max(train_seconds, 1.0))


def prepare_quickstart(config: QuickstartConfig) -> tuple[Path, OFATokenizer, Callable[..., Trainer]]:
    """Write the world and train its BPE; returns the data folder, the tokenizer and a trainer factory
    ``make_trainer(max_steps, max_minutes=None)`` (a fresh seeded model each call). Also used by
    ``benchmarks/bench_quickstart_step.py``."""
    out = Path(config.out)
    data = out / "data"
    out.mkdir(parents=True, exist_ok=True)
    logger.info("writing the synthetic world to %s", data)
    paths = write_world(data, config.num_train, config.num_valid,
                        WorldConfig(image_size=config.image_size, seed=config.seed, **config.world),
                        progress=config.progress)
    tok = _tokenizer(Path(paths["corpus"]), config)
    tok_dir = out / "tokenizer"
    tok.save_pretrained(tok_dir)
    answers = [a for a in Path(paths["answers"]).read_text().splitlines() if a.strip()]
    classes = [c for c in Path(paths["classes"]).read_text().splitlines() if c.strip()]
    size = config.image_size
    options: dict[str, dict[str, Any]] = {
        "caption": {"image_size": size, "tokenizer": "simple", "metrics": QUICKSTART_TEXT_METRICS},
        "refcoco": {"image_size": size, "max_image_size": size},
        "vqa_gen": {"image_size": size, "candidates": answers, "mode": "allcand"},
        "region_caption": {"image_size": size, "max_image_size": size, "tokenizer": "simple",
                           "metrics": QUICKSTART_TEXT_METRICS},
        "image_classify": {"image_size": size, "class_names": classes},
    }
    tasks = [TaskSpec(name=name, train_data=str(data / f"{_TASK_FILES[name]}_train.tsv"),
                      valid_data=str(data / f"{_TASK_FILES[name]}_valid.tsv"), options=options[name], ratio=ratio)
             for name, ratio in config.task_ratios.items()]

    def make_trainer(max_steps: int, max_minutes: float | None = None) -> Trainer:
        model = seeded_test_model(tok, config.seed, location_init=config.location_init, **config.model)
        trainer_config = TrainerConfig(
            output_dir=str(out / "train"), tasks=tuple(tasks), micro_batch_size=config.micro_batch_size,
            grad_accum=config.grad_accum,
            max_steps=max_steps, max_minutes=max_minutes, lr=config.lr, warmup_ratio=config.warmup_ratio,
            criterion={"name": "ce", "label_smoothing": config.label_smoothing}, clip_norm=1.0, seed=config.seed,
            log_every=10,
            save_every=max_steps, validate_every=max_steps, valid_max_examples=config.valid_max_examples,
            valid_batch_size=64, keep_last=1, best_metric=None)
        return Trainer(trainer_config, model=model, tokenizer=tok, overwrite=True, progress=config.progress)

    return data, tok, make_trainer


def run_quickstart(config: QuickstartConfig) -> dict[str, float]:
    """Run the quickstart end to end; returns the metrics written to ``metrics.json``."""
    started = time.perf_counter()
    out = Path(config.out)
    data, tok, make_trainer = prepare_quickstart(config)
    size = config.image_size
    plan = _plan_run(config, make_trainer, started)
    # The deadline is a deadline: if the machine slows down mid-run, training stops when the training share of
    # the budget is spent and the evaluation still runs (without max_steps given, the run is sized from the probe).
    deadline = None if config.max_steps is not None else plan.train_seconds / 60
    if deadline is not None:
        print(f"quickstart: this machine does a training step in {plan.seconds_per_step * 1000:.0f} ms and the "
              f"evaluation in about {plan.eval_seconds:.0f} s; training {plan.steps} steps (deadline "
              f"{plan.train_seconds:.0f} s)", file=sys.stderr, flush=True)
    elif config.progress:
        print(f"quickstart: training {plan.steps} steps", file=sys.stderr, flush=True)
    trainer = make_trainer(plan.steps, deadline)
    valid = trainer.train()
    steps = trainer.step
    checkpoint = out / "checkpoint"
    trainer.model.save_pretrained(checkpoint)
    tok.save_pretrained(checkpoint)

    metrics: dict[str, float] = {
        "caption_cider": float(valid.get("caption/CIDEr", float("nan"))),
        "grounding_acc50": float(valid.get("refcoco/acc@0.5", float("nan"))),
        "vqa_acc": float(valid.get("vqa_gen/vqa_acc", float("nan"))),
    }
    metrics.update({k: float(v) for k, v in trivial_baselines(data).items()})
    metrics["train_steps"] = float(steps)
    if config.max_steps is None:  # sized from the timed probe
        metrics["probe_seconds_per_step"] = plan.seconds_per_step
        metrics["probe_eval_seconds"] = plan.eval_seconds
    metrics["minutes"] = (time.perf_counter() - started) / 60
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _plot_curve(out / "train" / "metrics.jsonl", out / "curve.png")
    _gallery(trainer.model, tok, data, out / "gallery.png", size)
    metrics["minutes"] = (time.perf_counter() - started) / 60
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _plot_curve(log: Path, path: Path) -> None:
    """A loss-vs-step line chart drawn with Pillow (no plotting dependency)."""
    points = []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            points.append((record["step"], record["loss"]))
    width, height, pad = 640, 360, 48
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([pad, pad // 2, width - pad // 2, height - pad], outline="black")
    draw.text((pad, 4), "training loss (label-smoothed CE per token) vs step", fill="black")
    if len(points) >= 2:
        xs, ys = zip(*points)
        x0, x1, y0, y1 = min(xs), max(xs), 0.0, max(ys)
        def to_px(x: float, y: float) -> tuple[float, float]:
            return (pad + (x - x0) / max(x1 - x0, 1) * (width - 1.5 * pad),
                    height - pad - (y - y0) / max(y1 - y0, 1e-9) * (height - 1.5 * pad))
        draw.line([to_px(x, y) for x, y in points], fill=(200, 30, 30), width=2)
        for frac in (0.0, 0.5, 1.0):
            y = y0 + frac * (y1 - y0)
            draw.text((4, to_px(x0, y)[1] - 6), f"{y:.2f}", fill="black")
        draw.text((pad, height - pad + 8), f"step {x0}", fill="black")
        draw.text((width - 2 * pad, height - pad + 8), f"step {x1}", fill="black")
    image.save(path)


def _corners(box: Any, scale: float) -> list[float]:
    """``box`` scaled, as the rectangle its corners span: a model may emit x1 < x0 (scored as a miss), which
    Pillow refuses to draw as given."""
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _gallery(model: Any, tok: Any, data: Path, path: Path, size: int, count: int = 8) -> None:
    """Held-out images with the predicted caption and the box predicted for one referring expression."""
    refcoco = get_task("refcoco", image_size=size, max_image_size=size)
    caption = get_task("caption", image_size=size)
    rows = TSVFile(data / "refcoco_valid.tsv")
    assert isinstance(refcoco, ParsesRows)  # the built-in refcoco task reads TSV rows
    examples = [refcoco.parse_row(rows[i]) for i in range(0, min(len(rows), 4 * count), 4)][:count]
    boxes = Pipeline(refcoco, model, tok, progress=False).predict_examples(examples)
    captioner = Pipeline(caption, model, tok, progress=False)
    captions = captioner.predict_examples(captioner.examples([ex.image for ex in examples]))
    scale = 3
    cell_w, cell_h = size * scale, size * scale + 44
    sheet = Image.new("RGB", (cell_w * 4, cell_h * ((len(examples) + 3) // 4)), "white")
    for i, (ex, box, cap) in enumerate(zip(examples, boxes, captions)):
        assert ex.image is not None  # refcoco rows carry their image
        image = ex.image.resize((size * scale, size * scale), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(image)
        gt = [v * scale for v in ex.target]
        draw.rectangle(gt, outline=(0, 160, 0), width=2)
        if isinstance(box, GroundingPrediction) and box.box is not None:
            draw.rectangle(_corners(box.box, scale), outline=(220, 0, 0), width=3)
        cell = Image.new("RGB", (cell_w, cell_h), "white")
        cell.paste(image, (0, 0))
        text = ImageDraw.Draw(cell)
        text.text((4, size * scale + 2), f"ref: {ex.text}"[:48], fill=(0, 120, 0))
        text.text((4, size * scale + 16), f"cap: {getattr(cap, 'text', '')}"[:48], fill="black")
        conf = getattr(box, "confidence", None)
        text.text((4, size * scale + 30), "red = predicted box" + (f" ({conf:.2f})" if conf else ""),
                  fill=(200, 0, 0))
        sheet.paste(cell, ((i % 4) * cell_w, (i // 4) * cell_h))
    sheet.save(path)
