"""One decoding loop over ``model.encode()`` and the incremental decoder, with OFA's beam-search semantics.

The encoder runs once per batch. Cross-attention keys/values are computed once per source and shared by its
beams (the decoder folds a source's beams into the query axis), so nothing is recomputed per beam or per step.
The loop follows fairseq's ``SequenceGenerator`` as modified by OFA (spec §5.9): it starts from ``<s>``, runs
the ``"logits"`` processors before the log-softmax and the loop's rules (pad / min-length / max-length / prefix /
n-gram, :mod:`ofa.generation.bans`) and the ``"logprobs"`` processors after it, finalises hypotheses in fairseq's
order, and drops finished inputs from the batch. It reads the model only through :class:`IncrementalModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ofa.errors import GenerationError, InputError
from ofa.generation.bans import loop_processors
from ofa.generation.config import GenerationConfig
from ofa.generation.contract import IncrementalCache, IncrementalModel, RecomputingModel
from ofa.generation.processors import LogitsProcessor, StepContext, apply_stage
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

    def __init__(self, model: IncrementalModel[Any, IncrementalCache], encoder_out: Any, num_rows: int,
                 code_masks: torch.Tensor | None) -> None:
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

    def __init__(self, model: RecomputingModel[Any, Any], encoder_out: Any, num_rows: int,
                 code_masks: torch.Tensor | None) -> None:
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


def _check_code_masks(model: IncrementalModel[Any, Any], code_masks: torch.Tensor | None, bsz: int, beam: int,
                      device: torch.device) -> tuple[torch.Tensor | None, int]:
    """Per-row code masks and the decoder positions available (image-code rows have their own table)."""
    positions = model.config.max_positions
    if code_masks is None:
        return None, positions
    if code_masks.shape != (bsz,):
        raise InputError(f"code_masks must have shape [{bsz}], got {tuple(code_masks.shape)}")
    rows = code_masks.bool().to(device).repeat_interleave(beam)
    if bool(rows.all()):
        positions = model.max_decoder_length(code_rows=True)  # 1024 codes + eos need 1026 positions
    return rows, positions


def _generators(config: GenerationConfig, bsz: int) -> list[torch.Generator | None]:
    """One random stream per input when sampling with a seed (input ``i`` uses ``seed + i``)."""
    if config.strategy != "sample":
        return []
    if config.seed is None:
        return [None] * bsz
    out: list[torch.Generator | None] = []
    for i in range(bsz):
        g = torch.Generator()
        g.manual_seed(config.seed + i)
        out.append(g)
    return out


@dataclass
class _Batch:
    """The inputs still being decoded: the batch shrinks as inputs finish (``bsz`` inputs, ``beam`` rows each).

    ``tokens [bsz*beam, max_len+2]`` start with ``<s>``; ``scores [bsz*beam, max_len+1]`` are cumulative;
    ``original`` maps a batch position to its input index.
    """

    tokens: torch.Tensor
    scores: torch.Tensor
    ignore: torch.Tensor
    original: torch.Tensor
    beam: int
    row_prefix: torch.Tensor | None
    row_prefix_lengths: torch.Tensor | None
    generators: list[torch.Generator | None]

    @classmethod
    def start(cls, bsz: int, beam: int, max_len: int, bos: int, pad: int, prefix_tokens: torch.Tensor | None,
              generators: list[torch.Generator | None], device: torch.device) -> "_Batch":
        tokens = torch.full((bsz * beam, max_len + 2), pad, dtype=torch.long, device=device)
        tokens[:, 0] = bos
        row_prefix = None if prefix_tokens is None else prefix_tokens.to(device).repeat_interleave(beam, dim=0)
        return cls(tokens=tokens, scores=torch.zeros(bsz * beam, max_len + 1, device=device),
                   ignore=torch.zeros(bsz, beam, dtype=torch.bool, device=device),
                   original=torch.arange(bsz, device=device), beam=beam, row_prefix=row_prefix,
                   row_prefix_lengths=None if row_prefix is None else row_prefix.ne(pad).sum(dim=1),
                   generators=generators)

    @property
    def bsz(self) -> int:
        return self.original.numel()

    def context(self, step: int, max_len: int) -> StepContext:
        return StepContext(step=step, prefix_lengths=self.row_prefix_lengths, prefix_tokens=self.row_prefix,
                           max_len=max_len)

    def keep(self, batch_idxs: torch.Tensor) -> None:
        """Keep only the inputs at batch positions ``batch_idxs``."""
        bsz, beam = self.bsz, self.beam
        rows = (batch_idxs.unsqueeze(1) * beam + torch.arange(beam, device=batch_idxs.device)).view(-1)
        self.tokens = self.tokens.view(bsz, -1)[batch_idxs].view(-1, self.tokens.shape[1])
        self.scores = self.scores.view(bsz, -1)[batch_idxs].view(-1, self.scores.shape[1])
        self.ignore = self.ignore[batch_idxs]
        self.original = self.original[batch_idxs]
        if self.row_prefix is not None and self.row_prefix_lengths is not None:
            self.row_prefix = self.row_prefix[rows]
            self.row_prefix_lengths = self.row_prefix_lengths[rows]
        if self.generators:
            self.generators = [self.generators[i] for i in batch_idxs.tolist()]


def _step_lprobs(logits: torch.Tensor, history: torch.Tensor, config: GenerationConfig,
                 rules: list[LogitsProcessor], context: StepContext) -> torch.Tensor:
    """Logits of one step -> the log-probs the search chooses from: temperature, logits processors, log-softmax,
    then the loop's rules and the log-prob processors (:func:`~ofa.generation.bans.loop_processors`)."""
    logits = logits.float()
    if config.temperature != 1.0:
        logits = logits / config.temperature
    logits = apply_stage(rules, "logits", history, logits, context)
    lprobs = torch.log_softmax(logits, dim=-1)
    lprobs = lprobs.nan_to_num_(nan=_NEG_INF, posinf=float("inf"), neginf=_NEG_INF)  # NaN -> -inf, in one pass
    return apply_stage(rules, "logprobs", history, lprobs, context)


def _candidates(step: int, lprobs: torch.Tensor, batch: _Batch,
                config: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(scores, token ids, source beams)`` of the step's candidates, each ``[bsz, c]``."""
    view = lprobs.view(batch.bsz, batch.beam, -1)
    past = batch.scores.view(batch.bsz, batch.beam, -1)[:, :, :step]
    if config.strategy == "sample":
        return sample_step(step, view, past, generators=batch.generators, top_k=config.sampling_topk,
                           top_p=config.sampling_topp)
    return beam_step(step, view, past)


def _dead_inputs(step: int, cand_scores: torch.Tensor, batch: _Batch, finalized: list[list[Hypothesis]],
                 finished: list[bool], config: GenerationConfig, max_len: int) -> list[int]:
    """Batch positions of inputs whose candidates are all -inf: done now, or an error if nothing finished.

    Scores only go down, so such an input can never finalise another hypothesis: the reference carries its dead
    beams to max_len and returns what it has (e.g. a trie with fewer answers than beams). With nothing
    finalised, no output satisfies the constraints.
    """
    dead: list[int] = []
    for pos in torch.isinf(cand_scores).all(dim=1).nonzero().view(-1).tolist():
        which = int(batch.original[pos])
        if not finalized[which]:
            raise GenerationError(
                f"the constraints leave no legal token for input {which} at step {step} "
                f"(no hypothesis finished); check the processors ({list(config.processors)}), "
                f"min_len ({config.min_len}) and max_len ({max_len})")
        finished[which] = True
        dead.append(pos)
    return dead


def _advance(step: int, batch: _Batch, cand_scores: torch.Tensor, cand_indices: torch.Tensor,
             cand_bbsz_idx: torch.Tensor, eos_mask: torch.Tensor) -> torch.Tensor:
    """Extend each input's beams with its best non-eos candidates (in rank order; eos and ignored candidates
    sort after them); return the rows the next step continues from."""
    beam, top, n_cand = batch.beam, min(batch.beam, cand_scores.shape[1]), cand_scores.shape[1]
    cand_size = 2 * beam
    eos_mask[:, :top] = ~(~batch.ignore[:, :top] & ~eos_mask[:, :top])
    offsets = torch.arange(cand_size, device=cand_scores.device)[:n_cand]
    active_mask = eos_mask.to(offsets.dtype) * cand_size + offsets
    new_ignore, active_hypos = torch.topk(active_mask, k=beam, dim=1, largest=False)
    batch.ignore = new_ignore.ge(cand_size)[:, :beam]
    active_bbsz_idx = torch.gather(cand_bbsz_idx, 1, active_hypos).view(-1)
    active_scores = torch.gather(cand_scores, 1, active_hypos).view(-1)
    tokens, scores, bsz = batch.tokens, batch.scores, batch.bsz
    tokens[:, :step + 1] = tokens[:, :step + 1].index_select(0, active_bbsz_idx)
    tokens.view(bsz, beam, -1)[:, :, step + 1] = torch.gather(cand_indices, 1, active_hypos)
    if step > 0:
        scores[:, :step] = scores[:, :step].index_select(0, active_bbsz_idx)
    scores.view(bsz, beam, -1)[:, :, step] = active_scores.view(bsz, beam)
    return active_bbsz_idx


@torch.no_grad()
def generate(
    model: IncrementalModel[Any, Any],
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
        model: an :class:`IncrementalModel`, e.g. an :class:`~ofa.model.OFAModel` (put it in eval mode).
        src_tokens: ``[b, L]`` right-padded sources; ``L`` sets ``max_len = a * L + b``.
        patch_images, patch_masks: images as for :meth:`OFAModel.encode`.
        config: decoding settings (default :class:`GenerationConfig`).
        prefix_tokens: ``[b, P]`` decoder prefix forced after ``<s>`` (right-padded; pad forces nothing),
            e.g. the question for VQA with ``prompt_type=prev_output``. Returned tokens include it.
        code_masks: ``[b]`` bool, inputs whose outputs are image codes (the decoder's code path).
        encoder_out: reuse an encoder output instead of encoding ``src_tokens`` again.
        pad_id: the padding id (default ``model.config.pad_id``).
        on_step: called with the step index after every step (progress reporting).
        use_cache: decode incrementally with the KV cache (default). False re-runs the decoder over the whole
            prefix at every step (the model must be a :class:`RecomputingModel`), a slow baseline that gives the
            same tokens.

    Returns:
        per input, the finished hypotheses best first: ``beam_size`` of them (fewer when the constraints admit
        fewer outputs, e.g. a trie with fewer answers than beams), or 1 without ``return_all``.

    Raises:
        GenerationError: the constraints leave an input without a legal continuation before any of its
            hypotheses finished.
        InputError: malformed inputs.
    """
    config = config or GenerationConfig()
    if not isinstance(config, GenerationConfig):
        raise GenerationError(f"config must be a GenerationConfig, got {type(config).__name__}")
    if not isinstance(src_tokens, torch.Tensor):
        raise InputError(f"src_tokens must be a torch.Tensor of token ids [batch, length], got "
                         f"{type(src_tokens).__name__}")
    ids = model.config
    pad = ids.pad_id if pad_id is None else pad_id
    eos, beam, device = ids.eos_id, config.beam_size, src_tokens.device
    if encoder_out is None:
        encoder_out = model.encode(src_tokens, patch_images=patch_images, patch_masks=patch_masks)
    bsz = encoder_out.batch_size
    prefix_tokens = _check_prefix(prefix_tokens, bsz, ids.vocab_size)
    code_masks, positions = _check_code_masks(model, code_masks, bsz, beam, device)
    max_len = config.max_len(src_tokens.shape[1], positions)
    decoder: _Decoder | _RecomputeDecoder
    if use_cache:
        decoder = _Decoder(model, encoder_out, bsz * beam, code_masks)
    elif isinstance(model, RecomputingModel):
        decoder = _RecomputeDecoder(model, encoder_out, bsz * beam, code_masks)
    else:
        raise InputError(f"use_cache=False needs a model with decode() (a RecomputingModel); "
                         f"{type(model).__name__} has none")
    rules = loop_processors(config, pad_id=pad, eos_id=eos)
    batch = _Batch.start(bsz, beam, max_len, ids.bos_id, pad, prefix_tokens, _generators(config, bsz), device)
    finalized: list[list[Hypothesis]] = [[] for _ in range(bsz)]
    finished = [False] * bsz

    reorder_rows: torch.Tensor | None = None
    batch_idxs: torch.Tensor | None = None
    for step in range(max_len + 1):
        if reorder_rows is not None:
            if batch_idxs is not None:
                # Indices were computed in the shrunk batch; map them back to the rows the cache still holds.
                corr = batch_idxs - torch.arange(batch_idxs.numel(), device=device)
                reorder_rows = (reorder_rows.view(-1, beam) + corr.unsqueeze(-1) * beam).view(-1)
                decoder.select_sources(batch_idxs, reorder_rows)
            else:
                decoder.reorder(reorder_rows)

        history = batch.tokens[:, :step + 1]
        lprobs = _step_lprobs(decoder.step(batch.tokens[:, step:step + 1]), history, config, rules,
                              batch.context(step, max_len))
        cand_scores, cand_indices, cand_beams = _candidates(step, lprobs, batch, config)
        dead = _dead_inputs(step, cand_scores, batch, finalized, finished, config, max_len)

        bbsz_offsets = (torch.arange(batch.bsz, device=device) * beam).unsqueeze(1)
        cand_bbsz_idx = cand_beams + bbsz_offsets
        eos_mask = cand_indices.eq(eos) & cand_scores.ne(_NEG_INF)
        top = min(beam, cand_scores.shape[1])
        eos_mask[:, :top][batch.ignore[:, :top]] = False
        eos_bbsz_idx = cand_bbsz_idx[:, :top].masked_select(eos_mask[:, :top])
        done: list[int] = []
        if eos_bbsz_idx.numel() > 0:
            eos_scores = cand_scores[:, :top].masked_select(eos_mask[:, :top])
            done = _finalize(step, eos_bbsz_idx, eos_scores, batch.tokens, batch.scores, finalized, finished, beam,
                             max_len, batch.original, config, eos)
        if dead:
            done = sorted(set(done) | set(dead))
        if on_step is not None:
            on_step(step)
        if len(done) == batch.bsz or step >= max_len:
            break

        batch_idxs = None
        if done:
            keep = torch.ones(batch.bsz, dtype=torch.bool, device=device)
            keep[torch.tensor(done, device=device)] = False
            batch_idxs = torch.arange(batch.bsz, device=device).masked_select(keep)
            batch.keep(batch_idxs)
            eos_mask, cand_beams = eos_mask[batch_idxs], cand_beams[batch_idxs]
            cand_scores, cand_indices = cand_scores[batch_idxs], cand_indices[batch_idxs]
            cand_bbsz_idx = cand_beams + bbsz_offsets[:batch.bsz]
        reorder_rows = _advance(step, batch, cand_scores, cand_indices, cand_bbsz_idx, eos_mask)

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
    model: IncrementalModel[Any, Any],
    src_tokens: torch.Tensor,
    *,
    patch_images: torch.Tensor | None = None,
    patch_masks: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
) -> list[Hypothesis]:
    """Plain argmax decoding (the same rules as :func:`generate`), one hypothesis per input.

    Equivalent to ``generate(..., config.replace(beam_size=1))``; kept as a simple reference loop.
    """
    config = (config or GenerationConfig()).replace(strategy="greedy", beam_size=1)
    ids = model.config
    encoder_out = model.encode(src_tokens, patch_images=patch_images, patch_masks=patch_masks)
    bsz, device = encoder_out.batch_size, src_tokens.device
    max_len = config.max_len(src_tokens.shape[1], ids.max_positions)
    rules = loop_processors(config, pad_id=ids.pad_id, eos_id=ids.eos_id)
    cache = model.init_cache(encoder_out)
    tokens = torch.full((bsz, 1), ids.bos_id, dtype=torch.long, device=device)
    pos_scores: list[torch.Tensor] = []
    done = torch.zeros(bsz, dtype=torch.bool, device=device)
    lengths = torch.full((bsz,), max_len + 1, dtype=torch.long, device=device)
    for step in range(max_len + 1):
        logits = model.decode_step(tokens[:, -1:], cache)[:, -1]
        lprobs = _step_lprobs(logits, tokens, config, rules, StepContext(step=step, max_len=max_len))
        best_lp, best = lprobs.max(dim=-1)
        if bool(torch.isinf(best_lp[~done]).any()):
            raise GenerationError(f"the constraints leave no legal token at step {step}")
        best = best.masked_fill(done, ids.pad_id)
        tokens = torch.cat([tokens, best[:, None]], dim=1)
        pos_scores.append(best_lp.masked_fill(done, 0.0))
        newly = best.eq(ids.eos_id) & ~done
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
