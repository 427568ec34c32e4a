"""Print the imports between the packages of ``ofa/`` (module level and function-local), from the source alone.

    python tools/import_graph.py            # package -> package edges, module-level imports
    python tools/import_graph.py --local    # function-local imports too, marked "(local)"
    python tools/import_graph.py --modules  # module -> module instead of package -> package
    python tools/import_graph.py --check    # exit 1 on an import that breaks the floors or an unexplained local one

Nothing is imported: the files are parsed with ``ast``, so the graph can be read on a machine without torch.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# The floors of STYLE.md's "Which way imports go", lowest first. A module may import its own floor and the floors
# below it; never one above. Each entry is a package or module prefix; the longest matching prefix decides.
FLOORS: list[list[str]] = [
    ["ofa.errors", "ofa._deprecated"],
    ["ofa.config", "ofa.records", "ofa.registry", "ofa.serialization", "ofa.hub", "ofa.runtime"],
    ["ofa.tokenization", "ofa.metrics"],
    ["ofa.nn"],
    ["ofa.model"],
    ["ofa.builders"],
    ["ofa.checkpoint", "ofa.export"],
    ["ofa.generation"],
    ["ofa.data"],
    ["ofa.vqgan"],
    ["ofa.tasks"],
    ["ofa.pretraining"],  # the pretraining task and its examples: a task floor of its own
    ["ofa.pipeline"],
    ["ofa.evaluation"],
    ["ofa.trainer"],
    ["ofa.apps"],
    ["ofa"],  # the package root: the public API, which re-exports from every floor
]

# A function-local import must say why it is not at the top of its module, in a comment on its line or the line
# above it (or above the first import of its group): one of these words.
LOCAL_REASONS = ("optional dependency", "import cost")


def floor_of(module: str) -> int:
    best, floor = "", len(FLOORS) - 1
    for index, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, floor = prefix, index
    return floor


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])


def imports(path: Path, *, third_party: bool = False, root: Path = ROOT) -> list[tuple[str, bool, bool, int]]:
    """``(imported module, is_module_level, under TYPE_CHECKING, line)`` for every ``ofa`` import in a file
    (every import, ``ofa`` or not, with ``third_party=True``)."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool, bool, int]] = []
    me = module_name(path, root)
    is_pkg = path.name == "__init__.py"

    def visit(node: ast.AST, top: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False, typing_only)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, top, True)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if third_party or alias.name.split(".")[0] == "ofa":
                        found.append((alias.name, top, typing_only, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = me.split(".") if is_pkg else me.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] != "ofa":
                    if third_party and base != "__future__":
                        found.append((base, top, typing_only, child.lineno))
                    continue
                for alias in child.names:  # `from ofa.x import y` may name a submodule y
                    sub = f"{base}.{alias.name}"
                    target = sub if (root / (sub.replace(".", "/") + ".py")).exists() or \
                        (root / sub.replace(".", "/")).is_dir() else base
                    found.append((target, top, typing_only, child.lineno))
            else:
                visit(child, top, typing_only)

    visit(tree, True, False)
    return found


def violations(root: Path = ROOT) -> list[str]:
    """Every import that goes up a floor (at any level, TYPE_CHECKING included: a type names a dependency too),
    and every function-local import without one of :data:`LOCAL_REASONS` in a comment."""
    problems: list[str] = []
    for path in sorted((root / "ofa").rglob("*.py")):
        src = module_name(path, root)
        lines = path.read_text().splitlines()
        for target, top, typing_only, line in imports(path, third_party=True, root=root):
            where = f"{path.relative_to(root)}:{line}"
            if target.split(".")[0] == "ofa" and floor_of(target) > floor_of(src):
                problems.append(f"{where}: {src} (floor {floor_of(src)}) imports {target} (floor "
                                f"{floor_of(target)}), a higher floor")
            if not top and not typing_only:
                first = line - 1  # a group of imports shares the comment above its first line
                while first > 0 and lines[first - 1].strip().startswith(("from ", "import ")):
                    first -= 1
                context = " ".join(lines[max(first - 1, 0):line]).lower()
                if not any(reason in context for reason in LOCAL_REASONS):
                    problems.append(f"{where}: function-local import of {target} without a reason "
                                    f"({' or '.join(repr(r) for r in LOCAL_REASONS)}) in a comment")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="include function-local imports")
    parser.add_argument("--modules", action="store_true", help="module -> module edges")
    parser.add_argument("--typing", action="store_true", help="include imports under TYPE_CHECKING")
    parser.add_argument("--check", action="store_true", help="list violations of the floors; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        problems = violations()
        print("\n".join(problems) or "no violations")
        return 1 if problems else 0
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted((ROOT / "ofa").rglob("*.py")):
        src = module_name(path)
        for target, top, typing_only, _ in imports(path):
            if (not top and not args.local) or (typing_only and not args.typing):
                continue
            a, b = (src, target) if args.modules else (package_of(src, 2), package_of(target, 2))
            if a == b:
                continue
            edges[(a, b)].add("" if top else "(local)")
    for (a, b), kinds in sorted(edges.items()):
        mark = " (local)" if kinds == {"(local)"} else ""
        print(f"{a} -> {b}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
