"""One decoding loop over ``model.encode()`` and the incremental decoder, with OFA's beam-search semantics.

The encoder runs once per batch. Cross-attention keys/values are computed once per source and shared by its
beams (the decoder folds a source's beams into the query axis), so nothing is recomputed per beam or per step.
The loop follows fairseq's ``SequenceGenerator`` as modified by OFA (spec §5.9): it starts from ``<s>``, applies
constraints to the logits before the log-softmax and the pad / min-length / max-length / prefix / n-gram bans
to the log-probs after it, finalises hypotheses in fairseq's order, and drops finished inputs from the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ofa.errors import GenerationError, InputError
from ofa.generation.config import GenerationConfig
from ofa.generation.processors import NoRepeatNGram, StepContext
from ofa.generation.search import beam_step, sample_step

__all__ = ["Hypothesis", "generate", "greedy_decode"]

_NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """A finished output sequence.

    Attributes:
        tokens: ``[len]`` generated ids without the leading ``<s>``, ending with ``</s>`` (a forced decoder
            prefix is included, as in the reference).
        score: the sum of ``positional_scores``, divided by ``len ** len_penalty`` when scores are normalised.
        positional_scores: ``[len]`` log-prob of each token.
    """

    tokens: torch.Tensor
    score: float
    positional_scores: torch.Tensor


def _prepare(model: Any, src_tokens: torch.Tensor, patch_images: torch.Tensor | None,
             patch_masks: torch.Tensor | None, encoder_out: Any) -> Any:
    if encoder_out is not None:
        return encoder_out
    return model.encode(src_tokens, patch_images=patch_images, patch_masks=patch_masks)


def _check_prefix(prefix_tokens: torch.Tensor | None, batch: int, vocab_size: int) -> torch.Tensor | None:
    if prefix_tokens is None:
        return None
    if not isinstance(prefix_tokens, torch.Tensor) or prefix_tokens.dim() != 2 or prefix_tokens.shape[0] != batch:
        shape = tuple(prefix_tokens.shape) if isinstance(prefix_tokens, torch.Tensor) else type(prefix_tokens)
        raise InputError(f"prefix_tokens must have shape [{batch}, P], got {shape}")
    if prefix_tokens.numel() and (int(prefix_tokens.min()) < 0 or int(prefix_tokens.max()) >= vocab_size):
        raise InputError(f"prefix_tokens has ids outside [0, {vocab_size})")
    return prefix_tokens.long()


class _Decoder:
    """Runs the model one step at a time for the loop through the KV cache."""

    def __init__(self, model: Any, encoder_out: Any, num_rows: int, code_masks: torch.Tensor | None) -> None:
        self.model = model
        self.cache = model.init_cache(encoder_out, num_rows=num_rows, code_masks=code_masks)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.decode_step(tokens, self.cache)[:, -1, :]

    def reorder(self, rows: torch.Tensor) -> None:
        self.cache.reorder(rows)

    def select_sources(self, sources: torch.Tensor, rows: torch.Tensor) -> None:
        self.cache.select_sources(sources, rows)


class _RecomputeDecoder:
    """Baseline without a cache: every step re-runs the decoder over the whole prefix of every beam, against
    an encoder output copied per beam. Same results as :class:`_Decoder`; used to measure what the cache buys."""

    def __init__(self, model: Any, encoder_out: Any, num_rows: int, code_masks: torch.Tensor | None) -> None:
        self.model = model
        group = num_rows // encoder_out.batch_size
        index = torch.arange(encoder_out.batch_size, device=encoder_out.hidden.device).repeat_interleave(group)
        self.encoder_out = encoder_out.index_select(index)
        self.code_masks = code_masks
        self.history: torch.Tensor | None = None

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.history = tokens if self.history is None else torch.cat([self.history, tokens], dim=1)
        return self.model.decode(self.history, self.encoder_out, code_masks=self.code_masks).logits[:, -1, :]

    def reorder(self, rows: torch.Tensor) -> None:
        assert self.history is not None
        self.history = self.history.index_select(0, rows)
        if self.code_masks is not None:
            self.code_masks = self.code_masks.index_select(0, rows)

    def select_sources(self, sources: torch.Tensor, rows: torch.Tensor) -> None:
        self.encoder_out = self.encoder_out.index_select(rows)
        self.reorder(rows)


def _apply_logits_processors(config: GenerationConfig, logits: torch.Tensor, tokens: torch.Tensor,
                             context: StepContext) -> torch.Tensor:
    for processor in config.processors:
        if getattr(processor, "stage", "logits") == "logits":
            logits = processor(tokens, logits, context)
    return logits


def _apply_logprob_processors(config: GenerationConfig, lprobs: torch.Tensor, tokens: torch.Tensor,
                              context: StepContext) -> torch.Tensor:
    for processor in config.processors:
        if getattr(processor, "stage", "logits") == "logprobs":
            lprobs = processor(tokens, lprobs, context)
    return lprobs


@torch.no_grad()
def generate(
    model: Any,
    src_tokens: torch.Tensor,
    *,
    patch_images: torch.Tensor | None = None,
    patch_masks: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
    prefix_tokens: torch.Tensor | None = None,
    code_masks: torch.Tensor | None = None,
    encoder_out: Any = None,
    pad_id: int | None = None,
    on_step: Callable[[int], None] | None = None,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Decode a batch with beam search, greedy search or sampling (``config.strategy``).

    Args:
        model: an :class:`~ofa.model.OFAModel` (put it in eval mode).
        src_tokens: ``[b, L]`` right-padded sources; ``L`` sets ``max_len = a * L + b``.
        patch_images, patch_masks: images as for :meth:`OFAModel.encode`.
        config: decoding settings (default :class:`GenerationConfig`).
        prefix_tokens: ``[b, P]`` decoder prefix forced after ``<s>`` (right-padded; pad forces nothing),
            e.g. the question for VQA with ``prompt_type=prev_output``. Returned tokens include it.
        code_masks: ``[b]`` bool, inputs whose outputs are image codes (the decoder's code path).
        encoder_out: reuse an encoder output instead of encoding ``src_tokens`` again.
        on_step: called with the step index after every step (progress reporting).
        use_cache: decode incrementally with the KV cache (default). False re-runs the decoder over the whole
            prefix at every step, a slow baseline that gives the same tokens.

    Returns:
        per input, the finished hypotheses best first: ``beam_size`` of them (fewer when the constraints admit
        fewer outputs, e.g. a trie with fewer answers than beams), or 1 without ``return_all``.

    Raises:
        GenerationError: the constraints leave an input without a legal continuation before any of its
            hypotheses finished.
        InputError: malformed inputs.
    """
    config = config or GenerationConfig()
    model_config = model.config
    pad = model_config.pad_id if pad_id is None else pad_id
    bos, eos, unk = model_config.bos_id, model_config.eos_id, 3
    vocab_size = model_config.vocab_size
    encoder_out = _prepare(model, src_tokens, patch_images, patch_masks, encoder_out)
    bsz = encoder_out.batch_size
    src_len = src_tokens.shape[1]
    prefix_tokens = _check_prefix(prefix_tokens, bsz, vocab_size)
    beam = config.beam_size
    device = encoder_out.hidden.device
    positions = model_config.max_positions
    if code_masks is not None:
        if code_masks.shape != (bsz,):
            raise InputError(f"code_masks must have shape [{bsz}], got {tuple(code_masks.shape)}")
        code_masks = code_masks.bool().to(device).repeat_interleave(beam)
        if bool(code_masks.all()) and hasattr(model, "max_decoder_length"):
            positions = model.max_decoder_length(code_rows=True)  # 1024 codes + eos need 1026 positions
    max_len = config.max_len(src_len, positions)
    decoder = (_Decoder if use_cache else _RecomputeDecoder)(model, encoder_out, bsz * beam, code_masks)

    sampling = config.strategy == "sample"
    generators: list[torch.Generator | None] = []
    if sampling:
        for i in range(bsz):
            if config.seed is None:
                generators.append(None)
            else:
                g = torch.Generator()
                g.manual_seed(config.seed + i)
                generators.append(g)
    ngram = NoRepeatNGram(config.no_repeat_ngram_size) if config.no_repeat_ngram_size > 0 else None

    scores = torch.zeros(bsz * beam, max_len + 1, device=device)
    tokens = torch.full((bsz * beam, max_len + 2), pad, dtype=torch.long, device=device)
    tokens[:, 0] = bos
    cands_to_ignore = torch.zeros(bsz, beam, dtype=torch.bool, device=device)
    finalized: list[list[Hypothesis]] = [[] for _ in range(bsz)]
    finished = [False] * bsz
    cand_size = 2 * beam
    bbsz_offsets = (torch.arange(bsz, device=device) * beam).unsqueeze(1)
    cand_offsets = torch.arange(cand_size, device=device)
    original_idx = torch.arange(bsz, device=device)  # batch position -> input index
    prefix_lengths_src = None if prefix_tokens is None else prefix_tokens.ne(pad).sum(dim=1)

    reorder_rows: torch.Tensor | None = None
    batch_idxs: torch.Tensor | None = None
    for step in range(max_len + 1):
        if reorder_rows is not None:
            if batch_idxs is not None:
                # Indices were computed in the shrunk batch; map them back to the rows the cache still holds.
                corr = batch_idxs - torch.arange(batch_idxs.numel(), device=device)
                reorder_rows = (reorder_rows.view(-1, beam) + corr.unsqueeze(-1) * beam).view(-1)
                decoder.select_sources(batch_idxs, reorder_rows)
                original_idx = original_idx[batch_idxs]
                if sampling:
                    generators = [generators[i] for i in batch_idxs.tolist()]
            else:
                decoder.reorder(reorder_rows)

        logits = decoder.step(tokens[:, step:step + 1]).float()
        prefix_lengths = None
        if prefix_lengths_src is not None:
            prefix_lengths = prefix_lengths_src.repeat_interleave(beam)
        context = StepContext(step=step, prefix_lengths=prefix_lengths)
        history = tokens[:, :step + 1]
        if config.temperature != 1.0:
            logits = logits / config.temperature
        logits = _apply_logits_processors(config, logits, history, context)
        lprobs = torch.log_softmax(logits, dim=-1)

        lprobs = lprobs.masked_fill(lprobs != lprobs, _NEG_INF)
        lprobs[:, pad] = _NEG_INF
        if config.unk_penalty:
            lprobs[:, unk] -= config.unk_penalty
        if config.ban_special_until_max_len and step < max_len:
            lprobs[:, :4] = _NEG_INF
        if step >= max_len:
            lprobs[:, :eos] = _NEG_INF
            lprobs[:, eos + 1:] = _NEG_INF
        if prefix_tokens is not None and step < prefix_tokens.shape[1] and step < max_len:
            forced = prefix_tokens[:, step].repeat_interleave(beam)
            forced_lp = lprobs.gather(-1, forced.unsqueeze(-1))
            forcing = forced.ne(pad)
            masked = torch.full_like(lprobs[forcing], _NEG_INF)
            lprobs[forcing] = masked.scatter(-1, forced[forcing].unsqueeze(-1), forced_lp[forcing])
        elif step < config.min_len:
            lprobs[:, eos] = _NEG_INF
        if ngram is not None:
            lprobs = ngram(history, lprobs, context)
        lprobs = _apply_logprob_processors(config, lprobs, history, context)

        view = lprobs.view(bsz, beam, -1)
        past = scores.view(bsz, beam, -1)[:, :, :step]
        if sampling:
            cand_scores, cand_indices, cand_beams = sample_step(
                step, view, past, generators=generators, top_k=config.sampling_topk, top_p=config.sampling_topp)
        else:
            cand_scores, cand_indices, cand_beams = beam_step(step, view, past)
        # An input whose candidates are all -inf can never finalise another hypothesis (scores only go down):
        # the reference carries its dead beams to max_len and returns what it has, so it is done now (e.g. a
        # trie with fewer answers than beams). With nothing finalised, no output satisfies the constraints.
        dead = torch.isinf(cand_scores).all(dim=1)  # only unfinished inputs remain in the batch
        dead_sents: list[int] = []
        for pos in dead.nonzero().view(-1).tolist():
            which = int(original_idx[pos])
            if not finalized[which]:
                raise GenerationError(
                    f"the constraints leave no legal token for input {which} at step {step} "
                    f"(no hypothesis finished); check the processors ({list(config.processors)}), "
                    f"min_len ({config.min_len}) and max_len ({max_len})")
            finished[which] = True
            dead_sents.append(pos)
        n_cand = cand_scores.shape[1]
        cand_bbsz_idx = cand_beams + bbsz_offsets
        eos_mask = cand_indices.eq(eos) & cand_scores.ne(_NEG_INF)
        top = min(beam, n_cand)
        eos_mask[:, :top][cands_to_ignore[:, :top]] = False
        eos_bbsz_idx = cand_bbsz_idx[:, :top].masked_select(eos_mask[:, :top])

        finalized_sents: list[int] = []
        if eos_bbsz_idx.numel() > 0:
            eos_scores = cand_scores[:, :top].masked_select(eos_mask[:, :top])
            finalized_sents = _finalize(step, eos_bbsz_idx, eos_scores, tokens, scores, finalized, finished, beam,
                                        max_len, original_idx, config, eos)
        if dead_sents:
            finalized_sents = sorted(set(finalized_sents) | set(dead_sents))
        num_remaining = bsz - len(finalized_sents)
        if on_step is not None:
            on_step(step)
        if num_remaining == 0 or step >= max_len:
            break

        if finalized_sents:
            new_bsz = bsz - len(finalized_sents)
            keep = torch.ones(bsz, dtype=torch.bool, device=device)
            keep[torch.tensor(finalized_sents, device=device)] = False
            batch_idxs = torch.arange(bsz, device=device).masked_select(keep)
            eos_mask = eos_mask[batch_idxs]
            cand_beams = cand_beams[batch_idxs]
            bbsz_offsets = bbsz_offsets[:new_bsz]
            cand_bbsz_idx = cand_beams + bbsz_offsets
            cand_scores = cand_scores[batch_idxs]
            cand_indices = cand_indices[batch_idxs]
            if prefix_tokens is not None:
                prefix_tokens = prefix_tokens[batch_idxs]
                prefix_lengths_src = prefix_lengths_src[batch_idxs]  # type: ignore[index]
            cands_to_ignore = cands_to_ignore[batch_idxs]
            scores = scores.view(bsz, -1)[batch_idxs].view(new_bsz * beam, -1)
            tokens = tokens.view(bsz, -1)[batch_idxs].view(new_bsz * beam, -1)
            bsz = new_bsz
        else:
            batch_idxs = None

        # Prefer non-eos candidates in rank order; eos and ignored candidates sort after them.
        eos_mask[:, :top] = ~(~cands_to_ignore[:, :top] & ~eos_mask[:, :top])
        active_mask = eos_mask.to(cand_offsets.dtype) * cand_size + cand_offsets[:n_cand]
        new_ignore, active_hypos = torch.topk(active_mask, k=beam, dim=1, largest=False)
        cands_to_ignore = new_ignore.ge(cand_size)[:, :beam]
        active_bbsz_idx = torch.gather(cand_bbsz_idx, 1, active_hypos).view(-1)
        active_scores = torch.gather(cand_scores, 1, active_hypos).view(-1)

        tokens[:, :step + 1] = tokens[:, :step + 1].index_select(0, active_bbsz_idx)
        tokens.view(bsz, beam, -1)[:, :, step + 1] = torch.gather(cand_indices, 1, active_hypos)
        if step > 0:
            scores[:, :step] = scores[:, :step].index_select(0, active_bbsz_idx)
        scores.view(bsz, beam, -1)[:, :, step] = active_scores.view(bsz, beam)
        reorder_rows = active_bbsz_idx

    for hyps in finalized:
        order = sorted(range(len(hyps)), key=lambda i: -hyps[i].score)
        hyps[:] = [hyps[i] for i in order]
        if not config.return_all:
            del hyps[1:]
    return finalized


def _finalize(step: int, bbsz_idx: torch.Tensor, eos_scores: torch.Tensor, tokens: torch.Tensor,
              scores: torch.Tensor, finalized: list[list[Hypothesis]], finished: list[bool], beam: int,
              max_len: int, original_idx: torch.Tensor, config: GenerationConfig, eos: int) -> list[int]:
    """Record hypotheses that chose eos; return batch positions of inputs that are now done."""
    seqs = tokens.index_select(0, bbsz_idx)[:, 1:step + 2].clone()
    seqs[:, step] = eos
    pos_scores = scores.index_select(0, bbsz_idx)[:, :step + 1].clone()
    pos_scores[:, step] = eos_scores
    pos_scores[:, 1:] = pos_scores[:, 1:] - pos_scores[:, :-1]
    final = eos_scores / (step + 1) ** config.len_penalty if config.normalize_scores else eos_scores
    batch_pos = torch.div(bbsz_idx, beam, rounding_mode="trunc").tolist()
    inputs = original_idx[torch.div(bbsz_idx, beam, rounding_mode="trunc")].tolist()
    for i, (pos, sent) in enumerate(zip(batch_pos, inputs)):
        if len(finalized[sent]) < beam:
            finalized[sent].append(Hypothesis(tokens=seqs[i], score=float(final[i]), positional_scores=pos_scores[i]))
    done: list[int] = []
    for pos, sent in sorted(set(zip(batch_pos, inputs))):
        if not finished[sent] and (len(finalized[sent]) == beam or step == max_len):
            finished[sent] = True
            done.append(pos)
    return done


@torch.no_grad()
def greedy_decode(
    model: Any,
    src_tokens: torch.Tensor,
    *,
    patch_images: torch.Tensor | None = None,
    patch_masks: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
) -> list[Hypothesis]:
    """Plain argmax decoding (same bans as :func:`generate`), one hypothesis per input.

    Equivalent to ``generate(..., config.replace(beam_size=1))``; kept as a simple reference loop.
    """
    config = (config or GenerationConfig()).replace(strategy="greedy", beam_size=1)
    cfg = model.config
    encoder_out = model.encode(src_tokens, patch_images=patch_images, patch_masks=patch_masks)
    bsz = encoder_out.batch_size
    max_len = config.max_len(src_tokens.shape[1], cfg.max_positions)
    cache = model.init_cache(encoder_out)
    tokens = torch.full((bsz, 1), cfg.bos_id, dtype=torch.long, device=encoder_out.hidden.device)
    total = torch.zeros(bsz, device=tokens.device)
    pos_scores: list[torch.Tensor] = []
    done = torch.zeros(bsz, dtype=torch.bool, device=tokens.device)
    lengths = torch.full((bsz,), max_len + 1, dtype=torch.long, device=tokens.device)
    for step in range(max_len + 1):
        logits = model.decode_step(tokens[:, -1:], cache)[:, -1].float() / config.temperature
        logits = _apply_logits_processors(config, logits, tokens, StepContext(step=step))
        lprobs = torch.log_softmax(logits, dim=-1)
        lprobs = lprobs.masked_fill(lprobs != lprobs, _NEG_INF)
        lprobs[:, cfg.pad_id] = _NEG_INF
        if config.unk_penalty:
            lprobs[:, 3] -= config.unk_penalty
        if config.ban_special_until_max_len and step < max_len:
            lprobs[:, :4] = _NEG_INF
        if step >= max_len:
            lprobs[:, :cfg.eos_id] = _NEG_INF
            lprobs[:, cfg.eos_id + 1:] = _NEG_INF
        elif step < config.min_len:
            lprobs[:, cfg.eos_id] = _NEG_INF
        if config.no_repeat_ngram_size:
            lprobs = NoRepeatNGram(config.no_repeat_ngram_size)(tokens, lprobs)
        lprobs = _apply_logprob_processors(config, lprobs, tokens, StepContext(step=step))
        best_lp, best = lprobs.max(dim=-1)
        if bool(torch.isinf(best_lp[~done]).any()):
            raise GenerationError(f"the constraints leave no legal token at step {step}")
        best = best.masked_fill(done, cfg.pad_id)
        tokens = torch.cat([tokens, best[:, None]], dim=1)
        pos_scores.append(best_lp.masked_fill(done, 0.0))
        total = total + pos_scores[-1]
        newly = best.eq(cfg.eos_id) & ~done
        lengths[newly] = step + 1
        done |= newly
        if bool(done.all()):
            break
    stacked = torch.stack(pos_scores, dim=1)
    out = []
    for i in range(bsz):
        n = int(lengths[i])
        s = float(stacked[i, :n].sum())
        score = s / n ** config.len_penalty if config.normalize_scores else s
        out.append(Hypothesis(tokens=tokens[i, 1:n + 1].clone(), score=score, positional_scores=stacked[i, :n].clone()))
    return out

