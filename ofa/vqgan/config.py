"""The VQGAN's sizes: a frozen dataclass, the released ``vqgan_gumbel_f8`` preset and a tiny test preset.

Field names follow the house style; the taming-transformers names they come from (``n_embed``, ``ch``,
``ch_mult``, ``out_ch`` and the rest of ``ddconfig``) are read by :meth:`VQGANConfig.from_taming`.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from ofa.errors import ConfigError

__all__ = ["VQGANConfig", "VQGAN_GUMBEL_F8", "VQGAN_TEST"]

_GROUPS = 32  # GroupNorm(32, c) everywhere, as in the released model

# taming ``ddconfig`` keys with no field here: accepted only at the value the released architecture uses.
_FIXED_DDCONFIG = {"resamp_with_conv": True, "give_pre_end": False, "tanh_out": False, "attn_type": "vanilla",
                   "use_linear_attn": False}
# Model params that only matter to taming's training script (loss, scheduler, logging) or to its own loader.
_IGNORED_PARAMS = frozenset({"lossconfig", "temperature_scheduler_config", "ckpt_path", "ignore_keys", "image_key",
                             "colorize_nlabels", "monitor", "sane_index_shape", "use_ema", "scheduler_config"})


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"VQGANConfig.{name} ({value!r}) must be an integer, got {type(value).__name__}")
    return int(value)


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"VQGANConfig.{name} ({value!r}) must be a number, got {type(value).__name__}")
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"VQGANConfig.{name} ({value!r}) must be True or False, got {type(value).__name__}")
    return value


def _ints(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ConfigError(f"VQGANConfig.{name} ({value!r}) must be a list of integers")
    return tuple(_int(name, v) for v in value)


@dataclass(frozen=True)
class VQGANConfig:
    """Sizes of a taming-transformers GumbelVQ model (Esser et al., arXiv:2012.09841).

    Defaults are the released ``vqgan_gumbel_f8`` model that OFA's image generation uses.

    Args:
        num_codes: codebook size (taming ``n_embed``).
        embed_dim: width of a codebook vector; the GumbelVQ quantizer reads ``quant_conv``'s output through a
            projection built for ``z_channels`` inputs, so the two must be equal.
        z_channels: channels of the encoder output and of the decoder input.
        channels: base width (taming ``ch``); must be divisible by 32 for ``GroupNorm(32, c)``.
        channel_mult: width multiplier of each resolution level (taming ``ch_mult``); ``len - 1`` downsamplings.
        num_res_blocks: ResNet blocks per encoder level (the decoder has one more per level).
        attn_resolutions: feature-map sides (counted from ``resolution``) after whose blocks self-attention sits.
        resolution: nominal image side; it only places attention, any multiple of the downsampling factor runs.
        in_channels / out_channels: image channels read and written (taming ``in_channels`` / ``out_ch``).
        dropout: dropout inside the ResNet blocks.
        double_z: taming's flag for KL autoencoders (twice the encoder outputs); must be False for a VQGAN.
        kl_weight: weight of the KL term to the uniform code prior in training.
        temperature: Gumbel-softmax temperature used in training when none is passed (schedule start 0.9).
        straight_through: hard one-hot samples with soft gradients in training (True in the release).
    """

    num_codes: int = 8192
    embed_dim: int = 256
    z_channels: int = 256
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    resolution: int = 256
    in_channels: int = 3
    out_channels: int = 3
    dropout: float = 0.0
    double_z: bool = False
    kl_weight: float = 1e-8
    temperature: float = 0.9
    straight_through: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                value = _int(f.name, value)
            elif f.type in ("float", float):
                value = _float(f.name, value)
            elif f.type in ("bool", bool):
                value = _bool(f.name, value)
            else:
                value = _ints(f.name, value)
            object.__setattr__(self, f.name, value)
        for name in ("num_codes", "embed_dim", "z_channels", "channels", "num_res_blocks", "resolution",
                     "in_channels", "out_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"VQGANConfig.{name} ({getattr(self, name)}) must be positive")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ConfigError(f"VQGANConfig.channel_mult ({self.channel_mult}) must be one or more positive integers")
        if self.channels % _GROUPS:
            raise ConfigError(f"VQGANConfig.channels ({self.channels}) must be divisible by {_GROUPS} "
                              f"(GroupNorm with {_GROUPS} groups)")
        if self.resolution % self.downsample_factor:
            raise ConfigError(f"VQGANConfig.resolution ({self.resolution}) must be divisible by the downsampling "
                              f"factor {self.downsample_factor} (2 ** (len(channel_mult) - 1))")
        sides = self.level_resolutions
        bad = [r for r in self.attn_resolutions if r not in sides]
        if bad:
            raise ConfigError(f"VQGANConfig.attn_resolutions {bad} name no level; the level sides are {list(sides)}")
        if self.embed_dim != self.z_channels:
            raise ConfigError(f"VQGANConfig.embed_dim ({self.embed_dim}) must equal z_channels ({self.z_channels}): "
                              "the GumbelVQ quantizer projects quant_conv's output with a z_channels-input conv")
        if self.double_z:
            raise ConfigError("VQGANConfig.double_z (True) is for KL autoencoders; a VQGAN needs False")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"VQGANConfig.dropout ({self.dropout}) must be in [0, 1)")
        if self.kl_weight < 0.0:
            raise ConfigError(f"VQGANConfig.kl_weight ({self.kl_weight}) must be >= 0")
        if not self.temperature > 0.0:
            raise ConfigError(f"VQGANConfig.temperature ({self.temperature}) must be > 0")

    @property
    def downsample_factor(self) -> int:
        """Image side / code-grid side (8 for ``vqgan_gumbel_f8``)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def level_resolutions(self) -> tuple[int, ...]:
        """Nominal feature-map side of each level, from ``resolution`` down (256, 128, 64, 32 for f8)."""
        return tuple(self.resolution // 2**i for i in range(len(self.channel_mult)))

    @property
    def grid_size(self) -> int:
        """Side of the code grid of a ``resolution``-sized image (32 for the release)."""
        return self.resolution // self.downsample_factor

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :meth:`from_dict` turns back into an equal config."""
        out = dataclasses.asdict(self)
        out["channel_mult"] = list(self.channel_mult)
        out["attn_resolutions"] = list(self.attn_resolutions)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VQGANConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` listing the valid ones."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a VQGAN config must be a mapping, got {type(data).__name__}")
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown VQGAN config key(s) {unknown}; valid keys: {sorted(valid)}")
        return cls(**dict(data))

    @classmethod
    def from_taming(cls, data: Mapping[str, Any]) -> "VQGANConfig":
        """Read a taming-transformers model config (the released ``model.yaml``, parsed).

        Accepts the whole file (``{"model": {"target": ..., "params": {...}}}``), its ``model`` entry, or the
        ``params`` mapping itself (``embed_dim``, ``n_embed``, ``kl_weight``, ``ddconfig``). Training-only
        params (loss, temperature scheduler, logging) are ignored; the temperature keeps its default 0.9.

        Raises:
            ConfigError: If the target is not a GumbelVQ, a key is unknown, or a flag asks for an architecture
                other than the released one (``remap``, ``tanh_out``, ...).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a taming config must be a mapping, got {type(data).__name__}")
        node: Mapping[str, Any] = data
        if "model" in node and isinstance(node["model"], Mapping):
            node = node["model"]
        target = node.get("target")
        if target is not None and str(target).rsplit(".", 1)[-1] != "GumbelVQ":
            raise ConfigError(f"model target {target!r} is not supported; only taming.models.vqgan.GumbelVQ")
        if "params" in node and isinstance(node["params"], Mapping):
            node = node["params"]
        if "ddconfig" not in node or not isinstance(node["ddconfig"], Mapping):
            raise ConfigError(f"the taming config has no model.params.ddconfig mapping (keys: {sorted(node)})")
        if node.get("remap") is not None:
            raise ConfigError(f"remap ({node['remap']!r}) is not supported: codes would need an index remapping")
        known = {"embed_dim", "n_embed", "kl_weight", "ddconfig", "remap"} | _IGNORED_PARAMS
        unknown = sorted(set(node) - known)
        if unknown:
            raise ConfigError(f"unknown taming model param(s) {unknown}; understood: {sorted(known)}")
        dd = dict(node["ddconfig"])
        for key, accepted in _FIXED_DDCONFIG.items():
            if key in dd and dd.pop(key) != accepted:
                raise ConfigError(f"ddconfig.{key} ({node['ddconfig'][key]!r}) is not supported; only {accepted!r}")
        renames = {"ch": "channels", "ch_mult": "channel_mult", "out_ch": "out_channels"}
        plain = {"z_channels", "resolution", "in_channels", "num_res_blocks", "attn_resolutions", "dropout",
                 "double_z"}
        unknown = sorted(set(dd) - set(renames) - plain)
        if unknown:
            raise ConfigError(f"unknown ddconfig key(s) {unknown}; understood: {sorted(set(renames) | plain)}")
        values: dict[str, Any] = {renames.get(k, k): v for k, v in dd.items()}
        for key, name in (("embed_dim", "embed_dim"), ("n_embed", "num_codes"), ("kl_weight", "kl_weight")):
            if key in node:
                values[name] = node[key]
        return cls(**values)


VQGAN_GUMBEL_F8 = VQGANConfig()
"""taming-transformers' ``vqgan_gumbel_f8`` (8192 codes, 256 px -> 32x32 grid), used by OFA for images."""

VQGAN_TEST = VQGANConfig(num_codes=64, embed_dim=32, z_channels=32, channels=32, channel_mult=(1, 2),
                         num_res_blocks=1, attn_resolutions=(16,), resolution=32)
"""Tiny model for tests: downsampling factor 2 (32 px -> 16x16 grid), attention at the 16 px level."""
