"""``TrainerConfig``: every training setting, read from JSON/YAML plus ``key=value`` overrides.

It owns the batch arithmetic: ``global_batch = micro_batch_size * grad_accum * world_size``, computed once in
:meth:`TrainerConfig.batch_plan`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import numbers
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from ofa.errors import ConfigError
from ofa.trainer.criteria import criterion_class
from ofa.trainer.engine import engine_class

logger = logging.getLogger(__name__)

__all__ = ["TrainerConfig", "TaskSpec", "BatchPlan"]


@dataclass(frozen=True)
class TaskSpec:
    """One task of a (multi-task) run: its registry name, constructor options, data files and sampling ratio."""

    name: str
    train_data: str | None = None
    valid_data: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    ratio: float = 1.0
    data_format: str | None = None
    image_root: str | None = None

    @classmethod
    def from_value(cls, value: Any) -> "TaskSpec":
        if isinstance(value, TaskSpec):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"a task entry must be a mapping with at least 'name', got {value!r}")
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - valid)
        if unknown:
            raise ConfigError(f"unknown task key(s) {unknown}; valid keys: {sorted(valid)}")
        if "name" not in value:
            raise ConfigError(f"task entry {dict(value)!r} has no 'name'")
        spec = cls(**{k: _coerce(cls, k, v) for k, v in value.items()})
        if spec.ratio <= 0:
            raise ConfigError(f"task {spec.name!r} ratio ({spec.ratio}) must be > 0")
        return spec


@dataclass(frozen=True)
class BatchPlan:
    micro_batch_size: int
    grad_accum: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.world_size


@dataclass(frozen=True)
class TrainerConfig:
    """Settings of one training run (defaults follow OFA's fine-tuning scripts where they are common).

    Model and data: ``model`` (a preset name or a checkpoint path), ``model_overrides``, ``init_checkpoint``
    (weights to start from, e.g. a stage-1 model for SCST), ``tokenizer`` (directory), ``tasks`` (list of
    :class:`TaskSpec`; the single-task shortcut ``task`` / ``task_options`` / ``train_data`` / ``valid_data``
    fills it).

    Engine: ``engine``, a section ``{"name": "torch"}`` or ``{"name": "deepspeed", "zero_stage": 2,
    "offload_optimizer": false, "offload_params": false, "config": "user_ds.json"}`` (a bare name is the
    section with defaults; ``engine.zero_stage=3`` overrides one option); ``precision`` (fp32 / bf16 / fp16:
    fp16 needs DeepSpeed on a GPU). Engines are registered in :mod:`ofa.trainer.engine`.

    Optimisation: ``micro_batch_size``, ``grad_accum``, ``max_epochs`` or ``max_steps``, ``max_minutes`` (a
    wall-clock deadline for :meth:`Trainer.train`: checked after every step, all ranks stop at the same step,
    then validate and save as at the last step; the schedule is still the one of ``max_steps``), ``lr`` / ``end_lr``,
    ``warmup_ratio`` or ``warmup_steps``, ``weight_decay``, ``adam_betas``, ``adam_eps``, ``clip_norm``,
    ``ema_decay`` (0 = off), ``freeze_resnet``, ``freeze_resnet_bn``, ``freeze_embedding``, ``drop_path_rate``.

    Criterion: ``criterion``, a section like the engine's: ``{"name": "ce", "label_smoothing": 0.1,
    "drop_worst_ratio": 0.0, "drop_worst_after": 0}``, ``{"name": "scst", "beam_size": 5, "max_len": 16,
    "no_repeat_ngram_size": 3}`` or ``{"name": "clip_scst", "vqgan": DIR, "image_scorer": "color",
    "num_samples": 5}``; criteria are registered in :mod:`ofa.trainer.criteria`.

    The flat keys of 0.1 (``zero_stage``, ``offload_*``, ``deepspeed_config``, ``label_smoothing``,
    ``drop_worst_*``, ``scst_*``, ``vqgan``, ``image_scorer``, ``clip_scst_samples``) still work until 0.3, with a
    FutureWarning naming the section key.

    Bookkeeping: ``output_dir``, ``validate_every`` / ``save_every`` (steps; 0 = at each epoch end),
    ``keep_last``, ``best_metric`` / ``best_mode``, ``seed``, ``num_workers``, ``log_every``, ``max_bad_rows``,
    ``max_nan_steps`` (non-finite losses skipped before the run stops), ``valid_max_examples``, ``device``.
    """

    output_dir: str = "runs/ofa"
    model: str = "ofa-tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_checkpoint: str | None = None
    tokenizer: str | None = None
    task: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    train_data: str | None = None
    valid_data: str | None = None
    data_format: str | None = None
    image_root: str | None = None
    tasks: tuple[TaskSpec, ...] = ()
    engine: Any = "torch"  # a name, a mapping {"name": ..., option: value} or a built section; see _section
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    micro_batch_size: int = 8
    grad_accum: int = 1
    max_epochs: int = 1
    max_steps: int | None = None
    max_minutes: float | None = None
    lr: float = 5e-5
    end_lr: float = 0.0
    warmup_ratio: float = 0.06
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    clip_norm: float = 1.0
    criterion: Any = "ce"  # like engine
    ema_decay: float = 0.0
    freeze_resnet: bool = False
    freeze_resnet_bn: bool = False
    freeze_embedding: bool = False
    drop_path_rate: float | None = None
    validate_every: int = 0
    save_every: int = 0
    keep_last: int = 2
    best_metric: str | None = None
    best_mode: Literal["max", "min"] = "max"
    seed: int = 1
    num_workers: int = 0
    log_every: int = 10
    max_bad_rows: int = 100
    max_nan_steps: int = 10
    valid_max_examples: int | None = None
    valid_batch_size: int | None = None
    device: str = "auto"
    # Deprecated flat keys of 0.1, folded into the engine / criterion section with a FutureWarning (see _LEGACY).
    zero_stage: int | None = None
    offload_optimizer: bool | None = None
    offload_params: bool | None = None
    deepspeed_config: str | None = None
    label_smoothing: float | None = None
    drop_worst_ratio: float | None = None
    drop_worst_after: int | None = None
    scst_beam_size: int | None = None
    scst_max_len: int | None = None
    scst_no_repeat_ngram_size: int | None = None
    vqgan: str | None = None
    image_scorer: str | None = None
    clip_scst_samples: int | None = None

    def __post_init__(self) -> None:
        # Types first, so that the range checks below compare numbers (a JSON "8" or a YAML "1e-4" fails here,
        # named, instead of as a TypeError deep inside a comparison).
        for f in dataclasses.fields(self):
            if f.name not in ("tasks", "engine", "criterion"):
                object.__setattr__(self, f.name, _coerce(type(self), f.name, getattr(self, f.name)))
        self._build_sections()
        if isinstance(self.tasks, (str, bytes, Mapping)) or not isinstance(self.tasks, Sequence):
            raise ConfigError(f"tasks ({self.tasks!r}) must be a list of task entries")
        tasks = tuple(TaskSpec.from_value(t) for t in self.tasks)
        if self.task is None:
            stray = [k for k in _SINGLE_TASK_KEYS if getattr(self, k)]
            if stray:
                raise ConfigError(f"{stray} belong to the single-task shortcut and need 'task'; with 'tasks' put "
                                  "them inside each task entry (train_data, valid_data, options, ...)")
        else:
            if tasks:
                raise ConfigError("give either 'task' (single task) or 'tasks' (a list), not both")
            tasks = (TaskSpec(name=self.task, train_data=self.train_data, valid_data=self.valid_data,
                              options=dict(self.task_options), data_format=self.data_format,
                              image_root=self.image_root),)
        object.__setattr__(self, "tasks", tasks)
        checks = [
            (self.precision in ("fp32", "bf16", "fp16"), f"precision ({self.precision!r}) must be fp32, bf16 or fp16"),
            (self.micro_batch_size >= 1, f"micro_batch_size ({self.micro_batch_size}) must be >= 1"),
            (self.grad_accum >= 1, f"grad_accum ({self.grad_accum}) must be >= 1"),
            (self.max_epochs >= 1, f"max_epochs ({self.max_epochs}) must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps ({self.max_steps}) must be >= 1"),
            (self.max_minutes is None or self.max_minutes > 0,
             f"max_minutes ({self.max_minutes}) must be > 0 (or null for no deadline)"),
            (self.lr > 0, f"lr ({self.lr}) must be > 0"),
            (self.end_lr >= 0, f"end_lr ({self.end_lr}) must be >= 0"),
            (self.warmup_steps is None or self.warmup_steps >= 0, f"warmup_steps ({self.warmup_steps}) must be >= 0"),
            (self.weight_decay >= 0, f"weight_decay ({self.weight_decay}) must be >= 0"),
            (all(0 <= b < 1 for b in self.adam_betas), f"adam_betas ({self.adam_betas}) must be in [0, 1)"),
            (self.adam_eps > 0, f"adam_eps ({self.adam_eps}) must be > 0"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio ({self.warmup_ratio}) must be in [0, 1)"),
            (self.drop_path_rate is None or 0 <= self.drop_path_rate < 1,
             f"drop_path_rate ({self.drop_path_rate}) must be in [0, 1)"),
            (self.validate_every >= 0, f"validate_every ({self.validate_every}) must be >= 0 (0 = each epoch end)"),
            (self.save_every >= 0, f"save_every ({self.save_every}) must be >= 0 (0 = each epoch end)"),
            (self.log_every >= 1, f"log_every ({self.log_every}) must be >= 1"),
            (self.num_workers >= 0, f"num_workers ({self.num_workers}) must be >= 0"),
            (self.max_bad_rows >= 0, f"max_bad_rows ({self.max_bad_rows}) must be >= 0"),
            (self.valid_max_examples is None or self.valid_max_examples >= 1,
             f"valid_max_examples ({self.valid_max_examples}) must be >= 1 (or null for all)"),
            (self.valid_batch_size is None or self.valid_batch_size >= 1,
             f"valid_batch_size ({self.valid_batch_size}) must be >= 1"),
            (0 <= self.ema_decay < 1, f"ema_decay ({self.ema_decay}) must be in [0, 1) (0 = off)"),
            (self.keep_last >= 1, f"keep_last ({self.keep_last}) must be >= 1"),
            (self.best_mode in ("max", "min"), f"best_mode ({self.best_mode!r}) must be 'max' or 'min'"),
            (self.clip_norm >= 0, f"clip_norm ({self.clip_norm}) must be >= 0 (0 = off)"),
            (self.max_nan_steps >= 0, f"max_nan_steps ({self.max_nan_steps}) must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        # Checks across sections and top-level keys (precision, EMA, ...) belong to the section that knows them.
        self.engine.check(self)
        self.criterion.check(self)

    def _build_sections(self) -> None:
        """Turn ``engine`` and ``criterion`` into their typed sections, folding in deprecated flat keys."""
        sections = {"engine": _section_dict("engine", self.engine), "criterion": _section_dict("criterion",
                                                                                               self.criterion)}
        for key, (section, name) in _LEGACY.items():
            value = getattr(self, key)
            if value is None:
                continue
            object.__setattr__(self, key, None)
            warnings.warn(f"trainer config key {key!r} is deprecated (removed in 0.3): write "
                          f"\"{section}\": {{\"name\": ..., \"{name}\": ...}} or {section}.{name}=...",
                          FutureWarning, stacklevel=4)
            target = sections[section]
            kind = _component(section, target["name"])
            if name not in {f.name for f in dataclasses.fields(kind.Config)}:
                if section == "engine":  # a ZeRO setting on an engine without ZeRO would silently do nothing
                    raise ConfigError(f"{key}={value!r} needs engine='deepspeed' (the {target['name']!r} engine "
                                      "has no such option)")
                # 0.1 accepted (and ignored) the options of other criteria, e.g. label_smoothing with SCST.
                logger.warning("trainer config key %r does not apply to criterion %r; ignored", key, target["name"])
            elif name in target and target[name] != value:
                raise ConfigError(f"{key}={value!r} contradicts {section}.{name}={target[name]!r}")
            else:
                target[name] = value
        for section, options in sections.items():
            object.__setattr__(self, section, _section(section, options))

    # -- batch arithmetic -------------------------------------------------------------------------------------
    def batch_plan(self, world_size: int) -> BatchPlan:
        """The batch arithmetic, computed once: ``global = micro_batch_size * grad_accum * world_size``."""
        if world_size < 1:
            raise ConfigError(f"world_size ({world_size}) must be >= 1")
        return BatchPlan(self.micro_batch_size, self.grad_accum, world_size)

    # -- reading ----------------------------------------------------------------------------------------------
    @classmethod
    def valid_keys(cls) -> list[str]:
        return sorted(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainerConfig":
        """Build from a mapping; keys starting with ``_`` are comments and ignored, other unknown keys raise."""
        data = {k: v for k, v in data.items() if not str(k).startswith("_")}
        unknown = sorted(set(data) - set(cls.valid_keys()))
        if unknown:
            raise ConfigError(f"unknown trainer config key(s) {unknown}; valid keys: {cls.valid_keys()}")
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | Path | None = None, overrides: Sequence[str] = ()) -> "TrainerConfig":
        """Read a JSON or YAML file (``.yaml``/``.yml``), then apply ``key=value`` overrides (values parsed as
        JSON when possible, e.g. ``lr=1e-4``, ``tasks=[...]``, ``freeze_resnet=true``)."""
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"trainer config file {str(path)!r} does not exist")
            text = path.read_text()
            if path.suffix in (".yaml", ".yml"):
                data = yaml.safe_load(text) or {}
            else:
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{str(path)!r} is not valid JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise ConfigError(f"{str(path)!r} must hold a mapping of settings")
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"bad override {item!r}: expected key=value")
            key, raw = item.split("=", 1)
            if key.split(".")[0] in _SECTIONS and "." in key:  # engine.zero_stage=2, criterion.beam_size=3
                section, name = key.split(".", 1)
                options = _section_dict(section, data.get(section, _SECTIONS[section]))
                try:
                    options[name] = json.loads(raw)
                except json.JSONDecodeError:
                    options[name] = raw
                data[section] = options
                continue
            if key not in cls.valid_keys():
                raise ConfigError(f"unknown trainer config key {key!r}; valid keys: {cls.valid_keys()}")
            data[key] = _parse_value(cls, key, raw)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tasks"] = [dataclasses.asdict(t) for t in self.tasks]
        for key in ("task", "task_options", "train_data", "valid_data", "data_format", "image_root"):
            out.pop(key)  # folded into "tasks"
        for key in _LEGACY:
            out.pop(key)  # folded into "engine" / "criterion"
        return out

    def replace(self, **changes: Any) -> "TrainerConfig":
        unknown = sorted(set(changes) - set(self.valid_keys()))
        if unknown:
            raise ConfigError(f"unknown trainer config key(s) {unknown}; valid keys: {self.valid_keys()}")
        return dataclasses.replace(self, **changes)


# -- engine and criterion sections ----------------------------------------------------------------------------
_SECTIONS: dict[str, str] = {"engine": "torch", "criterion": "ce"}  # section -> default name

# Deprecated flat key -> (section, option name in that section's config).
_LEGACY: dict[str, tuple[str, str]] = {
    "zero_stage": ("engine", "zero_stage"),
    "offload_optimizer": ("engine", "offload_optimizer"),
    "offload_params": ("engine", "offload_params"),
    "deepspeed_config": ("engine", "config"),
    "label_smoothing": ("criterion", "label_smoothing"),
    "drop_worst_ratio": ("criterion", "drop_worst_ratio"),
    "drop_worst_after": ("criterion", "drop_worst_after"),
    "scst_beam_size": ("criterion", "beam_size"),
    "scst_max_len": ("criterion", "max_len"),
    "scst_no_repeat_ngram_size": ("criterion", "no_repeat_ngram_size"),
    "vqgan": ("criterion", "vqgan"),
    "image_scorer": ("criterion", "image_scorer"),
    "clip_scst_samples": ("criterion", "num_samples"),
}


def _component(section: str, name: Any) -> Any:
    """The engine or criterion class registered under ``name``."""
    if section == "engine":
        return engine_class(name)
    return criterion_class(name)


def _section_dict(section: str, value: Any) -> dict[str, Any]:
    """A section as a plain dict with its ``name``: from a name, a mapping or a built section config."""
    if isinstance(value, str):
        return {"name": value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        out = {"name": _SECTIONS[section], **dict(value)}
        return out
    raise ConfigError(f"{section} ({value!r}) must be a name or a mapping {{\"name\": ..., option: value}}")


def _section(section: str, options: Mapping[str, Any]) -> Any:
    """Build the typed config of a section: the class's ``Config`` dataclass, every option checked."""
    kind = _component(section, options["name"])
    valid = {f.name for f in dataclasses.fields(kind.Config)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"unknown {section} option(s) {unknown} for {section} {options['name']!r}; valid: "
                          f"{sorted(valid)}")
    return kind.Config(**{k: _coerce(kind.Config, k, v) for k, v in options.items()})


def _parse_value(cls: type, key: str, raw: str) -> Any:
    """An override's value: JSON when it parses (numbers, true/false, lists, dicts, null), else the raw text.
    Text fields keep the raw text (``model=123`` is the name "123"); booleans also accept yes/no/1/0. Type
    mismatches are reported by the config's own checks, which name the key."""
    hint = _hints(cls).get(key)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    allowed = _allowed_types(hint)
    if str in allowed and not isinstance(value, str) and not (value is None and type(None) in allowed):
        return raw
    if allowed == (bool,) and raw.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[raw.strip().lower()]
    return value


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_SINGLE_TASK_KEYS = ("task_options", "train_data", "valid_data", "data_format", "image_root")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _allowed_types(hint: Any) -> tuple[Any, ...]:
    """The plain types a hint admits (``str | None`` -> (str, NoneType)); Literal and generics as themselves."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(a for arg in typing.get_args(hint) for a in _allowed_types(arg))
    return (hint,)


def _coerce(cls: type, key: str, value: Any) -> Any:
    """Check ``value`` against the annotation of field ``key`` of ``cls``; ints pass as floats, lists as tuples.

    Raises:
        ConfigError: naming the key, the value and what is accepted.
    """
    allowed = _allowed_types(_hints(cls)[key])
    if value is None and type(None) in allowed:
        return None
    for hint in allowed:
        origin = typing.get_origin(hint)
        if hint is bool and isinstance(value, bool):
            return value
        if hint is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if hint is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} ({value!r}) must be a finite number")
            return float(value)
        if hint is str and isinstance(value, str):
            return value
        if origin is typing.Literal and isinstance(value, str) and value in typing.get_args(hint):
            return value
        if origin is dict and isinstance(value, Mapping):
            return dict(value)
        if (origin is tuple and typing.get_args(hint)[-1] is not Ellipsis and isinstance(value, Sequence)
                and not isinstance(value, str) and len(value) == len(typing.get_args(hint))
                and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            return tuple(float(v) for v in value)
    hint = ""
    if float in allowed and isinstance(value, str):
        try:
            float(value)
            hint = " (YAML reads a number like 1e-4 without a dot as text: write 1.0e-4)"
        except ValueError:
            pass
    raise ConfigError(f"{key} ({value!r}) must be {_describe(allowed)}, got {type(value).__name__}{hint}")


def _describe(allowed: tuple[Any, ...]) -> str:
    words = []
    for hint in allowed:
        origin = typing.get_origin(hint)
        if hint is type(None):
            words.append("null")
        elif origin is typing.Literal:
            words.append("one of " + ", ".join(repr(a) for a in typing.get_args(hint)))
        elif origin is dict:
            words.append("a mapping")
        elif origin is tuple:
            words.append(f"a list of {len(typing.get_args(hint))} numbers")
        else:
            words.append({bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
                hint, getattr(hint, "__name__", str(hint))))
    return " or ".join(words)
