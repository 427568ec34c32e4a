"""Where a quickstart training step spends its time: data, forward, backward, optimizer (issue #15 item 4).

Builds the quickstart's world (``--num-train`` images, default 2000: the step cost does not depend on it), its
model and its trainer with the default task mixture, runs ``--warmup`` steps, then times ``--steps`` steps split
into the four phases (one micro-batch per step, as the quickstart runs). Prints JSON with the per-phase seconds per
step, their shares, the box's matmul GFLOP/s next to them, and the steps a 10-minute run would train here.

    python benchmarks/bench_quickstart_step.py [--steps 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, matmul_gflops  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--micro-batch-size", type=int, default=None, help="default: the quickstart's")
    parser.add_argument("--image-size", type=int, default=None, help="default: the quickstart's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ofa.apps.quickstart import QuickstartConfig, prepare_quickstart
    from ofa.trainer.data import pick_task

    with tempfile.TemporaryDirectory() as tmp:
        sizes = {k: v for k, v in (("micro_batch_size", args.micro_batch_size), ("image_size", args.image_size))
                 if v is not None}
        config = QuickstartConfig(out=tmp, num_train=args.num_train, num_valid=16, progress=False, **sizes)
        _, _, make_trainer = prepare_quickstart(config)
        trainer = make_trainer(10_000)
        for _ in range(args.warmup):
            trainer.train_step()
        ratios = [t.ratio for t in trainer.config.tasks]
        names = [t.name for t in trainer.config.tasks]
        phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        per_task: dict[str, list[float]] = {name: [] for name in names}
        trainer._train_mode()
        for _ in range(args.steps):
            t0 = time.perf_counter()
            index = pick_task(ratios, config.seed, trainer.step, 0)
            batch = trainer.streams[index].next()
            work = trainer.criterion.prepare(batch, index, trainer.step)
            t1 = time.perf_counter()
            out = trainer.criterion.loss(trainer.engine.module, work)
            t2 = time.perf_counter()
            trainer.engine.backward(out.loss * trainer.engine.loss_scale(work.ntokens))
            t3 = time.perf_counter()
            trainer.engine.step()
            trainer.step += 1
            t4 = time.perf_counter()
            for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[key] += dt
            per_task[names[index]].append(t4 - t0)
        total = sum(phases.values())
        per_step = total / args.steps
        result = {
            "benchmark": "quickstart_step",
            "steps": args.steps,
            "seconds_per_step": round(per_step, 4),
            "phase_seconds_per_step": {k: round(v / args.steps, 4) for k, v in phases.items()},
            "phase_share": {k: round(v / total, 3) for k, v in phases.items()},
            "task_seconds_per_step": {k: round(sum(v) / len(v), 4) for k, v in per_task.items() if v},
            "steps_in_9_minutes": int(9 * 60 / per_step),
            "micro_batch_size": config.micro_batch_size,
            "image_size": config.image_size,
            "matmul_gflops": matmul_gflops(), "environment": environment(),
        }
        emit(result)


if __name__ == "__main__":
    main()
