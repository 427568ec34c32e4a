"""Safety of the trainer's run directory (issue #14, items 1-3): resume never unpickles code without an opt-in, a new
run does not start on top of another one, and a damaged newest checkpoint falls back to the previous intact one."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch

from ofa.errors import CheckpointError, ConfigError
from ofa.serialization import MANIFEST_NAME, verify_manifest, write_manifest
from ofa.trainer import Trainer
from ofa.trainer.checkpoint import CheckpointManager, capture_rng, restore_rng
from ofa.trainer.cli import main as train_main


class Payload:
    """Unpickling this runs code: it creates the marker directory."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _run(make_config, steps: int = 2, **changes) -> Trainer:
    trainer = Trainer(make_config(max_steps=steps, save_every=1, keep_last=3, **changes), progress=False)
    trainer.train()
    return trainer


def _tamper(checkpoint: Path, name: str, marker: Path) -> None:
    """Replace one file with a pickle that runs code, and rewrite the manifest as an attacker would."""
    state = torch.load(checkpoint / name, weights_only=True)
    torch.save({**state, "evil": Payload(marker)}, checkpoint / name)
    write_manifest(checkpoint)


def test_the_trainers_own_files_load_weights_only(make_config) -> None:
    trainer = _run(make_config)
    checkpoint = trainer.checkpoints.latest()
    assert checkpoint is not None and checkpoint.name == "step_00000002"
    for name in ("trainer_state.pt", "rng_rank0.pt", "engine.pt"):
        torch.load(checkpoint / name, weights_only=True)  # raises on any pickled object
    assert not (checkpoint / "model.pt").exists()  # the weights are safetensors: no pickle at all
    safetensors.torch.load_file(checkpoint / "model.safetensors")
    assert verify_manifest(checkpoint)
    listed = json.loads((checkpoint / MANIFEST_NAME).read_text())["files"]
    assert {"trainer_state.pt", "rng_rank0.pt", "engine.pt", "model.safetensors", "config.json"} <= set(listed)


def test_rng_states_round_trip_through_plain_containers() -> None:
    import random

    import numpy as np

    state = capture_rng()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and (expected[1] == again[1]).all() and expected[2] == again[2]


@pytest.mark.parametrize("name", ["trainer_state.pt", "rng_rank0.pt"])
def test_resume_refuses_a_tampered_pickle_unless_trusted(make_config, tmp_path: Path, name: str) -> None:
    trainer = _run(make_config)
    checkpoint = trainer.checkpoints.latest()
    marker = tmp_path / "pwned"
    _tamper(checkpoint, name, marker)
    with pytest.raises(CheckpointError, match=r"(?s)" + name + r".*mkdir.*trust_pickle=True.*--trust-pickle"):
        Trainer(make_config(max_steps=3), resume=checkpoint, progress=False)
    assert not marker.exists()
    # the explicit opt-in unpickles it: the payload runs (which is what the opt-in means)
    Trainer(make_config(max_steps=3), resume=checkpoint, trust_pickle=True, progress=False)
    assert marker.exists()


def test_resume_refuses_pickled_objects_in_any_engine_file(make_config, tmp_path: Path) -> None:
    trainer = _run(make_config)
    checkpoint = trainer.checkpoints.latest()
    marker = tmp_path / "pwned"
    torch.save({"weights": torch.zeros(1), "evil": Payload(marker)}, checkpoint / "deepspeed_shard.pt")
    write_manifest(checkpoint)
    with pytest.raises(CheckpointError, match="deepspeed_shard.pt"):
        Trainer(make_config(max_steps=3), resume=checkpoint, progress=False)
    assert not marker.exists()


def test_cli_resume_refusal_says_how_to_opt_in(make_config, tmp_path: Path, capsys) -> None:
    trainer = _run(make_config)
    _tamper(trainer.checkpoints.latest(), "trainer_state.pt", tmp_path / "pwned")
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(make_config(max_steps=3).to_dict()))
    assert train_main(["--config", str(config_file), "--resume", str(trainer.output_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--trust-pickle" in err and "trainer_state.pt" in err
    assert not (tmp_path / "pwned").exists()


def test_a_new_run_in_a_used_output_dir_is_refused(make_config, tmp_path: Path, capsys) -> None:
    first = _run(make_config, steps=3)
    old_latest = (first.output_dir / "checkpoints" / "latest").read_text()
    with pytest.raises(ConfigError, match=r"already holds a run .*--resume.*--overwrite"):
        Trainer(make_config(max_steps=2), progress=False)
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(make_config(max_steps=2, save_every=1, keep_last=3).to_dict()))
    assert train_main(["--config", str(config_file), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # nothing of the old run was touched by the refusals
    assert (first.output_dir / "checkpoints" / "latest").read_text() == old_latest == "step_00000003"
    # --overwrite replaces it: only the new run's checkpoints and log records remain
    assert train_main(["--config", str(config_file), "--overwrite", "--no-progress"]) == 0
    root = first.output_dir / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000001", "step_00000002"]
    latest = root / (root / "latest").read_text()
    assert latest.name == "step_00000002" and verify_manifest(latest)
    steps = [json.loads(line).get("step") for line in (first.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2 and steps.count(1) == 1


def test_an_empty_output_dir_is_fine(make_config, tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    Trainer(make_config(max_steps=1), progress=False)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, name", [(_truncate, "model.safetensors"), (_truncate, "trainer_state.pt"),
                                          (_flip, "engine.pt"), (_flip, "model.safetensors")])
def test_resume_falls_back_from_a_damaged_latest_checkpoint(make_config, caplog, damage, name) -> None:
    trainer = _run(make_config, steps=3)
    root = trainer.output_dir / "checkpoints"
    damage(root / "step_00000003" / name)
    with caplog.at_level(logging.WARNING):
        resumed = Trainer(make_config(max_steps=4), resume=trainer.output_dir, progress=False)
    assert resumed.step == 2
    assert any("step_00000003" in r.getMessage() and name in r.getMessage() for r in caplog.records)
    # naming the damaged checkpoint itself is an error that names the file
    with pytest.raises(CheckpointError, match=name):
        Trainer(make_config(max_steps=4), resume=root / "step_00000003", progress=False)


def test_manifest_is_written_last_and_names_missing_files(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "ckpt")
    path = manager.save(1, lambda d: torch.save({"w": torch.ones(2)}, d / "model.pt"), {"step": 1})
    manifest = json.loads((path / MANIFEST_NAME).read_text())["files"]
    assert set(manifest) == {"model.pt", "rng_rank0.pt", "trainer_state.pt"}
    assert all(manifest[n]["size"] == os.path.getsize(path / n) for n in manifest)
    assert zipfile.is_zipfile(path / "model.pt")
    (path / "rng_rank0.pt").unlink()
    with pytest.raises(CheckpointError, match="rng_rank0.pt.*missing"):
        verify_manifest(path)
    (path / MANIFEST_NAME).unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        verify_manifest(path)
    assert verify_manifest(path, required=False) is False


def test_an_unknown_preset_is_named_with_the_presets(make_config) -> None:
    with pytest.raises(ConfigError, match=r"'ofa-nosuch' is neither a preset \(.*ofa-base.*\) nor a checkpoint"):
        Trainer(make_config(model="ofa-nosuch"), progress=False)
