"""Fuzz: trainer configs. Every field of :class:`TrainerConfig` (and of a ``tasks`` entry, the engine and criterion
sections) is given wrong types and out-of-range values, one to three at a time, on top of a valid run config.
``TrainerConfig.from_dict`` either accepts it with every field holding a value of its declared type, or raises a
ConfigError naming one of the changed keys."""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from typing import Any

from hypothesis import strategies as st

from ofa.trainer import TrainerConfig

BASE = {"task": "caption", "train_data": "train.tsv", "output_dir": "runs/x", "model": "ofa-test"}
ODD = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["1e-4", "8", "fp8", "torch", "deepspeed", "max", "cpu", "", "ce", "pretrain"]),
    st.lists(st.integers(-2, 2), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
SECTIONS = {
    "engine": st.one_of(ODD, st.fixed_dictionaries({"name": st.sampled_from(["torch", "deepspeed", "nope", 3])},
                                                   optional={"zero_stage": ODD, "offload_optimizer": ODD,
                                                             "bogus": ODD})),
    "criterion": st.one_of(ODD, st.fixed_dictionaries({"name": st.sampled_from(["ce", "scst", "pretrain", 1])},
                                                      optional={"label_smoothing": ODD, "drop_worst_ratio": ODD,
                                                                "beam_size": ODD})),
    "tasks": st.lists(st.fixed_dictionaries({"name": st.one_of(st.just("caption"), ODD)},
                                            optional={"ratio": ODD, "options": ODD, "train_data": ODD,
                                                      "bogus": ODD}), max_size=2),
}
FIELDS = [f.name for f in dataclasses.fields(TrainerConfig)]


def _holds_declared_type(config: TrainerConfig) -> None:
    hints = typing.get_type_hints(TrainerConfig)
    for name in FIELDS:
        if name in ("tasks", "engine", "criterion"):
            continue
        value = getattr(config, name)
        args = typing.get_args(hints[name]) or (hints[name],)
        if value is None:
            assert type(None) in args, name
        elif isinstance(value, bool):
            assert bool in args, name
        elif isinstance(value, int):
            assert int in args, name
        elif isinstance(value, float):
            assert float in args and math.isfinite(value), (name, value)
        elif isinstance(value, tuple):
            assert all(isinstance(v, float) and math.isfinite(v) for v in value), (name, value)
    for task in config.tasks:
        assert isinstance(task.name, str) and isinstance(task.options, dict) and task.ratio > 0
        assert math.isfinite(task.ratio)


@st.composite
def changes(draw: Any) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
    out = {}
    for key in keys:
        out[key] = draw(SECTIONS.get(key, ODD))
    if "tasks" in out:
        out.setdefault("task", None)
    return out


def test_trainer_configs(fuzz: Any, profile: Any) -> None:
    def body(change: dict[str, Any]) -> None:
        data = {**BASE, **change}
        if "tasks" in change and change.get("task") is None:
            for key in ("task", "train_data"):
                data.pop(key, None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated keys still work, with a warning
                config = TrainerConfig.from_dict(data)
        except Exception as exc:  # noqa: BLE001 - the property decides
            inner = {k for v in change.values() if isinstance(v, dict) for k in v}
            inner |= {k for v in change.values() if isinstance(v, list) for e in v if isinstance(e, dict)
                      for k in e}
            fuzz.expect(exc, *change, *map(str, inner), "task", "engine", "criterion", "name")
            return
        _holds_declared_type(config)

    fuzz.run("trainer_configs", profile, 120, changes(), body)
