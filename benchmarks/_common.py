"""Shared helpers for the benchmark scripts (timing, peak memory, JSON output). Public API use only."""

from __future__ import annotations

import gc
import json
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable

import torch


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class TorchCPUPeak:
    """Peak bytes allocated by torch's CPU allocator inside a block, via the profiler-free memory stats when
    available, else Python's tracemalloc is not meaningful for torch: fall back to RSS growth."""

    def __enter__(self) -> "TorchCPUPeak":
        gc.collect()
        self.start_rss = peak_rss_mb()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.rss_peak_mb = peak_rss_mb()
        self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def time_it(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> dict[str, float]:
    """Median and min wall time (seconds) over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))


