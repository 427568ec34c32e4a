"""Text-to-image as image-code generation (spec §5.6): caption -> a grid of VQGAN code tokens -> pixels.

The model samples code grids; with a VQGAN (:mod:`ofa.vqgan`) the task also decodes them to PIL images,
and with an image-text scorer (:mod:`ofa.metrics.image_text`; OFA uses CLIP) it reranks the samples and keeps
the best. FID, Inception score and CLIP score need pretrained networks that cannot be had offline, so
:meth:`ImageGenTask.score` reports the code-token accuracy against reference codes, a proxy that only makes
sense on data the model has fit (e.g. the quickstart world).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ofa.errors import ConfigError, DataError, InputError
from ofa.generation.config import GenerationConfig
from ofa.generation.generate import generate
from ofa.generation.processors import AllowedTokens
from ofa.metrics.image_text import ImageTextScorer, build_scorer
from ofa.tasks.base import Example, Prediction, Sample
from ofa.tasks.common import BaseTask, require_text
from ofa.vqgan import load_vqgan
from ofa.vqgan.codes import check_codebook

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ofa.data.collate import Batch
    from ofa.generation.config import GenerationConfig
    from ofa.tokenization import OFATokenizer
    from ofa.vqgan import VQGAN

__all__ = ["ImageGenTask", "ImageGenPrediction", "check_codebook", "INSTRUCTION"]

INSTRUCTION = " what is the complete image? caption: "
"""The text-to-image instruction; the caption follows it (spec §5.6)."""


@dataclass
class ImageGenPrediction(Prediction):
    """Sampled code grids (code indices, not token ids), best first, and their pictures.

    Attributes:
        score: the model score (length-normalised log-prob) of the chosen sample.
        codes: the chosen grid ``[g, g]``.
        samples: every sample's grid, best first (by scorer score, ties by model score; by model score
            without a scorer).
        sample_scores: the model score of each sample, in the order of ``samples``.
        ranking: for each entry of ``samples``, its index in the model-score order (``[0, 1, ...]`` without
            a scorer).
        scorer_scores: the scorer's score of each sample, in the order of ``samples`` (empty without one).
        images: the decoded PIL images of ``samples`` (empty without a VQGAN).
        image: ``images[0]``, the chosen picture (None without a VQGAN).
    """

    codes: torch.Tensor | None = None
    samples: list[torch.Tensor] = field(default_factory=list)
    sample_scores: list[float] = field(default_factory=list)
    ranking: list[int] = field(default_factory=list)
    scorer_scores: list[float] = field(default_factory=list)
    images: "list[Image.Image]" = field(default_factory=list)
    image: "Image.Image | None" = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields; pictures are left out (save them with ``images[i].save(path)``)."""
        out = super().to_dict()
        out.pop("images", None)
        out.pop("image", None)
        return out


def _resolve_vqgan(vqgan: Any) -> "VQGAN | None":
    if vqgan is None:
        return None
    if isinstance(vqgan, (str, os.PathLike)):
        return load_vqgan(vqgan)
    if not callable(getattr(vqgan, "codes_to_pil", None)) or not hasattr(vqgan, "num_codes"):
        raise ConfigError(f"vqgan must be a VQGAN, a path for ofa.vqgan.load_vqgan or None, got "
                          f"{type(vqgan).__name__}")
    return vqgan


class ImageGenTask(BaseTask):
    """``" what is the complete image? caption: {caption}"`` -> ``grid_size**2`` code tokens.

    Args:
        grid_size: side of the code grid (32 for 256 px images with an f8 VQGAN). The model's
            ``code_image_size`` must be ``8 * grid_size``.
        num_samples: samples drawn per caption (OFA: 24, then reranked).
        top_k / top_p: sampling restriction (OFA: top-k 256).
        seed: sampling seed (input i of a call uses ``seed + i``).
        vqgan: a :class:`~ofa.vqgan.VQGAN`, or a path :func:`~ofa.vqgan.load_vqgan` reads; predictions
            then carry decoded PIL images. Its codebook must have the tokenizer's number of code tokens.
        scorer: an :class:`~ofa.metrics.image_text.ImageTextScorer` or a registered name (``"color"``,
            ``"none"``); with a VQGAN, samples are reranked by its score (ties by model score).

    TSV layout: ``uniq_id, codes (space-separated ints), caption``. JSONL: ``{"id", "caption", "codes"}``.
    """

    name = "image_gen"
    needs_image = False
    num_columns = 3
    max_source_tokens = 64 * 4

    def __init__(self, grid_size: int = 32, num_samples: int = 4, top_k: int = 256, top_p: float = -1.0,
                 seed: int | None = 0, max_caption_words: int = 64,
                 vqgan: "VQGAN | str | os.PathLike[str] | None" = None,
                 scorer: ImageTextScorer | str | None = None) -> None:
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 1:
            raise ConfigError(f"grid_size ({grid_size!r}) must be an int >= 1")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"num_samples ({num_samples!r}) must be an int >= 1")
        super().__init__(image_size=8 * grid_size)
        self.grid_size = grid_size
        self.num_samples = num_samples
        self.top_k = top_k
        self.top_p = top_p
        self.seed = seed
        self.max_caption_words = max_caption_words
        self.vqgan = _resolve_vqgan(vqgan)
        self.scorer = build_scorer(scorer)

    def caption(self, example: Example) -> str:
        """The caption as the model reads it: lowercase, whitespace-normalised, at most ``max_caption_words``."""
        return " ".join(require_text(example.text, "caption").lower().split()[: self.max_caption_words])

    def instruction(self, example: Example) -> str:
        return INSTRUCTION + self.caption(example)

    def encode(self, example: Example, tok: "OFATokenizer", training: bool = False) -> Sample:
        sample = super().encode(example, tok, training)
        sample.code_mask = True
        sample.meta["caption"] = self.caption(example)
        return sample

    def sample_caption(self, sample: Sample, tok: "OFATokenizer") -> str:
        """The caption of an encoded sample (from its meta, else decoded from the source ids)."""
        caption = sample.meta.get("caption")
        if isinstance(caption, str):
            return caption
        text = tok.decode([i for i in sample.source if i not in (tok.bos_id, tok.eos_id, tok.pad_id)]).strip()
        prefix = INSTRUCTION.strip()
        return text[len(prefix):].strip() if text.startswith(prefix) else text

    def target_ids(self, example: Example, tok: "OFATokenizer", meta: dict[str, Any]) -> list[int]:
        codes = example.target
        if codes is None:
            raise DataError(f"example {example.id!r} has no image codes")
        flat = torch.as_tensor(codes).reshape(-1).tolist()
        if len(flat) != self.grid_size**2:
            raise DataError(f"example {example.id!r} has {len(flat)} codes; a {self.grid_size}x{self.grid_size} "
                            f"grid needs {self.grid_size ** 2}")
        return tok.encode_codes(flat)

    def training_constraint_range(self, tok: "OFATokenizer") -> tuple[int, int]:
        """Training restricts logits (and label smoothing) to ids 0-3 and the code range (spec §5.6)."""
        codes = tok.vocab.code_range()
        return codes.start, codes.stop

    def generation_config(self, tok: "OFATokenizer") -> "GenerationConfig":
        length = self.grid_size**2
        return GenerationConfig(strategy="sample", beam_size=self.num_samples, max_len_b=length, min_len=length,
                                sampling_topk=self.top_k, sampling_topp=self.top_p, seed=self.seed,
                                ban_special_until_max_len=True, processors=(AllowedTokens(tok.vocab.code_range()),))

    def _grid(self, ids: Sequence[int], tok: "OFATokenizer") -> torch.Tensor:
        ids = [i for i in ids if i != tok.eos_id][: self.grid_size**2]
        return tok.decode_codes(ids, grid_size=self.grid_size)

    def predict(self, model: Any, batch: "Batch", tok: "OFATokenizer",
                config: "GenerationConfig | None" = None) -> list[Prediction]:
        self.check_model(model, tok)
        config = config or self.generation_config(tok)
        hypos = generate(model, batch.src_tokens, config=config,
                         code_masks=torch.ones(len(batch), dtype=torch.bool, device=batch.src_tokens.device))
        out: list[Prediction] = []
        for sample, hyps in zip(batch.samples, hypos):
            grids = [self._grid(h.tokens.tolist(), tok) for h in hyps]
            out.append(self.rank(ImageGenPrediction(id=sample.id, codes=grids[0] if grids else None,
                                                    score=hyps[0].score if hyps else None, samples=grids,
                                                    sample_scores=[h.score for h in hyps]),
                                 self.sample_caption(sample, tok)))
        return out

    def check_model(self, model: Any, tok: "OFATokenizer") -> None:
        """Fail early when the model's code grid or the VQGAN's codebook does not fit this task.

        Raises:
            ConfigError: ``code_image_size != 8 * grid_size``, or a VQGAN codebook size other than the
                tokenizer's number of code tokens.
        """
        expected = 8 * self.grid_size
        if model.config.code_image_size != expected:
            raise ConfigError(f"grid_size {self.grid_size} needs a model with code_image_size={expected}, "
                              f"this one has {model.config.code_image_size}")
        if self.vqgan is not None:
            check_codebook(self.vqgan, tok)

    def images(self, grids: Sequence[torch.Tensor]) -> "list[Image.Image]":
        """Decode code grids ``[g, g]`` to PIL images with the task's VQGAN.

        Raises:
            ConfigError: without a VQGAN.
            InputError: for grids of the wrong size or codes outside the codebook.
        """
        if self.vqgan is None:
            raise ConfigError("this image_gen task has no VQGAN (pass vqgan=...) to turn codes into pixels")
        if not grids:
            return []
        size = self.grid_size
        for index, grid in enumerate(grids):
            if not isinstance(grid, torch.Tensor) or grid.numel() != size * size:
                got = grid.numel() if isinstance(grid, torch.Tensor) else type(grid).__name__
                raise InputError(f"grid {index} has {got} codes; a {size}x{size} grid needs {size * size}")
        return self.vqgan.codes_to_pil(torch.stack([g.reshape(size, size) for g in grids]))

    def rank(self, prediction: ImageGenPrediction, caption: str) -> ImageGenPrediction:
        """Decode the prediction's samples (with a VQGAN) and rerank them by the scorer (ties by model score).

        Fills ``images``, ``image``, ``ranking`` and ``scorer_scores``; reorders ``samples`` and
        ``sample_scores`` best first and sets ``codes`` and ``score`` to the chosen sample's.

        Raises:
            InputError: when the scorer does not return one score per sample.
        """
        n = len(prediction.samples)
        prediction.ranking = list(range(n))
        if self.vqgan is None or n == 0:
            return prediction
        images = self.images(prediction.samples)
        order = list(range(n))
        if self.scorer is not None:
            raw = self.scorer.score([caption] * n, images)
            if len(raw) != n:
                raise InputError(f"the scorer returned {len(raw)} scores for {n} (text, image) pairs")
            scores = [float(v) for v in raw]
            key = [v if math.isfinite(v) else float("-inf") for v in scores]
            # Samples arrive best model score first, so a stable sort breaks scorer ties by model score.
            order = sorted(range(n), key=lambda i: -key[i])
            prediction.scorer_scores = [scores[i] for i in order]
        prediction.ranking = order
        prediction.samples = [prediction.samples[i] for i in order]
        if prediction.sample_scores:
            prediction.sample_scores = [prediction.sample_scores[i] for i in order]
            prediction.score = prediction.sample_scores[0]
        prediction.images = [images[i] for i in order]
        prediction.image = prediction.images[0]
        prediction.codes = prediction.samples[0]
        return prediction

    def decode(self, ids: Sequence[int], tok: "OFATokenizer", sample: Sample | None = None) -> ImageGenPrediction:
        grid = self._grid(list(ids), tok)
        prediction = ImageGenPrediction(id=None if sample is None else sample.id, codes=grid, samples=[grid],
                                        ranking=[0])
        if self.vqgan is not None:
            check_codebook(self.vqgan, tok)
            prediction.images = self.images([grid])
            prediction.image = prediction.images[0]
        return prediction

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        if len(preds) != len(refs):
            raise DataError(f"{len(preds)} predictions for {len(refs)} references")
        matches, total = 0, 0
        for pred, ref in zip(preds, refs):
            codes = getattr(pred, "codes", None)
            if codes is None or ref.target is None:
                continue
            target = torch.as_tensor(ref.target).reshape(-1)
            got = codes.reshape(-1)[: target.numel()]
            matches += int((got == target[: got.numel()]).sum())
            total += target.numel()
        return {"code_accuracy": matches / total if total else 0.0}

    def parse_row(self, fields: Sequence[str]) -> Example:
        self._check_columns(fields)
        uniq_id, codes, caption = fields
        try:
            values = [int(c) for c in codes.split()]
        except ValueError as exc:
            raise DataError(f"bad code column {codes[:40]!r}...: expected space-separated integers") from exc
        return Example(id=uniq_id, text=require_text(caption, "caption"), target=values)

    def parse_record(self, record: dict[str, Any], image_root: Any = None) -> Example:
        return Example(id=record.get("id"), text=record.get("caption"), target=record.get("codes"))
