"""Reading evaluation data (bad rows counted, logged and bounded) and scoring a task on it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image

import ofa
from ofa.data.images import encode_image_base64
from ofa.errors import DataError
from ofa.evaluation import evaluate, read_examples


@pytest.fixture
def sst2_tsv(tmp_path: Path) -> Path:
    path = tmp_path / "sst2.tsv"
    path.write_text("s1\ta fine film\t1\ns2\tmissing label\ns3\tdull\t0\n\ns5\tgreat\tpositive\n")
    return path


def test_bad_rows_are_skipped_counted_and_logged(sst2_tsv: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad: list[tuple[int, str]] = []
    with caplog.at_level(logging.WARNING, logger="ofa.evaluation"):
        examples = read_examples(sst2_tsv, ofa.get_task("sst2"), bad_rows=bad)
    assert [ex.id for ex in examples] == ["s1", "s3", "s5"]
    assert [line for line, _ in bad] == [2, 4]
    assert all("DataError" in reason for _, reason in bad)
    assert "sst2.tsv:2" in caplog.text and "sst2.tsv:4" in caplog.text


def test_too_many_bad_rows_raise(sst2_tsv: Path) -> None:
    with pytest.raises(DataError, match="2 bad rows"):
        read_examples(sst2_tsv, ofa.get_task("sst2"), max_bad_rows=1)
    assert len(read_examples(sst2_tsv, ofa.get_task("sst2"), limit=2)) == 2


def test_format_errors(sst2_tsv: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="format"):
        read_examples(sst2_tsv, ofa.get_task("sst2"), fmt="csv")
    empty = tmp_path / "empty.tsv"
    empty.write_text("only\n")
    with pytest.raises(DataError, match="no usable examples"):
        read_examples(empty, ofa.get_task("sst2"))
    with pytest.raises(DataError, match="does not exist"):
        read_examples(tmp_path / "nope.tsv", ofa.get_task("sst2"))

    class NoReader:
        name = "no_reader"

    with pytest.raises(DataError, match="parse_row"):
        read_examples(sst2_tsv, NoReader())  # type: ignore[arg-type]


def test_jsonl_images_relative_to_the_file(tmp_path: Path, pil_image: Callable[..., Image.Image]) -> None:
    pil_image(0).save(tmp_path / "x.png")
    data = tmp_path / "caps.jsonl"
    data.write_text('{"id": 1, "image": "x.png", "caption": "a square"}\n{"id": 2, "image": "gone.png"}\n')
    bad: list[tuple[int, str]] = []
    (example,) = read_examples(data, ofa.get_task("caption"), bad_rows=bad)
    assert example.target == ["a square"] and example.image.size == (80, 48)
    assert bad[0][0] == 2 and "gone.png" in bad[0][1]


def test_evaluate_scores_the_predictions(tmp_path: Path, small_model: Any, tok: Any,
                                         pil_image: Callable[..., Image.Image]) -> None:
    data = tmp_path / "snli.tsv"
    rows = [[f"u{i}", "im", encode_image_base64(pil_image(i), "PNG"), "a square", "a red square", label]
            for i, label in enumerate(["entailment", "neutral", "contradiction"])]
    data.write_text("".join("\t".join(r) + "\n" for r in rows))
    task = ofa.get_task("snli_ve", image_size=64)
    examples = read_examples(data, task)
    metrics, preds = evaluate(task, small_model, tok, examples, batch_size=2)
    assert [p.id for p in preds] == ["u0", "u1", "u2"]
    expected = sum(p.answer == want for p, want in zip(preds, ["yes", "maybe", "no"])) / 3
    assert metrics == {"accuracy": pytest.approx(expected)}


def test_too_large_a_fraction_of_bad_rows_fails(sst2_tsv, tmp_path) -> None:
    # issue #14 item 7: 100 bad rows of 101 used to give a score over the one good row, exit 0
    good = sst2_tsv.read_text(encoding="utf-8").splitlines()[0]
    data = tmp_path / "mostly_bad.tsv"
    data.write_text("\n".join([good] + ["broken"] * 100) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"100 of 101 rows .* more than max_bad_fraction 0.5"):
        read_examples(data, ofa.get_task("sst2"), max_bad_rows=1000)
    assert len(read_examples(data, ofa.get_task("sst2"), max_bad_rows=1000, max_bad_fraction=1.0)) == 1
    with pytest.raises(DataError, match="max_bad_fraction"):
        read_examples(data, ofa.get_task("sst2"), max_bad_fraction=1.5)
