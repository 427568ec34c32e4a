"""ofa.runtime.keep_freed_memory: large blocks freed by torch are reused without page faults (in a subprocess:
the setting is process-wide)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

import ofa

SCRIPT = """
import json, resource, sys
import torch
from ofa.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def blocks(n):
    for _ in range(n):
        x = torch.ones(16 * 2**20)  # 64 MB
        total = float(x.sum())
        del x
    return total
# torch asks posix_memalign for 64-byte alignment, so a freed block of the same size is a few bytes short of the
# next request until freed neighbours have coalesced: the kept heap grows by a block on each of the first rounds
# (measured: 4-6 of them, 1 or 2 threads), then stops
blocks(12)
start = faults()
total = blocks(10)
print(json.dumps({"applied": applied, "faults": faults() - start, "total": total}))
"""


def _run(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    default, kept = _run("default"), _run("keep")
    assert kept["applied"] is True and default["applied"] is False
    assert default["total"] == kept["total"] == 16 * 2**20
    # glibc's default maps each 64 MB block afresh: ~16k faults per block (4 KiB pages), ten blocks
    assert default["faults"] > 10 * 16_000, default
    # kept: not one block's worth of fresh pages in those ten rounds
    assert kept["faults"] < 16_384, (default, kept)


def test_it_is_part_of_the_public_api() -> None:
    assert ofa.keep_freed_memory is ofa.runtime.keep_freed_memory
