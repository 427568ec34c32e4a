"""Model configuration: frozen dataclasses that own every size and architecture flag of OFA.

The field names follow the house style (``embed_dim``, ``num_heads``, ...); the mapping from the original
fairseq argument names lives in :mod:`ofa.checkpoint`. A config is saved with every checkpoint and is enough
to rebuild the model.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

from ofa.errors import ConfigError

__all__ = ["ResNetConfig", "OFAConfig", "with_overrides"]


def _as_int(owner: str, name: str, value: Any) -> int:
    # bool is an Integral too, but True as a width or a layer count is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{owner}.{name} ({value!r}) must be an integer, got {type(value).__name__}")
    return int(value)


def _as_float(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{owner}.{name} ({value!r}) must be a number, got {type(value).__name__}")
    return float(value)


def _as_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} ({value!r}) must be True or False, got {type(value).__name__}")
    return value


_RESNET_DEPTHS: dict[str, tuple[int, int, int]] = {
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}


@dataclass(frozen=True)
class ResNetConfig:
    """The convolutional image stem: a torchvision-style ResNet v1.5 truncated after stage 3.

    Args:
        layers: bottleneck blocks in stages 1-3 (OFA's "resnet50" is ``(3, 4, 6)``, "resnet101" ``(3, 4, 23)``,
            "resnet152" ``(3, 8, 36)``).
        width: planes of the first stage (64 in every release); stages use ``width``, ``2*width``, ``4*width``
            planes and 4x that many output channels.
        drop_path_rate: stochastic-depth rate of the last block of each stage (block 0 always gets 0).
        frozen_bn: use frozen BatchNorm statistics (OFA's ``freeze_resnet``).
    """

    layers: tuple[int, int, int] = (3, 4, 6)
    width: int = 64
    drop_path_rate: float = 0.0
    frozen_bn: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, (tuple, list)):
            raise ConfigError(f"ResNetConfig.layers ({self.layers!r}) must be three positive block counts")
        layers = tuple(_as_int("ResNetConfig", "layers", n) for n in self.layers)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "width", _as_int("ResNetConfig", "width", self.width))
        object.__setattr__(self, "drop_path_rate", _as_float("ResNetConfig", "drop_path_rate", self.drop_path_rate))
        object.__setattr__(self, "frozen_bn", _as_bool("ResNetConfig", "frozen_bn", self.frozen_bn))
        if len(layers) != 3 or any(n < 1 for n in layers):
            raise ConfigError(f"ResNetConfig.layers ({self.layers}) must be three positive block counts")
        if self.width < 1:
            raise ConfigError(f"ResNetConfig.width ({self.width}) must be positive")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"ResNetConfig.drop_path_rate ({self.drop_path_rate}) must be in [0, 1)")

    @property
    def out_channels(self) -> int:
        """Channels of the stage-3 feature map (1024 for width 64)."""
        return self.width * 16

    @classmethod
    def named(cls, name: str, **overrides: Any) -> "ResNetConfig":
        """Build the config of one of OFA's named backbones (``resnet50``, ``resnet101``, ``resnet152``)."""
        if name not in _RESNET_DEPTHS:
            raise ConfigError(f"unknown resnet_type {name!r}; accepted: {sorted(_RESNET_DEPTHS)}")
        return cls(layers=_RESNET_DEPTHS[name], **overrides)


@dataclass(frozen=True)
class OFAConfig:
    """Sizes and flags of one OFA encoder-decoder (arXiv:2202.03052).

    Defaults are the effective values of the released checkpoints (spec §1.2): pre-LN layers with the
    NormFormer extras (``scale_attn``, ``scale_fc``, ``scale_heads``), shared embeddings, no embedding scale,
    positions only as attention biases. Flags that every release fixes to one value are kept as fields so
    that a checkpoint's config can be checked against them; changing them raises :class:`ConfigError`.

    Args:
        vocab_size: rows of the shared token embedding (59457 for the English releases).
        embed_dim: model width D.
        num_heads: attention heads H (``embed_dim`` must be divisible by it).
        encoder_layers / decoder_layers: number of layers.
        ffn_dim: inner width of the feed-forward blocks.
        resnet: the image stem, or ``None`` for a text-only model.
        attn_scale_factor: queries and position biases are scaled by ``(head_dim * attn_scale_factor) ** -0.5``.
        token_bucket_size: number of text relative-position buckets per direction (table rows ``2*tb-1``).
        image_bucket_size: side of the image position grid (table rows ``(2*ib-1)**2 + 3``).
        max_positions: text positions in the absolute position tables (table rows ``max_positions + 2``).
        code_image_size: image size whose VQGAN codes the decoder generates (window side ``code_image_size/8``).
        dropout / attention_dropout / activation_dropout: dropout rates, active in training only.
        encoder_drop_path_rate / decoder_drop_path_rate: stochastic depth, linearly spaced over layers.
        scale_attn / scale_fc / scale_heads: NormFormer extras (post-attention LN, FFN LN, per-head gains).
        layernorm_embedding / patch_layernorm_embedding / code_layernorm_embedding: embedding LayerNorms.
        add_type_embedding: add the 2-row modality embedding in the encoder.
        pad_id / bos_id / eos_id: special token ids (the model masks ``pad_id`` keys).
        patch_image_size: the image size the model was trained with (informational; any multiple of 16 up to
            ``16 * image_bucket_size`` is accepted at run time).
        init_std: std of the BERT-style init used when building from scratch.
    """

    vocab_size: int = 59457
    embed_dim: int = 768
    num_heads: int = 12
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn_dim: int = 3072
    resnet: ResNetConfig | None = field(default_factory=lambda: ResNetConfig.named("resnet101"))
    attn_scale_factor: float = 2.0
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    max_positions: int = 1024
    code_image_size: int = 128
    patch_image_size: int = 480
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_drop_path_rate: float = 0.0
    decoder_drop_path_rate: float = 0.0
    scale_attn: bool = True
    scale_fc: bool = True
    scale_heads: bool = True
    layernorm_embedding: bool = True
    patch_layernorm_embedding: bool = True
    code_layernorm_embedding: bool = True
    add_type_embedding: bool = True
    pad_id: int = 1
    bos_id: int = 0
    eos_id: int = 2
    init_std: float = 0.02
    # ``entangle_position_embedding``: also add the raw absolute position embeddings to the encoder's text and
    # image inputs (an OFA architecture flag, off in every release; the quickstart's from-scratch model uses it
    # because it makes grounding learnable from little data).
    # Flags fixed by every release; kept so that foreign configs can be checked against them.
    normalize_before: bool = True
    share_all_embeddings: bool = True
    scale_embedding: bool = False
    scale_resids: bool = False
    entangle_position_embedding: bool = False
    disable_entangle: bool = True
    activation_fn: str = "gelu"

    def __post_init__(self) -> None:
        if isinstance(self.resnet, Mapping):
            fields = {f.name for f in dataclasses.fields(ResNetConfig)}
            bad = sorted(set(self.resnet) - fields)
            if bad:
                raise ConfigError(f"unknown resnet config key(s) {bad}; valid keys: {sorted(fields)}")
            object.__setattr__(self, "resnet", ResNetConfig(**self.resnet))
        if self.resnet is not None and not isinstance(self.resnet, ResNetConfig):
            raise ConfigError(f"resnet ({self.resnet!r}) must be a ResNetConfig, a dict of its fields or None")
        # Types first, so that the range checks below compare numbers (a JSON string "768" fails here, named).
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                object.__setattr__(self, f.name, _as_int("OFAConfig", f.name, value))
            elif f.type in ("float", float):
                object.__setattr__(self, f.name, _as_float("OFAConfig", f.name, value))
            elif f.type in ("bool", bool):
                object.__setattr__(self, f.name, _as_bool("OFAConfig", f.name, value))
            elif f.type in ("str", str) and not isinstance(value, str):
                raise ConfigError(f"OFAConfig.{f.name} ({value!r}) must be a string, got {type(value).__name__}")
        for name in ("vocab_size", "embed_dim", "num_heads", "ffn_dim", "max_positions"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be a positive integer")
        for name in ("encoder_layers", "decoder_layers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be at least 1")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.token_bucket_size < 2 or self.token_bucket_size > self.max_positions:
            raise ConfigError(
                f"token_bucket_size ({self.token_bucket_size}) must be in [2, max_positions={self.max_positions}]"
            )
        if self.image_bucket_size < 1:
            raise ConfigError(f"image_bucket_size ({self.image_bucket_size}) must be positive")
        if self.code_image_size % 8 or not 8 <= self.code_image_size <= 8 * self.image_bucket_size:
            raise ConfigError(
                f"code_image_size ({self.code_image_size}) must be a multiple of 8 in "
                f"[8, {8 * self.image_bucket_size}] (8 * image_bucket_size)"
            )
        for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_drop_path_rate",
                     "decoder_drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} ({value}) must be in [0, 1)")
        if self.attn_scale_factor <= 0:
            raise ConfigError(f"attn_scale_factor ({self.attn_scale_factor}) must be positive")
        if self.patch_image_size < 1:
            raise ConfigError(f"patch_image_size ({self.patch_image_size}) must be positive")
        if self.init_std < 0:
            raise ConfigError(f"init_std ({self.init_std}) must be non-negative")
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be in [0, vocab_size={self.vocab_size})")
        fixed = {
            "normalize_before": True,
            "share_all_embeddings": True,
            "scale_embedding": False,
            "scale_resids": False,
            "disable_entangle": True,
            "activation_fn": "gelu",
        }
        for name, accepted in fixed.items():
            if getattr(self, name) != accepted:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is not supported; every OFA release uses {accepted!r}"
                )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def scaling(self) -> float:
        """Query / position-bias scale ``(head_dim * attn_scale_factor) ** -0.5``."""
        return float(self.head_dim * self.attn_scale_factor) ** -0.5

    @property
    def code_grid_size(self) -> int:
        """Side of the decoder's image-code grid (16 for code_image_size 128)."""
        return self.code_image_size // 8

    @property
    def num_image_positions(self) -> int:
        """Rows of the image position table: ``image_bucket_size ** 2 + 1``."""
        return self.image_bucket_size**2 + 1

    @property
    def max_image_size(self) -> int:
        """Largest square image the position tables cover (16 px per patch)."""
        return 16 * self.image_bucket_size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :meth:`from_dict` turns back into an equal config."""
        out = dataclasses.asdict(self)
        if self.resnet is not None:
            out["resnet"]["layers"] = list(self.resnet.layers)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OFAConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` listing the valid ones."""
        return with_overrides(cls(), dict(data))


def with_overrides(config: OFAConfig, overrides: Mapping[str, Any]) -> OFAConfig:
    """Return ``config`` with fields replaced; unknown keys raise :class:`ConfigError` listing the valid ones.

    ``resnet`` may be given as a :class:`ResNetConfig`, a dict of its fields (merged into ``config.resnet``, so
    ``{"drop_path_rate": 0.1}`` keeps the backbone's depth and width), a backbone name (``"resnet101"``) or
    ``None``.
    """
    valid = {f.name for f in dataclasses.fields(OFAConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {sorted(valid)}")
    values = dict(overrides)
    resnet = values.get("resnet", config.resnet)
    if isinstance(resnet, str):
        values["resnet"] = ResNetConfig.named(resnet)
    elif isinstance(resnet, Mapping):
        fields = {f.name for f in dataclasses.fields(ResNetConfig)}
        bad = sorted(set(resnet) - fields)
        if bad:
            raise ConfigError(f"unknown resnet config key(s) {bad}; valid keys: {sorted(fields)}")
        base = config.resnet if config.resnet is not None else ResNetConfig()
        values["resnet"] = dataclasses.replace(base, **resnet)
    elif resnet is not None and not isinstance(resnet, ResNetConfig):
        raise ConfigError(f"resnet ({resnet!r}) must be a ResNetConfig, a dict, a backbone name or None")
    return dataclasses.replace(config, **values)
