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


def _status_kb(field: str) -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block: the process's resident-set high-water mark (reset at entry through
    ``/proc/self/clear_refs`` on Linux) and, on CUDA, the peak bytes allocated by torch.

    ``rss_peak_mb`` is the whole process's peak while the block ran (model weights included);
    ``rss_growth_mb`` is that peak minus the resident size at entry (the block's own working memory).
    """

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.start_mb = (_status_kb("VmRSS") or 0.0) / 1024
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: Any) -> None:
        hwm = _status_kb("VmHWM")
        self.rss_peak_mb = hwm / 1024 if hwm is not None else peak_rss_mb()
        self.rss_growth_mb = self.rss_peak_mb - self.start_mb
        self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None

    def as_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"rss_peak_mb": round(self.rss_peak_mb, 1),
                                        "rss_growth_mb": round(self.rss_growth_mb, 1)}
        if self.cuda_peak_mb is not None:
            out["cuda_peak_mb"] = round(self.cuda_peak_mb, 1)
        return out


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


def matmul_gflops(size: int = 2048, runs: int = 10) -> float:
    """The box's fp32 matmul speed (``size``-square, current thread count), the figure to quote next to times."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(runs):
        a @ b
    return round(2 * size**3 / ((time.perf_counter() - start) / runs) / 1e9, 1)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))


