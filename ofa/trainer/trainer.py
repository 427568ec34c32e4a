"""The training loop: tasks from the registry, deterministic data streams, a criterion and an engine from their
registries (:mod:`ofa.trainer.criteria`, :mod:`ofa.trainer.engine`), validation with the task's metric, JSONL
logs, atomic checkpoints, exact resume. The loop names no criterion and no engine."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, cast

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ofa import evaluation
from ofa.builders import PRESETS, build_model
from ofa.checkpoint import load_checkpoint, load_state_dict_into, read_checkpoint
from ofa.config import OFAConfig
from ofa.data.dataset import TaskDataset
from ofa.data.sources import image_root_for, open_source
from ofa.errors import CheckpointError, ConfigError, DataError, OFAError
from ofa.model import OFAModel
from ofa.pipeline import load_tokenizer
from ofa.serialization import read_torch_file
from ofa.tasks import get_task
from ofa.trainer.checkpoint import CheckpointManager, refuse_pickled_objects, restore_rng
from ofa.trainer.config import TrainerConfig
from ofa.trainer.criteria import CriterionContext, Prepared, build_criterion
from ofa.trainer.data import TaskStream, pick_task
from ofa.trainer.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from ofa.trainer.engine import build_engine
from ofa.trainer.loss import LossOutput
from ofa.trainer.optim import EMA

__all__ = ["Trainer", "TrainingError"]

logger = logging.getLogger(__name__)


class TrainingError(OFAError, RuntimeError):
    """Training cannot continue (too many non-finite losses, no data, ...)."""


class Trainer:
    """Fine-tune an OFA model on one or more registered tasks.

    Args:
        config: the run's :class:`TrainerConfig`.
        model: an already built model (default: built from ``config.model``).
        tokenizer: an already loaded tokenizer (default: ``config.tokenizer``).
        resume: a checkpoint directory, or a run directory whose newest intact checkpoint is used.
        overwrite: start a new run in an ``output_dir`` that holds another run's checkpoints or log, deleting
            them (without it, and without ``resume``, such a directory is refused).
        trust_pickle: on resume, unpickle checkpoint files that hold objects other than tensors and plain
            containers (runs code from the files: only for run directories you trust). The trainer's own files never
            need it.
        progress: show a progress bar on rank 0.
    """

    def __init__(self, config: TrainerConfig, *, model: OFAModel | None = None, tokenizer: Any = None,
                 resume: str | Path | None = None, overwrite: bool = False, trust_pickle: bool = False,
                 progress: bool = True) -> None:
        if not config.tasks:
            raise ConfigError("the trainer config names no task ('task' or 'tasks')")
        self.config = config
        self.dist: DistInfo = init_distributed(config.device)
        if config.precision == "fp16" and self.dist.device.type != "cuda":
            raise ConfigError("precision='fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
        self.output_dir = Path(config.output_dir)
        self.progress = progress and self.dist.is_main
        torch.manual_seed(config.seed)  # identical model init on every rank
        self.tokenizer = self._load_tokenizer(tokenizer)
        self.model = self._build_model(model)
        self.tasks = [self._build_task(spec) for spec in config.tasks]
        self.streams = [self._build_stream(i) for i in range(len(self.tasks))]
        self.valid_examples = [self._read_valid(i) for i in range(len(self.tasks))]
        self.plan = config.batch_plan(self.dist.world_size)
        self.total_steps = self._total_steps()
        warmup = config.warmup_steps if config.warmup_steps is not None else int(config.warmup_ratio *
                                                                                 self.total_steps)
        self.engine = build_engine(self.model, config, self.plan, self.total_steps, warmup, self.dist)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.criterion = build_criterion(config.criterion, CriterionContext(
            tokenizer=self.tokenizer, tasks=self.tasks, datasets=[s.dataset for s in self.streams], model=self.model,
            device=self.dist.device, full_model=self._full_model, train_mode=self._train_mode))
        self.step = 0
        self.nan_steps = 0
        _check_output_dir(self.output_dir, resume, overwrite)  # after the config's own errors, before any write
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", keep_last=config.keep_last,
                                             best_metric=config.best_metric, best_mode=config.best_mode,
                                             rank=self.dist.rank, world_size=self.dist.world_size, barrier=barrier)
        torch.manual_seed(config.seed + 7919 * self.dist.rank)  # per-rank dropout streams
        if resume is not None:
            self.resume(resume, trust_pickle=trust_pickle)
        elif overwrite and self.dist.is_main:
            _clear_run(self.output_dir)
        barrier()

    # -- setup ------------------------------------------------------------------------------------------------
    def _load_tokenizer(self, tokenizer: Any) -> Any:
        if tokenizer is not None:
            return load_tokenizer(tokenizer)
        source = self.config.tokenizer
        if source is None and Path(self.config.model).is_dir():
            source = self.config.model
        if source is None:
            raise ConfigError("set 'tokenizer' (a directory with encoder.json, vocab.bpe, dict.txt, or a saved "
                              "tokenizer)")
        return load_tokenizer(source)

    def _build_model(self, model: OFAModel | None) -> OFAModel:
        cfg = self.config
        if model is not None and not isinstance(model, OFAModel):
            raise ConfigError(f"model must be an ofa.OFAModel (build_model / load_checkpoint), got "
                              f"{type(model).__name__}")
        overrides = dict(cfg.model_overrides)
        if cfg.drop_path_rate is not None:
            overrides.setdefault("encoder_drop_path_rate", cfg.drop_path_rate)
            overrides.setdefault("decoder_drop_path_rate", cfg.drop_path_rate)
        if model is None:
            if cfg.model.lower().replace("_", "-") in PRESETS:
                overrides.setdefault("vocab_size", len(self.tokenizer))
                model = build_model(cfg.model, **overrides)
            elif cfg.model.lower().startswith("ofa-") and not Path(cfg.model).exists():
                raise ConfigError(f"model {cfg.model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a "
                                  "checkpoint path")
            else:
                model = load_checkpoint(cfg.model, **overrides)
        if cfg.init_checkpoint is not None:
            state, _, _ = read_checkpoint(cfg.init_checkpoint)
            try:
                load_state_dict_into(model, state)
            except CheckpointError as exc:
                raise CheckpointError(f"init_checkpoint {cfg.init_checkpoint!r} does not fit the model "
                                      f"(another architecture?): {exc}") from exc
        if model.config.vocab_size != len(self.tokenizer):
            raise ConfigError(f"the model's vocabulary ({model.config.vocab_size}) and the tokenizer's "
                              f"({len(self.tokenizer)}) differ")
        model = model.to(self.dist.device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        if dtype is not None:
            # Buffers too: DeepSpeed casts only the parameters, and BatchNorm then meets fp32 running statistics
            # with bf16 inputs ("expected scalar type BFloat16 but found Float"). fairseq's model.half() in OFA
            # casts everything as well.
            model = model.to(dtype)
        if cfg.freeze_embedding:
            model.encoder.embed_tokens.weight.requires_grad_(False)
        resnet = model.encoder.embed_images
        if cfg.freeze_resnet and resnet is not None:
            for p in resnet.parameters():
                p.requires_grad_(False)
        return model

    @contextlib.contextmanager
    def _full_model(self) -> Iterator[OFAModel]:
        """The engine's complete model (ZeRO-3 gathers it; enter on every rank)."""
        with self.engine.full_model() as full:
            yield cast(OFAModel, full)  # the engine was built around self.model, an OFAModel

    def _train_mode(self) -> None:
        """Train mode, except BatchNorm when the ResNet or its statistics are frozen."""
        self.model.train()
        resnet = self.model.encoder.embed_images
        if resnet is not None and (self.config.freeze_resnet or self.config.freeze_resnet_bn):
            for module in resnet.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _build_task(self, spec: Any) -> Any:
        return get_task(spec.name, **spec.options)

    def _build_stream(self, index: int) -> TaskStream:
        spec = self.config.tasks[index]
        if spec.train_data is None:
            raise ConfigError(f"task {spec.name!r} has no train_data")
        source = open_source(spec.train_data, spec.data_format)
        root = image_root_for(spec.train_data, spec.data_format, spec.image_root)
        dataset = TaskDataset(source, self.tasks[index], self.tokenizer, training=True,
                              max_bad_rows=self.config.max_bad_rows, image_root=root)
        if len(dataset) == 0:
            raise DataError(f"the training data of task {spec.name!r} ({spec.train_data}) has no rows")
        return TaskStream(dataset, self.config.micro_batch_size, self.dist.rank, self.dist.world_size,
                          self.config.seed + 1000 * index, self.tokenizer.pad_id, self.config.num_workers)

    def _read_valid(self, index: int) -> list[Any]:
        spec = self.config.tasks[index]
        if spec.valid_data is None:
            return []
        return evaluation.read_examples(spec.valid_data, self.tasks[index], fmt=spec.data_format, image_root=spec.image_root,
                             max_bad_rows=self.config.max_bad_rows, limit=self.config.valid_max_examples)

    def _total_steps(self) -> int:
        if self.config.max_steps is not None:
            return self.config.max_steps
        draws = sum(s.draws_per_epoch for s in self.streams)
        per_epoch = max(draws // self.config.grad_accum, 1)
        return per_epoch * self.config.max_epochs

    # -- one optimisation step ----------------------------------------------------------------------------------
    def _rng_devices(self) -> list[int]:
        return [self.dist.device.index or 0] if self.dist.device.type == "cuda" else []

    @staticmethod
    def _restore(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)

    def _norm_statistics(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(buffer, copy)`` of the BatchNorm statistics that this step's forward passes will update."""
        pairs = []
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
                for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                    if buffer is not None:
                        pairs.append((buffer, buffer.detach().clone()))
        return pairs

    def train_step(self) -> dict[str, float] | None:
        """Run ``grad_accum`` micro-batches and one optimiser step; None when the step was skipped (non-finite)."""
        cfg = self.config
        self._train_mode()
        ratios = [t.ratio for t in cfg.tasks]
        works: list[Prepared] = []
        for micro in range(cfg.grad_accum):
            index = pick_task(ratios, cfg.seed, self.step, micro)
            batch = self.engine.cast_inputs(self.streams[index].next().to(self.dist.device))
            works.append(self.criterion.prepare(batch, index, self.step))
        local = torch.tensor([float(sum(w.ntokens for w in works)), float(sum(len(w.batch) for w in works))],
                             dtype=torch.float64, device=self.dist.device)
        total_tokens, total_samples = all_reduce_sum(local).tolist()
        if total_tokens <= 0:
            raise TrainingError(f"step {self.step}: the global batch has no target tokens")
        scale = self.engine.loss_scale(total_tokens)
        # Agree across ranks that every micro-batch loss is finite before any gradient reaches the engine: a
        # non-finite step is then skipped by every rank together, leaving weights and optimizer untouched.
        norm_stats = self._norm_statistics()
        outs: list[LossOutput] = []
        if self.engine.backward_per_forward:
            # ZeRO-3 cannot run several forward passes before their backward passes (its parameter hooks lose
            # track, and the gradients of the last layers come out wrong), so the check is a no-grad forward of
            # every micro-batch with the RNG forked: the training forwards below replay the same dropout masks.
            with torch.random.fork_rng(devices=self._rng_devices()), torch.no_grad():
                finite = all(bool(torch.isfinite(self.criterion.loss(self.engine.module, work).loss)) for work in works)
            self._restore(norm_stats)
        else:
            for i, work in enumerate(works):
                with self.engine.no_sync(i == len(works) - 1):
                    outs.append(self.criterion.loss(self.engine.module, work))
            finite = all(bool(torch.isfinite(o.loss)) for o in outs)
        bad = torch.tensor([0.0 if finite else 1.0], device=self.dist.device)
        if float(all_reduce_sum(bad)) > 0:
            del outs
            self._restore(norm_stats)  # the forward passes updated BatchNorm statistics (possibly with NaN)
            self.engine.skip_step()
            self.nan_steps += 1
            logger.warning("step %d: non-finite loss, step skipped (%d of at most %d)", self.step, self.nan_steps,
                           cfg.max_nan_steps)
            if self.nan_steps > cfg.max_nan_steps:
                raise TrainingError(f"{self.nan_steps} steps had a non-finite loss (limit max_nan_steps="
                                    f"{cfg.max_nan_steps}); lower the learning rate or check the data")
            self.step += 1
            return None
        loss_sum = 0.0
        nll_sum = 0.0
        for i, work in enumerate(works):
            out = self.criterion.loss(self.engine.module, work) if self.engine.backward_per_forward else outs[i]
            with self.engine.no_sync(i == len(works) - 1):
                self.engine.backward(out.loss * scale)
            loss_sum += float(out.loss.detach())
            nll_sum += float(out.nll_loss.detach())
            del out
        del outs
        grad_norm = self.engine.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        totals = all_reduce_sum(torch.tensor([loss_sum, nll_sum], dtype=torch.float64,
                                             device=self.dist.device)).tolist()
        stats = {"loss": totals[0] / total_tokens, "nll_loss": totals[1] / total_tokens,
                 "ntokens": total_tokens, "nsamples": total_samples, "grad_norm": grad_norm, "lr": self.engine.lr()}
        for key in works[0].stats:
            stats[key] = sum(w.stats[key] for w in works) / len(works)
        return stats

    # -- validation -------------------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Score every task's validation examples (EMA weights when EMA is on); rank 0 computes, all return it."""
        metrics: dict[str, float] = {}
        with self._full_model() as full:
            if self.dist.is_main:
                model = self.ema.copy_to(full) if self.ema is not None else full
                model.eval()
                for task, examples in zip(self.tasks, self.valid_examples):
                    if not examples:
                        continue
                    scores, _ = evaluation.evaluate(task, model, self.tokenizer, examples,
                                         batch_size=self.config.valid_batch_size or self.config.micro_batch_size,
                                         progress=False)
                    prefix = f"{task.name}/" if len(self.tasks) > 1 else ""
                    metrics.update({prefix + k: float(v) for k, v in scores.items()})
        if self.dist.world_size > 1:
            metrics = _broadcast_object(metrics)
        self._train_mode()
        return metrics

    # -- checkpoints ------------------------------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "nan_steps": self.nan_steps,
            "streams": [s.state_dict() for s in self.streams],
            "ema": None if self.ema is None else self.ema.state_dict(),
            "best_value": self.checkpoints.best_value,
            "config": self.config.to_dict(),
            "architecture": self.model.config.to_dict(),
        }

    def save(self) -> Path:
        def write(directory: Path) -> None:
            self.engine.save(directory)
            with self._full_model() as full:  # every rank: ZeRO-3 gathers the weights collectively
                if self.dist.is_main:
                    full.save_pretrained(directory)
                    if self.ema is not None:
                        # The weights validation scored (and best/ was chosen by), ready for `ofa predict`.
                        self.ema.copy_to(full).save_pretrained(directory / "ema")
                        self.tokenizer.save_pretrained(directory / "ema")
                    self.tokenizer.save_pretrained(directory)

        return self.checkpoints.save(self.step, write, self.trainer_state())

    def resume(self, path: str | Path, *, trust_pickle: bool = False) -> None:
        """Restore model, optimiser, scheduler, EMA, RNG, step and data positions from a checkpoint.

        The checkpoint's manifest is verified first (a damaged newest checkpoint of a run directory falls back to
        the previous intact one, with a warning); files that pickle anything but tensors and plain containers are
        refused unless ``trust_pickle``.
        """
        directory = CheckpointManager.resolve(path)
        if not trust_pickle:
            refuse_pickled_objects(directory)
        state = read_torch_file(directory / "trainer_state.pt", trust_pickle=trust_pickle)
        arch = state.get("architecture")
        if arch is not None and arch != self.model.config.to_dict():
            theirs = OFAConfig.from_dict(arch)
            diff = {k: (v, getattr(self.model.config, k)) for k, v in theirs.__dict__.items()
                    if getattr(self.model.config, k) != v}
            raise CheckpointError(f"checkpoint {str(directory)!r} is for another architecture: {diff}")
        self.engine.load(directory)
        self.step = int(state["step"])
        self.nan_steps = int(state["nan_steps"])
        for stream, s in zip(self.streams, state["streams"]):
            stream.load_state_dict(s)
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.checkpoints.best_value = state.get("best_value")
        rng = directory / f"rng_rank{self.dist.rank}.pt"
        if rng.is_file():
            restore_rng(read_torch_file(rng, trust_pickle=trust_pickle))
        self._truncate_log()
        logger.info("resumed from %s at step %d", directory, self.step)

    def _truncate_log(self) -> None:
        """Drop the metrics.jsonl records of steps after the resumed checkpoint: those steps were lost with the
        interrupted run and are about to be trained again, so each step keeps one record."""
        path = self.output_dir / "metrics.jsonl"
        if not self.dist.is_main or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.step]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)

    # -- the loop ---------------------------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def train(self) -> dict[str, Any]:
        """Train to ``total_steps`` (resuming where a checkpoint left off); returns the last validation metrics."""
        cfg = self.config
        bar = None
        if self.progress:
            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        last_valid: dict[str, float] = {}
        steps_per_epoch = max(self.total_steps // cfg.max_epochs, 1) if cfg.max_steps is None else 0
        started = time.perf_counter()
        deadline = None if cfg.max_minutes is None else started + 60.0 * cfg.max_minutes
        window = {"samples": 0.0, "tokens": 0.0, "time": started}
        while self.step < self.total_steps:
            stats = self.train_step()
            if stats is not None:
                window["samples"] += stats["nsamples"]
                window["tokens"] += stats["ntokens"]
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    now = time.perf_counter()
                    elapsed = max(now - window["time"], 1e-9)
                    record = {"step": self.step, **{k: v for k, v in stats.items() if k not in ("nsamples",)},
                              "samples_per_s": window["samples"] / elapsed,
                              "tokens_per_s": window["tokens"] / elapsed,
                              "epoch": self.streams[0].state.epoch}
                    self._log(record)
                    window = {"samples": 0.0, "tokens": 0.0, "time": now}
                if bar is not None:
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}")
            if bar is not None:
                bar.update(1)
            at_epoch_end = steps_per_epoch > 0 and self.step % steps_per_epoch == 0
            out_of_time = deadline is not None and self._past(deadline)
            if out_of_time and self.step < self.total_steps:
                logger.warning("max_minutes (%s) reached at step %d of %d: stopping, then validating and saving",
                               cfg.max_minutes, self.step, self.total_steps)
                self._log({"step": self.step, "stopped": "max_minutes", "planned_steps": self.total_steps})
            done = self.step >= self.total_steps or out_of_time
            validate = (cfg.validate_every > 0 and self.step % cfg.validate_every == 0) or (
                cfg.validate_every == 0 and at_epoch_end) or done
            save = (cfg.save_every > 0 and self.step % cfg.save_every == 0) or (
                cfg.save_every == 0 and at_epoch_end) or done
            if validate and any(self.valid_examples):
                last_valid = self.validate()
                self._log({"step": self.step, "valid": last_valid})
            if save:
                self.save()
                if last_valid and validate:
                    self.checkpoints.update_best(self.step, last_valid)
            if done:
                break
        if bar is not None:
            bar.close()
        return last_valid

    def _past(self, deadline: float) -> bool:
        """Whether any rank's clock passed ``deadline`` (every rank gets the same answer, so all stop together)."""
        late = torch.tensor([1.0 if time.perf_counter() >= deadline else 0.0], dtype=torch.float64,
                            device=self.dist.device)
        return float(all_reduce_sum(late)) > 0


def _check_output_dir(output_dir: Path, resume: str | Path | None, overwrite: bool) -> None:
    """Refuse to start a fresh run on top of another one (its checkpoints would be pruned in favour of ours by step
    number, ``latest`` and ``metrics.jsonl`` would mix both runs)."""
    if resume is not None or overwrite:
        return
    found = [name for name in ("checkpoints", "metrics.jsonl")
             if (output_dir / name).is_file() or ((output_dir / name).is_dir() and any((output_dir / name).iterdir()))]
    if found:
        raise ConfigError(
            f"output_dir {str(output_dir)!r} already holds a run ({', '.join(found)}): resume it (resume=DIR, CLI "
            "--resume DIR), replace it (overwrite=True, CLI --overwrite) or choose another output_dir")


def _clear_run(output_dir: Path) -> None:
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    (output_dir / "metrics.jsonl").unlink(missing_ok=True)


def _broadcast_object(value: Any) -> Any:
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
