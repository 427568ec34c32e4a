"""The training loop: tasks from the registry, deterministic data streams, CE or SCST losses, an engine
(plain torch or DeepSpeed), validation with the task's metric, JSONL logs, atomic checkpoints, exact resume."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ofa.builders import PRESETS, build_model
from ofa.checkpoint import load_checkpoint, load_state_dict_into, read_checkpoint
from ofa.config import OFAConfig
from ofa.data.dataset import TaskDataset
from ofa.data.jsonl import JSONLFile
from ofa.data.text import strip_punctuation
from ofa.data.tsv import TSVFile
from ofa.errors import CheckpointError, ConfigError, DataError, OFAError
from ofa import evaluation
from ofa.generation.config import GenerationConfig
from ofa.generation.generate import generate
from ofa.metrics.cider import CiderDScorer
from ofa.metrics.image_text import build_scorer
from ofa.pipeline import load_tokenizer
from ofa.tasks import get_task
from ofa.tasks.image_gen import check_codebook
from ofa.trainer.checkpoint import CheckpointManager, restore_rng
from ofa.trainer.clip_scst import clip_scst_loss, sample_clip_scst
from ofa.trainer.config import TrainerConfig
from ofa.trainer.data import TaskStream, pick_task
from ofa.trainer.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from ofa.trainer.engine import TorchEngine
from ofa.trainer.loss import LossOutput, label_smoothed_cross_entropy, leave_one_out, scst_loss
from ofa.trainer.optim import EMA, PolynomialDecay, build_optimizer
from ofa.trainer.zero import DeepSpeedEngine
from ofa.vqgan import load_vqgan

__all__ = ["Trainer", "TrainingError"]

logger = logging.getLogger(__name__)


class TrainingError(OFAError, RuntimeError):
    """Training cannot continue (too many non-finite losses, no data, ...)."""


@dataclass
class _Work:
    """One micro-batch ready for forward/backward: which task, the batch, and its token count."""

    task_index: int
    batch: Any
    ntokens: int
    extra: dict[str, Any]


class Trainer:
    """Fine-tune an OFA model on one or more registered tasks.

    Args:
        config: the run's :class:`TrainerConfig`.
        model: an already built model (default: built from ``config.model``).
        tokenizer: an already loaded tokenizer (default: ``config.tokenizer``).
        resume: a checkpoint directory, or a run directory whose latest checkpoint is used.
        progress: show a progress bar on rank 0.
    """

    def __init__(self, config: TrainerConfig, *, model: nn.Module | None = None, tokenizer: Any = None,
                 resume: str | Path | None = None, progress: bool = True) -> None:
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
        self.engine = self._build_engine(warmup)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.scst_scorer = self._build_scst_scorer() if config.criterion == "scst" else None
        self.clip_scst = self._build_clip_scst() if config.criterion == "clip_scst" else None
        self.step = 0
        self.nan_steps = 0
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", keep_last=config.keep_last,
                                             best_metric=config.best_metric, best_mode=config.best_mode,
                                             rank=self.dist.rank, world_size=self.dist.world_size, barrier=barrier)
        torch.manual_seed(config.seed + 7919 * self.dist.rank)  # per-rank dropout streams
        if resume is not None:
            self.resume(resume)

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

    def _build_model(self, model: nn.Module | None) -> nn.Module:
        cfg = self.config
        overrides = dict(cfg.model_overrides)
        if cfg.drop_path_rate is not None:
            overrides.setdefault("encoder_drop_path_rate", cfg.drop_path_rate)
            overrides.setdefault("decoder_drop_path_rate", cfg.drop_path_rate)
        if model is None:
            if cfg.model.lower().replace("_", "-") in PRESETS:
                overrides.setdefault("vocab_size", len(self.tokenizer))
                model = build_model(cfg.model, **overrides)
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

    def _source(self, path: str, fmt: str | None) -> Any:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"data file {path!r} does not exist")
        fmt = fmt or ("jsonl" if p.suffix in (".jsonl", ".json") else "tsv")
        return JSONLFile(p) if fmt == "jsonl" else TSVFile(p)

    def _build_stream(self, index: int) -> TaskStream:
        spec = self.config.tasks[index]
        if spec.train_data is None:
            raise ConfigError(f"task {spec.name!r} has no train_data")
        source = self._source(spec.train_data, spec.data_format)
        root = spec.image_root if spec.image_root is not None else (
            str(Path(spec.train_data).parent) if spec.data_format == "jsonl" or
            Path(spec.train_data).suffix in (".jsonl", ".json") else None)
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

    def _build_engine(self, warmup: int) -> Any:
        cfg = self.config
        if cfg.engine == "deepspeed":
            return DeepSpeedEngine(self.model, cfg, self.plan, total_steps=self.total_steps, warmup_steps=warmup)
        optimizer = build_optimizer(self.model.parameters(), cfg.lr, cfg.weight_decay, cfg.adam_betas, cfg.adam_eps)
        scheduler = PolynomialDecay(optimizer, cfg.lr, self.total_steps, warmup, cfg.end_lr)
        return TorchEngine(self.model, optimizer, scheduler, cfg.clip_norm, self.dist.world_size, self.dist.rank)

    def _build_scst_scorer(self) -> Any:
        refs: list[list[str]] = []
        for stream in self.streams:
            dataset = stream.dataset
            for i in range(len(dataset)):
                sample = dataset[i]
                refs.append(list(sample.meta.get("references") or []))
        if not any(refs):
            raise ConfigError("SCST needs reference captions in the training samples (the caption task)")
        return CiderDScorer.from_references([[_scst_text(r) for r in rs] for rs in refs if rs])

    def _build_clip_scst(self) -> dict[str, Any]:
        """The VQGAN and image-text scorer of CLIP-SCST (spec §6.3), checked against the tokenizer and tasks."""
        cfg = self.config
        scorer = build_scorer(cfg.image_scorer)
        if scorer is None:
            raise ConfigError(f"criterion='clip_scst' needs an image scorer, got image_scorer={cfg.image_scorer!r}")
        for task in self.tasks:
            if not all(hasattr(task, name) for name in ("grid_size", "check_model", "sample_caption")):
                raise ConfigError(f"criterion='clip_scst' trains text-to-image tasks (image_gen); task "
                                  f"{task.name!r} is not one")
            task.check_model(self.model, self.tokenizer)
        assert cfg.vqgan is not None  # TrainerConfig checks it
        vqgan = load_vqgan(cfg.vqgan, map_location=self.dist.device)
        check_codebook(vqgan, self.tokenizer)
        return {"vqgan": vqgan, "scorer": scorer}

    # -- losses -----------------------------------------------------------------------------------------------
    def _constraint_range(self, task: Any) -> tuple[int, int] | None:
        fn = getattr(task, "training_constraint_range", None)
        return fn(self.tokenizer) if fn is not None else None

    def _drop_worst_ratio(self) -> float:
        """The drop-worst ratio of this step: active once ``update_num > drop_worst_after`` (spec §6.1), where
        fairseq's update_num counts the updates already done, i.e. our ``self.step``."""
        return self.config.drop_worst_ratio if self.step > self.config.drop_worst_after else 0.0

    def _prepare(self, task_index: int, batch: Any) -> _Work:
        cfg = self.config
        batch = batch.to(self.dist.device)
        if cfg.precision == "bf16" and batch.patch_images is not None:
            batch.patch_images = batch.patch_images.to(torch.bfloat16) if cfg.engine == "torch" else batch.patch_images
        if cfg.criterion == "clip_scst":
            return self._prepare_clip_scst(task_index, batch)
        if cfg.criterion == "scst":
            return self._prepare_scst(task_index, batch)
        if batch.target is None:
            raise DataError(f"task {self.tasks[task_index].name!r} produced samples without training targets")
        ntokens = int(batch.target.ne(self.tokenizer.pad_id).sum())
        ratio = self._drop_worst_ratio()
        if ratio > 0:
            ntokens = int(ntokens * (1 - ratio))
        return _Work(task_index, batch, ntokens, {})

    def _prepare_scst(self, task_index: int, batch: Any) -> _Work:
        """Beam-search ``scst_beam_size`` captions per image in eval mode; rewards = CIDEr-D minus the
        leave-one-out mean (spec §6.2)."""
        cfg = self.config
        tok = self.tokenizer
        k = cfg.scst_beam_size
        self.model.eval()
        gen_config = GenerationConfig(beam_size=k, max_len_b=cfg.scst_max_len,
                                      no_repeat_ngram_size=cfg.scst_no_repeat_ngram_size)
        # full_model(): ZeRO-3 gathers the partitioned weights (generation does not run the engine's forward).
        with torch.no_grad(), self.engine.full_model() as full:
            hypos = generate(full, batch.src_tokens, patch_images=batch.patch_images,
                             patch_masks=batch.patch_masks, config=gen_config)
        self._train_mode()
        seqs: list[list[int]] = []
        candidates: list[str] = []
        references: list[list[str]] = []
        for sample, hyps in zip(batch.samples, hypos):
            hyps = list(hyps) + [hyps[-1]] * (k - len(hyps))  # keep k rows per image
            for h in hyps[:k]:
                tokens = h.tokens.tolist()
                seqs.append(tokens)
                candidates.append(_scst_text(tok.decode(tokens)))
                references.append([_scst_text(r) for r in sample.meta.get("references", [])])
        assert self.scst_scorer is not None
        scores = torch.as_tensor(self.scst_scorer.score(candidates, references), dtype=torch.float32)
        rewards = leave_one_out(scores.view(-1, k)).view(-1).to(self.dist.device)
        width = max(len(s) for s in seqs)
        target = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long, device=self.dist.device)
        prev = torch.full_like(target, tok.pad_id)
        for i, s in enumerate(seqs):
            target[i, :len(s)] = torch.tensor(s)
            prev[i, 0] = tok.bos_id
            prev[i, 1:len(s)] = torch.tensor(s[:-1])
        ntokens = int(target.ne(tok.pad_id).sum())
        return _Work(task_index, batch, ntokens, {"target": target, "prev": prev, "rewards": rewards,
                                                  "mean_cider": float(scores.mean())})

    def _prepare_clip_scst(self, task_index: int, batch: Any) -> _Work:
        """Sample ``clip_scst_samples`` code grids per caption in eval mode, decode them with the VQGAN, score
        them against the caption; rewards = score minus the leave-one-out mean (spec §6.3)."""
        assert self.clip_scst is not None
        task = self.tasks[task_index]
        captions = [task.sample_caption(sample, self.tokenizer) for sample in batch.samples]
        # full_model(): ZeRO-3 gathers the partitioned weights (generation does not run the engine's forward).
        with self.engine.full_model() as full:
            rollout = sample_clip_scst(full, captions, task, self.tokenizer, self.clip_scst["vqgan"],
                                       self.clip_scst["scorer"], num_samples=self.config.clip_scst_samples)
        self._train_mode()
        return _Work(task_index, batch, rollout.ntokens, {"rollout": rollout,
                                                          "mean_image_score": float(rollout.scores.mean())})

    def _loss(self, work: _Work) -> LossOutput:
        cfg = self.config
        batch = work.batch
        module = self.engine.module
        if cfg.criterion == "clip_scst":
            return clip_scst_loss(module, work.extra["rollout"])
        if cfg.criterion == "scst":
            # The encoder runs once per image: the model decodes the k captions of an image as k rows that
            # share its encoder output (rows i*k .. i*k+k-1 belong to image i).
            out = module(batch.src_tokens, work.extra["prev"], batch.patch_images, batch.patch_masks)
            return scst_loss(out.logits, work.extra["target"], work.extra["rewards"], self.tokenizer.pad_id)
        code_masks = batch.code_masks if bool(batch.code_masks.any()) else None
        out = module(batch.src_tokens, batch.prev_output_tokens, batch.patch_images, batch.patch_masks, code_masks)
        weights = batch.weights if bool((batch.weights != 1).any()) else None
        ratio = self._drop_worst_ratio()
        return label_smoothed_cross_entropy(
            out.logits, batch.target, epsilon=cfg.label_smoothing, pad_id=self.tokenizer.pad_id, weights=weights,
            constraints=batch.constraints, constraint_range=self._constraint_range(self.tasks[work.task_index]),
            drop_worst_ratio=ratio)

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
        works = []
        for micro in range(cfg.grad_accum):
            index = pick_task(ratios, cfg.seed, self.step, micro)
            works.append(self._prepare(index, self.streams[index].next()))
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
                finite = all(bool(torch.isfinite(self._loss(work).loss)) for work in works)
            self._restore(norm_stats)
        else:
            for i, work in enumerate(works):
                with self.engine.no_sync(i == len(works) - 1):
                    outs.append(self._loss(work))
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
            out = self._loss(work) if self.engine.backward_per_forward else outs[i]
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
        if works[0].extra.get("mean_cider") is not None:
            stats["scst_cider"] = sum(w.extra["mean_cider"] for w in works) / len(works)
        if works[0].extra.get("mean_image_score") is not None:
            stats["clip_scst_score"] = sum(w.extra["mean_image_score"] for w in works) / len(works)
        return stats

    # -- validation -------------------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Score every task's validation examples (EMA weights when EMA is on); rank 0 computes, all return it."""
        metrics: dict[str, float] = {}
        with self.engine.full_model() as full:
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
            if self.dist.is_main:
                with self.engine.full_model() as full:
                    full.save_pretrained(directory)
                    if self.ema is not None:
                        # The weights validation scored (and best/ was chosen by), ready for `ofa predict`.
                        self.ema.copy_to(full).save_pretrained(directory / "ema")
                        self.tokenizer.save_pretrained(directory / "ema")
                self.tokenizer.save_pretrained(directory)
            elif self.config.engine == "deepspeed" and self.config.zero_stage == 3:
                with self.engine.full_model():
                    pass

        return self.checkpoints.save(self.step, write, self.trainer_state())

    def resume(self, path: str | Path) -> None:
        """Restore model, optimiser, scheduler, EMA, RNG, step and data positions from a checkpoint."""
        directory = CheckpointManager.resolve(path)
        state = torch.load(directory / "trainer_state.pt", map_location="cpu", weights_only=False)
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
            restore_rng(torch.load(rng, map_location="cpu", weights_only=False))
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
            done = self.step >= self.total_steps
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
        if bar is not None:
            bar.close()
        return last_valid


def _scst_text(text: str) -> str:
    """OFA's SCST text normalisation: strip punctuation (and a trailing period), then append `` <eos>``."""
    return " ".join(strip_punctuation(text).split()) + " <eos>"


def _broadcast_object(value: Any) -> Any:
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
