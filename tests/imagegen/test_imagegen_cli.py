"""Tests for the text-to-image commands: ``ofa generate-image``, ``ofa train-vqgan``, ``ofa encode-images``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ofa.apps.cli import main
from ofa.data.tsv import TSVFile
from ofa.vqgan import VQGANConfig, build_vqgan, load_vqgan


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_generate_image_writes_ranked_pngs(checkpoint_dir: Path, vqgan_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pngs"
    code = main(["generate-image", "--checkpoint", str(checkpoint_dir), "--vqgan", str(vqgan_dir),
                 "a red circle", "a blue square", "--num", "3", "--out", str(out), "--seed", "1", "--top-k", "8"])
    assert code == 0
    records = lines(capsys)
    assert [r["prompt"] for r in records] == ["a red circle", "a blue square"]
    for index, record in enumerate(records):
        assert record["images"] == [str(out / f"prompt{index:03d}_rank{rank:02d}.png") for rank in range(3)]
        assert len(record["model_scores"]) == len(record["scorer_scores"]) == 3
        assert record["scorer_scores"] == sorted(record["scorer_scores"], reverse=True)
        assert sorted(record["ranking"]) == [0, 1, 2]
        for path in record["images"]:
            with Image.open(path) as image:
                assert image.size == (4, 4) and image.mode == "RGB"
    # Same seed, same pictures; no scorer keeps the model order.
    assert main(["generate-image", "--checkpoint", str(checkpoint_dir), "--vqgan", str(vqgan_dir), "a red circle",
                 "--num", "3", "--out", str(tmp_path / "again"), "--seed", "1", "--top-k", "8",
                 "--scorer", "none"]) == 0
    again = lines(capsys)[0]
    assert again["ranking"] == [0, 1, 2] and again["scorer_scores"] == []
    first = {Path(p).read_bytes() for p in records[0]["images"]}
    assert {Path(p).read_bytes() for p in again["images"]} == first


def test_generate_image_reports_bad_inputs(checkpoint_dir: Path, tmp_path: Path, tiny_vqgan_config: VQGANConfig,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    other = build_vqgan(VQGANConfig(**{**tiny_vqgan_config.to_dict(), "num_codes": 128})).save_pretrained(
        tmp_path / "vq128")
    args = ["generate-image", "--checkpoint", str(checkpoint_dir), "x", "--out", str(tmp_path / "o")]
    assert main(args + ["--vqgan", str(other)]) == 2
    assert "codebook size (128) must equal the tokenizer's number of code tokens (64)" in capsys.readouterr().err
    assert main(args + ["--vqgan", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(args + ["--vqgan", str(other), "--scorer", "clip"]) == 2
    assert "unknown image scorer" in capsys.readouterr().err


def test_train_vqgan_then_encode_images(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vq = tmp_path / "vq"
    assert main(["train-vqgan", "--data", str(world / "caption_train.tsv"), "--out", str(vq), "--steps", "2",
                 "--preset", "test", "-o", "resolution=16", "-o", "attn_resolutions=[]", "--batch-size", "2",
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["grid_size"] == 8 and summary["eval"]["codes_used"] >= 1
    assert load_vqgan(vq).config.resolution == 16
    data = tmp_path / "image_gen.tsv"
    assert main(["encode-images", "--data", str(world / "caption_train.tsv"), "--vqgan", str(vq), "--out", str(data),
                 "--image-size", "4", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 6
    row = TSVFile(data)[0]
    assert len(row) == 3 and len(row[1].split()) == 4
    assert main(["train-vqgan", "--data", str(world / "caption_train.tsv"), "--out", str(vq), "--steps", "1",
                 "-o", "colour=1"]) == 2
    assert "unknown VQGAN config key" in capsys.readouterr().err
