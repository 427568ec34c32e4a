"""Name -> factory registries with lazy entry-point discovery (tasks are plugins: group ``ofa.tasks``)."""

from __future__ import annotations

import importlib.metadata as metadata
import logging
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

from ofa.errors import PluginConflictError, PluginError

__all__ = ["Registry", "PluginInfo"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class PluginInfo:
    """Where a registered name comes from: the distribution (or ``"<registered>"``) and the object path."""

    name: str
    distribution: str
    value: str


def _dist_name(entry_point: Any) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "<unknown>"
    return getattr(dist, "name", None) or dist.metadata.get("Name", "<unknown>")


class Registry(Generic[T]):
    """Maps names to factories, discovered from an entry-point group on first use.

    Args:
        group: the entry-point group (``"ofa.tasks"``).
        required: attribute names every built object must have (checked on :meth:`get`).
        entry_points: callable returning the entry points to consider (tests pass fakes); by default the
            installed distributions' entry points of ``group``.
    """

    def __init__(self, group: str, *, required: Sequence[str] = (),
                 entry_points: Callable[[], Iterable[Any]] | None = None) -> None:
        self.group = group
        self.required = tuple(required)
        self._entry_points_fn = entry_points or (lambda: metadata.entry_points(group=group))
        self._discovered: dict[str, list[Any]] | None = None
        self._registered: dict[str, Callable[..., T]] = {}
        self._loaded: dict[str, Callable[..., T]] = {}

    # -- discovery (metadata only) ----------------------------------------------------------------------------
    def _discover(self) -> dict[str, list[Any]]:
        if self._discovered is None:
            found: dict[str, list[Any]] = {}
            for ep in self._entry_points_fn():
                same = [e for e in found.get(ep.name, []) if e.value == ep.value and _dist_name(e) == _dist_name(ep)]
                if not same:
                    found.setdefault(ep.name, []).append(ep)
            self._discovered = found
        return self._discovered

    def _entry_point(self, name: str) -> Any | None:
        candidates = self._discover().get(name, [])
        if len(candidates) > 1:
            owners = ", ".join(f"{_dist_name(ep)} ({ep.value})" for ep in candidates)
            raise PluginConflictError(
                f"{self.group} name {name!r} is provided by more than one distribution: {owners}; uninstall one "
                f"or override it on purpose with register({name!r}, factory, replace=True)")
        return candidates[0] if candidates else None

    def names(self) -> list[str]:
        """Every available name (registered and installed), sorted; reads metadata only."""
        return sorted(set(self._discover()) | set(self._registered))

    def info(self) -> list[PluginInfo]:
        """Name, distribution and object path of every entry (conflicting names appear once per provider)."""
        out = [PluginInfo(name, _dist_name(ep), ep.value)
               for name, eps in self._discover().items() if name not in self._registered for ep in eps]
        out += [PluginInfo(name, "<registered>", getattr(f, "__qualname__", repr(f)))
                for name, f in self._registered.items()]
        return sorted(out, key=lambda p: (p.name, p.distribution))

    def __contains__(self, name: object) -> bool:
        return name in self._registered or name in self._discover()

    # -- loading ----------------------------------------------------------------------------------------------
    def factory(self, name: str) -> Callable[..., T]:
        """The factory behind ``name`` (imports its entry point once)."""
        if name in self._registered:
            return self._registered[name]
        if name in self._loaded:
            return self._loaded[name]
        ep = self._entry_point(name)
        if ep is None:
            raise PluginError(f"unknown {self.group} name {name!r}; available: {self.names()}")
        try:
            factory = ep.load()
        except Exception as exc:  # any import-time failure of a plugin
            raise PluginError(
                f"{self.group} plugin {name!r} from distribution {_dist_name(ep)!r} failed to import "
                f"({ep.value}): {type(exc).__name__}: {exc}") from exc
        self._loaded[name] = factory
        return factory

    def get(self, name: str, **options: Any) -> T:
        """Build ``name`` with ``options`` and check it has the required members."""
        factory = self.factory(name)
        try:
            obj = factory(**options)
        except TypeError as exc:
            raise PluginError(f"could not build {self.group} {name!r} with options {sorted(options)}: {exc}") from exc
        missing = [m for m in self.required if not hasattr(obj, m)]
        if missing:
            raise PluginError(f"{self.group} {name!r} ({type(obj).__qualname__}) lacks required members {missing}; "
                              f"a task must provide {list(self.required)}")
        return obj

    def register(self, name: str, factory: Callable[..., T], replace: bool = False) -> None:
        """Register a factory by hand (notebooks, tests); ``replace=True`` overrides an existing name."""
        if not replace and name in self:
            raise PluginConflictError(f"{self.group} name {name!r} is already taken; pass replace=True to override")
        self._registered[name] = factory
        self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        self._registered.pop(name, None)
