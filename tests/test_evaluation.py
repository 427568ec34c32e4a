"""Distributed evaluation and prediction (issue #16 item 3): shards tile the examples, predictions are gathered in
input order, and 2 gloo processes (torchrun, and the DeepSpeed launcher) give exactly one process's predictions
and metrics, with 7 examples (2 does not divide 7)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ofa.data.images import encode_image_base64
from ofa.errors import DataError
from ofa.evaluation import merge_prediction_shards, shard_bounds, shard_file_name

N_EXAMPLES = 7
COMMON = ["--task", "caption", "-o", "image_size=64", "-o", "max_len=6", "-o", "beam_size=2", "--batch-size", "2"]


@given(st.integers(0, 300), st.integers(1, 12))
def test_shards_tile_the_examples(count: int, world: int) -> None:
    bounds = [shard_bounds(count, rank, world) for rank in range(world)]
    assert [i for start, end in bounds for i in range(start, end)] == list(range(count))
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_bad_shard_arguments() -> None:
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        shard_bounds(5, 2, 2)


def _write_shard(directory: Path, rank: int, world: int, indices: list[int]) -> None:
    lines = [json.dumps({"index": i, "text": f"t{i}"}) for i in indices]
    (directory / shard_file_name(rank, world)).write_text("".join(line + "\n" for line in lines))


def test_merge_puts_shards_in_input_order_and_refuses_gaps_and_doubles(tmp_path: Path) -> None:
    _write_shard(tmp_path, 1, 2, [3, 4, 5])
    _write_shard(tmp_path, 0, 2, [0, 1, 2])
    merged = merge_prediction_shards(tmp_path, expected=6)
    assert [json.loads(line)["index"] for line in merged.read_text().splitlines()] == list(range(6))
    with pytest.raises(DataError, match="miss examples \\[6\\]"):
        merge_prediction_shards(tmp_path, expected=7)
    _write_shard(tmp_path, 1, 2, [2, 3, 4, 5])
    with pytest.raises(DataError, match="example 2 is predicted twice"):
        merge_prediction_shards(tmp_path)
    (tmp_path / shard_file_name(1, 2)).unlink()
    with pytest.raises(DataError, match="lacks the prediction shards of ranks \\[1\\]"):
        merge_prediction_shards(tmp_path)
    _write_shard(tmp_path, 0, 3, [0])
    with pytest.raises(DataError, match="2 different runs"):
        merge_prediction_shards(tmp_path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, small_model: Any, tok: Any,
          pil_image: Callable[..., Any]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist-eval")
    small_model.save_pretrained(root / "ck")
    tok.save_pretrained(root / "ck")
    captions = ["a red square", "a blue circle on the left", "two shapes", "a green square at the top",
                "a circle", "a small red circle", "the blue square"]
    rows = [[f"u{i}", f"img{i}", captions[i], "", encode_image_base64(pil_image(20 + i, (48 + 8 * i, 40)), "PNG")]
            for i in range(N_EXAMPLES)]
    (root / "caption_val.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    return {"checkpoint": root / "ck", "data": root / "caption_val.tsv"}


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _cli(setup: dict[str, Path], command: str, *extra: str) -> list[str]:
    return [command, *COMMON, "--checkpoint", str(setup["checkpoint"]), "--data", str(setup["data"]), *extra]


def _torchrun(port: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
            "-m", "ofa.apps.cli", *args]


def _metrics(stdout: str) -> dict[str, Any]:
    """The metrics block (``{`` to ``}`` on lines of their own) among a launcher's log lines."""
    lines = stdout.splitlines()
    start = lines.index("{")
    return json.loads("\n".join(lines[start:lines.index("}", start) + 1]))


@pytest.fixture(scope="module")
def one_process(setup: dict[str, Path]) -> dict[str, Any]:
    """The metrics of ``ofa evaluate`` in one process."""
    return _metrics(_run([sys.executable, "-m", "ofa.apps.cli", *_cli(setup, "evaluate")]).stdout)


@pytest.mark.slow
def test_two_processes_evaluate_and_predict_exactly_as_one(setup: dict[str, Path], one_process: dict[str, Any],
                                                          tmp_path: Path, free_port: Callable[[], int]) -> None:
    two = _run(_torchrun(free_port(), _cli(setup, "evaluate")))
    assert _metrics(two.stdout) == one_process  # printed once, by rank 0
    assert two.stdout.count('"task"') == 1 and _metrics(two.stdout)["examples"] == N_EXAMPLES

    single = _run([sys.executable, "-m", "ofa.apps.cli", *_cli(setup, "predict")]).stdout.splitlines()
    _run(_torchrun(free_port(), _cli(setup, "predict", "--out", str(tmp_path / "preds"))))
    merged = (tmp_path / "preds" / "predictions.jsonl").read_text().splitlines()
    merged_rows, single_rows = [json.loads(line) for line in merged], [json.loads(line) for line in single]
    # Same records; scores to float rounding: each launched process runs 1 thread and batches its own shard, and
    # a different matmul blocking moved a beam score by 8e-8 relative in one CI run.
    assert [{k: v for k, v in r.items() if k != "score"} for r in merged_rows] == \
        [{k: v for k, v in r.items() if k != "score"} for r in single_rows]
    assert [r["score"] for r in merged_rows] == pytest.approx([r["score"] for r in single_rows], rel=1e-5)
    assert [json.loads(line)["id"] for line in merged] == [f"u{i}" for i in range(N_EXAMPLES)]
    shards = sorted(p.name for p in (tmp_path / "preds").glob("predictions.rank*"))
    assert shards == [shard_file_name(0, 2), shard_file_name(1, 2)]
    sizes = [len((tmp_path / "preds" / s).read_text().splitlines()) for s in shards]
    assert sizes == [3, 4]


@pytest.mark.slow
@pytest.mark.deepspeed
def test_the_deepspeed_launcher_shards_evaluation_too(setup: dict[str, Path], one_process: dict[str, Any],
                                                     free_port: Callable[[], int]) -> None:
    """It passes ``--local_rank`` first and sets the rank environment as torchrun does."""
    pytest.importorskip("deepspeed")
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("the deepspeed launcher script is not installed")
    two = _run([launcher, "--num_gpus", "2", "--master_port", str(free_port()), "--module", "ofa.apps.cli",
                *_cli(setup, "evaluate")])
    assert _metrics(two.stdout) == one_process


def test_several_processes_need_an_out_directory(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from ofa.apps.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr("ofa.trainer.distributed.dist.init_process_group", lambda *a, **k: None)
    assert main(_cli(setup, "predict")) == 2
    assert "2 processes need --out DIR" in capsys.readouterr().err
