"""Encoder and teacher-forced forward latency and peak memory, per attention backend.

OFA-Tiny and OFA-Base with random weights, 384x384 images, an 8-token instruction and a 16-token target,
batch 1 and 8, backends eager / sdpa / xformers. xformers runs only on CUDA in half precision; elsewhere the
call falls back to SDPA, and the JSON says so (``"ran": "sdpa (fallback)"``). Prints one JSON object.

    python benchmarks/bench_forward.py [--models ofa-tiny,ofa-base] [--batches 1,8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, emit, environment, time_it  # noqa: E402

import ofa  # noqa: E402


def make_inputs(batch: int, size: int, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 50000, (batch, 8), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    prev = torch.randint(4, 50000, (batch, 16), generator=g)
    prev[:, 0] = 0
    images = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(dtype)
    return {"src_tokens": src.to(device), "prev_output_tokens": prev.to(device), "patch_images": images.to(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ofa-tiny,ofa-base")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--backends", default="eager,sdpa,xformers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    runs = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = ofa.build_model(name).eval().to(device=args.device, dtype=dtype)
        for batch in (int(b) for b in args.batches.split(",")):
            inputs = make_inputs(batch, args.image_size, args.device, dtype)
            for backend in args.backends.split(","):
                try:
                    model.set_attention_backend(backend)
                except ofa.errors.ConfigError as exc:
                    runs.append({"model": name, "batch": batch, "backend": backend, "skipped": str(exc)})
                    continue
                ran = backend
                if backend == "xformers" and not (args.device == "cuda" and dtype != torch.float32):
                    ran = "sdpa (fallback: xformers needs CUDA fp16/bf16)"
                with torch.inference_mode():
                    def encode(model: Any = model) -> object:  # bound now: the loop deletes `model` later
                        return model.encode(inputs["src_tokens"], inputs["patch_images"])

                    def forward(model: Any = model) -> object:
                        return model(inputs["src_tokens"], inputs["prev_output_tokens"], inputs["patch_images"])

                    with PeakMemory() as enc_mem:
                        enc_time = time_it(encode, repeats=args.repeats)
                    with PeakMemory() as fwd_mem:
                        fwd_time = time_it(forward, repeats=args.repeats)
                runs.append({
                    "model": name, "batch": batch, "backend": backend, "ran": ran,
                    "encoder_ms": round(enc_time["median_s"] * 1000, 2),
                    "encoder_memory": enc_mem.as_dict(),
                    "forward_ms": round(fwd_time["median_s"] * 1000, 2),
                    "forward_memory": fwd_mem.as_dict(),
                })
        del model
    emit({"benchmark": "forward", "env": environment(),
          "setting": {"image_size": args.image_size, "src_len": 8, "tgt_len": 16, "dtype": args.dtype,
                      "device": args.device}, "runs": runs})


if __name__ == "__main__":
    main()
