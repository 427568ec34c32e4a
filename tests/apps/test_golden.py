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
