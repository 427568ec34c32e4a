"""``ofa-train``: overrides mixed with options, launcher flags, errors as exit code 2 with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ofa.trainer.cli import build_parser, main


@pytest.mark.parametrize("argv, overrides, resume", [
    (["a=1", "--no-progress", "b=2", "--resume", "runs/x", "c=3"], ["a=1", "b=2", "c=3"], "runs/x"),
    (["--local_rank=1", "a=1"], ["a=1"], None),
    (["--local-rank", "0", "--config", "run.json", "a=1"], ["a=1"], None),
    ([], [], None),
])
def test_overrides_may_come_anywhere(argv: list[str], overrides: list[str], resume: str | None) -> None:
    args = build_parser().parse_intermixed_args(argv)
    assert args.overrides == overrides and args.resume == resume


def test_config_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["task=caption", "lr=abc", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ofa-train: error: lr ('abc') must be a number") and "Traceback" not in err
    assert main(["--config", str(tmp_path / "absent.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["learning_rate=1"]) == 2
    assert "valid keys" in capsys.readouterr().err


def test_data_errors_exit_2(capsys: pytest.CaptureFixture[str], make_config, tmp_path: Path) -> None:
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    config = make_config(train_data=str(empty))
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config.to_dict()))
    assert main(["--config", str(path), "--no-progress"]) == 2
    assert "has no rows" in capsys.readouterr().err


def test_a_run_prints_its_result(capsys: pytest.CaptureFixture[str], make_config, tmp_path: Path) -> None:
    config = make_config(max_steps=1, valid_max_examples=2)
    path = tmp_path / "run.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config.to_dict()))
    assert main(["--config", str(path), "max_steps=2", "--no-progress", "save_every=1", "keep_last=1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 2 and "CIDEr" in result["valid"]
    assert sorted(p.name for p in (Path(config.output_dir) / "checkpoints").glob("step_*")) == ["step_00000002"]
