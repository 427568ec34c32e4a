"""Tasks: built-in ones and third-party plugins, all found through the ``ofa.tasks`` entry-point group."""

from __future__ import annotations

from typing import Any, Callable

from ofa.registry import PluginInfo, Registry
from ofa.tasks.base import REQUIRED_MEMBERS, Example, Prediction, Sample, Task

__all__ = ["Example", "Sample", "Prediction", "Task", "get_task", "list_tasks", "register_task", "task_registry",
           "task_info", "ImageTextScorer", "ColorNameScorer", "EmbeddingScorer", "build_scorer"]

_REGISTRY: Registry[Task] | None = None
_SCORERS = ("ImageTextScorer", "ColorNameScorer", "EmbeddingScorer", "build_scorer")


def __getattr__(name: str) -> Any:
    # Scorers load on first use: listing tasks must not import any task module.
    if name in _SCORERS:
        # import cost: listing tasks loads no task or scorer module
        from ofa.tasks import image_scorers

        return getattr(image_scorers, name)
    raise AttributeError(f"module 'ofa.tasks' has no attribute {name!r}")


def task_registry() -> Registry[Task]:
    """The process-wide task registry, created on first use (discovery reads installed metadata only)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry("ofa.tasks", required=REQUIRED_MEMBERS)
    return _REGISTRY


def list_tasks() -> list[str]:
    """Names of every installed or registered task."""
    return task_registry().names()


def task_info() -> list[PluginInfo]:
    """Each task with the distribution that provides it."""
    return task_registry().info()


def get_task(name: str, **options: Any) -> Task:
    """Build a task by name; unknown names raise :class:`~ofa.errors.PluginError` listing the available ones."""
    return task_registry().get(name, **options)


def register_task(name: str, factory: Callable[..., Task], replace: bool = False) -> None:
    """Register a task factory by hand (e.g. in a notebook)."""
    task_registry().register(name, factory, replace=replace)
