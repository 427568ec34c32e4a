"""Load test of ``ofa serve`` on localhost: throughput and latency with dynamic batching vs one request at a time.

Saves a random ``ofa-tiny`` caption model (the test BPE with OFA's 8192 codes and 1000 bins, so the output layer
has 9,837 rows), then starts two servers of it in subprocesses:

* ``batched``: ``--max-batch-size 16 --batch-timeout 0.02`` (requests from concurrent clients share model calls);
* ``one_at_a_time``: ``--max-batch-size 1`` (the baseline: every request is its own model call).

For 1, 4 and 16 concurrent clients (each sends ``--requests`` / clients requests back to back, distinct images)
it reports requests per second and p50 / p99 latency for both, and the throughput ratio. Bounded: only
127.0.0.1, a fixed number of requests. Prints JSON with the box's matmul GFLOP/s.

    python benchmarks/bench_serve.py [--requests 96] [--image-size 256] [--beam-size 5]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, matmul_gflops  # noqa: E402


def _prepare(root: Path) -> Path:
    import torch

    import ofa

    tok = ofa.OFATokenizer.from_test_assets(num_codes=8192, num_bins=1000)
    torch.manual_seed(0)
    model = ofa.build_model("ofa-tiny", vocab_size=len(tok)).eval()
    model.save_pretrained(root / "ck")
    tok.save_pretrained(root / "ck")
    return root / "ck"


def _images(count: int) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        pixels = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        out.append(base64.b64encode(buffer.getvalue()).decode())
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(checkpoint: Path, max_batch: int, args: argparse.Namespace,
           log: Any) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ofa.apps.cli", "-v", "serve", "--task", "caption", "--checkpoint",
                             str(checkpoint), "--port", str(port), "--max-batch-size", str(max_batch),
                             "--batch-timeout", "0.02", "-o", f"image_size={args.image_size}",
                             "-o", f"beam_size={args.beam_size}", "-o", "max_len=16"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}")
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become healthy in 300 s")


def _request(port: int, image: str) -> float:
    body = json.dumps({"image": image}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
        if response.status != 200:
            raise SystemExit(f"request failed with {response.status}")
    return time.perf_counter() - start


def _load(port: int, images: list[str], clients: int) -> dict[str, float]:
    for image in images[:2]:  # warm-up
        _request(port, image)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(lambda image: _request(port, image), images))
    wall = time.perf_counter() - start

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {"requests_per_s": round(len(images) / wall, 2), "p50_ms": round(1000 * quantile(0.5), 1),
            "p99_ms": round(1000 * quantile(0.99), 1), "wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--beam-size", type=int, default=5)
    args = parser.parse_args()
    gflops = matmul_gflops()
    images = _images(args.requests)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = _prepare(Path(tmp))
        for name, max_batch in (("batched", 16), ("one_at_a_time", 1)):
            log_path = Path(tmp) / f"{name}.log"
            with open(log_path, "w") as log:
                proc, port = _start(checkpoint, max_batch, args, log)
                try:
                    results[name] = {str(c): _load(port, images, c) for c in (1, 4, 16)}
                except Exception:
                    print(log_path.read_text()[-4000:], file=sys.stderr)
                    raise
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
    ratios = {str(c): round(results["batched"][str(c)]["requests_per_s"]
                            / results["one_at_a_time"][str(c)]["requests_per_s"], 2) for c in (1, 4, 16)}
    emit({"benchmark": "serve", "model": "ofa-tiny (random), caption", "requests": args.requests,
          "image_size": args.image_size, "beam_size": args.beam_size, **results,
          "throughput_ratio_batched_vs_one_at_a_time": ratios, "matmul_gflops": gflops, **environment()})


if __name__ == "__main__":
    main()
