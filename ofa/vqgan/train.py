"""A small recipe to train a GumbelVQ VQGAN from scratch on a new image domain (e.g. the synthetic shape world).

The loss is a pixel reconstruction term (L1 or L2) plus the quantizer's KL term to the uniform code prior, with
the Gumbel-softmax temperature annealed over training. taming-transformers' full recipe also has a perceptual
(LPIPS, a pretrained VGG) and an adversarial (PatchGAN) term; their pretrained networks cannot be had offline,
so they are absent here. Reconstructions come out blurrier than the released model's, which is fine for
flat-coloured synthetic images and for smoke tests, not for photographs.

Command line: ``ofa train-vqgan --data caption_train.tsv --out runs/vqgan --steps 2000``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm

from ofa.data.image_text import read_image_text
from ofa.errors import ConfigError, InputError
from ofa.vqgan.config import VQGAN_GUMBEL_F8, VQGAN_TEST, VQGANConfig
from ofa.vqgan.model import VQGAN, build_vqgan, images_from_pil

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["VQGANTrainResult", "train_vqgan", "vqgan_seconds_per_step", "cosine_temperature", "reconstruction_error", "load_image_tensor",
           "VQGAN_PRESETS", "VQGAN_SMALL_F8"]

logger = logging.getLogger(__name__)

VQGAN_SMALL_F8 = VQGANConfig(num_codes=8192, embed_dim=64, z_channels=64, channels=64, channel_mult=(1, 1, 2, 2),
                             num_res_blocks=1, attn_resolutions=(), resolution=96)
"""A small factor-8 model (96 px -> 12x12 codes) for the synthetic world; 8192 codes like OFA's tokenizer."""

VQGAN_PRESETS: dict[str, VQGANConfig] = {"gumbel-f8": VQGAN_GUMBEL_F8, "small-f8": VQGAN_SMALL_F8,
                                         "test": VQGAN_TEST}
"""Architectures ``ofa train-vqgan --preset`` knows."""

LOG_FILE = "train_log.jsonl"


@dataclass
class VQGANTrainResult:
    """What :func:`train_vqgan` returns: the trained model (eval mode), its loss log and where it was saved."""

    model: VQGAN
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path | None = None


def cosine_temperature(start: float = 0.9, end: float = 1.0 / 16) -> Callable[[int, int], float]:
    """A Gumbel-softmax temperature schedule: cosine from ``start`` (step 0) to ``end`` (last step).

    Raises:
        ConfigError: for non-positive temperatures.
    """
    if not (start > 0 and end > 0):
        raise ConfigError(f"temperatures must be > 0, got start={start}, end={end}")

    def schedule(step: int, steps: int) -> float:
        progress = step / max(steps - 1, 1)
        return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))

    return schedule


def load_image_tensor(data: "str | os.PathLike[str] | Sequence[Image.Image] | torch.Tensor", image_size: int, *,
                      image_column: int = -1, limit: int | None = None) -> torch.Tensor:
    """All images of ``data`` as one ``[n, 3, image_size, image_size]`` tensor in ``[-1, 1]``.

    Args:
        data: a TSV with a base64 image column or a JSONL of image paths (see
            :func:`ofa.data.image_text.read_image_text`), a list of PIL images, or a ready tensor.
        image_size: output side (PIL images are resized, bicubic; a tensor must have it already).
        image_column: the TSV's image column (default: the last, as in OFA's caption TSV).
        limit: read at most this many images of a file.

    Raises:
        InputError: no images, or a tensor of another shape.
        DataError: unreadable files or images.
    """
    if isinstance(data, torch.Tensor):
        if data.dim() != 4 or data.shape[1] != 3 or tuple(data.shape[-2:]) != (image_size, image_size):
            raise InputError(f"an image tensor must be [n, 3, {image_size}, {image_size}], got {list(data.shape)}")
        if data.shape[0] == 0:
            raise InputError("the image tensor holds no images")
        return data.float()
    if isinstance(data, (str, os.PathLike)):
        images = [r.image for r in read_image_text(data, text_column=None, id_column=None,
                                                   image_column=image_column, limit=limit)]
        if not images:
            raise InputError(f"{str(data)!r} holds no images")
    else:
        images = list(data)
    return images_from_pil(images, image_size)


@torch.no_grad()
def reconstruction_error(vqgan: VQGAN, images: torch.Tensor, *, batch_size: int = 16) -> dict[str, float]:
    """Eval-mode (argmax codes) reconstruction quality: mean L1 and L2 in ``[-1, 1]`` pixels, codes used.

    The model's train/eval mode is restored afterwards.
    """
    was_training = vqgan.training
    vqgan.eval()
    device = vqgan.quantize.embed.weight.device
    l1 = l2 = 0.0
    used: set[int] = set()
    try:
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start:start + batch_size].to(device)
            codes = vqgan.encode(chunk)
            recon = vqgan.decode(codes)
            l1 += float((recon - chunk).abs().sum())
            l2 += float(((recon - chunk) ** 2).sum())
            used.update(codes.unique().tolist())
    finally:
        vqgan.train(was_training)
    n = images.numel()
    return {"l1": l1 / n, "l2": l2 / n, "codes_used": float(len(used))}


def _check(name: str, value: Any, kind: type, low: float) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (kind is int and not isinstance(value, int)) or value < low:
        raise ConfigError(f"{name} ({value!r}) must be {'an int' if kind is int else 'a number'} >= {low}")


def train_vqgan(
    data: "str | os.PathLike[str] | Sequence[Image.Image] | torch.Tensor",
    config: VQGANConfig | VQGAN = VQGAN_TEST,
    *,
    steps: int = 1000,
    lr: float = 5e-4,
    batch_size: int = 8,
    image_size: int | None = None,
    temperature: Callable[[int, int], float] | tuple[float, float] = (0.9, 1.0 / 16),
    reconstruction: Literal["l1", "l2"] = "l1",
    out_dir: str | os.PathLike[str] | None = None,
    save_every: int = 0,
    log_every: int = 50,
    seed: int = 0,
    device: str | torch.device = "cpu",
    image_column: int = -1,
    limit: int | None = None,
    progress: bool = True,
) -> VQGANTrainResult:
    """Train a VQGAN on a set of images with reconstruction + KL loss (no perceptual or adversarial term).

    Each step draws ``batch_size`` images (epochs of a seeded permutation), runs the Gumbel-softmax forward
    at the scheduled temperature and takes an Adam step (betas 0.5, 0.9 as in taming-transformers) on
    ``reconstruction loss + KL``. The images are held in memory, which suits small domains.

    Args:
        data: images: a TSV (base64 image column) or JSONL file, a list of PIL images, or a tensor in [-1, 1].
        config: a :class:`VQGANConfig` to build a fresh model from, or a :class:`VQGAN` to keep training.
        steps: optimiser steps.
        lr: Adam learning rate (constant).
        batch_size: images per step.
        image_size: training side (default ``config.resolution``); a multiple of the downsampling factor.
        temperature: ``(start, end)`` of a cosine schedule, or ``schedule(step, steps) -> temperature``.
        reconstruction: ``"l1"`` (mean absolute error, taming's pixel term) or ``"l2"`` (mean squared error).
        out_dir: where ``config.json`` + ``weights.pt`` (:meth:`VQGAN.save_pretrained`) and ``train_log.jsonl``
            go (nothing is written when None).
        save_every: also save every this many steps (0: only at the end).
        log_every: steps between log records (and progress-bar updates of the shown loss).
        seed: seeds the initialisation (fresh models), the image order and the Gumbel noise.
        device: where to train.
        image_column / limit: how to read a TSV (see :func:`load_image_tensor`).
        progress: show a tqdm progress bar.

    Returns:
        :class:`VQGANTrainResult`; ``history`` holds one record per logged step (``step``, ``loss``,
        ``reconstruction``, ``kl``, ``temperature``) plus a final ``eval`` record from
        :func:`reconstruction_error`.

    Raises:
        ConfigError: bad settings. InputError / DataError: bad images.
    """
    _check("steps", steps, int, 1)
    _check("batch_size", batch_size, int, 1)
    _check("save_every", save_every, int, 0)
    _check("log_every", log_every, int, 1)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ConfigError(f"lr ({lr!r}) must be > 0")
    if reconstruction not in ("l1", "l2"):
        raise ConfigError(f"reconstruction ({reconstruction!r}) must be 'l1' or 'l2'")
    schedule = cosine_temperature(*temperature) if isinstance(temperature, tuple) else temperature
    if not callable(schedule):
        raise ConfigError("temperature must be a (start, end) pair or a callable schedule(step, steps)")
    torch.manual_seed(seed)
    if isinstance(config, VQGAN):
        model = config
    elif isinstance(config, VQGANConfig):
        model = build_vqgan(config)
    else:
        raise ConfigError(f"config must be a VQGANConfig or a VQGAN, got {type(config).__name__}")
    side = model.config.resolution if image_size is None else image_size
    f = model.downsample_factor
    if isinstance(side, bool) or not isinstance(side, int) or side < f or side % f:
        raise ConfigError(f"image_size ({side!r}) must be a positive multiple of the downsampling factor {f}")
    images = load_image_tensor(data, side, image_column=image_column, limit=limit)
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))
    order_gen = torch.Generator().manual_seed(seed)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / LOG_FILE).write_text("", encoding="utf-8")
    history: list[dict[str, float]] = []

    def log(record: dict[str, float]) -> None:
        history.append(record)
        if out is not None:
            with open(out / LOG_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    bar = None
    if progress:
        bar = tqdm(total=steps, desc="train vqgan", unit="step", dynamic_ncols=True)
    order = torch.randperm(images.shape[0], generator=order_gen)
    cursor = 0
    window: dict[str, float] = {"loss": 0.0, "reconstruction": 0.0, "kl": 0.0, "n": 0.0}
    started = time.perf_counter()
    for step in range(steps):
        picks: list[int] = []
        while len(picks) < batch_size:
            if cursor == len(order):
                order, cursor = torch.randperm(images.shape[0], generator=order_gen), 0
            take = min(batch_size - len(picks), len(order) - cursor)
            picks.extend(order[cursor:cursor + take].tolist())
            cursor += take
        batch = images[picks].to(device)
        tau = float(schedule(step, steps))
        recon, _, losses = model(batch, temperature=tau)
        rec = (recon - batch).abs().mean() if reconstruction == "l1" else ((recon - batch) ** 2).mean()
        loss = rec + losses["kl"]
        if not torch.isfinite(loss):
            raise ConfigError(f"step {step}: the VQGAN loss is not finite ({float(loss)}); lower lr ({lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window["loss"] += float(loss.detach())
        window["reconstruction"] += float(rec.detach())
        window["kl"] += float(losses["kl"].detach())
        window["n"] += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            n = window.pop("n")
            record = {"step": float(done), **{k: v / n for k, v in window.items()}, "temperature": tau,
                      "seconds": time.perf_counter() - started}
            log(record)
            window = {"loss": 0.0, "reconstruction": 0.0, "kl": 0.0, "n": 0.0}
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.4f}", tau=f"{tau:.3f}")
        if bar is not None:
            bar.update(1)
        if out is not None and save_every and done % save_every == 0 and done != steps:
            model.save_pretrained(out)
    if bar is not None:
        bar.close()
    model.eval()
    final = reconstruction_error(model, images)
    log({"step": float(steps), "eval": 1.0, **final})
    if out is not None:
        model.save_pretrained(out)
        logger.info("saved the VQGAN to %s (eval l1 %.4f, %d codes used)", out, final["l1"], final["codes_used"])
    return VQGANTrainResult(model=model, history=history, out_dir=out)


def vqgan_seconds_per_step(images: torch.Tensor, config: VQGANConfig, *, lr: float = 1e-3, batch_size: int = 16,
                           limit: float = math.inf) -> float:
    """Median time of a few :func:`train_vqgan` steps (L2 forward, backward, Adam) on ``images`` (``[N, 3, H, W]``
    in [-1, 1]) with a throwaway model, to size a run to a time budget; inf once the probe has taken more than
    ``limit`` seconds. Torch's global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        model = build_vqgan(config).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        batch = images[:batch_size]
        timings = []
        for _ in range(6):  # the first one warms up
            start = time.perf_counter()
            recon, _, losses = model(batch, temperature=0.5)
            loss = ((recon - batch) ** 2).mean() + losses["kl"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            timings.append(time.perf_counter() - start)
            if sum(timings) > limit:
                return math.inf
    return sorted(timings[1:])[2]
