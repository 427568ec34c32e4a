"""DeepSpeed ZeRO engine and the DeepSpeed config derived from :class:`~ofa.trainer.config.TrainerConfig`.

``deepspeed`` is imported only when a :class:`DeepSpeedEngine` is built. On a machine without CUDA the engine
selects DeepSpeed's CPU accelerator and the gloo backend, so ZeRO stages 0-3 run (slowly, for tests) on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping, NamedTuple

import torch
from torch import nn

from ofa.errors import CheckpointError, ConfigError
from ofa.trainer.distributed import DistInfo
from ofa.trainer.optim import PolynomialDecay, build_optimizer

if TYPE_CHECKING:  # pragma: no cover
    from ofa.data.collate import Batch, PartedBatch
    from ofa.trainer.config import BatchPlan, TrainerConfig

__all__ = ["deepspeed_config", "DeepSpeedEngine"]

logger = logging.getLogger(__name__)

# Keys whose values the trainer config owns: a user JSON may repeat them only with the same value.
_OWNED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
          "gradient_clipping")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def deepspeed_config(config: TrainerConfig, plan: BatchPlan, user: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The DeepSpeed JSON for a run. The batch arithmetic comes from ``plan`` (computed once); ``user`` (e.g.
    the file named by the engine section's ``config``) may override or add sections (ZeRO tuning, offload,
    communication), and contradictions with the trainer config raise :class:`ConfigError`."""
    if config.engine.offload_params and config.engine.zero_stage != 3:
        raise ConfigError(f"offload_params needs zero_stage=3 (got {config.engine.zero_stage})")
    if config.engine.offload_optimizer and config.engine.zero_stage == 0:
        raise ConfigError("offload_optimizer needs ZeRO (zero_stage 1-3)")
    zero: dict[str, Any] = {"stage": config.engine.zero_stage}
    if config.engine.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if config.engine.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if config.engine.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    derived: dict[str, Any] = {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.grad_accum,
        "gradient_clipping": config.clip_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": config.precision == "bf16"},
        "fp16": {"enabled": config.precision == "fp16", "loss_scale": 0, "loss_scale_window": 512,
                 "initial_scale_power": 7, "min_loss_scale": 1},
        # Our AdamW is a client optimizer (also with offload: DeepSpeed's CPU Adam would need a JIT build).
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if not user:
        return derived
    for key in _OWNED:
        if key in user and user[key] != derived[key]:
            raise ConfigError(f"the DeepSpeed JSON sets {key}={user[key]!r} but the trainer config gives "
                              f"{derived[key]!r}; change micro_batch_size / grad_accum / clip_norm instead")
    for section in ("zero_optimization", "bf16", "bfloat16", "fp16"):
        if section in user and not isinstance(user[section], Mapping):
            raise ConfigError(f"the DeepSpeed JSON's {section!r} must be a mapping, got {user[section]!r}")
    user_stage = user.get("zero_optimization", {}).get("stage")
    if user_stage is not None and user_stage != config.engine.zero_stage:
        raise ConfigError(f"the DeepSpeed JSON sets zero_optimization.stage={user_stage} but zero_stage="
                          f"{config.engine.zero_stage}")
    # DeepSpeed still reads "bfloat16" as an old name of "bf16".
    for section, precision in (("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16")):
        enabled = user.get(section, {}).get("enabled")
        if enabled is not None and bool(enabled) != (config.precision == precision):
            raise ConfigError(f"the DeepSpeed JSON sets {section}.enabled={enabled} but precision="
                              f"{config.precision!r}")
    if "optimizer" in user or "scheduler" in user:
        raise ConfigError("the DeepSpeed JSON may not define 'optimizer' or 'scheduler': the trainer owns them "
                          "(lr, warmup_*, end_lr, weight_decay, adam_*)")
    merged = _merge(derived, user)
    if "bfloat16" in merged:  # one precision section, under the current name
        merged["bf16"] = _merge(merged["bf16"], merged.pop("bfloat16"))
    zero_section = merged["zero_optimization"]
    if "offload_param" in zero_section and config.engine.zero_stage != 3:
        raise ConfigError(f"the DeepSpeed JSON sets zero_optimization.offload_param, which needs zero_stage=3 "
                          f"(got {config.engine.zero_stage})")
    if "offload_optimizer" in zero_section and config.engine.zero_stage == 0:
        raise ConfigError("the DeepSpeed JSON sets zero_optimization.offload_optimizer, which needs ZeRO "
                          "(zero_stage 1-3)")
    return merged


def _skip_shm_comm_op(deepspeed: Any) -> None:
    """Keep DeepSpeed's CPU communication backend from building and starting its shared-memory all-reduce op.

    The op serves only ``inference_all_reduce`` (tensor-parallel inference), never training, yet on CPU DeepSpeed
    JIT-compiles it at ``init_distributed`` (about 45 s and a C++ compiler on first use; a build killed midway
    leaves a lock that makes later runs wait forever). Under the ``deepspeed`` launcher (which sets
    ``LOCAL_SIZE``) it also creates 66 MB ``/dev/shm`` segments per rank that are never unlinked, and each rank
    spins without a timeout until every peer's segment exists, so a peer that dies early hangs the others.
    """
    compatible = getattr(getattr(deepspeed, "ops", None), "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def _read_user_config(path: str | None) -> dict[str, Any] | None:
    """The user's DeepSpeed JSON (``deepspeed_config``), or None."""
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"deepspeed_config {path!r} does not exist")
    try:
        user = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"deepspeed_config {path!r} is not valid JSON: {exc}") from exc
    if not isinstance(user, dict):
        raise ConfigError(f"deepspeed_config {path!r} must hold a JSON object, got {type(user).__name__}")
    return user


def _meta_skeleton(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose tensors live on the meta device (no memory): deepcopy with every parameter and
    buffer pre-mapped to an empty meta tensor, so no weight is ever copied (and shared ones stay shared)."""
    memo: dict[int, Any] = {}
    for param in model.parameters():
        memo[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device="meta")
    return copy.deepcopy(model, memo)


def _tied_parameters(model: nn.Module) -> list[list[tuple[str, str]]]:
    """``(module name, parameter name)`` groups that share one Parameter (e.g. the tied output projection)."""
    owners: dict[int, list[tuple[str, str]]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append((module_name, name))
    return [group for group in owners.values() if len(group) > 1]


def _plain_copy(skeleton: nn.Module, tied: list[list[tuple[str, str]]], source: nn.Module) -> nn.Module:
    """A hook-free model with ``source``'s (gathered) weights, built from the meta ``skeleton``."""
    state = source.state_dict()
    device = next(iter(state.values())).device
    plain = copy.deepcopy(skeleton).to_empty(device=device)
    for (first_module, first_name), *others in tied:  # to_empty gives each owner its own tensor: re-tie
        shared = getattr(plain.get_submodule(first_module), first_name)
        for module_name, name in others:
            setattr(plain.get_submodule(module_name), name, shared)
    plain.load_state_dict({k: v.to(plain.state_dict()[k].dtype) for k, v in state.items()})
    with torch.no_grad():
        for name, buffer in source.named_buffers():  # also the non-persistent ones state_dict() leaves out
            plain.get_buffer(name).copy_(buffer)
    return plain.train(source.training)


class _Logits(NamedTuple):
    logits: torch.Tensor  # [n, T, V]


class _Zero3Model(nn.Module):
    """The model as DeepSpeed ZeRO-3 sees it.

    ZeRO-3 gathers a module's own parameters just before the module runs, and again in the backward pass just
    before a gradient reaches the module's outputs, which it finds only in tensors, tuples and dicts. OFA's
    encoder and decoder return dataclasses, and they read embedding tables directly (absolute and relative
    position tables, the type embedding, and the tied output projection in ``decoder.project``) instead of
    calling the owning module. Without help those weights are released after the forward pass while autograd
    still holds them, and the backward pass fails ("mat2 must be a matrix") or, with gradient accumulation,
    silently gives wrong gradients. So every embedding table is registered as an external parameter of this
    wrapper, whose output is a named tuple: ZeRO-3 then gathers the tables for this module's whole forward and
    backward pass, and still partitions everything else layer by layer.
    """

    def __init__(self, model: nn.Module, register_external_parameter: Any) -> None:
        super().__init__()
        self.model = model
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                register_external_parameter(self, module.weight)

    def forward(self, *args: Any, **kwargs: Any) -> _Logits:
        return _Logits(self.model(*args, **kwargs).logits)


class DeepSpeedEngine:
    """ZeRO stages 0-3, bf16/fp16, gradient accumulation, clipping and offload through DeepSpeed.

    Args:
        model: the bare model (on its device).
        config: the trainer config (optimizer, schedule, ZeRO, precision).
        plan: the batch arithmetic.
        total_steps / warmup_steps: the learning-rate schedule.
    """

    @dataclass(frozen=True)
    class Config:
        """The ``engine`` section: ``zero_stage`` 0-3, optimizer / parameter offload to the CPU, and ``config``, a
        user DeepSpeed JSON whose sections override the derived ones."""

        name: Literal["deepspeed"] = "deepspeed"
        zero_stage: int = 0
        offload_optimizer: bool = False
        offload_params: bool = False
        config: str | None = None

        def __post_init__(self) -> None:
            if self.zero_stage not in (0, 1, 2, 3):
                raise ConfigError(f"zero_stage ({self.zero_stage}) must be 0, 1, 2 or 3")

        def check(self, trainer: TrainerConfig) -> None:
            if trainer.ema_decay != 0 and self.zero_stage == 3:
                raise ConfigError("EMA is not supported with ZeRO-3 (parameters are partitioned); use zero_stage 0-2")

    @classmethod
    def build(cls, model: nn.Module, config: TrainerConfig, plan: BatchPlan, total_steps: int, warmup_steps: int,
              dist_info: DistInfo) -> "DeepSpeedEngine":
        return cls(model, config, plan, total_steps=total_steps, warmup_steps=warmup_steps)

    def __init__(self, model: nn.Module, config: TrainerConfig, plan: BatchPlan, total_steps: int,
                 warmup_steps: int) -> None:
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        try:
            # optional dependency
            import deepspeed
        except ImportError as exc:
            raise ConfigError("engine='deepspeed' needs DeepSpeed: pip install 'ofa-unified[deepspeed]'") from exc
        self.deepspeed = deepspeed
        if not torch.cuda.is_available():
            _skip_shm_comm_op(deepspeed)
        # The DeepSpeed JSON first: a bad file fails before any process group exists.
        self.ds_config = deepspeed_config(config, plan, _read_user_config(config.engine.config))
        self.plan = plan
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "RANK" not in os.environ:  # a plain single process: give DeepSpeed a one-member process group
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
        deepspeed.init_distributed(dist_backend=backend)
        optimizer = build_optimizer(model.parameters(), config.lr, config.weight_decay, config.adam_betas,
                                    config.adam_eps)
        self.scheduler = PolynomialDecay(optimizer, config.lr, total_steps, warmup_steps, config.end_lr)
        wrapped = model
        if config.engine.zero_stage == 3:
            # A weightless (meta) copy of the architecture, materialised by full_model().
            self._skeleton = _meta_skeleton(model)
            self._tied = _tied_parameters(model)
            wrapped = _Zero3Model(model, deepspeed.zero.register_external_parameter)
        self.ds, self.optimizer, _, _ = deepspeed.initialize(model=wrapped, optimizer=optimizer,
                                                             config=self.ds_config)
        self.model = model
        self.module = self.ds
        self.zero_stage = config.engine.zero_stage
        # ZeRO-3 gathers parameters per module around each forward and backward; a second forward before the
        # first backward leaves its bookkeeping wrong (silently wrong gradients), so the trainer interleaves.
        self.backward_per_forward = config.engine.zero_stage == 3
        self._pending = 0

    def cast_inputs(self, batch: Batch | PartedBatch) -> Batch | PartedBatch:
        return batch  # DeepSpeed casts the inputs of a bf16 / fp16 module itself

    def loss_scale(self, total_tokens: float) -> float:
        # DeepSpeed divides each micro-batch loss by the accumulation steps and averages over ranks.
        return self.plan.grad_accum * self.plan.world_size / max(total_tokens, 1.0)

    def no_sync(self, last_micro: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # DeepSpeed reduces at accumulation boundaries itself

    def backward(self, loss: torch.Tensor) -> None:
        if self.zero_stage < 3:
            # Every rank must reduce gradients for the same parameters, or ZeRO's buckets differ between ranks
            # (a collective mismatch). A micro-batch may leave some parameters unused on one rank only (no
            # image-code rows there, say): a zero-weighted term gives every parameter an exact zero gradient.
            # ZeRO-3 partitions parameters outside forward and tracks use through its own hooks.
            touched = sum(p.reshape(-1)[:1].sum() for p in self.model.parameters() if p.requires_grad)
            loss = loss + 0.0 * touched
        self.ds.backward(loss)
        self._pending += 1
        if self._pending < self.plan.grad_accum:
            self.ds.step()  # a non-boundary micro-step: DeepSpeed only advances its counters

    def skip_step(self) -> None:
        """Nothing reached DeepSpeed for this step (the trainer checks losses before any backward)."""
        self._pending = 0

    def step(self) -> float:
        self.ds.step()  # the boundary: reduce, clip, update
        self._pending = 0
        self.scheduler.step()
        norm = self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def zero_grad(self) -> None:
        self.ds.zero_grad()

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    @contextlib.contextmanager
    def full_model(self) -> Iterator[nn.Module]:
        """The complete model (call on all ranks).

        With ZeRO-3 this is a plain copy of the gathered weights on every rank. The wrapped model itself cannot
        serve: its hooks gather and release parameters with collectives inside every module call, so a forward
        pass run by one rank alone (validation on rank 0) or by ranks running different numbers of steps
        (generation for SCST) deadlocks.
        """
        if self.zero_stage == 3:
            # optional dependency
            from deepspeed.runtime.zero.partition_parameters import GatheredParameters

            with GatheredParameters(list(self.model.parameters()), modifier_rank=None):
                plain = _plain_copy(self._skeleton, self._tied, self.model)
            yield plain
        else:
            yield self.model

    def save(self, directory: Path) -> None:
        self.ds.save_checkpoint(str(directory), tag="deepspeed",
                                client_state={"scheduler": self.scheduler.state_dict()})

    def load(self, directory: Path) -> None:
        path, client = self.ds.load_checkpoint(str(directory), tag="deepspeed")
        if path is None:
            raise CheckpointError(f"no DeepSpeed state in {str(directory)!r}")
        self.scheduler.load_state_dict(client["scheduler"])
