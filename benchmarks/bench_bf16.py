"""bf16 against fp32: generation time, logit error and identical best hypotheses, on the same weights.

Builds a random ``--model`` (or loads ``--checkpoint``, e.g. the peer checkpoints of ``../shared/peer``) with the
official 59,457-id vocabulary and generates captions for ``--batch`` random ``--image-size`` px images (beam 5,
16 tokens, no-repeat 3, as the speed comparison) in fp32 and in bf16 (``load_checkpoint(dtype=...)`` /
``model.to(torch.bfloat16)``), interleaved, ``--runs`` times each. Reports the median times and their ratio,
the max relative logit error of bf16 against fp32 under teacher forcing (``max|bf16 - fp32| / max|fp32|`` per
input), the share of inputs whose best hypothesis is identical, whether the CPU has bf16 instructions, and the
box's matmul GFLOP/s. Prints JSON.

    python benchmarks/bench_bf16.py [--model ofa-tiny] [--checkpoint FILE] [--batch 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, matmul_gflops  # noqa: E402

VOCAB = 59457


def _cpu_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ofa-tiny")
    parser.add_argument("--checkpoint")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import ofa
    from ofa.generation import GenerationConfig, generate

    torch.manual_seed(0)
    fp32 = (ofa.load_checkpoint(args.checkpoint) if args.checkpoint
            else ofa.build_model(args.model, vocab_size=VOCAB)).eval()
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(args.batch, 3, args.image_size, args.image_size, generator=g) * 2 - 1
    src = torch.tensor([[0, 99, 16, 5, 313, 608, 116, 2]] * args.batch)  # a caption-style prompt
    masks = torch.ones(args.batch, dtype=torch.bool)
    config = GenerationConfig(beam_size=5, max_len_b=16, no_repeat_ngram_size=3)

    def run(model: torch.nn.Module) -> list[torch.Tensor]:
        with torch.no_grad():
            hypos = generate(model, src, patch_images=images, patch_masks=masks, config=config)
        return [h[0].tokens for h in hypos]

    run(fp32), run(bf16)  # warm-up
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    outputs: dict[str, list[torch.Tensor]] = {}
    for _ in range(args.runs):
        for name, model in (("fp32", fp32), ("bf16", bf16)):
            t0 = time.perf_counter()
            outputs[name] = run(model)
            times[name].append(time.perf_counter() - t0)
    identical = sum(torch.equal(a, b) for a, b in zip(outputs["fp32"], outputs["bf16"]))
    # Teacher-forced logits of the fp32 hypotheses under both models.
    width = max(t.numel() for t in outputs["fp32"])
    prev = torch.full((args.batch, width), fp32.config.pad_id, dtype=torch.long)
    prev[:, 0] = fp32.config.bos_id
    for i, t in enumerate(outputs["fp32"]):
        prev[i, 1:t.numel()] = t[:-1]
    with torch.no_grad():
        ref = fp32(src, prev, patch_images=images, patch_masks=masks).logits.double()
        low = bf16(src, prev, patch_images=images, patch_masks=masks).logits.double()
    rel = max(float((low[i] - ref[i]).abs().max() / ref[i].abs().max()) for i in range(args.batch))
    t32, t16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    emit({"benchmark": "bf16", "model": args.checkpoint or args.model, "batch": args.batch,
          "image_size": args.image_size, "fp32_s": round(t32, 3), "bf16_s": round(t16, 3),
          "speedup_bf16_over_fp32": round(t32 / t16, 2), "max_rel_logit_err": rel,
          "identical_best": f"{identical}/{args.batch}", "cpu_has_bf16_instructions": _cpu_bf16(),
          "matmul_gflops": matmul_gflops(), "environment": environment()})


if __name__ == "__main__":
    main()
