"""The house rules on imports, checked: no module imports a higher floor (STYLE.md, "Which way imports go"), every
function-local import says why, and the old module paths of 0.1 still resolve, with a deprecation warning."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_imports_a_higher_floor_and_local_imports_say_why() -> None:
    problems = _tool().violations(ROOT)
    assert problems == [], "\n".join(problems)


def test_every_ofa_package_has_a_floor() -> None:
    tool = _tool()
    prefixes = {p for floor in tool.FLOORS for p in floor}
    packages = {tool.module_name(path) for path in (ROOT / "ofa").glob("*.py")} | {
        tool.module_name(path) for path in (ROOT / "ofa").glob("*/__init__.py")}
    aliases = set(importlib.import_module("ofa._deprecated").MOVED)
    unplaced = sorted(p for p in packages - aliases - {"ofa"} if p not in prefixes)
    assert unplaced == [], f"add these to FLOORS in tools/import_graph.py: {unplaced}"


def test_the_checker_catches_an_upward_import_and_an_unexplained_local_one(tmp_path: Path) -> None:
    tool = _tool()
    (tmp_path / "ofa" / "nn").mkdir(parents=True)
    (tmp_path / "ofa" / "nn" / "bad.py").write_text(
        "from ofa.trainer.trainer import Trainer\n\n\ndef f():\n    import torch\n\n\ndef g():\n"
        "    # optional dependency\n    import deepspeed\n")
    problems = tool.violations(tmp_path)
    assert len(problems) == 2
    assert "ofa.nn.bad (floor 3) imports ofa.trainer.trainer (floor 14), a higher floor" in problems[0]
    assert "function-local import of torch without a reason" in problems[1]


def test_the_graph_tool_runs_from_the_command_line() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "import_graph.py")], capture_output=True, text=True,
                         check=True).stdout
    assert "ofa.trainer -> ofa.tasks" in out
    assert "ofa.model -> ofa.checkpoint" not in out  # the circle builders -> model -> checkpoint is gone


@pytest.mark.parametrize("old", sorted(importlib.import_module("ofa._deprecated").MOVED))
def test_old_module_paths_forward_with_a_deprecation_warning(old: str) -> None:
    new = importlib.import_module("ofa._deprecated").MOVED[old]
    target = importlib.import_module(new)
    public = getattr(target, "__all__", None) or [n for n in vars(target) if not n.startswith("_")]
    name = public[0]
    alias = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        value = getattr(alias, name)
    assert value is getattr(target, name)


def test_old_paths_import_nothing_until_used() -> None:
    code = ("import sys, warnings; warnings.simplefilter('error'); import ofa.nn.vqgan, ofa.datasets; "
            "print(sorted(m for m in sys.modules if m.startswith(('ofa.vqgan', 'ofa.apps'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api_names_resolve() -> None:
    import ofa

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ofa.__all__:
            assert getattr(ofa, name) is not None, name


def test_tool_parses_every_module() -> None:
    for path in (ROOT / "ofa").rglob("*.py"):
        ast.parse(path.read_text(), str(path))
