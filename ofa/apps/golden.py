"""Compare our implementation with reference tensors from the original OFA (``../shared/golden`` format).

Usage::

    python -m ofa.apps.golden golden_tiny.pt [--json] [--tol 1e-4] [--backend sdpa]

Every forward case (``main``, ``patch_mask_false``, ``text_only``, ``code_mixed``, ``code_all``), the
incremental cases and, once :mod:`ofa.generation` provides them, the generation entries are run through our
code with the state dict stored in the file (loaded through the official-checkpoint converter). The model's
config, vocabulary size and shapes are read from the file. For each tensor we report the relative error
``max|ours - ref| / max|ref|``; the exit status is 1 if any error exceeds ``--tol`` or any generation entry
differs in tokens or score.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from ofa.builders import build_ofa
from ofa.checkpoint import infer_config, load_state_dict_into
from ofa.errors import CheckpointError
from ofa.generation.golden import run_golden_generation

__all__ = ["load_golden_model", "run_forward_cases", "run_generation_cases", "run_golden", "main"]

logger = logging.getLogger(__name__)

_TEXT_INPUT_CASES = {"text_only", "code_mixed", "code_all"}


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|ours - ref| / max|ref|`` (NaN/shape mismatches count as infinite error)."""
    ours = ours.detach().double()
    ref = ref.detach().double()
    if ours.shape != ref.shape:
        return float("inf")
    scale = ref.abs().max().item() or 1.0
    diff = (ours - ref).abs().max().item()
    return float("inf") if diff != diff else diff / scale


def load_golden_model(data: dict[str, Any], attention_backend: str = "sdpa") -> Any:
    """Build the model described by the golden file's state dict and config, with its weights loaded."""
    config = infer_config(data["model"], data.get("cfg") or {})
    model = build_ofa(config, attention_backend=attention_backend)
    load_state_dict_into(model, data["model"])
    return model.eval()


def _case_inputs(inputs: dict[str, Any], case: str) -> dict[str, Any]:
    enc: dict[str, Any] = {"src_tokens": inputs["src_tokens"]}
    if case not in _TEXT_INPUT_CASES:
        enc["patch_images"] = inputs["patch_images"]
        enc["patch_masks"] = inputs["patch_masks_partial" if case == "patch_mask_false" else "patch_masks"]
    dec: dict[str, Any] = {"prev_output_tokens": inputs["prev_output_tokens"]}
    if case in ("code_mixed", "code_all"):
        dec["prev_output_tokens"] = inputs["prev_output_tokens_code"]
        dec["code_masks"] = inputs["code_masks_mixed" if case == "code_mixed" else "code_masks_all"]
    return {"encode": enc, "decode": dec}


def run_forward_cases(model: Any, data: dict[str, Any]) -> dict[str, float]:
    """Relative error of every stored forward tensor, keyed ``"case/tensor"`` (``/i`` for lists)."""
    inputs = data["inputs"]
    results: dict[str, float] = {}
    for case, ref in data["outputs"].items():
        if case in ("incremental", "generation") or not isinstance(ref, dict):
            continue
        args = _case_inputs(inputs, case)
        with torch.no_grad():
            enc = model.encode(**args["encode"], return_states=True)
            dec = model.decode(**args["decode"], encoder_out=enc, return_states=True, return_cross_attention=True)
        ours: dict[str, Any] = {
            "logits": dec.logits,
            "decoder_features": dec.features,
            "decoder_inner_states": [s.transpose(0, 1) for s in dec.states or []],
            "decoder_cross_attn_mean": dec.cross_attention,
            "encoder_out": enc.hidden.transpose(0, 1),
            "encoder_padding_mask": enc.padding_mask,
            "encoder_states": [s.transpose(0, 1) for s in enc.states or []],
            "encoder_position_embeddings": enc.position_embeddings,
            "resnet_features": enc.image_features,
        }
        for name, value in ref.items():
            mine = ours.get(name)
            if isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    got = mine[i] if mine is not None and i < len(mine) else None
                    results[f"{case}/{name}/{i}"] = float("inf") if got is None else rel_err(got, item)
            elif value.dtype == torch.bool:
                results[f"{case}/{name}"] = 0.0 if mine is not None and torch.equal(mine, value) else float("inf")
            else:
                results[f"{case}/{name}"] = float("inf") if mine is None else rel_err(mine, value)
    for case, ref in data["outputs"].get("incremental", {}).items():
        args = _case_inputs(inputs, case)
        tokens = args["decode"]["prev_output_tokens"]
        with torch.no_grad():
            enc = model.encode(**args["encode"])
            cache = model.init_cache(enc)
            rows = [model.decode_step(tokens[:, t:t + 1], cache)[:, -1] for t in range(tokens.shape[1])]
        results[f"incremental/{case}"] = rel_err(torch.stack(rows, dim=1), ref)
    return results


def run_generation_cases(model: Any, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Run every stored generation entry of a golden file."""
    return run_golden_generation(model, data)


def run_golden(path: str | Path, attention_backend: str = "sdpa") -> dict[str, Any]:
    """Load a golden file and return ``{"forward": {...}, "generation": {...}}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"golden file {str(path)!r} does not exist")
    data = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "inputs", "outputs"):
        if key not in data:
            raise CheckpointError(f"{str(path)!r} is not a golden file: it has no {key!r} entry")
    model = load_golden_model(data, attention_backend)
    return {"forward": run_forward_cases(model, data), "generation": run_generation_cases(model, data)}


def _failures(report: dict[str, Any], tol: float, score_tol: float) -> list[str]:
    bad = [f"{k}: {v:.3g}" for k, v in report["forward"].items() if not v <= tol]
    for name, entry in report["generation"].items():
        if not entry["tokens_identical"] or not entry["score_abs_err"] <= score_tol:
            bad.append(f"generation/{name}: {entry}")
    return bad


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m ofa.apps.golden", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="golden .pt file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tol", type=float, default=1e-4, help="max relative error per tensor (default 1e-4)")
    parser.add_argument("--score-tol", type=float, default=1e-4,
                        help="max absolute score error of generation entries (default 1e-4)")
    parser.add_argument("--backend", default="sdpa", choices=["eager", "sdpa", "xformers", "auto"])
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    report = run_golden(args.file, attention_backend=args.backend)
    failures = _failures(report, args.tol, args.score_tol)
    if args.json:
        out(json.dumps(report, indent=2, sort_keys=True))
    else:
        for key, value in report["forward"].items():
            out(f"{'ok  ' if value <= args.tol else 'FAIL'} {key:55s} {value:.3e}")
        for name, entry in report["generation"].items():
            ok = entry["tokens_identical"] and entry["score_abs_err"] <= args.score_tol
            out(f"{'ok  ' if ok else 'FAIL'} generation/{name:44s} tokens_identical={entry['tokens_identical']} "
                f"score_abs_err={entry['score_abs_err']:.3e}")
        out(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
