"""``ofa quickstart-pretrain``: OFA's unified pretraining on the CPU, and proof that it transfers.

In one command, no downloads:

1. writes a shape world: a pretraining mixture of its own images (:mod:`ofa.apps.shapeworld.pretrain`) and a small
   labelled set (``num_labelled`` examples per task for grounding, captioning and VQA) with held-out images;
2. trains a small VQGAN on the world's images (the image-infilling targets);
3. pretrains a small OFA on the mixture with the ``pretrain`` task and criterion (caption + matching, VQA +
   matching, grounding + grounded captioning, text infilling, image infilling, detection);
4. scores the pretrained model on the three tasks as it is, then fine-tunes it and the same architecture from
   scratch on the labelled set with the same recipe for the same number of steps, and scores both on the held-out
   images;
5. asks the pretrained model a task it never saw, grounded QA ("what color is the object in the region?
   region: <bins>"), and scores text infilling (masked-token accuracy) and image infilling on held-out data.

Everything measured goes to ``DIR/metrics.json``; ``DIR/transfer.png`` draws the comparison and
``DIR/infilling.png`` shows held-out images with their middle masked and infilled by the pretrained model.
Phases are sized from timed probe steps to the ``minutes`` budget (as ``ofa quickstart``); both fine-tunes run
the same number of steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image, ImageDraw

from ofa.apps.quickstart import QUICKSTART_MODEL, QUICKSTART_TEXT_METRICS, seeded_test_model
from ofa.apps.shapeworld import WorldConfig, trivial_baselines, write_world
from ofa.apps.shapeworld.pretrain import write_pretraining_files
from ofa.apps.shapeworld.scene import generate_scene, render_indexed
from ofa.apps.shapeworld.world import scene_rng
from ofa.data.image_text import read_image_text
from ofa.data.images import decode_base64_image
from ofa.data.transforms import square_resize
from ofa.data.tsv import TSVFile
from ofa.errors import ConfigError
from ofa.generation import AllowedTokens, GenerationConfig, Trie, TrieConstraint, generate
from ofa.pretraining.examples import INSTRUCTIONS, TEXT_INFILLING
from ofa.pretraining.masking import SpanMasking
from ofa.pretraining.transforms import infilling_transform, middle_box
from ofa.tokenization import OFATokenizer
from ofa.trainer import TaskSpec, Trainer, TrainerConfig
from ofa.vqgan import VQGANConfig, images_from_pil, train_vqgan
from ofa.vqgan.train import vqgan_seconds_per_step

__all__ = ["PretrainQuickstartConfig", "run_pretrain_quickstart", "GROUNDED_QA"]

logger = logging.getLogger(__name__)

GROUNDED_QA = " what color is the object in the region? region:"  # + 4 bins: never trained as such
_TASK_FILES = {"caption": "caption", "refcoco": "refcoco", "vqa_gen": "vqa"}
_SHARES = {"vqgan": 0.08, "pretrain": 0.72, "finetune": 0.10}  # of the budget; the rest: data, probes, scoring


@dataclass(frozen=True)
class PretrainQuickstartConfig:
    """Sizes and schedule of ``ofa quickstart-pretrain`` (defaults: the 30-minute run).

    ``lr`` is the pretraining learning rate; both fine-tunes use ``finetune_lr`` (lower, as in OFA's recipes).
    ``mixture`` overrides :class:`~ofa.apps.shapeworld.WorldConfig` fields of the pretraining scenes only (default:
    three referring expressions per scene); ``extras_every`` is the pretrain task's row period of the second-pass
    samples (OFA: 8; 4 here gives the small model more detection and infilling); ``augment`` turns on OFA's
    ``RandomAugment(2, 7)`` for image-text samples (off by default here: its brightness and contrast ops shift
    the colours this world's texts name); ``location_init`` gives both the pretrained and the scratch model the
    ordered start of :func:`~ofa.builders.init_location_embeddings`.
    """

    out: str = "quickstart_pretrain"
    minutes: float = 30.0
    num_pretrain: int = 8000
    num_labelled: int = 200
    num_valid: int = 200
    image_size: int = 64
    num_bins: int = 64
    num_codes: int = 64
    vqgan_factor: int = 4
    bpe_vocab: int = 400
    micro_batch_size: int = 16
    lr: float = 5e-4
    finetune_lr: float = 1.5e-4
    warmup_ratio: float = 0.05
    sample_patch_num: int | None = None
    extras_every: int = 4
    augment: bool = False
    mixture: dict[str, Any] = field(default_factory=lambda: {"refs_per_image": 3})
    pretrain_steps: int | None = None
    finetune_steps: int | None = None
    vqgan_steps: int | None = None
    seed: int = 0
    model: dict[str, Any] = field(default_factory=lambda: dict(QUICKSTART_MODEL))
    # Ordered (Fourier) start for bin tokens and image positions, for both the pretrained and the scratch model
    # (ofa.builders.init_location_embeddings). At the README run's step counts (315/1573/2x478): few-shot grounding
    # 0.18 -> 0.395 (scratch 0.01 -> 0.055), zero-shot grounding 0.25 -> 0.495, few-shot VQA 0.60 -> 0.585 (scratch
    # 0.41 -> 0.435), CIDEr 3.33 -> 3.38 (measured, one run each).
    location_init: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.minutes > 0:
            raise ConfigError(f"PretrainQuickstartConfig.minutes ({self.minutes!r}) must be > 0")
        allowed = {f.name for f in dataclasses.fields(WorldConfig)} - {"image_size", "seed"}
        unknown = sorted(set(self.mixture) - allowed)
        if unknown:
            raise ConfigError(f"PretrainQuickstartConfig.mixture has unknown keys {unknown}; accepted: "
                              f"{sorted(allowed)} (image_size and seed come from the quickstart config)")
        for name in ("num_pretrain", "num_labelled", "num_valid", "micro_batch_size", "extras_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"PretrainQuickstartConfig.{name} ({getattr(self, name)!r}) must be >= 1")
        if self.image_size % 16 or self.image_size < 32:
            raise ConfigError(f"PretrainQuickstartConfig.image_size ({self.image_size}) must be a multiple of 16, "
                              ">= 32")
        for name in ("pretrain_steps", "finetune_steps", "vqgan_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"PretrainQuickstartConfig.{name} ({value!r}) must be >= 1 or None (sized to "
                                  "the budget)")

    @property
    def code_grid(self) -> int:
        """Side of the infilling code grid: the middle half of the image, downsampled by the VQGAN."""
        return self.image_size // 2 // self.vqgan_factor


def _labelled_subset(data: Path, stem: str, count: int) -> Path:
    """The first ``count`` rows of ``{stem}_train.tsv`` (the few-shot training set)."""
    source = data / f"{stem}_train.tsv"
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:count]
    target = data / f"{stem}_labelled.tsv"
    target.write_text("".join(lines), encoding="utf-8")
    return target


def _tokenizer(texts: list[str], config: PretrainQuickstartConfig) -> OFATokenizer:
    return OFATokenizer.train(texts, vocab_size=config.bpe_vocab, num_codes=config.num_codes,
                              num_bins=config.num_bins)


def _corpus(world_corpus: Path, pretrain: dict[str, Path]) -> list[str]:
    """Every text the tokenizer must cover: the world's task texts, the pretraining instructions, texts, names."""
    lines = [line for line in world_corpus.read_text().splitlines() if line.strip()]
    lines += [v for v in INSTRUCTIONS.values()] + list(TEXT_INFILLING) + [GROUNDED_QA]
    lines += [" " + line for line in pretrain["text"].read_text().splitlines()[:2000]]
    lines += [" " + line for line in (pretrain["negatives"] / "object.txt").read_text().splitlines()]
    return lines


def run_pretrain_quickstart(config: PretrainQuickstartConfig) -> dict[str, Any]:
    """Run the whole experiment; returns the metrics written to ``metrics.json``."""
    started = time.perf_counter()
    budget = config.minutes * 60
    phases: dict[str, float] = {}
    mark = [started]

    def lap(name: str) -> None:  # minutes since the previous lap
        now = time.perf_counter()
        phases[name] = (now - mark[0]) / 60
        mark[0] = now
    out = Path(config.out)
    data = out / "data"
    out.mkdir(parents=True, exist_ok=True)
    world = WorldConfig(image_size=config.image_size, seed=config.seed)
    paths = write_world(data, config.num_labelled, config.num_valid, world, progress=config.progress)
    size = config.image_size
    lap("world")

    # 1. The VQGAN of the infilling targets (the middle half of a pretraining image), on pretraining scenes.
    middle = size // 2
    scenes = [render_indexed(generate_scene(scene_rng(world, "pretrain", i), world)).convert("RGB")
              .resize((size, size)).crop(middle_box(size)) for i in range(min(config.num_pretrain, 2000))]
    vqgan_config = VQGANConfig(num_codes=config.num_codes, embed_dim=32, z_channels=32, channels=32,
                               channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), resolution=middle,
                               kl_weight=1e-3)
    vqgan_images = images_from_pil(scenes, middle)
    vqgan_steps = config.vqgan_steps or max(int(_SHARES["vqgan"] * budget / vqgan_seconds_per_step(
        vqgan_images, vqgan_config, lr=1e-3, batch_size=16)), 100)
    vqgan = train_vqgan(vqgan_images, vqgan_config, steps=vqgan_steps, lr=1e-3, batch_size=16,
                        temperature=(0.5, 1.0 / 16), reconstruction="l2", out_dir=out / "vqgan", log_every=50,
                        seed=config.seed, progress=config.progress).model.eval()
    lap("vqgan")

    # 2. The pretraining mixture and the tokenizer.
    mixture = dataclasses.replace(world, **config.mixture)
    pre = write_pretraining_files(data / "pretrain", config.num_pretrain, mixture, vqgan=vqgan,
                                  aux_image_size=size, progress=config.progress)
    tok = _tokenizer(_corpus(paths["corpus"], pre), config)
    tok.save_pretrained(out / "tokenizer")
    answers = [a for a in paths["answers"].read_text().splitlines() if a.strip()]
    lap("mixture")
    model_options = {**config.model, "code_image_size": 8 * config.code_grid, "patch_image_size": size}

    def new_model() -> Any:
        return seeded_test_model(tok, config.seed, location_init=config.location_init, **model_options)

    # 3. Pretraining.
    pretrain_options = {"negatives": str(pre["negatives"]), "text_data": str(pre["text"]),
                        "image_data": str(pre["image"]), "detection_data": str(pre["detection"]),
                        "image_size": size, "aux_image_size": size, "max_image_size": size,
                        "extras_every": config.extras_every, "augment": config.augment}

    def pretrainer(steps: int, model: Any = None) -> Trainer:
        trainer_config = TrainerConfig(
            output_dir=str(out / "pretrain"), task="pretrain", train_data=str(pre["vision_language"]),
            task_options=pretrain_options, micro_batch_size=config.micro_batch_size, max_steps=steps, lr=config.lr,
            warmup_ratio=config.warmup_ratio, clip_norm=5.0, seed=config.seed, log_every=10, save_every=steps,
            keep_last=1, best_metric=None,
            criterion={"name": "pretrain", "label_smoothing": 0.0, "sample_patch_num": config.sample_patch_num})
        return Trainer(trainer_config, model=model or new_model(), tokenizer=tok, overwrite=True,
                       progress=config.progress)

    pretrain_steps = config.pretrain_steps or _steps(pretrainer, _SHARES["pretrain"] * budget)
    lap("pretrain_probe")
    logger.info("pretraining %d steps", pretrain_steps)
    pretrained = pretrainer(pretrain_steps)
    pretrained.train()
    lap("pretrain")
    pretrained.model.save_pretrained(out / "pretrained")
    tok.save_pretrained(out / "pretrained")
    base_state = {k: v.detach().clone() for k, v in pretrained.model.state_dict().items()}

    # 4. Few-shot fine-tuning from the pretrained weights and from scratch, same data and steps.
    options: dict[str, dict[str, Any]] = {
        "caption": {"image_size": size, "tokenizer": "simple", "metrics": QUICKSTART_TEXT_METRICS},
        "refcoco": {"image_size": size, "max_image_size": size},
        # The decoder starts from <s> as in pretraining (OFA fine-tunes VQA with the question as decoder prompt,
        # a format a few hundred examples cannot teach: the pretrained model's VQA falls from 0.62 to 0.13).
        "vqa_gen": {"image_size": size, "candidates": answers, "mode": "allcand", "prompt_type": "none"},
    }
    tasks = tuple(TaskSpec(name=name, train_data=str(_labelled_subset(data, stem, config.num_labelled)),
                           valid_data=str(data / f"{stem}_valid.tsv"), options=options[name])
                  for name, stem in _TASK_FILES.items())

    def finetuner(steps: int, start: str) -> Trainer:
        model = new_model()
        if start == "pretrained":
            model.load_state_dict(base_state)
        trainer_config = TrainerConfig(
            output_dir=str(out / f"finetune_{start}"), tasks=tasks, micro_batch_size=config.micro_batch_size,
            max_steps=steps, lr=config.finetune_lr, warmup_ratio=config.warmup_ratio, clip_norm=1.0, seed=config.seed,
            criterion={"name": "ce", "label_smoothing": 0.05}, log_every=10, save_every=steps,
            validate_every=steps, valid_max_examples=config.num_valid, valid_batch_size=64, keep_last=1,
            best_metric=None)
        return Trainer(trainer_config, model=model, tokenizer=tok, overwrite=True, progress=config.progress)

    finetune_steps = config.finetune_steps or _steps(lambda n: finetuner(n, "scratch"),
                                                     _SHARES["finetune"] / 2 * budget)
    lap("finetune_probe")

    def scores(valid: dict[str, float]) -> dict[str, float]:
        return {"caption_cider": float(valid.get("caption/CIDEr", float("nan"))),
                "grounding_acc50": float(valid.get("refcoco/acc@0.5", float("nan"))),
                "vqa_acc": float(valid.get("vqa_gen/vqa_acc", float("nan")))}

    results = {"zero_shot": scores(finetuner(1, "pretrained").validate())}  # the same tasks, before fine-tuning
    lap("zero_shot_tasks")
    for start in ("pretrained", "scratch"):
        logger.info("fine-tuning from %s: %d steps", start, finetune_steps)
        results[start] = scores(finetuner(finetune_steps, start).train())
        lap(f"finetune_{start}")

    # 5. Zero-shot grounded QA and infilling with the pretrained model.
    model = pretrained.model.eval()
    metrics: dict[str, Any] = {"finetune_pretrained": results["pretrained"], "finetune_scratch": results["scratch"],
                               "pretrained_zero_shot": results["zero_shot"]}
    metrics.update(_grounded_qa(model, tok, data / "region_valid.tsv", world, size))
    metrics.update(_text_infilling(model, tok, data / "caption_valid.tsv", pre["text"], config))
    metrics.update(_image_infilling(model, tok, vqgan, data / "caption_valid.tsv", size, config,
                                    out / "infilling.png"))
    metrics["baselines"] = {k: float(v) for k, v in trivial_baselines(data).items()}
    metrics["steps"] = {"vqgan": vqgan_steps, "pretrain": pretrain_steps, "finetune": finetune_steps}
    lap("zero_shot")
    metrics["phase_minutes"] = phases
    metrics["minutes"] = (time.perf_counter() - started) / 60
    _transfer_chart(metrics, out / "transfer.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _steps(factory: Callable[[int], Trainer], seconds: float, probe: int = 12) -> int:
    """Steps that fit ``seconds``, timed on ``probe`` steps of a throwaway trainer (after 2 warm-up steps)."""
    trainer = factory(10_000)
    for _ in range(2):
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(probe):
        trainer.train_step()
    return max(int(seconds / ((time.perf_counter() - start) / probe)), 20)


def _bins(tok: Any, box: tuple[float, float, float, float], size: float) -> list[int]:
    return list(tok.encode_box(box, max_image_size=size))


@torch.no_grad()
def _grounded_qa(model: Any, tok: Any, regions: Path, world: WorldConfig, size: int) -> dict[str, float]:
    """Accuracy on "what color is the object in the region? region: <bins>" (answers restricted to colour words),
    against chance and the most frequent colour."""
    colors = [name for name, _ in world.colors]
    rows = TSVFile(regions)
    sources, images, truth = [], [], []
    for i in range(len(rows)):
        uniq_id, image_id, caption, box, image64 = rows[i]
        x0, y0, x1, y1 = (float(v) for v in box.split(","))
        color = next(w for w in caption.split() if w in colors)
        record = decode_base64_image(image64)
        sources.append([tok.bos_id, *tok.encode(GROUNDED_QA), *_bins(tok, (x0, y0, x1, y1), size), tok.eos_id])
        images.append(square_resize(record, size))
        truth.append(color)
    trie = Trie.from_answers([tok.encode(f" {c}") for c in colors], bos_id=tok.bos_id, eos_id=tok.eos_id)
    config = GenerationConfig(beam_size=len(colors), max_len_b=4, processors=(TrieConstraint(trie, tok.bos_id),))
    predictions = []
    for start in range(0, len(sources), 64):
        src = _pad(sources[start:start + 64], tok.pad_id)
        hyps = generate(model, src, patch_images=torch.stack(images[start:start + 64]), config=config)
        predictions += [tok.decode(h[0].tokens).strip() for h in hyps]
    accuracy = sum(p == t for p, t in zip(predictions, truth)) / len(truth)
    prior = Counter(truth).most_common(1)[0][1] / len(truth)
    return {"grounded_qa_acc": accuracy, "grounded_qa_chance": 1 / len(colors), "grounded_qa_prior": prior,
            "grounded_qa_examples": len(truth)}


def _pad(rows: list[list[int]], pad: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


@torch.no_grad()
def _text_infilling(model: Any, tok: Any, captions: Path, train_texts: Path,
                    config: PretrainQuickstartConfig) -> dict[str, float]:
    """Teacher-forced accuracy on the masked tokens of held-out captions vs the most frequent training token."""
    texts = [r.texts[0] for r in read_image_text(captions, id_column=None) if r.texts][:config.num_valid]
    texts_seen = [line.split("\t", 1)[1] for line in train_texts.read_text().splitlines()[:5000]]
    counts = Counter(t for text in texts_seen for t in tok.encode(f" {text.lower()}"))
    unigram = counts.most_common(1)[0][0]
    masking = SpanMasking(tok.vocab.mask_id)
    g = torch.Generator().manual_seed(config.seed)
    hits = base = total = 0
    before, after = (tok.encode(t) for t in TEXT_INFILLING)
    for text in texts:
        ids = tok.encode(f" {text.lower()}")
        item = [tok.bos_id, *ids, tok.eos_id]
        masked = masking(item, tok.word_starts(item), g)
        if not masked.masked:
            continue
        src = torch.tensor([[tok.bos_id, *before, *masked.tokens[1:-1], *after, tok.eos_id]])
        prev = torch.tensor([[tok.bos_id, *ids]])
        image = torch.zeros(1, 3, config.image_size, config.image_size)
        logits = model(src, prev, image, torch.tensor([False])).logits[0]
        guess = logits.argmax(-1).tolist()
        for position in masked.masked:  # input position p (after <s>) is target position p - 1
            total += 1
            hits += guess[position - 1] == ids[position - 1]
            base += unigram == ids[position - 1]
    return {"text_infill_acc": hits / max(total, 1), "text_infill_unigram": base / max(total, 1),
            "text_infill_tokens": float(total)}


@torch.no_grad()
def _image_infilling(model: Any, tok: Any, vqgan: Any, captions: Path, size: int, config: PretrainQuickstartConfig,
                     picture: Path, count: int = 8) -> dict[str, float]:
    """Infill the middle of held-out images; the picture shows original | masked | infilled per row."""
    records = list(read_image_text(captions, text_column=None, id_column=None))[:count]
    grid = config.code_grid
    src = torch.tensor([[tok.bos_id, *tok.encode(INSTRUCTIONS["image_infilling"]), tok.eos_id]] * len(records))
    images = torch.stack([infilling_transform(r.image, size) for r in records])
    gen = GenerationConfig(beam_size=1, strategy="greedy", max_len_a=0, max_len_b=grid * grid, min_len=grid * grid,
                           ban_special_until_max_len=True, processors=(AllowedTokens(tok.vocab.code_range()),))
    hyps = generate(model, src, patch_images=images, code_masks=torch.ones(len(records), dtype=torch.bool),
                    config=gen)
    codes = torch.tensor([[tok.vocab.code_index(t) for t in h[0].tokens.tolist()[:grid * grid]] for h in hyps])
    infilled = vqgan.codes_to_pil(codes, grid)
    x0, y0, x1, y1 = middle_box(size)
    cell = size * 2
    sheet = Image.new("RGB", (3 * cell, len(records) * cell), "white")
    for row, (record, middle) in enumerate(zip(records, infilled)):
        original = record.image.resize((size, size))
        masked = original.copy()
        ImageDraw.Draw(masked).rectangle((x0, y0, x1 - 1, y1 - 1), fill=(128, 128, 128))
        filled = original.copy()
        filled.paste(middle.resize((x1 - x0, y1 - y0)), (x0, y0))
        for col, image in enumerate((original, masked, filled)):
            sheet.paste(image.resize((cell, cell), Image.Resampling.NEAREST), (col * cell, row * cell))
    sheet.save(picture)
    return {"image_infill_examples": float(len(records))}


def _transfer_chart(metrics: dict[str, Any], path: Path) -> None:
    """Bars: pretrained vs scratch per few-shot metric, and zero-shot grounded QA vs chance and prior."""
    rows = [(k, metrics["finetune_pretrained"][k], metrics["finetune_scratch"][k])
            for k in ("grounding_acc50", "vqa_acc", "caption_cider")]
    rows.append(("grounded_qa (0-shot)", metrics["grounded_qa_acc"], metrics["grounded_qa_prior"]))
    rows.append(("text_infill", metrics["text_infill_acc"], metrics["text_infill_unigram"]))
    width, bar_h = 640, 18
    image = Image.new("RGB", (width, 40 + len(rows) * 3 * bar_h), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), "red: pretrained (zero-shot / infilling: model)   grey: scratch (or prior / unigram)",
              fill="black")
    for i, (name, a, b) in enumerate(rows):
        top = max(a, b, 1e-9)  # each row on its own scale
        y = 40 + i * 3 * bar_h
        draw.text((8, y), f"{name}: {a:.3f} vs {b:.3f}", fill="black")
        draw.rectangle((220, y, 220 + int(400 * a / top), y + bar_h - 4), fill=(200, 40, 40))
        draw.rectangle((220, y + bar_h, 220 + int(400 * b / top), y + 2 * bar_h - 4), fill=(150, 150, 150))
    image.save(path)
