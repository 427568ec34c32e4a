"""ofa: OFA-style unified multimodal sequence-to-sequence models in PyTorch (arXiv:2202.03052).

Public API::

    import ofa
    model = ofa.build_model("ofa-tiny")                 # random weights, any preset
    model = ofa.load_checkpoint("ofa_base.pt")          # official fairseq / HF / our own format
    tok = ofa.OFATokenizer.from_files("path/to/bpe")    # encoder.json + vocab.bpe + dict.txt
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "OFAConfig",
    "ResNetConfig",
    "OFAModel",
    "OFATokenizer",
    "UnifiedVocab",
    "build_model",
    "list_models",
    "load_checkpoint",
    "get_task",
    "list_tasks",
    "register_task",
    "pipeline",
    "keep_freed_memory",
    "errors",
]

# Light imports only: heavy or optional modules load on first attribute access.
_LAZY = {
    "OFAConfig": ("ofa.config", "OFAConfig"),
    "ResNetConfig": ("ofa.config", "ResNetConfig"),
    "OFAModel": ("ofa.model", "OFAModel"),
    "OFATokenizer": ("ofa.tokenization", "OFATokenizer"),
    "UnifiedVocab": ("ofa.tokenization", "UnifiedVocab"),
    "build_model": ("ofa.builders", "build_model"),
    "list_models": ("ofa.builders", "list_models"),
    "load_checkpoint": ("ofa.checkpoint", "load_checkpoint"),
    "get_task": ("ofa.tasks", "get_task"),
    "list_tasks": ("ofa.tasks", "list_tasks"),
    "register_task": ("ofa.tasks", "register_task"),
    "keep_freed_memory": ("ofa.runtime", "keep_freed_memory"),
    "errors": ("ofa.errors", None),
}

if TYPE_CHECKING:  # pragma: no cover
    from ofa import errors
    from ofa.builders import build_model, list_models
    from ofa.checkpoint import load_checkpoint
    from ofa.config import OFAConfig, ResNetConfig
    from ofa.model import OFAModel
    from ofa.runtime import keep_freed_memory
    from ofa.tasks import get_task, list_tasks, register_task
    from ofa.tokenization import OFATokenizer, UnifiedVocab

# Bound now, not lazily: the function shares its name with its module, and importing the module ofa.pipeline
# (``from ofa.pipeline import Pipeline``) sets ``ofa.pipeline`` to the module the first time. Importing it here,
# before anything else can, leaves the function in place. ofa.pipeline itself imports torch only when used.
from ofa.pipeline import pipeline  # noqa: E402


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ofa' has no attribute {name!r}")
    # import cost: public names load on first use
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
