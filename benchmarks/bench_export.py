"""Beam search over the exported graphs (ONNX on onnxruntime, CPU) vs the eager model, same weights, same loop.

A random ``ofa-tiny`` (official vocabulary size, 59,457) is exported with :func:`ofa.export.export_model`; then
``generate`` (beam 5, up to 16 tokens, no-repeat 3) runs at batch 1 and batch 8 on the eager model and on
:func:`ofa.export.load_exported`. Reports seconds per call (median of ``--repeats``), the eager / exported ratio
(> 1: the export is faster), whether every token is identical, the export time, and the box's matmul GFLOP/s.
Prints JSON.

    python benchmarks/bench_export.py [--size tiny] [--image-size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, matmul_gflops  # noqa: E402

import ofa  # noqa: E402
from ofa.export import export_model, load_exported  # noqa: E402
from ofa.generation import GenerationConfig, generate  # noqa: E402


def _median_seconds(fn: Any, repeats: int) -> tuple[float, Any]:
    result = fn()  # warm-up (and the result to compare)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "medium", "base"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gflops = matmul_gflops()
    torch.manual_seed(0)
    model = ofa.build_model(f"ofa-{args.size}").eval()
    config = GenerationConfig(beam_size=5, max_len_b=16, no_repeat_ngram_size=3)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export_model(model, tmp, format="onnx", image_size=args.image_size)
        export_seconds = time.perf_counter() - start
        exported = load_exported(tmp)
        for batch in (1, 8):
            generator = torch.Generator().manual_seed(batch)
            src = torch.randint(4, 50000, (batch, 12), generator=generator)
            src[:, 0], src[:, -1] = 0, 2
            images = torch.rand(batch, 3, args.image_size, args.image_size, generator=generator) * 2 - 1

            def run(m: Any) -> Any:
                with torch.no_grad():
                    return generate(m, src, patch_images=images, config=config)

            eager_s, eager = _median_seconds(lambda: run(model), args.repeats)
            onnx_s, ours = _median_seconds(lambda: run(exported), args.repeats)
            identical = all([h.tokens.tolist() for h in a] == [h.tokens.tolist() for h in b]
                            for a, b in zip(eager, ours))
            results[f"batch_{batch}"] = {"eager_s": round(eager_s, 3), "onnxruntime_s": round(onnx_s, 3),
                                         "speedup_onnx_vs_eager": round(eager_s / onnx_s, 2),
                                         "tokens_identical": identical}
    emit({"benchmark": "export", "model": f"ofa-{args.size} (random)", "image_size": args.image_size,
          "generation": "beam 5, max_len_b 16, no_repeat 3", "export_onnx_s": round(export_seconds, 1), **results,
          "matmul_gflops": gflops, "threads": torch.get_num_threads(), **environment()})


if __name__ == "__main__":
    main()
