"""Registry: entry-point discovery from fake entry points (unknown names, import failures, protocol gaps,
conflicts, manual registration, laziness, caching) and the real ``ofa.tasks`` group."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

import ofa
from ofa.errors import OFAError, PluginConflictError, PluginError
from ofa.registry import PluginInfo, Registry
from ofa.tasks import REQUIRED_MEMBERS, task_info

BUILTIN_TASKS = ["caption", "image_classify", "image_gen", "refcoco", "region_caption", "snli_ve", "sst2",
                 "vqa_gen"]


class FakeTask:
    name = "fake"

    def __init__(self, size: int = 1) -> None:
        self.size = size

    def encode(self, example: Any, tok: Any, training: bool = False) -> Any: ...

    def decode(self, ids: Any, tok: Any, sample: Any = None) -> Any: ...

    def score(self, preds: Any, refs: Any) -> dict[str, float]:
        return {}

    def generation_config(self, tok: Any) -> Any: ...


class HalfTask:
    """Lacks decode and score."""

    name = "half"

    def encode(self, example: Any, tok: Any, training: bool = False) -> Any: ...

    def generation_config(self, tok: Any) -> Any: ...


class FakeEntryPoint:
    """What the registry reads: ``name``, ``value``, ``dist.name`` and ``load()`` (counted)."""

    def __init__(self, name: str, target: Any, dist: str | None = "fake-dist", value: str | None = None) -> None:
        self.name = name
        self.value = value or f"{dist}.module:{getattr(target, '__name__', 'obj')}"
        self.dist = None if dist is None else SimpleNamespace(name=dist)
        self._target = target
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def make_registry(*entry_points: FakeEntryPoint) -> Registry[Any]:
    return Registry("ofa.tasks", required=REQUIRED_MEMBERS, entry_points=lambda: list(entry_points))


def test_get_builds_the_task_with_options() -> None:
    registry = make_registry(FakeEntryPoint("fake", FakeTask))
    task = registry.get("fake", size=3)
    assert isinstance(task, FakeTask) and task.size == 3
    assert "fake" in registry and "other" not in registry


def test_unknown_name_lists_the_available_ones() -> None:
    registry = make_registry(FakeEntryPoint("alpha", FakeTask), FakeEntryPoint("beta", FakeTask))
    with pytest.raises(PluginError, match="unknown") as info:
        registry.get("gamma")
    message = str(info.value)
    assert "'gamma'" in message and "alpha" in message and "beta" in message


def test_import_failure_names_the_distribution_and_chains_the_cause() -> None:
    cause = ModuleNotFoundError("No module named 'broken_dep'")
    registry = make_registry(FakeEntryPoint("broken", cause, dist="broken-plugin", value="broken_pkg.tasks:Task"))
    with pytest.raises(PluginError) as info:
        registry.get("broken")
    message = str(info.value)
    assert "broken-plugin" in message and "'broken'" in message and "broken_pkg.tasks:Task" in message
    assert "broken_dep" in message
    assert info.value.__cause__ is cause
    assert not isinstance(info.value, PluginConflictError)


def test_missing_members_are_listed() -> None:
    registry = make_registry(FakeEntryPoint("half", HalfTask))
    with pytest.raises(PluginError, match="lacks required members") as info:
        registry.get("half")
    message = str(info.value)
    assert "'decode'" in message and "'score'" in message
    assert "'encode'" not in message.split("lacks required members")[1].split("]")[0]


def test_bad_options_raise_plugin_error_from_the_type_error() -> None:
    registry = make_registry(FakeEntryPoint("fake", FakeTask))
    with pytest.raises(PluginError, match="options") as info:
        registry.get("fake", colour="red")
    assert isinstance(info.value.__cause__, TypeError)


def test_two_distributions_with_one_name_conflict_naming_both() -> None:
    first = FakeEntryPoint("caption", FakeTask, dist="dist-one", value="one.tasks:Caption")
    second = FakeEntryPoint("caption", FakeTask, dist="dist-two", value="two.tasks:Caption")
    registry = make_registry(first, second)
    assert registry.names() == ["caption"]  # listing does not fail
    with pytest.raises(PluginConflictError) as info:
        registry.get("caption")
    message = str(info.value)
    assert "dist-one" in message and "dist-two" in message and "replace=True" in message
    assert first.loads == second.loads == 0  # refused before importing either
    assert {(p.distribution, p.value) for p in registry.info()} == {("dist-one", "one.tasks:Caption"),
                                                                   ("dist-two", "two.tasks:Caption")}


def test_the_same_entry_point_seen_twice_is_not_a_conflict() -> None:
    # e.g. a distribution visible twice on sys.path (an editable install plus its build directory)
    registry = make_registry(FakeEntryPoint("fake", FakeTask, value="m:FakeTask"),
                             FakeEntryPoint("fake", FakeTask, value="m:FakeTask"))
    assert isinstance(registry.get("fake"), FakeTask)
    assert len(registry.info()) == 1


def test_register_refuses_a_taken_name_unless_replace() -> None:
    registry = make_registry(FakeEntryPoint("fake", FakeTask))

    class Other(FakeTask):
        name = "other"

    with pytest.raises(PluginConflictError, match="already taken"):
        registry.register("fake", Other)
    assert type(registry.get("fake")) is FakeTask

    registry.register("fake", Other, replace=True)
    assert type(registry.get("fake")) is Other
    assert PluginInfo("fake", "<registered>", Other.__qualname__) in registry.info()

    registry.register("new", Other)
    with pytest.raises(PluginConflictError):
        registry.register("new", FakeTask)
    assert registry.names() == ["fake", "new"]


def test_register_replace_resolves_an_installed_conflict() -> None:
    registry = make_registry(FakeEntryPoint("caption", FakeTask, dist="dist-one"),
                             FakeEntryPoint("caption", FakeTask, dist="dist-two"))
    with pytest.raises(PluginConflictError):
        registry.register("caption", FakeTask)
    registry.register("caption", HalfTask, replace=True)
    with pytest.raises(PluginError, match="lacks"):  # the registered factory is checked like any other
        registry.get("caption")
    registry.register("caption", FakeTask, replace=True)
    assert isinstance(registry.get("caption"), FakeTask)


def test_names_reads_metadata_only() -> None:
    eps = [FakeEntryPoint("zeta", RuntimeError("must not be imported")), FakeEntryPoint("alpha", FakeTask)]
    calls = []

    def entry_points() -> list[FakeEntryPoint]:
        calls.append(1)
        return eps

    registry: Registry[Any] = Registry("ofa.tasks", required=REQUIRED_MEMBERS, entry_points=entry_points)
    assert calls == []  # nothing happens at construction
    assert registry.names() == ["alpha", "zeta"]
    assert [p.name for p in registry.info()] == ["alpha", "zeta"]
    assert all(ep.loads == 0 for ep in eps)
    registry.names()
    assert calls == [1]  # discovery runs once


def test_get_caches_the_loaded_factory() -> None:
    ep = FakeEntryPoint("fake", FakeTask)
    registry = make_registry(ep)
    first, second = registry.get("fake"), registry.get("fake", size=2)
    assert ep.loads == 1
    assert first is not second and second.size == 2  # the factory is cached, not the object
    assert registry.factory("fake") is FakeTask


def test_failed_import_is_retried_not_cached() -> None:
    ep = FakeEntryPoint("broken", ImportError("nope"))
    registry = make_registry(ep)
    for _ in range(2):
        with pytest.raises(PluginError):
            registry.get("broken")
    assert ep.loads == 2


def test_entry_point_without_distribution() -> None:
    registry = make_registry(FakeEntryPoint("fake", FakeTask, dist=None, value="m:FakeTask"))
    assert registry.info() == [PluginInfo("fake", "<unknown>", "m:FakeTask")]


def test_errors_are_ofa_errors() -> None:
    assert issubclass(PluginConflictError, PluginError) and issubclass(PluginError, OFAError)


def test_installed_tasks_come_from_their_distributions() -> None:
    names = ofa.list_tasks()
    assert set(BUILTIN_TASKS) <= set(names)
    assert names == sorted(names)
    info = {p.name: p for p in task_info()}
    for name in BUILTIN_TASKS:
        assert info[name].distribution == "ofa-unified", info[name]
        assert info[name].value.startswith("ofa.tasks.")
    task = ofa.get_task("caption", image_size=64)
    assert task.name == "caption" and task.image_size == 64


def test_unknown_task_error_lists_the_installed_tasks() -> None:
    with pytest.raises(PluginError) as info:
        ofa.get_task("no_such_task")
    assert all(name in str(info.value) for name in BUILTIN_TASKS)


@pytest.fixture
def restore_registry() -> Iterator[None]:
    from ofa.tasks import task_registry

    yield
    task_registry().unregister("fake_for_test")


def test_register_task_in_the_process_registry(restore_registry: None) -> None:
    ofa.register_task("fake_for_test", FakeTask)
    assert "fake_for_test" in ofa.list_tasks()
    assert isinstance(ofa.get_task("fake_for_test", size=5), FakeTask)
    with pytest.raises(PluginConflictError):
        ofa.register_task("caption", FakeTask)


def test_listing_tasks_imports_no_task_module() -> None:
    code = ("import sys, ofa; names = ofa.list_tasks(); "
            "loaded = sorted(m for m in sys.modules if m.startswith('ofa.tasks.') and m != 'ofa.tasks.base' "
            "or m.startswith('ofa_example_task')); print(len(names), loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, loaded = out.stdout.strip().split(" ", 1)
    assert int(count) >= len(BUILTIN_TASKS)
    assert loaded == "[]"
