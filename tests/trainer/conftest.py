"""Fixtures of the trainer tests: a small synthetic shape world (64-pixel PNGs), a BPE trained on its corpus,
and a factory of small ``ofa-test`` run configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from ofa.apps.shapeworld import WorldConfig, write_world
from ofa.tokenization import OFATokenizer
from ofa.trainer import TrainerConfig

CAPTION_OPTIONS = {"image_size": 64, "tokenizer": "simple", "metrics": ["BLEU", "ROUGE_L", "CIDEr"]}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """One intra-op thread while the trainer tests run (the subprocesses get OMP_NUM_THREADS=1 too): the models
    are tiny, and with other processes on the machine the spinning OpenMP threads made a step ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training and 4 validation images of 64 pixels, in every task's TSV layout."""
    out = tmp_path_factory.mktemp("world")
    write_world(out, num_train=16, num_valid=4, config=WorldConfig(image_size=64, seed=0), progress=False)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BPE (about 500 ids) trained on the world's corpus, saved as a tokenizer directory."""
    lines = (world / "corpus.txt").read_text(encoding="utf-8").splitlines()
    tok = OFATokenizer.train(lines, vocab_size=400, num_codes=16, num_bins=64)
    out = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture
def make_config(world: Path, tokenizer_dir: Path, tmp_path: Path) -> Callable[..., TrainerConfig]:
    """``make_config(**changes)``: a 3-step caption run of ``ofa-test`` (4 x 2 per step) under ``tmp_path/run``."""

    def make(**changes: Any) -> TrainerConfig:
        base: dict[str, Any] = dict(
            output_dir=str(tmp_path / "run"), model="ofa-test", tokenizer=str(tokenizer_dir), task="caption",
            task_options=dict(CAPTION_OPTIONS), train_data=str(world / "caption_train.tsv"),
            valid_data=str(world / "caption_valid.tsv"), micro_batch_size=4, grad_accum=2, max_steps=3,
            log_every=1, device="cpu", seed=1)
        if "tasks" in changes:
            for key in ("task", "task_options", "train_data", "valid_data"):
                base.pop(key)
        base.update(changes)
        return TrainerConfig.from_dict(base)

    return make

