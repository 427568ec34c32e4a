"""Fuzz: TSV rows in the OFA layouts of caption, refcoco, vqa_gen and snli_ve (wrong column counts, bad base64,
boxes with NaN/inf/negative/reversed coordinates, odd answers and labels), and whole files (CRLF, BOM, non-UTF-8
bytes, blank lines). A row parses and encodes into a sane training sample, or raises a DataError naming the bad
field; a file reads, or raises a DataError naming the file."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from PIL import Image

from ofa.evaluation import read_examples
from ofa.tasks import get_task

TASKS = {"caption": {"image_size": 32}, "refcoco": {"image_size": 32, "max_image_size": 32},
         "vqa_gen": {"image_size": 32}, "snli_ve": {"image_size": 32}}


def _b64_image(seed: int, size: tuple[int, int]) -> str:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


GOOD_IMAGES = [_b64_image(i, size) for i, size in enumerate([(20, 12), (1, 1), (300, 2), (16, 16)])]
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10**6, 10**6),
                    st.sampled_from(["nan", "inf", "-inf", "1e400", "", " ", "0x10", "1_0"]))


def _text() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=30), st.sampled_from(["a red square", " ", "", "what colour?", "<bin_3>"]))


def _image_field() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(GOOD_IMAGES), _text(),
                     st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode("ascii")),
                     st.sampled_from(GOOD_IMAGES).map(lambda s: s[: len(s) // 2]))


def _box_field() -> st.SearchStrategy[str]:
    return st.one_of(st.lists(NUMBERS, min_size=3, max_size=5).map(lambda v: ",".join(map(str, v))),
                     st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30), st.integers(0, 30))
                     .map(lambda v: ",".join(map(str, v))), _text())


def _answers_field() -> st.SearchStrategy[str]:
    item = st.tuples(NUMBERS, _text()).map(lambda p: f"{p[0]}|!+{p[1]}")
    return st.one_of(st.lists(item, max_size=4).map("&&".join), _text())


def _columns(task: str) -> st.SearchStrategy[list[str]]:
    text = _text()
    if task == "caption":
        cols = [text, text, text.map(lambda t: f"{t}&&{t}"), text, _image_field()]
    elif task == "refcoco":
        cols = [text, text, text, _box_field(), _image_field()]
    elif task == "vqa_gen":
        cols = [text, text, text, _answers_field(), text, _image_field()]
    else:
        cols = [text, text, _image_field(), text, text,
                st.one_of(st.sampled_from(["entailment", "neutral", "contradiction", " neutral "]), text)]
    return st.tuples(*cols).map(list)


@st.composite
def rows(draw: Any) -> tuple[str, list[str]]:
    task = draw(st.sampled_from(sorted(TASKS)))
    fields = draw(_columns(task))
    change = draw(st.sampled_from(["none", "none", "drop", "add"]))
    if change == "drop" and fields:
        del fields[draw(st.integers(0, len(fields) - 1))]
    elif change == "add":
        fields.insert(draw(st.integers(0, len(fields))), draw(_text()))
    return task, [f.replace("\t", " ").replace("\n", " ").replace("\r", " ") for f in fields]


def _check_sample(task: Any, sample: Any, tok: Any) -> None:
    vocab = len(tok)
    for ids in (sample.source, sample.target, sample.prev_output):
        assert ids and all(0 <= int(i) < vocab for i in ids)
    if sample.image is not None:
        assert bool(torch.isfinite(sample.image).all())


@pytest.fixture(scope="module")
def tasks() -> dict[str, Any]:
    return {name: get_task(name, **options) for name, options in TASKS.items()}


def test_tsv_rows(fuzz: Any, profile: Any, tasks: dict[str, Any], tok: Any) -> None:
    def body(case: tuple[str, list[str]]) -> None:
        name, fields = case
        task = tasks[name]
        try:
            example = task.parse_row(fields)
            sample = task.encode(example, tok, training=True)
        except Exception as exc:  # noqa: BLE001 - the property decides
            fuzz.expect(exc, "column", "image", "box", "answer", "label", "caption", "question", "expression",
                        "hypothesis", "target", "base64", "empty", "text")
            return
        if name == "refcoco":
            box = example.target
            assert len(box) == 4 and all(math.isfinite(v) for v in box) and box[0] <= box[2] and box[1] <= box[3]
        if name == "vqa_gen":
            assert all(math.isfinite(c) and c >= 0 for c in example.target.values())
        _check_sample(task, sample, tok)

    fuzz.run("tsv_rows", profile, 80, rows(), body)


@st.composite
def tsv_files(draw: Any) -> tuple[str, bytes]:
    task = draw(st.sampled_from(sorted(TASKS)))
    lines = [("\t".join(draw(_columns(task)))).encode("utf-8", "surrogatepass") for _ in range(draw(st.integers(0, 4)))]
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from([b"", b"\t", b"\xff\xfe bad", b" \x00"])))
    newline = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    data = newline.join(lines) + (newline if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return task, data


def test_tsv_files(fuzz: Any, profile: Any, tasks: dict[str, Any], tok: Any, tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"

    def body(case: tuple[str, bytes]) -> None:
        name, data = case
        path.write_bytes(data)
        task = tasks[name]
        try:
            examples = read_examples(path, task, max_bad_rows=10**6, max_bad_fraction=1.0)
            for example in examples:
                _check_sample(task, task.encode(example, tok, training=True), tok)
        except Exception as exc:  # noqa: BLE001 - the property decides
            fuzz.expect(exc, str(path), "example")

    fuzz.run("tsv_files", profile, 30, tsv_files(), body)
