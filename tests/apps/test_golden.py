"""Tests for ofa.apps.golden: our model reproduces the original OFA's tensors (``python -m ofa.apps.golden``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ofa.apps.golden import load_golden_model, main, rel_err, run_forward_cases, run_golden
from ofa.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
FORWARD_CASES = ("main", "patch_mask_false", "text_only", "code_mixed", "code_all")


def test_cli_reproduces_every_reference_tensor(golden_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "ofa.apps.golden", str(golden_path), "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    forward = report["forward"]
    for case in FORWARD_CASES:
        assert f"{case}/logits" in forward
    assert "main/resnet_features" in forward and "incremental/main" in forward and "incremental/text_only" in forward
    bad = {name: err for name, err in forward.items() if not err <= 1e-4}
    assert bad == {}
    for name, entry in report["generation"].items():
        assert entry["tokens_identical"], name


def test_eager_backend_reproduces_the_reference(golden_data: dict[str, Any]) -> None:
    model = load_golden_model(golden_data, attention_backend="eager")
    assert model.attention_backend == "eager"
    results = run_forward_cases(model, golden_data)
    assert {name: err for name, err in results.items() if not err <= 1e-4} == {}


def test_rel_err() -> None:
    ref = torch.tensor([1.0, -4.0])
    assert rel_err(ref, ref) == 0.0
    assert rel_err(torch.tensor([1.0, -3.0]), ref) == pytest.approx(0.25)
    assert rel_err(torch.zeros(3), ref) == float("inf")  # shape mismatch
    assert rel_err(torch.tensor([float("nan"), -4.0]), ref) == float("inf")


def test_missing_or_foreign_golden_file_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        run_golden(tmp_path / "absent.pt")
    path = tmp_path / "not_golden.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="inputs"):
        main([str(path)], out=lambda line: None)


def _our_case(model: Any, enc_args: dict[str, Any], dec_args: dict[str, Any]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        enc = model.encode(**enc_args)
        dec = model.decode(**dec_args, encoder_out=enc)
    return {"logits": dec.logits, "encoder_out": enc.hidden.transpose(0, 1), "encoder_padding_mask": enc.padding_mask}


def test_cases_are_read_from_the_stored_shapes_not_the_names(golden_data: dict[str, Any]) -> None:
    """A ``code_mixed`` case that ran the image encoder (one image masked), as image-infilling pretraining does,
    and an incremental ``code_mixed`` replay that needs ``code_masks`` in ``init_cache``: both reproduced."""
    model = load_golden_model(golden_data)
    inputs = golden_data["inputs"]
    enc_args = {"src_tokens": inputs["src_tokens"], "patch_images": inputs["patch_images"],
                "patch_masks": inputs["patch_masks_partial"]}
    dec_args = {"prev_output_tokens": inputs["prev_output_tokens_code"], "code_masks": inputs["code_masks_mixed"]}
    case = _our_case(model, enc_args, dec_args)
    assert case["encoder_out"].shape[0] > inputs["src_tokens"].shape[1]  # the image encoder did run
    data = {"inputs": inputs, "outputs": {"code_mixed": case, "incremental": {"code_mixed": case["logits"]}}}
    results = run_forward_cases(model, data)
    assert set(results) == {"code_mixed/logits", "code_mixed/encoder_out", "code_mixed/encoder_padding_mask",
                            "incremental/code_mixed"}
    assert {name: err for name, err in results.items() if not err <= 1e-5} == {}


def test_explicit_case_inputs_are_honoured(golden_data: dict[str, Any]) -> None:
    model = load_golden_model(golden_data)
    inputs = golden_data["inputs"]
    case = _our_case(model, {"src_tokens": inputs["src_tokens"]},
                     {"prev_output_tokens": inputs["prev_output_tokens_code"], "code_masks": inputs["code_masks_all"]})
    case["inputs"] = {"src_tokens": "src_tokens", "prev_output_tokens": "prev_output_tokens_code",
                      "code_masks": "code_masks_all"}
    results = run_forward_cases(model, {"inputs": inputs, "outputs": {"my_codes": case}})
    assert max(results.values()) <= 1e-5 and "my_codes/logits" in results


@pytest.mark.parametrize("outputs, message", [
    ({"my_case": {"logits": torch.zeros(2, 9, 3)}}, "not one this runner knows"),
    ({"main": {"logits": torch.zeros(2, 9, 3)}}, "neither encoder_padding_mask nor encoder_out"),
    ({"main": {"encoder_padding_mask": torch.zeros(2, 8, dtype=torch.bool), "attn_weights": torch.zeros(1)}},
     "attn_weights"),
    ({"main": {"encoder_padding_mask": torch.zeros(2, 3, dtype=torch.bool)}}, "fewer than"),
    ({"main": torch.zeros(1)}, "not a dict"),
    ({"incremental": {"my_case": torch.zeros(1)}}, "no forward case"),
    ({"text_only": {"encoder_padding_mask": torch.zeros(2, 8, dtype=torch.bool), "inputs": {"src_tokens": "nope"}}},
     "prev_output_tokens"),
    ({"text_only": {"encoder_padding_mask": torch.zeros(2, 8, dtype=torch.bool),
                    "inputs": {"src_tokens": "nope", "prev_output_tokens": "prev_output_tokens"}}}, "'nope'"),
])
def test_cases_the_runner_cannot_place_fail_loudly(golden_data: dict[str, Any], outputs: dict[str, Any],
                                                   message: str) -> None:
    model = load_golden_model(golden_data)
    with pytest.raises(CheckpointError, match=message):
        run_forward_cases(model, {"inputs": golden_data["inputs"], "outputs": outputs})


def test_generation_entry_from_an_unknown_input_fails_loudly(golden_data: dict[str, Any]) -> None:
    from ofa.generation.golden import run_golden_generation

    model = load_golden_model(golden_data)
    entry = dict(golden_data["outputs"]["generation"]["beam5_maxlen10"], input="masked_images")
    with pytest.raises(CheckpointError, match="masked_images"):
        run_golden_generation(model, {"inputs": golden_data["inputs"], "outputs": {"generation": {"g": entry}}})
