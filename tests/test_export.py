"""Export (issue #16 item 4): the encoder and the incremental decoder step as ONNX (run by onnxruntime) and
``torch.export`` graphs; ``generate`` runs over them through the model protocol and gives the eager tokens on the
golden generation cases and on a caption batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ofa.apps.cli import main
from ofa.apps.golden import load_golden_model
from ofa.errors import ConfigError, InputError
from ofa.export import ExportedModel, export_model, load_exported
from ofa.generation import GenerationConfig, generate
from ofa.generation.contract import IncrementalModel
from ofa.generation.golden import run_golden_generation

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CAPTION = GenerationConfig(beam_size=5, max_len_b=16, no_repeat_ngram_size=3)


@pytest.fixture(scope="module")
def caption_batch(tok: Any) -> dict[str, torch.Tensor]:
    prompts = [" what does the image describe?"] * 4 + [" what is in the picture?"] * 2
    generator = torch.Generator().manual_seed(3)
    return {"src_tokens": torch.as_tensor(tok.batch_encode(prompts)["input_ids"]),
            "patch_images": torch.rand(6, 3, 64, 64, generator=generator) * 2 - 1}


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory, small_model: Any, tok: Any) -> Path:
    """The caption model saved, then exported to ONNX through the CLI."""
    root = tmp_path_factory.mktemp("export")
    small_model.save_pretrained(root / "ck")
    tok.save_pretrained(root / "ck")
    assert main(["export", "--checkpoint", str(root / "ck"), "--format", "onnx", "--out", str(root / "onnx"),
                 "--image-size", "64"]) == 0
    return root / "onnx"


def _tokens(hypos: list[list[Any]]) -> list[list[list[int]]]:
    return [[h.tokens.tolist() for h in beams] for beams in hypos]


def _scores(hypos: list[list[Any]]) -> list[float]:
    return [float(h.score) for beams in hypos for h in beams]


@pytest.mark.slow
def test_onnx_beam_search_gives_the_eager_tokens_on_a_caption_batch(onnx_dir: Path, small_model: Any,
                                                                     caption_batch: dict[str, torch.Tensor]) -> None:
    assert sorted(p.name for p in onnx_dir.iterdir()) == [
        "decoder_step.onnx", "dict.txt", "encoder.json", "encoder.onnx", "export.json", "text_encoder.onnx",
        "tokenizer_config.json", "vocab.bpe"]
    exported = load_exported(onnx_dir)
    assert isinstance(exported, IncrementalModel) and exported.backend == "onnxruntime"
    eager = generate(small_model, caption_batch["src_tokens"], patch_images=caption_batch["patch_images"],
                     config=CAPTION)
    ours = generate(exported, caption_batch["src_tokens"], patch_images=caption_batch["patch_images"], config=CAPTION)
    assert _tokens(ours) == _tokens(eager)
    assert max(abs(a - b) for a, b in zip(_scores(ours), _scores(eager))) < 1e-4
    # greedy (one row per source) and a different batch size and image size run through the same graphs
    greedy = GenerationConfig(beam_size=1, max_len_b=8)
    images = torch.rand(3, 3, 96, 80, generator=torch.Generator().manual_seed(4)) * 2 - 1
    src = caption_batch["src_tokens"][:3]
    assert _tokens(generate(exported, src, patch_images=images, config=greedy)) == \
        _tokens(generate(small_model, src, patch_images=images, config=greedy))


@pytest.mark.slow
def test_onnx_matches_the_golden_generation_cases(golden_data: dict[str, Any], tmp_path: Path) -> None:
    model = load_golden_model(golden_data)
    exported = load_exported(export_model(model, tmp_path / "golden", format="onnx"))
    results = run_golden_generation(exported, golden_data)
    assert len(results) == 6
    for name, result in results.items():
        assert result["tokens_identical"], name
        assert result["score_abs_err"] <= 1e-4 and result["positional_abs_err"] <= 1e-4, (name, result)


@pytest.mark.slow
def test_torch_export_runs_the_same_loop_and_needs_trust_to_load(tmp_path: Path, small_model: Any,
                                                                 caption_batch: dict[str, torch.Tensor]) -> None:
    directory = export_model(small_model, tmp_path / "pt2", format="torch-export", image_size=64)
    assert json.loads((directory / "export.json").read_text())["format"] == "torch-export"
    with pytest.raises(ConfigError, match="trust_pickle=True"):
        load_exported(directory)
    exported = load_exported(directory, trust_pickle=True)
    eager = generate(small_model, caption_batch["src_tokens"], patch_images=caption_batch["patch_images"],
                     config=CAPTION)
    ours = generate(exported, caption_batch["src_tokens"], patch_images=caption_batch["patch_images"], config=CAPTION)
    assert _tokens(ours) == _tokens(eager)


@pytest.mark.slow
def test_what_the_graphs_do_not_cover_is_refused_clearly(onnx_dir: Path, small_model: Any, tmp_path: Path) -> None:
    exported: ExportedModel = load_exported(onnx_dir)
    state = exported.encode(torch.tensor([[0, 5, 6, 2]]), torch.zeros(1, 3, 64, 64))
    with pytest.raises(InputError, match="text rows only"):
        exported.init_cache(state, 2, code_masks=torch.tensor([True, False]))
    with pytest.raises(InputError, match="ids outside"):
        exported.encode(torch.tensor([[0, 10**6]]), torch.zeros(1, 3, 64, 64))
    with pytest.raises(InputError, match=r"patch_images must be \[1, 3, H, W\]"):
        exported.encode(torch.tensor([[0, 5]]), torch.zeros(2, 3, 64, 64))
    with pytest.raises(ConfigError, match="format='tflite'"):
        export_model(small_model, tmp_path / "x", format="tflite")
    with pytest.raises(ConfigError, match="not an export directory"):
        load_exported(tmp_path)
