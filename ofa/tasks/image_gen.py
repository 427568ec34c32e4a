"""Text-to-image as image-code generation (spec §5.6): caption -> a grid of VQGAN code tokens.

Pixels come from a VQGAN decoder (not part of this task); here the output is the code grid. FID, Inception
score and CLIP score need pretrained networks that cannot be had offline, so :meth:`ImageGenTask.score`
reports the code-token accuracy against reference codes, a proxy that only makes sense on data the model has
fit (e.g. the quickstart world).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ofa.errors import ConfigError, DataError
from ofa.tasks.base import Example, Prediction, Sample
from ofa.tasks.common import BaseTask, require_text

if TYPE_CHECKING:  # pragma: no cover
    from ofa.data.collate import Batch
    from ofa.generation.config import GenerationConfig
    from ofa.tokenization import OFATokenizer

__all__ = ["ImageGenTask", "ImageGenPrediction"]


@dataclass
class ImageGenPrediction(Prediction):
    """The best code grid ``[g, g]`` (code indices, not token ids) and every sample's grid."""

    codes: torch.Tensor | None = None
    samples: list[torch.Tensor] = field(default_factory=list)
    sample_scores: list[float] = field(default_factory=list)


class ImageGenTask(BaseTask):
    """``" what is the complete image? caption: {caption}"`` -> ``grid_size**2`` code tokens.

    Args:
        grid_size: side of the code grid (32 for 256 px images with an f8 VQGAN). The model's
            ``code_image_size`` must be ``8 * grid_size``.
        num_samples: samples drawn per caption (OFA: 24, then reranked).
        top_k / top_p: sampling restriction (OFA: top-k 256).
        seed: sampling seed (input i of a call uses ``seed + i``).

    TSV layout: ``uniq_id, codes (space-separated ints), caption``. JSONL: ``{"id", "caption", "codes"}``.
    """

    name = "image_gen"
    needs_image = False
    num_columns = 3
    max_source_tokens = 64 * 4

    def __init__(self, grid_size: int = 32, num_samples: int = 4, top_k: int = 256, top_p: float = -1.0,
                 seed: int | None = 0, max_caption_words: int = 64) -> None:
        super().__init__(image_size=8 * grid_size)
        if grid_size < 1:
            raise ConfigError(f"grid_size ({grid_size}) must be >= 1")
        self.grid_size = grid_size
        self.num_samples = num_samples
        self.top_k = top_k
        self.top_p = top_p
        self.seed = seed
        self.max_caption_words = max_caption_words

    def instruction(self, example: Example) -> str:
        words = require_text(example.text, "caption").lower().split()[: self.max_caption_words]
        return " what is the complete image? caption: " + " ".join(words)

    def encode(self, example: Example, tok: "OFATokenizer", training: bool = False) -> Sample:
        sample = super().encode(example, tok, training)
        sample.code_mask = True
        return sample

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
        from ofa.generation.config import GenerationConfig
        from ofa.generation.processors import AllowedTokens

        length = self.grid_size**2
        return GenerationConfig(strategy="sample", beam_size=self.num_samples, max_len_b=length, min_len=length,
                                sampling_topk=self.top_k, sampling_topp=self.top_p, seed=self.seed,
                                ban_special_until_max_len=True, processors=(AllowedTokens(tok.vocab.code_range()),))

    def _grid(self, ids: Sequence[int], tok: "OFATokenizer") -> torch.Tensor:
        ids = [i for i in ids if i != tok.eos_id][: self.grid_size**2]
        return tok.decode_codes(ids, grid_size=self.grid_size)

    def predict(self, model: Any, batch: "Batch", tok: "OFATokenizer",
                config: "GenerationConfig | None" = None) -> list[Prediction]:
        from ofa.generation.generate import generate

        expected = 8 * self.grid_size
        if model.config.code_image_size != expected:
            raise ConfigError(f"grid_size {self.grid_size} needs a model with code_image_size={expected}, "
                              f"this one has {model.config.code_image_size}")
        config = config or self.generation_config(tok)
        hypos = generate(model, batch.src_tokens, config=config,
                         code_masks=torch.ones(len(batch), dtype=torch.bool, device=batch.src_tokens.device))
        out: list[Prediction] = []
        for sample, hyps in zip(batch.samples, hypos):
            grids = [self._grid(h.tokens.tolist(), tok) for h in hyps]
            out.append(ImageGenPrediction(id=sample.id, score=hyps[0].score if hyps else None,
                                          codes=grids[0] if grids else None, samples=grids,
                                          sample_scores=[h.score for h in hyps]))
        return out

    def decode(self, ids: Sequence[int], tok: "OFATokenizer", sample: Sample | None = None) -> ImageGenPrediction:
        grid = self._grid(list(ids), tok)
        return ImageGenPrediction(id=None if sample is None else sample.id, codes=grid, samples=[grid])

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
