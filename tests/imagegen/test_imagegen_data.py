"""Tests for ofa.vqgan.codes and ofa.data.image_text: images -> codes -> image_gen TSV rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import ofa
from ofa.data.image_text import read_image_text
from ofa.data.tsv import TSVFile
from ofa.errors import ConfigError, DataError, InputError
from ofa.vqgan import images_from_pil
from ofa.vqgan.codes import encode_images_to_codes, write_image_gen_tsv


def test_read_image_text_reads_the_caption_tsv(world: Path) -> None:
    records = list(read_image_text(world / "caption_train.tsv"))
    assert len(records) == 6 and records[0].id == "train-000000-c"
    assert records[0].image.size == (32, 32) and records[0].image.mode == "RGB"
    assert len(records[0].texts) >= 2 and all(t and "&&" not in t for t in records[0].texts)
    assert len(list(read_image_text(world / "caption_train.tsv", limit=2, text_column=None))) == 2


def test_encode_images_to_codes_matches_the_vqgan(vqgan: Any, world: Path) -> None:
    images = [r.image for r in read_image_text(world / "caption_train.tsv", limit=3)]
    codes = encode_images_to_codes(vqgan, images, image_size=8, batch_size=2)
    assert len(codes) == 3 and all(len(c) == 16 for c in codes)  # 8 px / factor 2 = 4x4
    expected = vqgan.encode(images_from_pil(images, 8)).reshape(3, -1).tolist()
    assert codes == expected
    assert encode_images_to_codes(vqgan, images_from_pil(images, 8)) == expected  # a tensor works too
    assert all(0 <= c < 64 for row in codes for c in row)


def test_tsv_conversion_round_trips_through_parse_row(vqgan: Any, world: Path, tmp_path: Path, tok: Any) -> None:
    out = tmp_path / "image_gen_train.tsv"
    summary = write_image_gen_tsv(world / "caption_train.tsv", out, vqgan, image_size=4, batch_size=4)
    assert summary == {"rows": 6, "images": 6, "grid_size": 2, "num_codes": 64, "out": str(out)}
    records = list(read_image_text(world / "caption_train.tsv"))
    codes = encode_images_to_codes(vqgan, [r.image for r in records], image_size=4)
    task = ofa.get_task("image_gen", grid_size=2)
    rows = TSVFile(out)
    for i, record in enumerate(records):
        example = task.parse_row(rows[i])
        assert example.id == record.id and example.text == record.texts[0] and example.target == codes[i]
        sample = task.encode(example, tok, training=True)  # trains as it is
        assert sample.target == tok.encode_codes(codes[i]) + [tok.eos_id]


def test_all_captions_jsonl_input_and_a_saved_vqgan(vqgan_dir: Path, world: Path, tmp_path: Path) -> None:
    records = list(read_image_text(world / "caption_train.tsv", limit=2))
    lines = []
    for i, record in enumerate(records):
        record.image.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"id": f"im{i}", "image": f"{i}.png", "captions": record.texts[:2]}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "codes.tsv"
    summary = write_image_gen_tsv(tmp_path / "data.jsonl", out, str(vqgan_dir), image_size=4, captions="all")
    assert summary["rows"] == 4 and summary["images"] == 2
    rows = TSVFile(out)
    assert [rows[i][0] for i in range(4)] == ["im0-0", "im0-1", "im1-0", "im1-1"]
    assert rows[1][2] == records[0].texts[1]


def test_bad_conversion_inputs_raise(vqgan: Any, world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of the VQGAN's downsampling factor 2"):
        write_image_gen_tsv(world / "caption_train.tsv", tmp_path / "x.tsv", vqgan, image_size=5)
    with pytest.raises(ConfigError, match="captions"):
        write_image_gen_tsv(world / "caption_train.tsv", tmp_path / "x.tsv", vqgan, captions="some")  # type: ignore
    with pytest.raises(DataError, match="does not exist"):
        write_image_gen_tsv(tmp_path / "missing.tsv", tmp_path / "x.tsv", vqgan)
    with pytest.raises(DataError, match="columns"):
        write_image_gen_tsv(world / "caption_train.tsv", tmp_path / "x.tsv", vqgan, image_size=4, caption_column=9)
    with pytest.raises(DataError, match="base64"):
        write_image_gen_tsv(world / "caption_train.tsv", tmp_path / "x.tsv", vqgan, image_size=4, image_column=2)
    with pytest.raises(InputError, match="non-empty list"):
        encode_images_to_codes(vqgan, [])
    with pytest.raises(InputError, match="not a PIL image"):
        encode_images_to_codes(vqgan, ["x"], image_size=4)  # type: ignore[list-item]
    with pytest.raises(InputError, match="shape"):
        encode_images_to_codes(vqgan, torch.zeros(3, 4, 4))
