"""``TrainerConfig``: every training setting, read from JSON/YAML plus ``key=value`` overrides.

It owns the batch arithmetic: ``global_batch = micro_batch_size * grad_accum * world_size``, computed once in
:meth:`TrainerConfig.batch_plan`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from ofa.errors import ConfigError

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
        spec = cls(**value)
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

    Engine: ``engine`` (``"torch"`` or ``"deepspeed"``), ``zero_stage`` (0-3), ``precision`` (fp32 / bf16 /
    fp16: fp16 needs a GPU), ``offload_optimizer`` / ``offload_params`` (DeepSpeed), ``deepspeed_config`` (a user
    JSON whose sections override the derived ones).

    Optimisation: ``micro_batch_size``, ``grad_accum``, ``max_epochs`` or ``max_steps``, ``lr`` / ``end_lr``,
    ``warmup_ratio`` or ``warmup_steps``, ``weight_decay``, ``adam_betas``, ``adam_eps``, ``clip_norm``,
    ``label_smoothing``, ``drop_worst_ratio`` / ``drop_worst_after``, ``criterion`` (``"ce"`` or ``"scst"``),
    ``ema_decay`` (0 = off), ``freeze_resnet``, ``freeze_resnet_bn``, ``freeze_embedding``, ``drop_path_rate``.

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
    engine: Literal["torch", "deepspeed"] = "torch"
    zero_stage: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    offload_optimizer: bool = False
    offload_params: bool = False
    deepspeed_config: str | None = None
    micro_batch_size: int = 8
    grad_accum: int = 1
    max_epochs: int = 1
    max_steps: int | None = None
    lr: float = 5e-5
    end_lr: float = 0.0
    warmup_ratio: float = 0.06
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    clip_norm: float = 1.0
    label_smoothing: float = 0.1
    drop_worst_ratio: float = 0.0
    drop_worst_after: int = 0
    criterion: Literal["ce", "scst"] = "ce"
    scst_beam_size: int = 5
    scst_max_len: int = 16
    scst_no_repeat_ngram_size: int = 3
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

    def __post_init__(self) -> None:
        tasks = tuple(TaskSpec.from_value(t) for t in self.tasks)
        if self.task is not None:
            if tasks:
                raise ConfigError("give either 'task' (single task) or 'tasks' (a list), not both")
            tasks = (TaskSpec(name=self.task, train_data=self.train_data, valid_data=self.valid_data,
                              options=dict(self.task_options), data_format=self.data_format,
                              image_root=self.image_root),)
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        checks = [
            (self.engine in ("torch", "deepspeed"), f"engine ({self.engine!r}) must be 'torch' or 'deepspeed'"),
            (self.zero_stage in (0, 1, 2, 3), f"zero_stage ({self.zero_stage}) must be 0, 1, 2 or 3"),
            (self.precision in ("fp32", "bf16", "fp16"), f"precision ({self.precision!r}) must be fp32, bf16 or fp16"),
            (self.micro_batch_size >= 1, f"micro_batch_size ({self.micro_batch_size}) must be >= 1"),
            (self.grad_accum >= 1, f"grad_accum ({self.grad_accum}) must be >= 1"),
            (self.max_epochs >= 1, f"max_epochs ({self.max_epochs}) must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps ({self.max_steps}) must be >= 1"),
            (self.lr > 0, f"lr ({self.lr}) must be > 0"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio ({self.warmup_ratio}) must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, f"label_smoothing ({self.label_smoothing}) must be in [0, 1)"),
            (0 <= self.drop_worst_ratio < 1, f"drop_worst_ratio ({self.drop_worst_ratio}) must be in [0, 1)"),
            (self.criterion in ("ce", "scst"), f"criterion ({self.criterion!r}) must be 'ce' or 'scst'"),
            (0 <= self.ema_decay < 1, f"ema_decay ({self.ema_decay}) must be in [0, 1) (0 = off)"),
            (self.keep_last >= 1, f"keep_last ({self.keep_last}) must be >= 1"),
            (self.best_mode in ("max", "min"), f"best_mode ({self.best_mode!r}) must be 'max' or 'min'"),
            (self.clip_norm >= 0, f"clip_norm ({self.clip_norm}) must be >= 0 (0 = off)"),
            (self.max_nan_steps >= 0, f"max_nan_steps ({self.max_nan_steps}) must be >= 0"),
            (self.engine == "deepspeed" or not (self.offload_optimizer or self.offload_params),
             "offload_optimizer / offload_params need engine='deepspeed'"),
            (self.engine == "deepspeed" or self.zero_stage == 0,
             f"zero_stage={self.zero_stage} needs engine='deepspeed' (the torch engine has no ZeRO)"),
            (self.criterion != "scst" or self.scst_beam_size >= 2, "SCST needs scst_beam_size >= 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

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
                try:
                    import yaml
                except ImportError as exc:  # pragma: no cover - pyyaml is a dependency
                    raise ConfigError("reading YAML configs needs PyYAML (pip install pyyaml)") from exc
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
            if key not in cls.valid_keys():
                raise ConfigError(f"unknown trainer config key {key!r}; valid keys: {cls.valid_keys()}")
            data[key] = _parse_value(cls, key, raw)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tasks"] = [dataclasses.asdict(t) for t in self.tasks]
        for key in ("task", "task_options", "train_data", "valid_data", "data_format", "image_root"):
            out.pop(key)  # folded into "tasks"
        return out

    def replace(self, **changes: Any) -> "TrainerConfig":
        unknown = sorted(set(changes) - set(self.valid_keys()))
        if unknown:
            raise ConfigError(f"unknown trainer config key(s) {unknown}; valid keys: {self.valid_keys()}")
        return dataclasses.replace(self, **changes)


def _parse_value(cls: type, key: str, raw: str) -> Any:
    hints = typing.get_type_hints(cls)
    hint = hints.get(key)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if hint in (str, typing.Optional[str]) and not isinstance(value, str) and value is not None:
        value = raw
    if hint is bool and isinstance(value, str):
        if value.lower() in ("true", "yes", "1"):
            return True
        if value.lower() in ("false", "no", "0"):
            return False
        raise ConfigError(f"{key}={raw!r}: expected true or false")
    if hint is int and not isinstance(value, int):
        raise ConfigError(f"{key}={raw!r}: expected an integer")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is float and not isinstance(value, float):
        raise ConfigError(f"{key}={raw!r}: expected a number")
    return value
