"""TrainerConfig: JSON/YAML files, key=value overrides and their types, unknown keys, batch arithmetic, checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ofa.errors import ConfigError
from ofa.trainer import TaskSpec, Trainer, TrainerConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.json"))


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


# -- files -----------------------------------------------------------------------------------------------------
def test_json_file_with_comments(tmp_path: Path) -> None:
    path = write_json(tmp_path / "run.json", {"_comment": "ignored", "_note": [1, 2], "task": "caption",
                                              "lr": 1e-4, "micro_batch_size": 4, "adam_betas": [0.9, 0.98],
                                              "task_options": {"image_size": 64}})
    config = TrainerConfig.from_file(path)
    assert config.lr == 1e-4 and config.micro_batch_size == 4
    assert config.adam_betas == (0.9, 0.98)
    assert config.tasks == (TaskSpec(name="caption", options={"image_size": 64}),)


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("# a comment\n_comment: also ignored\ntask: vqa_gen\nlr: 2.0e-5\ngrad_accum: 3\n"
                    "freeze_embedding: true\ntask_options:\n  image_size: 64\n  candidates: [a, b]\n")
    config = TrainerConfig.from_file(path)
    assert (config.lr, config.grad_accum, config.freeze_embedding) == (2e-5, 3, True)
    assert config.tasks[0].options == {"image_size": 64, "candidates": ["a", "b"]}
    yml = tmp_path / "run.yml"
    yml.write_text(path.read_text())
    assert TrainerConfig.from_file(yml) == config


def test_yaml_float_without_dot_is_rejected_by_name(tmp_path: Path) -> None:
    # YAML 1.1 reads "1e-4" (no dot) as a string: it must fail naming lr, not as a TypeError later.
    path = tmp_path / "run.yaml"
    path.write_text("task: caption\nlr: 1e-4\n")
    with pytest.raises(ConfigError, match=r"lr \('1e-4'\) must be a number, got str \(YAML reads .* 1.0e-4\)"):
        TrainerConfig.from_file(path)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TrainerConfig.from_file(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainerConfig.from_file(bad)
    listing = write_json(tmp_path / "list.json", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mapping"):
        TrainerConfig.from_file(listing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert TrainerConfig.from_file(empty) == TrainerConfig()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path: Path) -> None:
    config = TrainerConfig.from_file(path)
    assert len(config.tasks) == 1
    assert config.batch_plan(1).global_batch == config.micro_batch_size * config.grad_accum
    # The recipe is what to_dict writes into checkpoints: it must read back to the same settings.
    assert TrainerConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_shipped_configs_exist() -> None:
    assert len(CONFIGS) >= 5


# -- overrides -------------------------------------------------------------------------------------------------
def test_overrides_apply_over_the_file_with_types(tmp_path: Path) -> None:
    path = write_json(tmp_path / "run.json", {"task": "caption", "lr": 1e-4, "grad_accum": 2})
    config = TrainerConfig.from_file(path, [
        "lr=3e-5", "grad_accum=4", "freeze_resnet=true", "freeze_embedding=yes", "freeze_resnet_bn=0",
        "ema_decay=0", "max_steps=7", "warmup_steps=null", "output_dir=runs/x y", "model=123",
        "adam_betas=[0.9, 0.98]", 'model_overrides={"dropout": 0.0}', 'task_options={"image_size": 64}',
        "best_metric=CIDEr", "precision=bf16"])
    assert config.lr == 3e-5 and isinstance(config.lr, float)
    assert config.grad_accum == 4 and isinstance(config.grad_accum, int)
    assert (config.freeze_resnet, config.freeze_embedding, config.freeze_resnet_bn) == (True, True, False)
    assert config.ema_decay == 0.0 and isinstance(config.ema_decay, float)  # an int where a float is wanted
    assert config.max_steps == 7 and config.warmup_steps is None
    assert config.output_dir == "runs/x y" and config.model == "123"  # text fields keep the raw text
    assert config.adam_betas == (0.9, 0.98)
    assert config.model_overrides == {"dropout": 0.0}
    assert config.tasks[0].options == {"image_size": 64}
    assert (config.best_metric, config.precision) == ("CIDEr", "bf16")


def test_tasks_override_as_json() -> None:
    config = TrainerConfig.from_file(None, ['tasks=[{"name": "caption", "ratio": 2, "train_data": "a.tsv"}, '
                                            '{"name": "vqa_gen", "options": {"image_size": 64}}]'])
    assert [t.name for t in config.tasks] == ["caption", "vqa_gen"]
    assert config.tasks[0].ratio == 2.0 and config.tasks[0].train_data == "a.tsv"
    assert config.tasks[1].options == {"image_size": 64}


@pytest.mark.parametrize("override, message", [
    ("lr=abc", r"lr \('abc'\) must be a number"),
    ("grad_accum=1.5", r"grad_accum \(1.5\) must be an integer"),
    ("micro_batch_size=true", r"micro_batch_size \(True\) must be an integer"),
    ("max_steps=ten", r"max_steps \('ten'\) must be an integer or null"),
    ("freeze_resnet=maybe", r"freeze_resnet \('maybe'\) must be true or false"),
    ("adam_betas=0.9", r"adam_betas \(0.9\) must be a list of 2 numbers"),
    ("adam_betas=[0.9]", r"adam_betas \(\[0.9\]\) must be a list of 2 numbers"),
    ("engine=jax", r"engine \('jax'\) must be one of 'torch', 'deepspeed'"),
    ("model_overrides=[1]", r"model_overrides \(\[1\]\) must be a mapping"),
    ("tasks=caption", r"tasks \('caption'\) must be a list"),
    ("lr", "expected key=value"),
])
def test_bad_override_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainerConfig.from_file(None, ["task=caption", override])


def test_unknown_keys_list_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown trainer config key 'learning_rate'.*valid keys: \[.*'lr'"):
        TrainerConfig.from_file(None, ["learning_rate=1e-4"])
    path = write_json(tmp_path / "run.json", {"task": "caption", "batch_size": 8, "epochs": 2})
    with pytest.raises(ConfigError, match=r"\['batch_size', 'epochs'\]; valid keys: .*'micro_batch_size'"):
        TrainerConfig.from_file(path)
    with pytest.raises(ConfigError, match=r"unknown task key\(s\) \['weight'\]; valid keys: .*'ratio'"):
        TrainerConfig.from_dict({"tasks": [{"name": "caption", "weight": 2}]})
    with pytest.raises(ConfigError, match="unknown trainer config key"):
        TrainerConfig().replace(learning_rate=1.0)


def test_valid_keys_are_the_fields() -> None:
    keys = TrainerConfig.valid_keys()
    assert keys == sorted(keys) and {"lr", "micro_batch_size", "grad_accum", "tasks", "zero_stage"} <= set(keys)


# -- tasks -----------------------------------------------------------------------------------------------------
def test_task_shortcut_and_list_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="either 'task'.*or 'tasks'"):
        TrainerConfig(task="caption", tasks=({"name": "vqa_gen"},))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\['train_data'\] belong to the single-task shortcut"):
        TrainerConfig(train_data="x.tsv", tasks=({"name": "caption"},))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="has no 'name'"):
        TrainerConfig(tasks=({"train_data": "x"},))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be a mapping"):
        TrainerConfig(tasks=("caption",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"ratio \(0.0\) must be > 0"):
        TrainerConfig(tasks=({"name": "caption", "ratio": 0},))  # type: ignore[arg-type]


def test_to_dict_folds_the_shortcut_into_tasks() -> None:
    config = TrainerConfig(task="caption", train_data="t.tsv", valid_data="v.tsv", task_options={"image_size": 64})
    data = config.to_dict()
    assert "task" not in data and "train_data" not in data
    assert data["tasks"] == [{"name": "caption", "train_data": "t.tsv", "valid_data": "v.tsv",
                              "options": {"image_size": 64}, "ratio": 1.0, "data_format": None, "image_root": None}]
    assert TrainerConfig.from_dict(json.loads(json.dumps(data))).tasks == config.tasks


# -- batch arithmetic ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("micro, accum, world", [(1, 1, 1), (4, 2, 1), (2, 4, 8), (8, 4, 4)])
def test_batch_plan(micro: int, accum: int, world: int) -> None:
    plan = TrainerConfig(micro_batch_size=micro, grad_accum=accum).batch_plan(world)
    assert (plan.micro_batch_size, plan.grad_accum, plan.world_size) == (micro, accum, world)
    assert plan.global_batch == micro * accum * world


def test_batch_plan_needs_a_world() -> None:
    with pytest.raises(ConfigError, match=r"world_size \(0\)"):
        TrainerConfig().batch_plan(0)


# -- value checks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"micro_batch_size": 0}, r"micro_batch_size \(0\) must be >= 1"),
    ({"grad_accum": 0}, r"grad_accum \(0\) must be >= 1"),
    ({"max_epochs": 0}, r"max_epochs \(0\)"),
    ({"max_steps": 0}, r"max_steps \(0\)"),
    ({"lr": 0.0}, r"lr \(0.0\) must be > 0"),
    ({"end_lr": -1.0}, r"end_lr"),
    ({"warmup_ratio": 1.0}, r"warmup_ratio \(1.0\) must be in \[0, 1\)"),
    ({"warmup_steps": -1}, r"warmup_steps \(-1\)"),
    ({"weight_decay": -0.1}, r"weight_decay"),
    ({"adam_betas": (0.9, 1.0)}, r"adam_betas"),
    ({"adam_eps": 0.0}, r"adam_eps"),
    ({"label_smoothing": 1.0}, r"label_smoothing \(1.0\)"),
    ({"drop_worst_ratio": 1.0}, r"drop_worst_ratio"),
    ({"drop_worst_after": -1}, r"drop_worst_after"),
    ({"criterion": "mse"}, r"criterion \('mse'\) must be one of 'ce', 'scst'"),
    ({"criterion": "scst", "scst_beam_size": 1}, r"SCST needs beam_size >= 2 \(got 1\)"),
    ({"criterion": "scst", "scst_max_len": 0}, r"SCST max_len \(0\) must be >= 1"),
    ({"ema_decay": 1.0}, r"ema_decay \(1.0\) must be in \[0, 1\)"),
    ({"keep_last": 0}, r"keep_last \(0\)"),
    ({"best_mode": "up"}, r"best_mode \('up'\)"),
    ({"clip_norm": -1.0}, r"clip_norm"),
    ({"max_nan_steps": -1}, r"max_nan_steps"),
    ({"log_every": 0}, r"log_every \(0\) must be >= 1"),
    ({"save_every": -1}, r"save_every"),
    ({"validate_every": -1}, r"validate_every"),
    ({"num_workers": -1}, r"num_workers"),
    ({"drop_path_rate": 1.5}, r"drop_path_rate"),
    ({"valid_batch_size": 0}, r"valid_batch_size"),
    ({"zero_stage": 4, "engine": "deepspeed"}, r"zero_stage \(4\) must be 0, 1, 2 or 3"),
    ({"precision": "fp8"}, r"precision \('fp8'\)"),
    ({"engine": "deepspeed", "zero_stage": 3, "ema_decay": 0.9}, r"EMA is not supported with ZeRO-3"),
])
def test_invalid_values(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainerConfig(task="caption", **changes)


@pytest.mark.parametrize("changes", [{"zero_stage": 2}, {"zero_stage": 3}, {"offload_optimizer": True},
                                     {"offload_params": True}])
def test_zero_features_need_deepspeed(changes: dict) -> None:
    with pytest.raises(ConfigError, match="engine='deepspeed'"):
        TrainerConfig(task="caption", **changes)
    TrainerConfig(task="caption", engine="deepspeed", **{**changes, "zero_stage": 3})  # accepted there


def test_json_string_numbers_are_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match=r"micro_batch_size \('8'\) must be an integer, got str"):
        TrainerConfig.from_dict({"task": "caption", "micro_batch_size": "8"})
    with pytest.raises(ConfigError, match=r"ratio \('2'\) must be a number"):
        TrainerConfig.from_dict({"tasks": [{"name": "caption", "ratio": "2"}]})


def test_fp16_needs_deepspeed() -> None:
    with pytest.raises(ConfigError, match="precision='fp16' needs engine='deepspeed'"):
        TrainerConfig(task="caption", precision="fp16")
    TrainerConfig(task="caption", precision="fp16", engine="deepspeed")


def test_trainer_rejects_fp16_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    config = TrainerConfig(task="caption", precision="fp16", engine="deepspeed", output_dir=str(tmp_path),
                           device="cpu")
    with pytest.raises(ConfigError, match="precision='fp16' needs a CUDA device"):
        Trainer(config, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_trainer_needs_a_task() -> None:
    with pytest.raises(ConfigError, match="names no task"):
        Trainer(TrainerConfig(), progress=False)
