"""The example plugin's own tests: ofa discovers it, its token layout, decode, score, and a run through
``ofa.pipeline`` and the ``ofa`` command with the ``ofa-test`` preset (random weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import ofa
from ofa.errors import DataError
from ofa.generation import TrieConstraint
from ofa.tasks import task_info
from ofa.tasks.base import Example, Sample
from ofa_example_task import CountObjectsTask
from ofa_example_task.counting import NUMBER_WORDS, CountPrediction

SIZE = 64


@pytest.fixture(scope="module")
def tok() -> Any:
    return ofa.OFATokenizer.from_test_assets()


@pytest.fixture(scope="module")
def model(tok: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ofa.build_model("ofa-test", vocab_size=len(tok), code_image_size=16).eval()


def noise_image(seed: int, size: tuple[int, int] = (80, 48)) -> Image.Image:
    pixels = np.random.RandomState(seed).randint(0, 256, size=(size[1], size[0], 3)).astype("uint8")
    return Image.fromarray(pixels, "RGB")


def test_ofa_discovers_the_task() -> None:
    assert "count_objects" in ofa.list_tasks()
    (info,) = [p for p in task_info() if p.name == "count_objects"]
    assert info.distribution == "ofa-example-task"
    assert info.value == "ofa_example_task.counting:CountObjectsTask"
    task = ofa.get_task("count_objects", image_size=SIZE, max_count=5)
    assert isinstance(task, CountObjectsTask) and task.answers == NUMBER_WORDS[:6]


def test_encode_layout(tok: Any) -> None:
    task = CountObjectsTask(image_size=SIZE)
    image = noise_image(0)
    sample = task.encode(Example(id="e", image=image, target=3), tok, training=True)
    assert isinstance(sample, Sample) and sample.id == "e"
    assert sample.source == tok.encode_source(" how many objects are in the image?")
    assert sample.target == tok.encode(" three") + [tok.eos_id]
    assert sample.prev_output == [tok.bos_id] + tok.encode(" three")
    assert sample.image.shape == (3, SIZE, SIZE) and sample.patch_mask
    assert sample.meta["original_size"] == (80, 48)
    inference = task.encode(Example(id="e", image=image), tok)
    assert inference.target is None and inference.source == sample.source


def test_encode_rejects_bad_examples(tok: Any) -> None:
    task = CountObjectsTask(image_size=SIZE, max_count=3)
    with pytest.raises(DataError, match="outside 0..3"):
        task.encode(Example(id=0, image=noise_image(0), target=4), tok, training=True)
    with pytest.raises(DataError, match="needs an image"):
        task.encode(Example(id=0, target=1), tok)
    for target in [None, "many"]:
        with pytest.raises(DataError, match="no integer count"):
            task.encode(Example(id=0, image=noise_image(0), target=target), tok, training=True)


def test_decode(tok: Any) -> None:
    task = CountObjectsTask()
    sample = Sample(id=7, source=[])
    assert task.decode(tok.encode(" seven") + [tok.eos_id], tok, sample) == CountPrediction(id=7, count=7,
                                                                                            answer="seven")
    assert task.decode(tok.encode(" zero"), tok).count == 0
    odd = task.decode(tok.encode(" many"), tok, sample)
    assert odd.count is None and odd.answer == "many"


def test_score_on_hand_made_predictions() -> None:
    task = CountObjectsTask()
    preds = [CountPrediction(count=2), CountPrediction(count=None, answer="lots"), CountPrediction(count=5)]
    refs = [Example(target=2), Example(target=1), Example(target="3")]
    assert task.score(preds, refs) == {"count_accuracy": pytest.approx(1 / 3), "count_mae": pytest.approx(1.0)}
    with pytest.raises(DataError):
        task.score(preds[:1], refs)


def test_generation_is_restricted_to_number_words(tok: Any) -> None:
    config = CountObjectsTask(max_count=4).generation_config(tok)
    (constraint,) = config.processors
    assert isinstance(constraint, TrieConstraint) and len(constraint.trie) == 5
    first_tokens = {tok.encode(" " + w)[0] for w in NUMBER_WORDS[:5]}
    assert sorted(constraint.trie.next_tokens([tok.bos_id])) == sorted(first_tokens)


def test_parse_row() -> None:
    from ofa.data.images import encode_image_base64

    task = CountObjectsTask()
    image = noise_image(1)
    example = task.parse_row(["u1", "4", encode_image_base64(image, "PNG")])
    assert example.id == "u1" and example.target == 4 and example.image.tobytes() == image.tobytes()
    with pytest.raises(DataError, match="3 TSV columns"):
        task.parse_row(["u1", "4"])


def test_through_the_pipeline(tok: Any, model: Any, tmp_path: Path) -> None:
    path = tmp_path / "objects.png"
    noise_image(2, (70, 50)).save(path)
    runner = ofa.pipeline("count_objects", model=model, tokenizer=tok, image_size=SIZE)
    pred = runner(str(path))
    assert isinstance(pred, CountPrediction) and pred.id == 0
    # the trie only lets the model spell a number word, so even random weights give a count
    assert pred.answer in NUMBER_WORDS and pred.count == NUMBER_WORDS.index(pred.answer)
    assert isinstance(pred.score, float)
    both = runner([path, noise_image(3)])
    assert [p.id for p in both] == [0, 1] and all(p.count is not None for p in both)
    assert both[0].answer == pred.answer


def test_through_the_cli(tok: Any, model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ofa.apps.cli import main

    model.save_pretrained(tmp_path / "ck")
    tok.save_pretrained(tmp_path / "ck")
    path = tmp_path / "objects.png"
    noise_image(2, (70, 50)).save(path)
    assert main(["predict", "--task", "count_objects", "--checkpoint", str(tmp_path / "ck"), "-o", "image_size=64",
                 str(path)]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["input"] == str(path) and record["answer"] in NUMBER_WORDS and record["count"] is not None

    data = tmp_path / "counts.tsv"
    from ofa.data.images import encode_image_base64

    rows = [["a", "2", encode_image_base64(noise_image(4), "PNG")], ["b", "9", encode_image_base64(noise_image(5))]]
    data.write_text("".join("\t".join(row) + "\n" for row in rows))
    assert main(["evaluate", "--task", "count_objects", "--checkpoint", str(tmp_path / "ck"), "-o", "image_size=64",
                 "--data", str(data)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 2 and 0.0 <= metrics["count_accuracy"] <= 1.0 and metrics["count_mae"] >= 0.0
