"""The ``ofa`` command on a test-preset checkpoint directory and real PNG files.

The console script and ``python -m ofa.apps.cli`` run as real subprocesses; they are started together (each pays
torch's start-up) and each test checks one of them. Further cases call :func:`ofa.apps.cli.main` in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

import ofa
from ofa.apps.cli import main
from ofa.data.images import encode_image_base64
from ofa.serialization import read_weights

BUILTIN_TASKS = ["caption", "image_classify", "image_gen", "refcoco", "region_caption", "snli_ve", "sst2",
                 "vqa_gen"]
SMALL = ["-o", "image_size=64"]
GROUNDING = ["-o", "image_size=64", "-o", "max_image_size=64"]
OFA_SCRIPT = Path(sys.executable).parent / "ofa"
HAS_PLUGIN = "count_objects" in ofa.list_tasks()


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> None:
        assert self.returncode == 0, f"{self.args} exited {self.returncode}:\n{self.stderr}"

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, pil_image: Callable[..., Image.Image]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    paths = {"a": root / "a.png", "b": root / "b.png", "big": root / "big.png"}
    pil_image(11, (80, 48)).save(paths["a"])
    pil_image(12, (48, 80)).save(paths["b"])
    pil_image(13, (160, 120)).save(paths["big"])
    rows = [
        ["r1", "img1", "the square on the left", "10,5,40,30", encode_image_base64(pil_image(14, (80, 48)), "PNG")],
        ["r2", "img2", "a broken row with three columns"],
        ["r3", "img3", "the top part", "0,0,48,20", encode_image_base64(pil_image(15, (48, 80)), "JPEG")],
    ]
    paths["tsv"] = root / "refcoco_val.tsv"
    paths["tsv"].write_text("".join("\t".join(r) + "\n" for r in rows))
    paths["draw"] = root / "drawn"
    return paths


@pytest.fixture(scope="module")
def runs(files: dict[str, Path], checkpoint_dir: Path) -> dict[str, Run]:
    """Start every subprocess at once, then wait for all of them."""
    assert OFA_SCRIPT.is_file(), f"the console script is not installed next to {sys.executable}"
    ck = ["--checkpoint", str(checkpoint_dir)]
    script, module = [str(OFA_SCRIPT)], [sys.executable, "-m", "ofa.apps.cli"]
    commands = {
        "tasks": script + ["tasks"],
        "caption": module + ["predict", "--task", "caption", *ck, *SMALL, "-o", "beam_size=2", "-o", "max_len=4",
                             str(files["a"]), str(files["b"])],
        "caption_system_malloc": module + ["predict", "--task", "caption", *ck, *SMALL, "-o", "beam_size=2", "-o",
                                           "max_len=4", "--system-malloc", str(files["a"]), str(files["b"])],
        "draw": script + ["predict", "--task", "refcoco", *ck, *GROUNDING, "--text", "the red square",
                          "--draw", str(files["draw"]), str(files["big"]), str(files["a"])],
        "evaluate": script + ["evaluate", "--task", "refcoco", *ck, *GROUNDING, "--data", str(files["tsv"])],
        "unknown": script + ["predict", "--task", "no_such_task", *ck, str(files["a"])],
    }
    if HAS_PLUGIN:
        commands["count"] = script + ["predict", "--task", "count_objects", *ck, *SMALL, str(files["a"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # several processes share the cores
    env.pop("OFA_SYSTEM_MALLOC", None)  # the commands as users run them (tests/conftest.py sets it for pytest)
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for name, cmd in commands.items()}
    out = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=300)
            out[name] = Run(commands[name], proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return out


def test_tasks_lists_every_task_with_its_distribution(runs: dict[str, Run]) -> None:
    run = runs["tasks"]
    run.check()
    rows = {line.split()[0]: line.split()[1] for line in run.stdout.splitlines() if line.strip()}
    for name in BUILTIN_TASKS:
        assert rows.get(name) == "ofa-unified", run.stdout
    if not HAS_PLUGIN:
        pytest.skip("plugins/ofa-example-task is not installed")
    assert rows.get("count_objects") == "ofa-example-task", run.stdout


def test_predict_caption_prints_one_json_line_per_image(runs: dict[str, Run], files: dict[str, Path]) -> None:
    run = runs["caption"]
    run.check()
    records = run.json_lines()
    assert [r["input"] for r in records] == [str(files["a"]), str(files["b"])]
    assert all(isinstance(r["text"], str) and isinstance(r["score"], float) for r in records)


def test_predict_gives_the_same_records_with_glibcs_default_allocator(runs: dict[str, Run]) -> None:
    runs["caption_system_malloc"].check()
    assert runs["caption_system_malloc"].json_lines() == runs["caption"].json_lines()


def test_predict_refcoco_draws_the_box(runs: dict[str, Run], files: dict[str, Path]) -> None:
    run = runs["draw"]
    run.check()
    records = run.json_lines()
    assert len(records) == 2 and [r["text"] for r in records] == ["the red square"] * 2
    for record, source in zip(records, [files["big"], files["a"]]):
        box = record["box"]
        assert isinstance(box, list) and len(box) == 4 and len(record["bins"]) == 4
        drawn = Path(record["drawn"])
        assert drawn.parent == files["draw"] and drawn.suffix == ".png"
        before = np.asarray(Image.open(source).convert("RGB")).astype(int)
        after = np.asarray(Image.open(drawn).convert("RGB")).astype(int)
        assert before.shape == after.shape and (before != after).any()
        red = np.argwhere((after == [255, 0, 0]).all(axis=-1))  # the noise images have no pure red
        x0, x1 = sorted(box[0::2])
        y0, y1 = sorted(box[1::2])
        if x1 > 60 or y1 > 25:  # else the label in the top-left corner may cover the whole outline
            assert len(red), "no box outline drawn"
        if len(red):
            assert red[:, 1].min() >= np.floor(x0) - 1 and red[:, 1].max() <= np.ceil(x1) + 1
            assert red[:, 0].min() >= np.floor(y0) - 1 and red[:, 0].max() <= np.ceil(y1) + 1
    assert sorted(p.name for p in files["draw"].iterdir()) == ["0000_big.png", "0001_a.png"]


def test_evaluate_skips_a_bad_row_and_prints_metrics(runs: dict[str, Run]) -> None:
    run = runs["evaluate"]
    run.check()
    metrics = json.loads(run.stdout)
    assert metrics["task"] == "refcoco" and metrics["examples"] == 2 and metrics["bad_rows"] == 1
    assert metrics["acc@0.5"] in (0.0, 0.5, 1.0)
    assert "skipping bad row" in run.stderr and "refcoco_val.tsv:2" in run.stderr


def test_predict_with_the_plugin_task(runs: dict[str, Run]) -> None:
    if not HAS_PLUGIN:
        pytest.skip("plugins/ofa-example-task is not installed")
    run = runs["count"]
    run.check()
    (record,) = run.json_lines()
    assert isinstance(record["answer"], str)
    assert record["count"] is None or 0 <= record["count"] <= 10


def test_unknown_task_exits_2_listing_the_tasks(runs: dict[str, Run]) -> None:
    run = runs["unknown"]
    assert run.returncode == 2 and run.stdout == ""
    assert "no_such_task" in run.stderr
    assert all(name in run.stderr for name in BUILTIN_TASKS)
    assert "Traceback" not in run.stderr


# -- in-process ---------------------------------------------------------------------------------------------------
def test_predict_fields_and_text_only_tasks(checkpoint_dir: Path, files: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ck = ["--checkpoint", str(checkpoint_dir)]
    assert main(["predict", "--task", "region_caption", *ck, *GROUNDING, "-o", "beam_size=2", "-o", "max_len=4",
                 "-o", 'metrics=["BLEU"]', "-f", "region=0,0,30,20", str(files["a"]), str(files["b"])]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2 and all(isinstance(r["text"], str) for r in records)

    assert main(["predict", "--task", "sst2", *ck, "--prompt", "a fine film"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["answer"] in ("positive", "negative") and record["input"] is None
    assert record["text"] == "a fine film"

    assert main(["predict", "--task", "image_gen", *ck, "-o", "grid_size=2", "-o", "num_samples=2",
                 "--text", "a red square", "--prompt", "a blue circle"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(r["samples"]) for r in records] == [2, 2]
    assert all(np.array(r["codes"]).shape == (2, 2) for r in records)


def test_one_image_with_several_texts_and_tasks_json(checkpoint_dir: Path, files: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--task", "refcoco", "--checkpoint", str(checkpoint_dir), *GROUNDING, "--text", "left",
                 "--text", "right", "--draw", str(tmp_path / "d"), str(files["a"])]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["input"], r["text"]) for r in records] == [(str(files["a"]), "left"), (str(files["a"]), "right")]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["0000_a.png", "0001_a.png"]

    assert main(["tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"task": "caption", "distribution": "ofa-unified", "object": "ofa.tasks.caption:CaptionTask"} in rows


def test_vqa_candidates_file(checkpoint_dir: Path, files: dict[str, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    candidates = tmp_path / "answers.txt"
    candidates.write_text("red\n\nblue\ntwo\n")
    assert main(["predict", "--task", "vqa_gen", "--checkpoint", str(checkpoint_dir), *SMALL,
                 "--candidates", str(candidates), "--text", "what colour?", str(files["a"])]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["answer"] in ("red", "blue", "two") and len(record["ranked"]) == 3


def test_usage_errors_exit_2(checkpoint_dir: Path, files: dict[str, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    ck = ["--checkpoint", str(checkpoint_dir)]
    assert main(["predict", "--task", "caption", *ck, "-o", "image_size"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["predict", "--task", "caption", *ck, *SMALL]) == 2  # no images
    assert "no inputs" in capsys.readouterr().err
    assert main(["predict", "--task", "caption", *ck, *SMALL, str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert main(["predict", "--task", "caption", "--checkpoint", str(tmp_path), *SMALL, str(files["a"])]) == 2
    capsys.readouterr()
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nc\n")
    assert main(["evaluate", "--task", "refcoco", *ck, *GROUNDING, "--data", str(bad), "--max-bad-rows", "1"]) == 2
    assert "bad rows" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["predict", "--checkpoint", str(checkpoint_dir)])  # argparse: --task is required
    assert info.value.code == 2


def test_evaluate_jsonl(checkpoint_dir: Path, files: dict[str, Path], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "val.jsonl"
    records = [{"id": "x", "image": str(files["a"]), "text": "the left one", "box": [0, 0, 40, 48]},
               {"id": "y", "image": "b.png", "text": "the top", "box": [0, 0, 48, 20]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["evaluate", "--task", "refcoco", "--checkpoint", str(checkpoint_dir), *GROUNDING,
                 "--data", str(data), "--image-root", str(files["b"].parent)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 2 and metrics["bad_rows"] == 0 and 0.0 <= metrics["acc@0.5"] <= 1.0


def test_draw_prediction_geometry() -> None:
    from ofa.apps.visualize import draw_prediction
    from ofa.tasks.answers import AnswerPrediction
    from ofa.tasks.refcoco import GroundingPrediction

    image = Image.new("RGB", (200, 120), (90, 90, 90))
    for box in [(100.0, 50.0, 180.0, 110.0), (180.0, 110.0, 100.0, 50.0)]:  # a model may emit x0 > x1
        drawn = np.asarray(draw_prediction(image, GroundingPrediction(box=box)))
        red = np.argwhere((drawn == [255, 0, 0]).all(axis=-1))
        assert (red[:, 1].min(), red[:, 0].min(), red[:, 1].max(), red[:, 0].max()) == (100, 50, 180, 110)
        assert (drawn[60:100, 110:170] == 90).all()  # the inside is untouched
    labelled = np.asarray(draw_prediction(image, AnswerPrediction(answer="two dogs")))
    assert not (labelled == [255, 0, 0]).all(axis=-1).any()
    assert (labelled[:5, :5] == 0).all() and (labelled[60:, 100:] == 90).all()  # label box top-left only
    assert np.asarray(image).max() == 90  # the input is not modified


class _Runs:
    """Unpickling this runs code: it creates the marker directory."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_predict_refuses_a_pickled_checkpoint_and_says_how_to_opt_in(
        checkpoint_dir: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a copy of the checkpoint in the pre-0.3 layout whose model.pt also pickles an object that runs code
    # (issue #14, item 1)
    tampered = tmp_path / "tampered"
    shutil.copytree(checkpoint_dir, tampered)
    marker = tmp_path / "pwned"
    state = read_weights(tampered)
    (tampered / "model.safetensors").unlink()
    torch.save({**state, "evil": _Runs(marker)}, tampered / "model.pt")
    args = ["predict", "--task", "caption", "--checkpoint", str(tampered), *SMALL, str(files["a"])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.pt" in err and "--trust-pickle" in err and "Traceback" not in err
    assert not marker.exists()
    # the opt-in unpickles it (the payload runs: that is what the flag means), then the extra key is refused
    assert main([*args, "--trust-pickle"]) == 2
    assert marker.exists()
    assert "evil" in capsys.readouterr().err


def test_small_input_errors_name_the_input(checkpoint_dir: Path, files: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # issue #14 item 7: a missing --candidates file and a corrupt config.json are named, without a traceback
    args = ["predict", "--task", "vqa_gen", "--checkpoint", str(checkpoint_dir), *SMALL, "--text", "what?",
            str(files["a"])]
    assert main([*args, "--candidates", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert "nope.txt" in err and "does not exist" in err and "Traceback" not in err
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint_dir, broken)
    (broken / "config.json").write_text('{"format": "ofa-unified", "config": {')
    assert main(["predict", "--task", "caption", "--checkpoint", str(broken), *SMALL, str(files["a"])]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "not valid JSON" in err and "Traceback" not in err


def test_draw_into_an_existing_file_is_refused(checkpoint_dir: Path, files: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"not a directory")
    assert main(["predict", "--task", "refcoco", "--checkpoint", str(checkpoint_dir), *GROUNDING, "--text", "left",
                 "--draw", str(target), str(files["a"])]) == 2
    err = capsys.readouterr().err
    assert "out.png" in err and "must be a directory" in err and "Traceback" not in err
    assert target.read_bytes() == b"not a directory"


def test_predict_records_a_bad_input_and_predicts_the_others(checkpoint_dir: Path, files: dict[str, Path],
                                                             tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """#14 item 4: one unreadable file no longer aborts the run; it gets an error record and the exit is 2."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    argv = ["predict", "--task", "caption", "--checkpoint", str(checkpoint_dir), *SMALL, "--batch-size", "2",
            str(files["a"]), str(broken), str(tmp_path / "gone.png"), str(files["b"])]
    assert main(argv) == 2
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["input"] for r in records] == [str(files["a"]), str(broken), str(tmp_path / "gone.png"),
                                             str(files["b"])]
    assert "error" not in records[0] and "error" not in records[3]
    assert isinstance(records[0]["text"], str) and isinstance(records[3]["score"], float)
    assert records[1]["error"].startswith("DataError: ") and "broken.jpg" in records[1]["error"]
    assert "gone.png" in records[2]["error"] and "does not exist" in records[2]["error"]
    assert "2 of 4 inputs failed" in captured.err and "broken.jpg" in captured.err


def test_predict_non_utf8_text_names_the_users_text(checkpoint_dir: Path, files: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = b"what \xff colour?".decode("utf-8", errors="surrogateescape")  # a non-UTF-8 argv, as Python sees it
    assert main(["predict", "--task", "vqa_gen", "--checkpoint", str(checkpoint_dir), *SMALL,
                 "--text", bad, str(files["a"])]) == 2
    err = capsys.readouterr().err
    assert "character '\\udcff' at index 5" in err and "what" in err


def test_predict_in_bf16(checkpoint_dir: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--task", "caption", "--checkpoint", str(checkpoint_dir), *SMALL, "--dtype", "bf16",
                 str(files["a"])]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert isinstance(record["text"], str) and isinstance(record["score"], float)
