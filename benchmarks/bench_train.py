"""Training-step throughput and peak memory: TorchEngine vs DeepSpeed ZeRO-2, same global batch.

OFA-Tiny with random weights on synthetic caption data (the quickstart world's images resized to
``--image-size``), micro-batch ``--micro`` x ``--accum``, one process, fp32 on CPU (bf16 with ``--dtype bf16``
on the torch engine). The first steps are warm-up (DeepSpeed builds its CPU comm op once). Prints JSON.

    python benchmarks/bench_train.py [--model ofa-tiny] [--steps 5] [--micro 4] [--accum 2] [--image-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment  # noqa: E402


def _child(args: argparse.Namespace) -> None:
    """Run one engine in this process and print its JSON line (each engine gets a fresh process)."""

    import ofa
    from ofa.trainer import Trainer, TrainerConfig
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import PeakMemory

    tok = ofa.OFATokenizer.from_pretrained(Path(args.data) / "tokenizer")
    config = TrainerConfig(
        output_dir=str(Path(args.data) / f"run_{args.engine}"), model=args.model, task="caption",
        task_options={"image_size": args.image_size}, train_data=str(Path(args.data) / "caption_train.tsv"),
        micro_batch_size=args.micro, grad_accum=args.accum, max_steps=args.warmup + args.steps, lr=1e-4,
        engine={"name": "deepspeed", "zero_stage": 2} if args.engine == "deepspeed" else "torch", save_every=10**9,
        validate_every=10**9, log_every=10**9, precision="bf16" if args.dtype == "bf16" else "fp32")
    trainer = Trainer(config, tokenizer=tok, progress=False)
    for _ in range(args.warmup):
        trainer.train_step()
    with PeakMemory() as memory:
        start = time.perf_counter()
        tokens = 0.0
        for _ in range(args.steps):
            stats = trainer.train_step()
            tokens += stats["ntokens"] if stats else 0.0
        elapsed = time.perf_counter() - start
    samples = args.steps * args.micro * args.accum
    print("RESULT " + json.dumps({"engine": args.engine, "samples_per_s": samples / elapsed,
                                  "tokens_per_s": tokens / elapsed, "seconds_per_step": elapsed / args.steps,
                                  **memory.as_dict()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ofa-tiny")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--engines", default="torch,deepspeed")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        _child(args)
        return
    import ofa
    from ofa.apps.shapeworld import write_world
    from ofa.apps.shapeworld.world import WorldConfig

    with tempfile.TemporaryDirectory() as tmp:
        write_world(tmp, num_train=64, num_valid=1, config=WorldConfig(seed=0), progress=False)
        lines = [line for line in (Path(tmp) / "corpus.txt").read_text().splitlines() if line.strip()]
        tok = ofa.OFATokenizer.train(lines, vocab_size=400, num_codes=16, num_bins=64)
        tok.save_pretrained(Path(tmp) / "tokenizer")
        runs = []
        for engine in args.engines.split(","):
            cmd = [sys.executable, __file__, "--engine", engine, "--data", tmp, "--model", args.model,
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--micro", str(args.micro),
                   "--accum", str(args.accum), "--image-size", str(args.image_size), "--dtype", args.dtype]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                runs.append({"engine": engine, "error": proc.stderr[-2000:]})
            else:
                runs.append(json.loads(lines[-1][len("RESULT "):]))
    emit({"benchmark": "train", "env": environment(),
          "setting": {"model": args.model, "micro_batch": args.micro, "grad_accum": args.accum,
                      "global_batch": args.micro * args.accum, "image_size": args.image_size, "dtype": args.dtype,
                      "measured_steps": args.steps, "warmup_steps": args.warmup, "processes": 1},
          "runs": runs})


if __name__ == "__main__":
    main()
