"""The DeepSpeed JSON derived from TrainerConfig (no deepspeed import): batch keys, ZeRO/offload, precision, and
how a user JSON may extend it but not contradict it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from ofa.errors import ConfigError
from ofa.trainer.config import TrainerConfig
from ofa.trainer.zero import deepspeed_config


def ds(user: dict[str, Any] | None = None, world: int = 1, **changes: Any) -> dict[str, Any]:
    config = TrainerConfig(task="caption", engine="deepspeed", **changes)
    return deepspeed_config(config, config.batch_plan(world), user)


def test_no_deepspeed_import_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # any "import deepspeed" now raises ImportError
    assert ds(zero_stage=3, offload_optimizer=True)["zero_optimization"]["stage"] == 3


@pytest.mark.parametrize("micro, accum, world", [(4, 2, 1), (2, 4, 8), (1, 1, 3)])
def test_batch_keys_come_from_the_plan(micro: int, accum: int, world: int) -> None:
    out = ds(world=world, micro_batch_size=micro, grad_accum=accum, clip_norm=5.0)
    assert out["train_batch_size"] == micro * accum * world
    assert out["train_micro_batch_size_per_gpu"] == micro
    assert out["gradient_accumulation_steps"] == accum
    assert out["gradient_clipping"] == 5.0
    # DeepSpeed's own check: train_batch_size == micro * accum * world size
    assert out["train_batch_size"] == (out["train_micro_batch_size_per_gpu"] * out["gradient_accumulation_steps"]
                                       * world)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_section(stage: int) -> None:
    zero = ds(zero_stage=stage)["zero_optimization"]
    assert zero["stage"] == stage
    assert ("stage3_gather_16bit_weights_on_model_save" in zero) == (stage == 3)
    assert "offload_optimizer" not in zero and "offload_param" not in zero


def test_offload_sections() -> None:
    zero = ds(zero_stage=2, offload_optimizer=True)["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and "offload_param" not in zero
    zero = ds(zero_stage=3, offload_optimizer=True, offload_params=True)["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_offload_params_needs_stage_3(stage: int) -> None:
    with pytest.raises(ConfigError, match=f"offload_params needs zero_stage=3 \\(got {stage}\\)"):
        ds(zero_stage=stage, offload_params=True)


def test_offload_optimizer_needs_zero() -> None:
    with pytest.raises(ConfigError, match="offload_optimizer needs ZeRO"):
        ds(zero_stage=0, offload_optimizer=True)


@pytest.mark.parametrize("precision, bf16, fp16", [("fp32", False, False), ("bf16", True, False),
                                                   ("fp16", False, True)])
def test_precision_flags(precision: str, bf16: bool, fp16: bool) -> None:
    out = ds(precision=precision)
    assert out["bf16"]["enabled"] is bf16 and out["fp16"]["enabled"] is fp16
    assert out["fp16"]["loss_scale"] == 0 and out["fp16"]["loss_scale_window"] == 512  # dynamic (spec 6.4)


def test_client_optimizer_is_allowed() -> None:
    out = ds(zero_stage=3, offload_optimizer=True)
    assert out["zero_allow_untested_optimizer"] is True and out["zero_force_ds_cpu_optimizer"] is False
    assert "optimizer" not in out and "scheduler" not in out


def test_user_json_merges_extra_zero_keys() -> None:
    user = {"zero_optimization": {"stage": 2, "overlap_comm": False, "contiguous_gradients": False,
                                  "reduce_bucket_size": 5e7, "allgather_bucket_size": 5e7},
            "communication_data_type": "fp32", "train_batch_size": 8, "gradient_clipping": 1.0,
            "bf16": {"enabled": False}, "wall_clock_breakdown": True}
    out = ds(user, micro_batch_size=4, grad_accum=2, zero_stage=2)
    zero = out["zero_optimization"]
    assert zero["stage"] == 2 and zero["overlap_comm"] is False and zero["contiguous_gradients"] is False
    assert zero["reduce_bucket_size"] == 5e7 and zero["allgather_bucket_size"] == 5e7
    assert out["communication_data_type"] == "fp32" and out["wall_clock_breakdown"] is True
    assert out["train_batch_size"] == 8 and out["gradient_accumulation_steps"] == 2


def test_user_json_may_add_offload_and_the_input_is_not_changed() -> None:
    user = {"zero_optimization": {"offload_optimizer": {"device": "cpu", "pin_memory": False}}}
    out = ds(user, zero_stage=3)
    assert out["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert out["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True  # deep merge
    out["zero_optimization"]["offload_optimizer"]["device"] = "nvme"
    assert user["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_user_json_offload_param_needs_stage_3() -> None:
    with pytest.raises(ConfigError, match="offload_param, which needs zero_stage=3 \\(got 2\\)"):
        ds({"zero_optimization": {"offload_param": {"device": "cpu"}}}, zero_stage=2)
    with pytest.raises(ConfigError, match="offload_optimizer, which needs ZeRO"):
        ds({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, zero_stage=0)


@pytest.mark.parametrize("user, both", [
    ({"train_batch_size": 64}, ("train_batch_size=64", "gives 8")),
    ({"train_micro_batch_size_per_gpu": 2}, ("train_micro_batch_size_per_gpu=2", "gives 4")),
    ({"gradient_accumulation_steps": 1}, ("gradient_accumulation_steps=1", "gives 2")),
    ({"gradient_clipping": 5.0}, ("gradient_clipping=5.0", "gives 1.0")),
    ({"zero_optimization": {"stage": 3}}, ("zero_optimization.stage=3", "zero_stage=2")),
    ({"bf16": {"enabled": True}}, ("bf16.enabled=True", "precision='fp32'")),
    ({"bfloat16": {"enabled": True}}, ("bfloat16.enabled=True", "precision='fp32'")),
    ({"fp16": {"enabled": True}}, ("fp16.enabled=True", "precision='fp32'")),
])
def test_contradictions_name_both_values(user: dict[str, Any], both: tuple[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        ds(user, micro_batch_size=4, grad_accum=2, zero_stage=2)
    assert both[0] in str(info.value) and both[1] in str(info.value)


def test_precision_disabled_in_user_json_contradicts_bf16() -> None:
    with pytest.raises(ConfigError, match=r"bf16.enabled=False but precision='bf16'"):
        ds({"bf16": {"enabled": False}}, precision="bf16")


def test_old_bfloat16_name_is_folded_into_bf16() -> None:
    out = ds({"bfloat16": {"enabled": True, "immediate_grad_update": True}}, precision="bf16")
    assert "bfloat16" not in out and out["bf16"] == {"enabled": True, "immediate_grad_update": True}


@pytest.mark.parametrize("section", ["optimizer", "scheduler"])
def test_optimizer_and_scheduler_belong_to_the_trainer(section: str) -> None:
    with pytest.raises(ConfigError, match="may not define 'optimizer' or 'scheduler'.*lr"):
        ds({section: {"type": "AdamW", "params": {"lr": 1e-3}}})


def test_malformed_sections() -> None:
    with pytest.raises(ConfigError, match="'zero_optimization' must be a mapping"):
        ds({"zero_optimization": 2})


def test_user_json_file_errors(tmp_path: Path) -> None:
    from ofa.trainer.zero import _read_user_config

    assert _read_user_config(None) is None
    with pytest.raises(ConfigError, match="does not exist"):
        _read_user_config(str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        _read_user_config(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object, got list"):
        _read_user_config(str(bad))
    bad.write_text('{"zero_optimization": {"stage": 2}}')
    assert _read_user_config(str(bad)) == {"zero_optimization": {"stage": 2}}
