"""Resident memory of ``ofa predict``-style inference over many full-size photos: streamed vs loaded up front.

Writes ``--photos`` JPEG photos of ``--megapixels`` MP (smooth colour fields with noise, so they compress like
photos), and a small random ``ofa-test`` caption model, then in a fresh process each:

* ``ours_stream``: :meth:`ofa.pipeline.Pipeline.stream` (what ``ofa predict`` runs): each batch's photos are
  decoded, resized, predicted and released before the next batch is read;
* ``baseline_load_all``: the previous behaviour, :meth:`Pipeline.examples` (every photo decoded first) then
  :meth:`Pipeline.predict_examples`.

Reports each process's peak resident set (MiB) and wall time, the ratio, and the box's matmul GFLOP/s. Prints
JSON.

    python benchmarks/bench_predict_memory.py [--photos 40] [--megapixels 12] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, matmul_gflops, peak_rss_mb  # noqa: E402


def _prepare(root: Path, photos: int, megapixels: float) -> None:
    import numpy as np
    import torch
    from PIL import Image

    import ofa
    from ofa.tokenization import OFATokenizer

    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    rng = np.random.default_rng(0)
    for i in range(photos):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(field + rng.integers(-6, 7, field.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"photo_{i:03d}.jpg", quality=90)
    tok = OFATokenizer.from_test_assets()
    torch.manual_seed(0)
    model = ofa.build_model("ofa-test", vocab_size=len(tok), code_image_size=16)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")


def _child(root: Path, mode: str, batch_size: int) -> None:
    import ofa

    paths = sorted(str(p) for p in root.glob("photo_*.jpg"))
    runner = ofa.pipeline("caption", model=str(root / "model"), batch_size=batch_size, progress=False,
                          image_size=64, beam_size=2, max_len=4)
    start = time.perf_counter()
    if mode == "ours_stream":
        n = sum(1 for _ in runner.stream(paths, errors="record"))
    else:
        n = len(runner.predict_examples(runner.examples(paths)))
    print(json.dumps({"predictions": n, "seconds": round(time.perf_counter() - start, 2),
                      "rss_peak_mb": round(peak_rss_mb(), 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        _child(Path(args._child[0]), args._child[1], args.batch_size)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _prepare(root, args.photos, args.megapixels)
        results = {}
        for mode in ("ours_stream", "baseline_load_all"):
            out = subprocess.run([sys.executable, __file__, "--_child", str(root), mode,
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    emit({"benchmark": "predict_memory", "photos": args.photos, "megapixels": args.megapixels,
          "batch_size": args.batch_size, **results,
          "peak_rss_ratio_baseline_over_ours": round(results["baseline_load_all"]["rss_peak_mb"]
                                                     / results["ours_stream"]["rss_peak_mb"], 2),
          "matmul_gflops": matmul_gflops(), "environment": environment()})


if __name__ == "__main__":
    main()
