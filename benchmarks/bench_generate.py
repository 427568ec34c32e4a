"""Caption-style beam search speed: cached incremental decoding vs a naive full-recompute baseline.

Setting (issue 3): OFA-Tiny and OFA-Base with random weights, 384x384 images, beam 5, exactly 16 decoding steps
(min_len = max_len = 16, so every run does the same work), no-repeat-ngram 3. Batch 1 and 8 for the cached
decoder; the naive baseline (decoder re-run over the whole prefix, encoder output copied per beam) at batch 1.
Prints one JSON object: images/s, seconds per batch, peak RSS, and whether the tokens equal the baseline's.

    python benchmarks/bench_generate.py [--models ofa-tiny,ofa-base] [--batches 1,8] [--repeats 3] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, peak_rss_mb, time_it  # noqa: E402

import ofa  # noqa: E402
from ofa.generation import GenerationConfig, generate  # noqa: E402


def inputs(batch: int, size: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sample i is drawn from its own generator (seed + i): sample 0 is the same at every batch size, so the
    batch runs can be checked against the batch-1 baseline."""
    srcs, images = [], []
    for i in range(batch):
        g = torch.Generator().manual_seed(seed + i)
        src = torch.randint(4, min(vocab, 50000), (8,), generator=g)
        src[0], src[-1] = 0, 2
        srcs.append(src)
        images.append(torch.rand(3, size, size, generator=g) * 2 - 1)
    return {"src_tokens": torch.stack(srcs), "patch_images": torch.stack(images),
            "patch_masks": torch.ones(batch, dtype=torch.bool)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ofa-tiny,ofa-base")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    config = GenerationConfig(beam_size=5, max_len_b=args.steps, min_len=args.steps, no_repeat_ngram_size=3)
    results: dict[str, object] = {"benchmark": "generate", "env": environment(), "setting": {
        "beam": 5, "steps": args.steps, "no_repeat_ngram_size": 3, "image_size": args.image_size,
        "dtype": args.dtype, "device": args.device}, "runs": []}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = ofa.build_model(name).eval().to(device=args.device, dtype=dtype)
        base_tokens = None
        if not args.no_baseline:
            batch_inputs = {k: v.to(args.device) for k, v in inputs(1, args.image_size, model.config.vocab_size).items()}
            batch_inputs["patch_images"] = batch_inputs["patch_images"].to(dtype)

            def run_naive(model: Any = model) -> object:  # bound now: the loop deletes `model` later
                return generate(model, config=config, use_cache=False, **batch_inputs)

            timing = time_it(run_naive, repeats=args.repeats)
            base_tokens = [h.tokens.tolist() for h in run_naive()[0]]
            results["runs"].append({"model": name, "decoder": "naive_recompute", "batch": 1,
                                    "images_per_s": 1 / timing["median_s"], **timing,
                                    "peak_rss_mb": peak_rss_mb()})
        for batch in (int(b) for b in args.batches.split(",")):
            batch_inputs = {k: v.to(args.device) for k, v in
                            inputs(batch, args.image_size, model.config.vocab_size).items()}
            batch_inputs["patch_images"] = batch_inputs["patch_images"].to(dtype)

            def run_cached(model: Any = model) -> object:
                return generate(model, config=config, **batch_inputs)

            timing = time_it(run_cached, repeats=args.repeats)
            entry = {"model": name, "decoder": "cached", "batch": batch, "images_per_s": batch / timing["median_s"],
                     **timing, "peak_rss_mb": peak_rss_mb()}
            if base_tokens is not None:
                first = [h.tokens.tolist() for h in run_cached()[0]]
                entry["tokens_equal_baseline"] = first == base_tokens
            if torch.cuda.is_available():
                entry["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            results["runs"].append(entry)
        del model
    by_key = {(r["model"], r["decoder"], r["batch"]): r["images_per_s"] for r in results["runs"]}
    summary = {}
    for name in args.models.split(","):
        naive = by_key.get((name, "naive_recompute", 1))
        b1 = by_key.get((name, "cached", 1))
        if naive and b1:
            summary[f"{name}_cached_b1_vs_naive_b1"] = b1 / naive
        for batch in args.batches.split(","):
            cached = by_key.get((name, "cached", int(batch)))
            if cached and b1 and batch != "1":
                summary[f"{name}_cached_b{batch}_vs_cached_b1"] = cached / b1
    results["speedups"] = summary
    emit(results)


if __name__ == "__main__":
    main()
