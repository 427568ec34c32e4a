"""Old module paths kept for one release after the 0.2 re-housing, each forwarding to its new home with a
:class:`DeprecationWarning`. The alias modules resolve their target by name on first attribute access, so no old
path imports anything (or anything above its floor) until it is used."""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable

__all__ = ["MOVED", "forward"]

MOVED: dict[str, str] = {
    "ofa.cli": "ofa.apps.cli",
    "ofa.golden": "ofa.apps.golden",
    "ofa.quickstart": "ofa.apps.quickstart",
    "ofa.quickstart_image": "ofa.apps.quickstart_image",
    "ofa.visualize": "ofa.apps.visualize",
    "ofa.datasets": "ofa.apps.shapeworld",
    "ofa.nn.vqgan": "ofa.vqgan",
    "ofa.tasks.image_scorers": "ofa.metrics.image_text",
    "ofa.tasks.image_gen_data": "ofa.vqgan.codes",
}


def forward(old: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the alias ``old``: warn, then return the attribute of the new module."""
    new = MOVED[old]

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        warnings.warn(f"{old} moved to {new} in ofa 0.2; the old path goes away in 0.3", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(new), name)

    return __getattr__
