"""Run the generation entries of a golden file (``../shared/golden`` format) through :func:`generate`."""

from __future__ import annotations

from typing import Any

import torch

from ofa.errors import CheckpointError
from ofa.generation.config import GenerationConfig
from ofa.generation.generate import generate
from ofa.generation.processors import AllowedTokens, TrieConstraint
from ofa.generation.trie import Trie

__all__ = ["config_from_reference_args", "run_golden_generation"]


def config_from_reference_args(args: dict[str, Any], constraint_range: str | None = None,
                               trie: Trie | None = None) -> GenerationConfig:
    """Translate OFA ``build_generator`` arguments (+ task constraints) into a :class:`GenerationConfig`."""
    processors: list[Any] = []
    if constraint_range:
        start, end = (int(x) for x in constraint_range.split(","))
        processors.append(AllowedTokens(range(start, end)))
    if trie is not None:
        processors.append(TrieConstraint(trie))
    return GenerationConfig(
        beam_size=int(args.get("beam", 5)),
        max_len_a=float(args.get("max_len_a", 0)),
        max_len_b=int(args.get("max_len_b", 200)),
        min_len=int(args.get("min_len", 1)),
        normalize_scores=not bool(args.get("unnormalized", False)),
        len_penalty=float(args.get("lenpen", 1.0)),
        temperature=float(args.get("temperature", 1.0)),
        no_repeat_ngram_size=int(args.get("no_repeat_ngram_size", 0)),
        processors=tuple(processors),
    )


def run_golden_generation(model: Any, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For each entry: ``tokens_identical`` and the max absolute ``score_abs_err`` / ``positional_abs_err``."""
    inputs = data["inputs"]
    results: dict[str, dict[str, Any]] = {}
    for name, entry in data["outputs"].get("generation", {}).items():
        args = entry["args"] if isinstance(entry["args"], dict) else vars(entry["args"])
        trie = None
        if entry.get("constraint_trie_answers"):
            answers = inputs["trie_answer_tokens"]
            trie = Trie.from_answers([list(map(int, a)) for a in answers])
        config = config_from_reference_args(args, entry.get("constraint_range"), trie)
        kwargs: dict[str, Any] = {}
        source = entry.get("input", "main")
        if source == "main":
            kwargs.update(patch_images=inputs["patch_images"], patch_masks=inputs["patch_masks"])
        elif source != "text_only":
            raise CheckpointError(f"golden generation entry {name!r} generates from input {source!r}; this runner "
                                  "knows 'main' (image and text) and 'text_only'")
        hypos = generate(model, inputs["src_tokens"], config=config, prefix_tokens=entry.get("prefix_tokens"),
                         **kwargs)
        identical = True
        err = 0.0
        pos_err = 0.0
        for ours, ref in zip(hypos, entry["hypos"]):
            if len(ours) != len(ref):
                identical = False
                continue
            for h, r in zip(ours, ref):
                if not torch.equal(h.tokens, r["tokens"]):
                    identical = False
                    continue
                err = max(err, abs(h.score - float(r["score"])))
                pos_err = max(pos_err, float((h.positional_scores - r["positional_scores"]).abs().max()))
        identical = identical and len(hypos) == len(entry["hypos"])
        results[name] = {"tokens_identical": identical, "score_abs_err": err, "positional_abs_err": pos_err}
    return results
