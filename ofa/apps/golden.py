"""Compare our implementation with reference tensors from the original OFA (``../shared/golden`` format).

Usage::

    python -m ofa.apps.golden golden_tiny.pt [--json] [--tol 1e-4] [--backend sdpa]

Every forward case (``main``, ``patch_mask_false``, ``text_only``, ``code_mixed``, ``code_all``), the
incremental cases and the generation entries are run through our code with the state dict stored in the file
(loaded through the official-checkpoint converter). What a case feeds the encoder (an image or not, which images
are masked) is read from the shapes the case stored, never from its name; a case may name its inputs explicitly
with an ``"inputs"`` entry; a case the runner cannot place is an error, not a guess. The model's
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

# The decoder-side inputs of the cases the shared file defines, by name. The encoder side (image or not, which
# images are masked) is never taken from the name: it is read from the shapes the case stored. A case may also
# carry an explicit ``"inputs"`` entry, ``{argument: key of data["inputs"]}``, which then decides everything.
_DECODER_INPUTS: dict[str, tuple[str, str | None]] = {
    "main": ("prev_output_tokens", None),
    "patch_mask_false": ("prev_output_tokens", None),
    "text_only": ("prev_output_tokens", None),
    "code_mixed": ("prev_output_tokens_code", "code_masks_mixed"),
    "code_all": ("prev_output_tokens_code", "code_masks_all"),
}
_ARGUMENTS = ("src_tokens", "patch_images", "patch_masks", "prev_output_tokens", "code_masks")


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


def _input(inputs: dict[str, Any], key: str, case: str) -> torch.Tensor:
    if key not in inputs:
        raise CheckpointError(f"golden case {case!r} needs inputs[{key!r}], which the file does not have "
                              f"(it has {sorted(inputs)})")
    return inputs[key]


def _explicit_inputs(inputs: dict[str, Any], case: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or not set(spec) <= set(_ARGUMENTS) or "src_tokens" not in spec:
        raise CheckpointError(f"golden case {case!r} has an 'inputs' entry {spec!r}; expected a dict mapping some "
                              f"of {list(_ARGUMENTS)} (src_tokens and prev_output_tokens required) to input keys")
    if "prev_output_tokens" not in spec:
        raise CheckpointError(f"golden case {case!r}: its 'inputs' entry names no prev_output_tokens")
    got = {arg: _input(inputs, key, case) for arg, key in spec.items()}
    return {"encode": {k: got[k] for k in ("src_tokens", "patch_images", "patch_masks") if k in got},
            "decode": {k: got[k] for k in ("prev_output_tokens", "code_masks") if k in got}}


def _encoder_inputs(inputs: dict[str, Any], case: str, ref: dict[str, Any]) -> dict[str, Any]:
    """Read from the stored shapes whether ``case`` ran the image encoder, and which images it masked."""
    src_tokens = _input(inputs, "src_tokens", case)
    pad = ref.get("encoder_padding_mask")
    out = ref.get("encoder_out")
    if isinstance(pad, torch.Tensor) and pad.dim() == 2:
        length = pad.shape[1]
    elif isinstance(out, torch.Tensor) and out.dim() == 3:
        length = out.shape[0]
    else:
        raise CheckpointError(f"golden case {case!r} stores neither encoder_padding_mask nor encoder_out, so its "
                              "encoder inputs cannot be read from it; give the case an 'inputs' entry")
    n_text = src_tokens.shape[1]
    if length == n_text:
        return {"src_tokens": src_tokens}
    if length < n_text:
        raise CheckpointError(f"golden case {case!r}: its encoder output has {length} positions, fewer than the "
                              f"{n_text} source tokens")
    images = _input(inputs, "patch_images", case)
    if not isinstance(pad, torch.Tensor):
        raise CheckpointError(f"golden case {case!r} ran the image encoder but stores no encoder_padding_mask to "
                              "tell which images were masked; give the case an 'inputs' entry")
    n_patches = length - n_text
    # A masked image is all padding; an unmasked one has no padding positions at all.
    patch_masks = ~pad[:, :n_patches].all(dim=1)
    partial = pad[:, :n_patches].any(dim=1) & patch_masks
    if bool(partial.any()):
        raise CheckpointError(f"golden case {case!r}: the image part of encoder_padding_mask is partly padded in "
                              "a row, which no patch mask produces")
    return {"src_tokens": src_tokens, "patch_images": images, "patch_masks": patch_masks}


def _case_inputs(inputs: dict[str, Any], case: str, ref: dict[str, Any]) -> dict[str, Any]:
    """The ``encode``/``decode`` arguments of a forward case: its ``inputs`` entry, else name + stored shapes."""
    if "inputs" in ref:
        return _explicit_inputs(inputs, case, ref["inputs"])
    if case not in _DECODER_INPUTS:
        raise CheckpointError(f"golden case {case!r} is not one this runner knows ({sorted(_DECODER_INPUTS)}) and "
                              "has no 'inputs' entry naming its inputs; refusing to guess")
    tokens_key, masks_key = _DECODER_INPUTS[case]
    dec: dict[str, Any] = {"prev_output_tokens": _input(inputs, tokens_key, case)}
    if masks_key is not None:
        dec["code_masks"] = _input(inputs, masks_key, case)
    return {"encode": _encoder_inputs(inputs, case, ref), "decode": dec}


def run_forward_cases(model: Any, data: dict[str, Any]) -> dict[str, float]:
    """Relative error of every stored forward tensor, keyed ``"case/tensor"`` (``/i`` for lists)."""
    inputs = data["inputs"]
    results: dict[str, float] = {}
    for case, ref in data["outputs"].items():
        if case in ("incremental", "generation"):
            continue
        if not isinstance(ref, dict):
            raise CheckpointError(f"golden case {case!r} is a {type(ref).__name__}, not a dict of tensors")
        args = _case_inputs(inputs, case, ref)
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
        unknown = sorted(set(ref) - set(ours) - {"inputs"})
        if unknown:
            raise CheckpointError(f"golden case {case!r} stores {unknown}, which this runner does not compute "
                                  f"(it compares {sorted(ours)})")
        for name, value in ref.items():
            if name == "inputs":
                continue
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
        # An incremental case replays the forward case of the same name step by step.
        forward = data["outputs"].get(case)
        if not isinstance(forward, dict):
            raise CheckpointError(f"golden incremental case {case!r} has no forward case of the same name to take "
                                  "its inputs from")
        args = _case_inputs(inputs, case, forward)
        tokens = args["decode"]["prev_output_tokens"]
        with torch.no_grad():
            enc = model.encode(**args["encode"])
            cache = model.init_cache(enc, code_masks=args["decode"].get("code_masks"))
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
