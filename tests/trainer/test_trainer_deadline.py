"""``max_minutes``: a wall-clock deadline that stops training on time, then still validates and saves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ofa.errors import ConfigError
from ofa.trainer import Trainer


def test_the_deadline_stops_training_then_validates_and_saves(make_config) -> None:
    config = make_config(max_steps=100_000, max_minutes=0.05, validate_every=0, save_every=0,
                         valid_max_examples=2)
    trainer = Trainer(config, progress=False)
    started = time.perf_counter()
    valid = trainer.train()
    elapsed = time.perf_counter() - started
    assert 1 <= trainer.step < 100_000
    # one step past the deadline at most, then one validation pass (a few seconds for this tiny model)
    assert elapsed < 3.0 + 30.0, elapsed
    assert valid, "the final validation still ran"
    out = Path(config.output_dir)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    stop = [r for r in records if r.get("stopped") == "max_minutes"]
    assert stop and stop[0]["step"] == trainer.step and stop[0]["planned_steps"] == 100_000
    assert any("valid" in r for r in records)
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step_{trainer.step:08d}"


def test_no_deadline_by_default_and_bad_values_refused(make_config) -> None:
    assert make_config().max_minutes is None
    for bad in (0, -1, float("inf"), "5"):
        with pytest.raises(ConfigError, match="max_minutes"):
            make_config(max_minutes=bad)
