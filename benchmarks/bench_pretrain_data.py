"""Pretraining data at scale: resident memory while streaming a large ``vision_language_examples.tsv``.

Writes a pretraining mixture of the shape world, repeats its image-text rows into a file of ``--gb`` GB, then reads
``--batches`` micro-batches of ``--micro`` rows through the trainer's path (offset-indexed TSV -> ``pretrain``
task -> :class:`~ofa.trainer.data.TaskStream`), each configuration in a fresh process:

* ``ours_rank0_of_1`` / ``ours_rank1_of_2``: one process, or the second of two ranks (it reads only its slice of
  each global draw), with ``--workers`` DataLoader workers (their peak reported separately);
* ``baseline_readlines``: the naive loader that reads the file into a list of lines first, then encodes the same
  rows.

Reports peak and growth of the resident set (MiB), the index build time and samples/s, with the box's matmul
GFLOP/s. Prints JSON.

    python benchmarks/bench_pretrain_data.py [--gb 1.0] [--batches 50] [--micro 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, environment  # noqa: E402


def _gflops() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    start, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    return round(2 * 2048**3 / ((time.perf_counter() - start) / n) / 1e9, 1)


def _prepare(root: Path, gb: float) -> dict[str, str]:
    """A small pretraining mixture, and its image-text rows repeated to ``gb`` GB."""
    import torch

    from ofa.apps.shapeworld import WorldConfig
    from ofa.apps.shapeworld.pretrain import write_pretraining_files
    from ofa.vqgan import VQGANConfig, build_vqgan

    torch.manual_seed(0)
    vqgan = build_vqgan(VQGANConfig(num_codes=64, embed_dim=32, z_channels=32, channels=32, channel_mult=(1, 2),
                                    num_res_blocks=1, attn_resolutions=(), resolution=32)).eval()
    files = write_pretraining_files(root / "mix", 64, WorldConfig(image_size=64, seed=0), vqgan=vqgan,
                                    progress=False)
    rows = files["vision_language"].read_bytes().splitlines(keepends=True)
    target = int(gb * 1024**3)
    big = root / "vision_language_big.tsv"
    written = 0
    with big.open("wb") as handle:
        while written < target:
            for row in rows:
                handle.write(row)
                written += len(row)
                if written >= target:
                    break
    return {"big": str(big), **{k: str(v) for k, v in files.items()}}


def _child(args: argparse.Namespace) -> None:
    import torch

    from ofa.data.dataset import TaskDataset
    from ofa.data.tsv import TSVFile
    from ofa.pretraining.task import PretrainTask
    from ofa.tokenization import OFATokenizer
    from ofa.trainer.data import TaskStream

    files = json.loads(args.files)
    tok = OFATokenizer.from_test_assets()
    task = PretrainTask(files["negatives"], files["text"], files["image"], files["detection"], image_size=64,
                        aux_image_size=64, max_image_size=64)
    started = time.perf_counter()
    with PeakMemory() as memory:
        if args.mode == "baseline_readlines":
            with open(files["big"], encoding="utf-8") as handle:
                lines = handle.readlines()
            index_seconds = time.perf_counter() - started
            rows = len(lines)
            read = time.perf_counter()
            g = torch.Generator().manual_seed(0)
            order = torch.randperm(rows, generator=g)[: args.batches * args.micro].tolist()
            for i, row in enumerate(order):
                task.encode_group(task.parse_row(lines[row].rstrip("\n").split("\t")), tok, True, row)
            samples = len(order)
        else:
            source = TSVFile(files["big"])
            index_seconds = time.perf_counter() - started
            rows = len(source)
            rank, world = (1, 2) if args.mode == "ours_rank1_of_2" else (0, 1)
            stream = TaskStream(TaskDataset(source, task, tok, training=True), args.micro, rank, world, seed=0,
                                pad_id=tok.pad_id, num_workers=args.workers)
            read = time.perf_counter()
            samples = 0
            for _ in range(args.batches):
                samples += len(stream.next())
        seconds = time.perf_counter() - read
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    print(json.dumps({"mode": args.mode, "rows": rows, "index_s": round(index_seconds, 2),
                      "samples_per_s": round(samples / seconds, 1), **memory.as_dict(),
                      "worker_peak_rss_mb": round(children, 1) if args.workers and args.mode != "baseline_readlines"
                      else None}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--micro", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        _child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = _prepare(Path(tmp), args.gb)
        size_gb = os.path.getsize(files["big"]) / 1024**3
        results = {}
        for mode in ("ours_rank0_of_1", "ours_rank1_of_2", "baseline_readlines"):
            proc = subprocess.run([sys.executable, __file__, "--mode", mode, "--files", json.dumps(files),
                                   "--batches", str(args.batches), "--micro", str(args.micro), "--workers",
                                   str(args.workers)], capture_output=True, text=True, check=True)
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, base = results["ours_rank0_of_1"], results["baseline_readlines"]
    emit({"benchmark": "pretrain_data", "file_gb": round(size_gb, 3), "micro_batch": args.micro,
          "batches": args.batches, "workers": args.workers, "matmul_gflops": _gflops(), "results": results,
          "rss_peak_ratio_baseline_over_ours": round(base["rss_peak_mb"] / ours["rss_peak_mb"], 2),
          "environment": environment()})


if __name__ == "__main__":
    main()
