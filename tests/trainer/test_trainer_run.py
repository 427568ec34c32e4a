"""Small end-to-end runs of the Trainer on the synthetic world: logs, validation, checkpoints that the library
and ``ofa predict`` load, multi-task sampling, freezing, EMA, non-finite losses, bad data, foreign checkpoints."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import ofa
from ofa.errors import CheckpointError, ConfigError, DataError
from ofa.trainer import Trainer, TrainingError
from ofa.trainer.data import pick_task


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


# -- a plain run -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_caption_run_logs_validates_and_saves(make_config, world: Path, tmp_path: Path) -> None:
    config = make_config(save_every=3, lr=1e-3, warmup_steps=1)
    trainer = Trainer(config, progress=False)
    valid = trainer.train()
    run = Path(config.output_dir)
    records = read_metrics(run)
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    for record in train:
        for key in ("loss", "nll_loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "ntokens"):
            assert math.isfinite(record[key]), (key, record)
        assert record["samples_per_s"] > 0 and record["tokens_per_s"] > record["samples_per_s"]
        assert 0 < record["loss"] < 10  # natural log, per token: about log(vocab ~ 500) = 6.2 at the start
    # warmup 1 step, then linear decay to 0 at step 3: the lr after steps 1, 2, 3
    assert [r["lr"] for r in train] == pytest.approx([1e-3, 5e-4, 0.0])
    assert sum(r["ntokens"] for r in train) > 0 and train[0]["epoch"] == 0
    valid_records = [r for r in records if "valid" in r]
    assert [r["step"] for r in valid_records] == [3]
    assert valid_records[0]["valid"] == valid
    assert {"BLEU-1", "BLEU-4", "ROUGE_L", "CIDEr"} <= set(valid)
    assert all(math.isfinite(v) for v in valid.values())

    checkpoint = run / "checkpoints" / "step_00000003"
    assert (run / "checkpoints" / "latest").read_text() == checkpoint.name
    loaded = ofa.load_checkpoint(checkpoint)
    assert loaded.config == trainer.model.config
    assert not changed(snapshot(trainer.model), snapshot(loaded))
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    assert state["step"] == 3 and state["nan_steps"] == 0 and state["config"] == config.to_dict()

    # the checkpoint directory is all `ofa predict` needs (model + tokenizer)
    from ofa.data.images import decode_base64_image

    image = tmp_path / "valid0.png"
    first = (world / "caption_valid.tsv").read_text().splitlines()[0].split("\t")
    decode_base64_image(first[-1]).save(image)
    proc = subprocess.run([sys.executable, "-m", "ofa.apps.cli", "predict", "--task", "caption", "--checkpoint",
                           str(checkpoint), "-o", "image_size=64", "-o", "max_len=6", str(image)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    prediction = json.loads(proc.stdout.strip().splitlines()[-1])
    assert prediction["input"] == str(image) and isinstance(prediction["text"], str)


def test_validate_every_save_every_keep_last_and_best(make_config) -> None:
    config = make_config(max_steps=4, validate_every=2, save_every=1, keep_last=2, best_metric="CIDEr",
                         valid_max_examples=2)
    Trainer(config, progress=False).train()
    root = Path(config.output_dir) / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000003", "step_00000004"]
    best = json.loads((root / "best" / "best.json").read_text())
    assert best["step"] == 2  # validated at 2 and 4; ties keep the first
    assert [r["step"] for r in read_metrics(config.output_dir) if "valid" in r] == [2, 4]


# -- multi-task ------------------------------------------------------------------------------------------------
def test_pick_task_follows_the_ratios() -> None:
    ratios = [3.0, 1.0]
    picks = [pick_task(ratios, seed=1, step=s, micro=m) for s in range(500) for m in range(2)]
    assert 0.70 < picks.count(0) / len(picks) < 0.80
    again = [pick_task(ratios, seed=1, step=s, micro=m) for s in range(500) for m in range(2)]
    assert picks == again  # the same on every rank and after a resume
    assert pick_task([1.0], seed=1, step=3, micro=0) == 0


def count_tsv(world: Path, split: str, out: Path) -> Path:
    """``count_objects`` rows (uniq_id, count, image) from the caption TSV (its 4th column lists the objects)."""
    lines = []
    for line in (world / f"caption_{split}.tsv").read_text().splitlines():
        uniq_id, _image_id, _caption, labels, image = line.split("\t")
        lines.append(f"{uniq_id}\t{len(labels.split('&&'))}\t{image}")
    out.write_text("\n".join(lines) + "\n")
    return out


def test_multitask_with_ratios(make_config, world: Path, tmp_path: Path) -> None:
    answers = (world / "answers.txt").read_text().splitlines()
    tasks: list[dict[str, Any]] = [
        {"name": "caption", "train_data": str(world / "caption_train.tsv"),
         "valid_data": str(world / "caption_valid.tsv"), "ratio": 2.0,
         "options": {"image_size": 64, "tokenizer": "simple", "metrics": ["CIDEr"]}},
        {"name": "refcoco", "train_data": str(world / "refcoco_train.tsv"),
         "valid_data": str(world / "refcoco_valid.tsv"), "ratio": 1.0,
         "options": {"image_size": 64, "max_image_size": 64}},
        {"name": "vqa_gen", "train_data": str(world / "vqa_train.tsv"), "valid_data": str(world / "vqa_valid.tsv"),
         "ratio": 1.0, "options": {"image_size": 64, "candidates": answers}},
    ]
    if "count_objects" in ofa.list_tasks():
        tasks.append({"name": "count_objects", "train_data": str(count_tsv(world, "train", tmp_path / "ct.tsv")),
                      "valid_data": str(count_tsv(world, "valid", tmp_path / "cv.tsv")), "ratio": 1.0,
                      "options": {"image_size": 64}})
    config = make_config(tasks=tasks, max_steps=4, micro_batch_size=2, grad_accum=3, valid_max_examples=3)
    trainer = Trainer(config, progress=False)
    assert len(trainer.tasks) == len(tasks)
    valid = trainer.train()
    expected_picks = [0] * len(tasks)
    for step in range(4):
        for micro in range(3):
            expected_picks[pick_task([t["ratio"] for t in tasks], config.seed, step, micro)] += 1
    consumed = [s.state.consumed + s.state.epoch * s.draws_per_epoch * s.chunk for s in trainer.streams]
    assert consumed == [2 * n for n in expected_picks]  # each micro-step drew from the task pick_task chose
    expected = {"caption/CIDEr", "refcoco/acc@0.5", "vqa_gen/vqa_acc"}
    if len(tasks) == 4:
        expected |= {"count_objects/count_accuracy", "count_objects/count_mae"}
    assert set(valid) == expected
    losses = [r["loss"] for r in read_metrics(config.output_dir) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)


# -- freezing --------------------------------------------------------------------------------------------------
def test_freeze_embedding_and_resnet(make_config) -> None:
    config = make_config(max_steps=2, valid_data=None, freeze_embedding=True, freeze_resnet=True, lr=1e-3,
                         warmup_steps=0)
    trainer = Trainer(config, progress=False)
    before = snapshot(trainer.model)
    trainer.train()
    moved = changed(before, snapshot(trainer.model))
    frozen = {k for k in before if k.startswith("encoder.embed_images.") or k.endswith("embed_tokens.weight")
              or k == "decoder.output_projection.weight"}
    assert frozen and not (moved & frozen), sorted(moved & frozen)  # BN running statistics included
    assert any(k.startswith("encoder.layers.") for k in moved) and any(k.startswith("decoder.layers.") for k in moved)


def test_freeze_resnet_bn_keeps_statistics_but_trains_weights(make_config) -> None:
    config = make_config(max_steps=1, valid_data=None, freeze_resnet_bn=True, lr=1e-3, warmup_steps=0)
    trainer = Trainer(config, progress=False)
    before = snapshot(trainer.model)
    trainer.train()
    moved = changed(before, snapshot(trainer.model))
    stats = {k for k in before if k.startswith("encoder.embed_images.") and ("running_" in k or "num_batches" in k)}
    assert stats and not (moved & stats)
    assert any(k.startswith("encoder.embed_images.") and k.endswith("conv1.weight") for k in moved)


# -- EMA -------------------------------------------------------------------------------------------------------
def test_ema_is_checkpointed_and_used_for_validation(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    import ofa.evaluation

    seen: list[dict[str, torch.Tensor]] = []
    real_evaluate = ofa.evaluation.evaluate

    def spy(task, model, *args: Any, **kwargs: Any):
        seen.append(snapshot(model))
        return real_evaluate(task, model, *args, **kwargs)

    monkeypatch.setattr(ofa.evaluation, "evaluate", spy)
    config = make_config(max_steps=2, ema_decay=0.5, lr=1e-3, warmup_steps=0, valid_max_examples=2)
    trainer = Trainer(config, progress=False)
    trainer.train()
    assert len(seen) == 1
    shadow = trainer.ema.shadow
    raw = snapshot(trainer.model)
    evaluated = seen[0]
    floats = [k for k in shadow if k.startswith("decoder.layers.")]
    assert all(torch.equal(evaluated[k], shadow[k]) for k in floats)  # validation saw the EMA weights ...
    assert any(not torch.equal(evaluated[k], raw[k]) for k in floats)  # ... which differ from the raw ones
    checkpoint = Path(config.output_dir) / "checkpoints" / "step_00000002"
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    assert state["ema"]["decay"] == 0.5
    assert all(torch.equal(state["ema"]["shadow"][k], v) for k, v in shadow.items())
    # the EMA weights are also saved as a model `ofa predict` / load_checkpoint can use
    ema_model = ofa.load_checkpoint(checkpoint / "ema")
    assert all(torch.equal(snapshot(ema_model)[k], shadow[k]) for k in floats)
    assert ofa.OFATokenizer.from_pretrained(checkpoint / "ema") is not None


# -- non-finite losses -----------------------------------------------------------------------------------------
def poison(monkeypatch: pytest.MonkeyPatch, trainer: Trainer, bad_steps: set[int], value: float,
           micro: int | None = None) -> list[int]:
    """Make the loss of ``trainer`` non-finite at ``bad_steps`` (only micro-batch ``micro`` when given)."""
    import ofa.trainer.criteria.ce as module

    real = module.label_smoothed_cross_entropy
    calls: list[int] = []

    def fake(*args: Any, **kwargs: Any):
        out = real(*args, **kwargs)
        index = len([c for c in calls if c == trainer.step])
        calls.append(trainer.step)
        if trainer.step in bad_steps and (micro is None or index == micro):
            out.loss = out.loss * value
        return out

    monkeypatch.setattr(module, "label_smoothed_cross_entropy", fake)
    return calls


def test_non_finite_steps_are_skipped_and_counted(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(max_steps=4, valid_data=None, max_nan_steps=2, lr=1e-3, warmup_steps=0)
    trainer = Trainer(config, progress=False)
    poison(monkeypatch, trainer, {1, 2}, float("nan"), micro=1)  # the second micro-batch only
    weights = [snapshot(trainer.model)]
    optim_steps = []
    results = []
    while trainer.step < trainer.total_steps:
        results.append(trainer.train_step())
        weights.append(snapshot(trainer.model))
        optim_steps.append(trainer.engine.scheduler.step_count)
    assert [r is None for r in results] == [False, True, True, False]
    assert trainer.nan_steps == 2
    assert changed(weights[0], weights[1]) and changed(weights[3], weights[4])
    assert not changed(weights[1], weights[2]) and not changed(weights[2], weights[3])  # skipped: untouched
    assert optim_steps == [1, 1, 1, 2]  # neither the optimizer nor the schedule moved
    assert all(p.grad is None for p in trainer.model.parameters())  # nothing left over for the next step


def test_too_many_non_finite_steps_stop_the_run(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(max_steps=6, valid_data=None, max_nan_steps=2)
    trainer = Trainer(config, progress=False)
    poison(monkeypatch, trainer, set(range(1, 6)), float("inf"))
    before = snapshot(trainer.model)
    with pytest.raises(TrainingError, match=r"3 steps had a non-finite loss \(limit max_nan_steps=2\)"):
        trainer.train()
    assert trainer.nan_steps == 3 and trainer.step == 3  # steps 1 and 2 skipped, step 3 raised
    assert len(read_metrics(config.output_dir)) == 1  # only step 0 (logged as step 1) trained
    assert changed(before, snapshot(trainer.model))


# -- bad data --------------------------------------------------------------------------------------------------
def test_empty_training_file(make_config, tmp_path: Path) -> None:
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(DataError, match="has no rows"):
        Trainer(make_config(train_data=str(empty)), progress=False)


def test_missing_training_file(make_config, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        Trainer(make_config(train_data=str(tmp_path / "absent.tsv")), progress=False)


def test_fewer_rows_than_one_draw(make_config, world: Path, tmp_path: Path) -> None:
    few = tmp_path / "few.tsv"
    few.write_text("\n".join((world / "caption_train.tsv").read_text().splitlines()[:3]) + "\n")
    with pytest.raises(DataError, match="3 samples, fewer than one draw"):
        Trainer(make_config(train_data=str(few)), progress=False)


def test_all_rows_bad(make_config, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("".join(f"id{i}\timg{i}\ta caption\tlabel\tnot-an-image\n" for i in range(8)))
    trainer = Trainer(make_config(train_data=str(bad), valid_data=None, max_bad_rows=100), progress=False)
    with pytest.raises(DataError, match=r"no good row in .*bad.tsv: all 8 rows are bad; last one: "
                                        r".*bad.tsv:\d+: DataError: base64 image"):
        trainer.train()
    trainer = Trainer(make_config(train_data=str(bad), valid_data=None, max_bad_rows=2), progress=False)
    with pytest.raises(DataError, match=r"3 bad rows in .*bad.tsv, more than max_bad_rows=2"):
        trainer.train()


# -- foreign checkpoints ---------------------------------------------------------------------------------------
def test_resume_and_init_from_another_architecture(make_config, tmp_path: Path) -> None:
    config = make_config(max_steps=1, valid_data=None)
    Trainer(config, progress=False).train()
    run = Path(config.output_dir)
    other = make_config(max_steps=2, valid_data=None, output_dir=str(tmp_path / "other"),
                        model_overrides={"decoder_layers": 1})
    with pytest.raises(CheckpointError, match="another architecture.*decoder_layers"):
        Trainer(other, resume=run, progress=False)
    init_other = make_config(max_steps=2, valid_data=None, output_dir=str(tmp_path / "other2"),
                             model_overrides={"decoder_layers": 1},
                             init_checkpoint=str(run / "checkpoints" / "step_00000001"))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        Trainer(init_other, progress=False)


def test_resume_from_nothing(make_config, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        Trainer(make_config(valid_data=None), resume=tmp_path / "nowhere", progress=False)


def test_vocabulary_mismatch(make_config) -> None:
    with pytest.raises(ConfigError, match="vocabulary"):
        Trainer(make_config(model_overrides={"vocab_size": 1024}), progress=False)


# -- schedule of drop-worst, bf16 ------------------------------------------------------------------------------
def test_drop_worst_starts_after_drop_worst_after(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    import ofa.trainer.criteria.ce as module

    config = make_config(max_steps=3, grad_accum=1, valid_data=None, drop_worst_ratio=0.5, drop_worst_after=1)
    trainer = Trainer(config, progress=False)
    real = module.label_smoothed_cross_entropy
    calls: list[tuple[int, float, int]] = []

    def spy(*args: Any, **kwargs: Any):
        out = real(*args, **kwargs)
        calls.append((trainer.step, kwargs["drop_worst_ratio"], out.ntokens))
        return out

    monkeypatch.setattr(module, "label_smoothed_cross_entropy", spy)
    trainer.train()
    # fairseq's update_num counts the updates already made: active once it exceeds drop_worst_after (spec 6.1)
    assert [(step, ratio) for step, ratio, _ in calls] == [(0, 0.0), (1, 0.0), (2, 0.5)]
    logged = [r["ntokens"] for r in read_metrics(config.output_dir) if "loss" in r]
    assert logged[2] == calls[2][2]  # the loss is normalised by the tokens drop-worst kept


def test_bf16_torch_engine(make_config) -> None:
    config = make_config(max_steps=2, precision="bf16", valid_max_examples=2, save_every=2)
    trainer = Trainer(config, progress=False)
    assert all(p.dtype == torch.bfloat16 for p in trainer.model.parameters())
    assert all(b.dtype in (torch.bfloat16, torch.long) for b in trainer.model.buffers())
    valid = trainer.train()
    losses = [r["loss"] for r in read_metrics(config.output_dir) if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses) and "CIDEr" in valid
    loaded = ofa.load_checkpoint(Path(config.output_dir) / "checkpoints" / "step_00000002")
    assert torch.equal(loaded.decoder.layer_norm.weight.to(torch.bfloat16), trainer.model.decoder.layer_norm.weight)


def test_resume_in_process(make_config) -> None:
    """Resuming from an earlier checkpoint of the same run retrains the later steps to the same weights, and the
    log keeps one record per step."""
    config = make_config(max_steps=4, save_every=2, keep_last=3, valid_data=None, ema_decay=0.5, lr=1e-3,
                         model_overrides={"dropout": 0.1}, drop_path_rate=0.1)
    first = Trainer(config, progress=False)
    first.train()
    final = snapshot(first.model)
    losses = {r["step"]: r["loss"] for r in read_metrics(config.output_dir)}
    assert sorted(losses) == [1, 2, 3, 4]
    again = Trainer(config, resume=Path(config.output_dir) / "checkpoints" / "step_00000002", progress=False)
    assert again.step == 2 and [r["step"] for r in read_metrics(config.output_dir)] == [1, 2]
    again.train()
    assert not changed(final, snapshot(again.model))
    assert all(torch.equal(again.ema.shadow[k], v) for k, v in first.ema.shadow.items())
    records = read_metrics(config.output_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and {r["step"]: r["loss"] for r in records} == losses
