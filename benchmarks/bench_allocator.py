"""Batched generation with freed memory kept for reuse (``ofa.keep_freed_memory``, what ``ofa predict`` and
``ofa evaluate`` do) against glibc's default allocator, on the same model and inputs.

The setting is process-wide, so each side is a worker process holding its model; the driver asks them for one
timed generation at a time, alternately (A B A B ...), so that drift of the machine hits both alike. Prints one
JSON object: per setting the median seconds of each side, the speed ratio, whether the tokens are identical, and
each worker's peak resident memory; the box's matmul GFLOP/s next to the times.

    python benchmarks/bench_allocator.py [--settings ofa-tiny:1,ofa-tiny:8,ofa-base:8] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def worker(model_name: str, batch: int, keep: bool, image_size: int, steps: int) -> None:
    """Serve timed generations on stdin/stdout: each input line runs one and answers with a JSON line."""
    import time

    import torch

    sys.path.insert(0, str(HERE))
    from _common import peak_rss_mb  # noqa: E402
    from bench_generate import inputs  # noqa: E402

    import ofa
    from ofa.generation import GenerationConfig, generate

    applied = ofa.keep_freed_memory() if keep else False
    torch.manual_seed(0)
    model = ofa.build_model(model_name).eval()
    batch_inputs = inputs(batch, image_size, model.config.vocab_size)
    config = GenerationConfig(beam_size=5, max_len_b=steps, min_len=steps, no_repeat_ngram_size=3)
    print(json.dumps({"ready": True, "applied": applied}), flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        hyps = generate(model, config=config, **batch_inputs)
        seconds = time.perf_counter() - start
        tokens = [h[0].tokens.tolist() for h in hyps]
        print(json.dumps({"seconds": seconds, "tokens": tokens, "peak_rss_mb": peak_rss_mb()}), flush=True)


def _start(args: argparse.Namespace, model_name: str, batch: int, keep: bool) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's default on both sides
    cmd = [sys.executable, __file__, "--worker", model_name, str(batch), "keep" if keep else "default",
           "--image-size", str(args.image_size), "--steps", str(args.steps)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())  # ready
    return proc


def _ask(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("run\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="ofa-tiny:1,ofa-tiny:8,ofa-base:8", help="model:batch, ...")
    parser.add_argument("--runs", type=int, default=5, help="timed generations per side (after one warm-up)")
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, batch, mode = args.worker
        worker(name, int(batch), mode == "keep", args.image_size, args.steps)
        return

    import torch

    sys.path.insert(0, str(HERE))
    from _common import emit, environment, matmul_gflops

    result: dict[str, Any] = {"benchmark": "allocator", "env": environment(),
                              "matmul_gflops_start": matmul_gflops(),
                              "setting": {"beam": 5, "steps": args.steps, "no_repeat_ngram_size": 3,
                                          "image_size": args.image_size, "threads": torch.get_num_threads()},
                              "runs": []}
    for item in args.settings.split(","):
        name, batch = item.split(":")
        procs = {"default": _start(args, name, int(batch), False), "kept": _start(args, name, int(batch), True)}
        try:
            answers: dict[str, list[dict[str, Any]]] = {side: [] for side in procs}
            for i in range(args.runs + 1):
                for side, proc in procs.items():
                    answer = _ask(proc)
                    if i > 0:  # the first call of each side warms up
                        answers[side].append(answer)
        finally:
            for proc in procs.values():
                proc.kill()
        median = {side: statistics.median(a["seconds"] for a in got) for side, got in answers.items()}
        result["runs"].append({
            "model": name, "batch": int(batch),
            "default_median_s": round(median["default"], 4), "kept_median_s": round(median["kept"], 4),
            "speedup_kept_vs_default": round(median["default"] / median["kept"], 3),
            "tokens_identical": all(a["tokens"] == b["tokens"] for a, b in zip(answers["default"], answers["kept"])),
            "default_peak_rss_mb": round(answers["default"][-1]["peak_rss_mb"], 1),
            "kept_peak_rss_mb": round(answers["kept"][-1]["peak_rss_mb"], 1),
            "default_runs_s": [round(a["seconds"], 3) for a in answers["default"]],
            "kept_runs_s": [round(a["seconds"], 3) for a in answers["kept"]],
        })
    result["matmul_gflops_end"] = matmul_gflops()
    emit(result)


if __name__ == "__main__":
    main()
