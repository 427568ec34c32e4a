"""Data parallel runs on CPU (gloo): 2 processes with micro-batch 2 follow the 1-process run with micro-batch 4
(same global batch, same accumulation) within 1e-5: TorchEngine under torchrun, DeepSpeed ZeRO-2 and ZeRO-3
(our AdamW as a client optimizer) under torchrun, and ZeRO-2 under the ``deepspeed`` launcher. Only rank 0
writes the metrics and the shared checkpoint files.

BatchNorm statistics are frozen and dropout is off: batch statistics over 2 vs 4 samples and per-rank dropout
masks legitimately differ with the process count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from ofa.serialization import read_weights

STEPS = 3


def overrides(world: Path, tokenizer_dir: Path, out: Path, micro: int) -> list[str]:
    return ["task=caption", f"train_data={world / 'caption_train.tsv'}", f"valid_data={world / 'caption_valid.tsv'}",
            f"tokenizer={tokenizer_dir}", "model=ofa-test",
            'task_options={"image_size": 64, "tokenizer": "simple", "metrics": ["CIDEr"], "max_len": 6}',
            f"micro_batch_size={micro}", "grad_accum=2", f"max_steps={STEPS}", f"save_every={STEPS}", "log_every=1",
            "lr=1e-3", "warmup_steps=0", "weight_decay=0.0", "freeze_resnet_bn=true", "valid_max_examples=2",
            'model_overrides={"dropout": 0.0}', f"output_dir={out}", "--no-progress"]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=environment())
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-6000:])
    return proc


def results(out: Path) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    weights = read_weights(out / "checkpoints" / f"step_{STEPS:08d}")
    return records, weights


@pytest.fixture(scope="module")
def one_process(world: Path, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The reference: TorchEngine, 1 process, micro-batch 4 x 2 accumulation steps."""
    out = tmp_path_factory.mktemp("one") / "run"
    run([sys.executable, "-m", "ofa.trainer.cli", *overrides(world, tokenizer_dir, out, micro=4)])
    return results(out)


def compare(out: Path, reference, stdout: str, ranks: int = 2) -> None:
    records, weights = results(out)
    ref_records, ref_weights = reference
    train = [r for r in records if "loss" in r]
    ref_train = [r for r in ref_records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))  # one record per step: rank 0 writes alone
    for mine, ref in zip(train, ref_train):
        assert mine["ntokens"] == ref["ntokens"] and mine["lr"] == pytest.approx(ref["lr"])
        assert abs(mine["loss"] - ref["loss"]) <= 1e-5 and abs(mine["nll_loss"] - ref["nll_loss"]) <= 1e-5
        assert mine["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4)
    valid = [r for r in records if "valid" in r]
    assert len(valid) == 1 and valid[0]["valid"].keys() == {"CIDEr"}
    assert weights.keys() == ref_weights.keys()
    diff = max(float((weights[k].double() - ref_weights[k].double()).abs().max())
               for k in weights if weights[k].numel())
    assert diff <= 1e-5
    checkpoint = out / "checkpoints" / f"step_{STEPS:08d}"
    assert sorted(p.name for p in checkpoint.glob("rng_rank*.pt")) == [f"rng_rank{r}.pt" for r in range(ranks)]
    assert len([line for line in stdout.splitlines() if line.startswith('{"step"')]) == 1  # rank 0 prints
    assert not list((out / "checkpoints").glob(".tmp-*"))


def torchrun(port: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
            "-m", "ofa.trainer.cli", *args]


@pytest.mark.slow
def test_torchrun_torch_engine(world: Path, tokenizer_dir: Path, tmp_path: Path, one_process,
                               free_port: Callable[[], int]) -> None:
    out = tmp_path / "run"
    proc = run(torchrun(free_port(), overrides(world, tokenizer_dir, out, micro=2)))
    compare(out, one_process, proc.stdout)
    assert (out / "checkpoints" / f"step_{STEPS:08d}" / "engine.pt").is_file()


# Small buckets (several reduce / gather rounds per step even for this tiny model); for ZeRO-3 no parameter is
# kept whole ("persistent"), so every layer is gathered and released around its forward and backward.
USER_JSON = {
    2: {"zero_optimization": {"reduce_bucket_size": 20000, "allgather_bucket_size": 20000}},
    3: {"zero_optimization": {"stage3_param_persistence_threshold": 0, "stage3_prefetch_bucket_size": 20000,
                              "reduce_bucket_size": 20000}},
}


@pytest.mark.slow
@pytest.mark.deepspeed
@pytest.mark.parametrize("stage", [2, 3])
def test_torchrun_deepspeed(stage: int, world: Path, tokenizer_dir: Path, tmp_path: Path, one_process,
                            free_port: Callable[[], int]) -> None:
    pytest.importorskip("deepspeed")
    out = tmp_path / "run"
    user = tmp_path / "ds.json"
    user.write_text(json.dumps(USER_JSON[stage]))
    proc = run(torchrun(free_port(), [*overrides(world, tokenizer_dir, out, micro=2), "engine=deepspeed",
                                      f"zero_stage={stage}", f"deepspeed_config={user}"]))
    compare(out, one_process, proc.stdout)
    states = sorted(p.name for p in (out / "checkpoints" / f"step_{STEPS:08d}" / "deepspeed").iterdir())
    assert [s for s in states if "optim_states" in s] == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
                                                          for r in range(2)]  # each rank its optimizer shard


@pytest.mark.slow
@pytest.mark.deepspeed
def test_deepspeed_launcher(world: Path, tokenizer_dir: Path, tmp_path: Path, one_process,
                            free_port: Callable[[], int]) -> None:
    """The ``deepspeed`` launcher runs CPU-only jobs too: ``--num_gpus N`` is the process count (it sets
    CUDA_VISIBLE_DEVICES, which nothing reads without CUDA) and it passes ``--local_rank`` first."""
    pytest.importorskip("deepspeed")
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("the deepspeed launcher script is not installed")
    out = tmp_path / "run"
    port = free_port()
    proc = run([launcher, "--num_gpus", "2", "--master_port", str(port), "--module", "ofa.trainer.cli",
                *overrides(world, tokenizer_dir, out, micro=2), "engine=deepspeed", "zero_stage=2"])
    compare(out, one_process, proc.stdout)
    # DeepSpeed's shared-memory all-reduce op (inference only) is neither built nor started: nothing is left in
    # /dev/shm (the launcher sets LOCAL_SIZE, which would make every rank create a 66 MB segment there)
    assert "shm_comm_op built" not in proc.stdout + proc.stderr
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
