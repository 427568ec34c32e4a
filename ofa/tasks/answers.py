"""Shared logic of tasks that answer from a candidate list (VQA, SNLI-VE, classification, text classification).

OFA's ``prompt_type=prev_output``: the decoder input is ``source[:-1]`` (``<s>`` + instruction) followed by the
answer, and only the answer tokens and the final ``</s>`` are trained. At inference the instruction is a
forced decoder prefix; answers come from beam search (optionally trie-constrained) or from ranking all
candidates (``allcand``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence

from ofa.errors import ConfigError, DataError
from ofa.generation.config import GenerationConfig
from ofa.generation.processors import TrieConstraint
from ofa.generation.ranking import rank_candidates
from ofa.generation.trie import Trie
from ofa.tasks.base import Example, Prediction, Sample
from ofa.tasks.common import BaseTask

if TYPE_CHECKING:  # pragma: no cover
    from ofa.data.collate import Batch
    from ofa.generation.config import GenerationConfig
    from ofa.generation.generate import Hypothesis
    from ofa.generation.trie import Trie
    from ofa.tokenization import OFATokenizer

__all__ = ["AnswerTask", "AnswerPrediction", "InferenceMode"]

InferenceMode = Literal["allcand", "trie", "beam"]


@dataclass
class AnswerPrediction(Prediction):
    """The chosen answer and, with ``allcand``, the ranked candidates ``[(answer, score), ...]``."""

    answer: str = ""
    ranked: list[tuple[str, float]] = field(default_factory=list)


class AnswerTask(BaseTask):
    """Base of candidate-answer tasks.

    Args:
        candidates: the answer strings (required for ``allcand`` / ``trie`` and for constrained training).
        mode: ``"allcand"`` (rank every candidate, OFA's default), ``"trie"`` (beam search restricted to the
            candidates) or ``"beam"`` (open beam search).
        prompt_type: ``"prev_output"`` (OFA's fine-tuning) or ``"none"`` (decoder starts from ``<s>``).
        beam_size / max_len: beam-search settings for ``trie`` and ``beam``.
        top_k: how many ranked candidates to keep in the prediction.
        chunk_size: candidates per decoder pass with ``allcand``.
        max_answer_tokens: training answers are cut to this many tokens (OFA's max_tgt_length, 30).
    """

    def __init__(self, candidates: Sequence[str] | None = None, mode: InferenceMode = "allcand",
                 prompt_type: str = "prev_output", image_size: int = 480, beam_size: int = 5, max_len: int = 30,
                 top_k: int = 5, chunk_size: int = 128, max_answer_tokens: int = 30) -> None:
        super().__init__(image_size)
        if mode not in ("allcand", "trie", "beam"):
            raise ConfigError(f"mode {mode!r} is not one of 'allcand', 'trie', 'beam'")
        if prompt_type not in ("prev_output", "none"):
            raise ConfigError(f"prompt_type {prompt_type!r} is not one of 'prev_output', 'none'")
        self.candidates = [c for c in (candidates or [])]
        if mode != "beam" and not self.candidates:
            raise ConfigError(f"mode {mode!r} needs a candidate answer list")
        self.mode = mode
        self.prompt_type = prompt_type
        self.beam_size = beam_size
        self.max_len = max_len
        self.top_k = top_k
        self.chunk_size = chunk_size
        self.max_answer_tokens = max_answer_tokens
        self._encoded: tuple[int, list[list[int]]] | None = None
        self._trie: tuple[int, "Trie"] | None = None

    # -- candidates -------------------------------------------------------------------------------------------
    def answer_ids(self, answer: str, tok: "OFATokenizer") -> list[int]:
        ids = tok.encode(" " + answer.strip())
        if not ids:
            raise DataError(f"answer {answer!r} encodes to no tokens")
        return ids

    def candidate_ids(self, tok: "OFATokenizer") -> list[list[int]]:
        if self._encoded is None or self._encoded[0] != id(tok):
            self._encoded = (id(tok), [self.answer_ids(c, tok) for c in self.candidates])
        return self._encoded[1]

    def trie(self, tok: "OFATokenizer") -> "Trie":
        if self._trie is None or self._trie[0] != id(tok):
            self._trie = (id(tok), Trie.from_answers(self.candidate_ids(tok), tok.bos_id, tok.eos_id))
        return self._trie[1]

    # -- encoding ---------------------------------------------------------------------------------------------
    def answer_text(self, example: Example) -> str:
        raise NotImplementedError

    def encode(self, example: Example, tok: "OFATokenizer", training: bool = False) -> Sample:
        source = self.encode_source(self.instruction(example), tok)
        image, meta = self.transform(example)
        sample = Sample(id=example.id, source=source, image=image, patch_mask=image is not None, meta=meta)
        prompt = source[:-1] if self.prompt_type == "prev_output" else [tok.bos_id]
        sample.decoder_prompt = prompt
        if training:
            answer = self.answer_ids(self.answer_text(example), tok)[: self.max_answer_tokens]
            sample.weight = float(self.answer_weight(example))
            sample.prev_output = prompt + answer
            # Only the answer and eos are trained: prompt positions are pad (ignored by the loss).
            sample.target = [tok.pad_id] * (len(prompt) - 1) + answer + [tok.eos_id]
            if self.candidates:
                trie = self.trie(tok)
                allowed = [trie.next_tokens([tok.bos_id] + answer[:k]) for k in range(len(answer) + 1)]
                sample.constraint = [[] for _ in range(len(prompt) - 1)] + allowed
        return sample

    def answer_weight(self, example: Example) -> float:
        return 1.0

    # -- inference --------------------------------------------------------------------------------------------
    def generation_config(self, tok: "OFATokenizer") -> "GenerationConfig":
        processors = (TrieConstraint(self.trie(tok), tok.bos_id),) if self.mode == "trie" else ()
        return GenerationConfig(beam_size=self.beam_size, max_len_b=self.max_len, normalize_scores=False,
                                processors=processors)

    def predict(self, model: Any, batch: "Batch", tok: "OFATokenizer",
                config: "GenerationConfig | None" = None) -> list[Prediction]:
        if self.mode != "allcand":
            config = config or self.generation_config(tok)
            if batch.prefix_tokens is not None:
                # max_len counts the forced prompt too: give the answer its own max_len tokens after it.
                config = config.replace(max_len_b=config.max_len_b + batch.prefix_tokens.shape[1])
            return super().predict(model, batch, tok, config)
        prompts = [s.decoder_prompt or [tok.bos_id] for s in batch.samples]
        ranked = rank_candidates(model, batch.src_tokens, self.candidate_ids(tok), patch_images=batch.patch_images,
                                 patch_masks=batch.patch_masks, decoder_prompts=prompts,
                                 chunk_size=self.chunk_size)
        out: list[Prediction] = []
        for sample, row in zip(batch.samples, ranked):
            best = row[0]
            out.append(AnswerPrediction(id=sample.id, score=best.score, answer=self.candidates[best.index],
                                        ranked=[(self.candidates[c.index], c.score) for c in row[: self.top_k]]))
        return out

    def from_hypothesis(self, hypothesis: "Hypothesis", tok: "OFATokenizer", sample: Sample) -> Prediction:
        prefix = len(sample.decoder_prompt or [tok.bos_id]) - 1
        answer_ids = hypothesis.tokens.tolist()[prefix:]
        prediction = self.decode(answer_ids, tok, sample)
        prediction.score = float(hypothesis.positional_scores[prefix:].sum())
        return prediction

    def decode(self, ids: Sequence[int], tok: "OFATokenizer", sample: Sample | None = None) -> AnswerPrediction:
        return AnswerPrediction(id=None if sample is None else sample.id, answer=tok.decode(list(ids)).strip())

