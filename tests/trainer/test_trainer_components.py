"""Criteria and engines as registered components: nested config sections, dotted overrides, the deprecated flat
keys of 0.1, and a new criterion and a new engine added without touching the trainer."""

from __future__ import annotations

import dataclasses
import json
import tokenize
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from torch import nn

from ofa.errors import ConfigError
from ofa.trainer import Trainer, TrainerConfig
from ofa.trainer.criteria import CRITERIA, CriterionContext, Prepared, criterion_class, register_criterion
from ofa.trainer.criteria.ce import LabelSmoothedCE
from ofa.trainer.criteria.scst import SCST
from ofa.trainer.engine import ENGINES, TorchEngine, engine_class, register_engine
from ofa.trainer.loss import LossOutput, label_smoothed_cross_entropy


def test_sections_from_names_mappings_and_dotted_overrides(tmp_path: Path) -> None:
    config = TrainerConfig(task="caption")
    assert config.engine == TorchEngine.Config() and config.criterion == LabelSmoothedCE.Config()
    config = TrainerConfig(task="caption", criterion={"name": "scst", "beam_size": 3})
    assert isinstance(config.criterion, SCST.Config) and config.criterion.beam_size == 3
    assert config.criterion.max_len == 16  # the section's default
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"task": "caption", "engine": {"name": "deepspeed", "zero_stage": 2}}))
    config = TrainerConfig.from_file(path, ["engine.zero_stage=3", "criterion.label_smoothing=0.2"])
    assert config.engine.name == "deepspeed" and config.engine.zero_stage == 3
    assert config.criterion.label_smoothing == 0.2
    assert TrainerConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    assert config.to_dict()["engine"] == {"name": "deepspeed", "zero_stage": 3, "offload_optimizer": False,
                                          "offload_params": False, "config": None}
    assert "zero_stage" not in config.to_dict()  # flat keys are not written back


@pytest.mark.parametrize("value, message", [
    ({"name": "torch", "zero_stage": 2}, r"unknown engine option\(s\) \['zero_stage'\] for engine 'torch'"),
    ({"name": "deepspeed", "zero_stage": 5}, r"zero_stage \(5\) must be 0, 1, 2 or 3"),
    ({"name": "deepspeed", "zero_stage": "2"}, r"zero_stage \('2'\) must be an integer, got str"),
    (["deepspeed"], r"engine \(\['deepspeed'\]\) must be a name or a mapping"),
])
def test_bad_engine_sections_name_the_value(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainerConfig(task="caption", engine=value)


def test_bad_criterion_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown criterion option\(s\) \['beam'\] for criterion 'scst'; valid: "
                                          r"\['beam_size', 'max_len', 'name', 'no_repeat_ngram_size'\]"):
        TrainerConfig(task="caption", criterion={"name": "scst", "beam": 3})


def test_flat_keys_still_work_with_a_future_warning() -> None:
    with pytest.warns(FutureWarning, match=r"'zero_stage' is deprecated .*engine.zero_stage"):
        old = TrainerConfig(task="caption", engine="deepspeed", zero_stage=2, label_smoothing=0.0)
    new = TrainerConfig(task="caption", engine={"name": "deepspeed", "zero_stage": 2},
                        criterion={"name": "ce", "label_smoothing": 0.0})
    assert old == new and old.zero_stage is None
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match=r"zero_stage=3 contradicts engine.zero_stage=2"):
        TrainerConfig(task="caption", engine={"name": "deepspeed", "zero_stage": 2}, zero_stage=3)
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match="needs engine='deepspeed'"):
        TrainerConfig(task="caption", offload_optimizer=True)


def test_cross_section_checks_live_with_the_section() -> None:
    with pytest.raises(ConfigError, match="EMA is not supported with ZeRO-3"):
        TrainerConfig(task="caption", engine={"name": "deepspeed", "zero_stage": 3}, ema_decay=0.9)
    with pytest.raises(ConfigError, match="precision='fp16' needs engine='deepspeed'"):
        TrainerConfig(task="caption", precision="fp16")


def test_the_trainer_names_no_criterion_and_no_engine() -> None:
    path = Path(__file__).resolve().parents[2] / "ofa" / "trainer" / "trainer.py"
    with path.open() as f:  # the code's names and strings, not its comments and docstrings
        code = " ".join(t.string for t in tokenize.generate_tokens(f.readline)
                        if t.type in (tokenize.NAME, tokenize.OP, tokenize.STRING) and not t.string.startswith('"""'))
    for word in ("scst", "clip", "deepspeed", "zero_stage", "label_smooth", "vqgan", "hasattr"):
        assert word not in code.lower(), word
    for name in CRITERIA:
        assert hasattr(criterion_class(name), "Config")
    for name in ENGINES:
        assert hasattr(engine_class(name), "build")


# -- one new file each: a criterion and an engine, registered by the user -----------------------------------------
class WeightedCE:
    """A user's criterion: plain CE times a constant (a stand-in for any new loss)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        name: Literal["weighted_ce"] = "weighted_ce"
        weight: float = 1.0

        def check(self, trainer: TrainerConfig) -> None:
            pass

    calls: list[tuple[int, float]] = []

    def __init__(self, config: Config, context: CriterionContext) -> None:
        self.config = config
        self.pad_id = context.tokenizer.pad_id

    def prepare(self, batch: Any, task_index: int, step: int) -> Prepared:
        return Prepared(task_index, batch, int(batch.target.ne(self.pad_id).sum()), step, stats={"weight":
                                                                                                self.config.weight})

    def loss(self, model: nn.Module, prepared: Prepared) -> LossOutput:
        batch = prepared.batch
        out = model(batch.src_tokens, batch.prev_output_tokens, batch.patch_images, batch.patch_masks)
        plain = label_smoothed_cross_entropy(out.logits, batch.target, epsilon=0.0, pad_id=self.pad_id)
        WeightedCE.calls.append((prepared.step, float(plain.loss.detach())))
        return LossOutput(plain.loss * self.config.weight, plain.nll_loss, plain.ntokens)


class CountingEngine(TorchEngine):
    """A user's engine: the torch engine that counts optimiser steps."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        name: Literal["counting"] = "counting"

        def check(self, trainer: TrainerConfig) -> None:
            pass

    steps = 0

    def step(self) -> float:
        CountingEngine.steps += 1
        return super().step()


def test_a_registered_criterion_and_engine_train_without_touching_the_trainer(make_config) -> None:
    register_criterion("weighted_ce", WeightedCE, replace=True)
    register_engine("counting", CountingEngine, replace=True)
    WeightedCE.calls.clear()
    CountingEngine.steps = 0
    config = make_config(max_steps=2, grad_accum=1, valid_data=None, engine="counting",
                         criterion={"name": "weighted_ce", "weight": 2.0})
    trainer = Trainer(config, progress=False)
    stats = trainer.train_step()
    assert stats is not None and stats["weight"] == 2.0
    # the logged loss is the criterion's (2x the plain CE) over the step's tokens
    assert stats["loss"] == pytest.approx(2.0 * WeightedCE.calls[0][1] / stats["ntokens"], rel=1e-6)
    trainer.train_step()
    assert CountingEngine.steps == 2 and [c[0] for c in WeightedCE.calls] == [0, 1]
    assert isinstance(trainer.engine, CountingEngine)


def test_registering_over_a_builtin_needs_replace() -> None:
    with pytest.raises(ConfigError, match="a criterion named 'ce' exists"):
        register_criterion("ce", WeightedCE)
    with pytest.raises(ConfigError, match="needs a nested Config dataclass and a build"):
        register_engine("plain", object)
    assert torch.is_tensor(torch.zeros(1))


def test_the_trainer_takes_only_an_ofa_model(make_config) -> None:
    with pytest.raises(ConfigError, match=r"model must be an ofa.OFAModel .*got Linear"):
        Trainer(make_config(valid_data=None), model=nn.Linear(2, 2), progress=False)  # type: ignore[arg-type]
