"""The VQGAN's convolutional encoder and decoder (Esser et al., arXiv:2012.09841; blocks of arXiv:2006.11239).

Module and parameter names follow taming-transformers' ``diffusionmodules`` (``down.3.attn.0.q.weight``,
``mid.block_1.norm1.bias``, ``up.0.upsample.conv.weight``, ...), so the released ``state_dict`` loads as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ofa.errors import ConfigError
from ofa.vqgan.config import VQGANConfig

__all__ = [
    "ResnetBlock",
    "AttnBlock",
    "Downsample",
    "Upsample",
    "EncoderLevel",
    "DecoderLevel",
    "MidBlock",
    "VQEncoder",
    "VQDecoder",
    "build_encoder",
    "build_decoder",
]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: GroupNorm -> swish -> conv3x3, twice, plus a 1x1 shortcut when widths differ.

    Args:
        in_channels / out_channels: widths of input and output.
        dropout: dropout rate before the second convolution.

    Input ``[b, in_channels, h, w]``; output ``[b, out_channels, h, w]``.
    """

    def __init__(self, *, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut: nn.Conv2d | None = None
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all ``h * w`` positions, with 1x1-conv projections and a residual.

    Args:
        channels: width ``c`` (the attention scale is ``c ** -0.5``).

    Input and output ``[b, c, h, w]``.
    """

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)

        def heads(t: torch.Tensor) -> torch.Tensor:  # [b, c, h, w] -> [b, 1, h*w, c]
            return t.reshape(b, c, h * w).transpose(1, 2).unsqueeze(1)

        attended = F.scaled_dot_product_attention(heads(self.q(normed)), heads(self.k(normed)),
                                                  heads(self.v(normed)), scale=c**-0.5)  # [b, 1, h*w, c]
        attended = attended.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(attended)


class Downsample(nn.Module):
    """Halve the side with a stride-2 3x3 conv after zero-padding one row/column at the bottom/right.

    The asymmetric pad (rather than ``padding=1``) is what the released weights were trained with.
    Input ``[b, c, h, w]``; output ``[b, c, h // 2, w // 2]`` for even ``h``, ``w``.
    """

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the side by nearest-neighbour interpolation, then a 3x3 conv.

    Input ``[b, c, h, w]``; output ``[b, c, 2h, 2w]``.
    """

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _run_blocks(x: torch.Tensor, block: nn.ModuleList, attn: nn.ModuleList) -> torch.Tensor:
    for index, res_block in enumerate(block):
        x = res_block(x)
        if len(attn):  # attention follows every block of a level, or none
            x = attn[index](x)
    return x


class EncoderLevel(nn.Module):
    """One encoder resolution: ResNet blocks (each followed by attention, if any), then an optional downsample.

    Args:
        block: the :class:`ResnetBlock` s.
        attn: one :class:`AttnBlock` per block, or empty.
        downsample: a :class:`Downsample`, or ``None`` on the last level.
    """

    def __init__(self, *, block: nn.ModuleList, attn: nn.ModuleList, downsample: nn.Module | None = None) -> None:
        super().__init__()
        if len(attn) not in (0, len(block)):
            raise ConfigError(f"attn has {len(attn)} blocks; expected 0 or {len(block)}")
        self.block = block
        self.attn = attn
        if downsample is not None:  # absent, not None, on the last level: no key either way, like the release
            self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _run_blocks(x, self.block, self.attn)
        return self.downsample(x) if hasattr(self, "downsample") else x


class DecoderLevel(nn.Module):
    """One decoder resolution: ResNet blocks (each followed by attention, if any), then an optional upsample.

    Args:
        block: the :class:`ResnetBlock` s.
        attn: one :class:`AttnBlock` per block, or empty.
        upsample: an :class:`Upsample`, or ``None`` on level 0 (the full resolution).
    """

    def __init__(self, *, block: nn.ModuleList, attn: nn.ModuleList, upsample: nn.Module | None = None) -> None:
        super().__init__()
        if len(attn) not in (0, len(block)):
            raise ConfigError(f"attn has {len(attn)} blocks; expected 0 or {len(block)}")
        self.block = block
        self.attn = attn
        if upsample is not None:
            self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _run_blocks(x, self.block, self.attn)
        return self.upsample(x) if hasattr(self, "upsample") else x


class MidBlock(nn.Module):
    """ResNet block -> attention -> ResNet block at the lowest resolution."""

    def __init__(self, *, block_1: nn.Module, attn_1: nn.Module, block_2: nn.Module) -> None:
        super().__init__()
        self.block_1 = block_1
        self.attn_1 = attn_1
        self.block_2 = block_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class VQEncoder(nn.Module):
    """Image -> latent map: ``conv_in``, the levels in order (``down.0`` is full resolution), ``mid``, norm, conv.

    Input ``[b, in_channels, H, W]``; output ``[b, z_channels, H / f, W / f]`` with ``f = 2 ** (levels - 1)``.
    """

    def __init__(self, *, conv_in: nn.Module, down: nn.ModuleList, mid: nn.Module, norm_out: nn.Module,
                 conv_out: nn.Module) -> None:
        super().__init__()
        self.conv_in = conv_in
        self.down = down
        self.mid = mid
        self.norm_out = norm_out
        self.conv_out = conv_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(_swish(self.norm_out(h)))


class VQDecoder(nn.Module):
    """Latent map -> image: ``conv_in``, ``mid``, the levels from the last (``up.{n-1}``) to ``up.0``, norm, conv.

    Input ``[b, z_channels, h, w]``; output ``[b, out_channels, h * f, w * f]``, unbounded (about ``[-1, 1]``).
    """

    def __init__(self, *, conv_in: nn.Module, mid: nn.Module, up: nn.ModuleList, norm_out: nn.Module,
                 conv_out: nn.Module) -> None:
        super().__init__()
        self.conv_in = conv_in
        self.mid = mid
        self.up = up  # indexed by level: up[0] is the full resolution and runs last
        self.norm_out = norm_out
        self.conv_out = conv_out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(_swish(self.norm_out(h)))


def _mid(channels: int, dropout: float) -> MidBlock:
    return MidBlock(block_1=ResnetBlock(in_channels=channels, out_channels=channels, dropout=dropout),
                    attn_1=AttnBlock(channels=channels),
                    block_2=ResnetBlock(in_channels=channels, out_channels=channels, dropout=dropout))


def build_encoder(config: VQGANConfig) -> VQEncoder:
    """Wire the encoder of ``config`` (PyTorch default init)."""
    ch, mult = config.channels, config.channel_mult
    in_mult = (1, *mult)
    levels = []
    for i, side in enumerate(config.level_resolutions):
        block_in, block_out = ch * in_mult[i], ch * mult[i]
        blocks, attns = [], []
        for _ in range(config.num_res_blocks):
            blocks.append(ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=config.dropout))
            block_in = block_out
            if side in config.attn_resolutions:
                attns.append(AttnBlock(channels=block_in))
        last = i == len(mult) - 1
        levels.append(EncoderLevel(block=nn.ModuleList(blocks), attn=nn.ModuleList(attns),
                                   downsample=None if last else Downsample(channels=block_in)))
    return VQEncoder(
        conv_in=nn.Conv2d(config.in_channels, ch, 3, padding=1),
        down=nn.ModuleList(levels),
        mid=_mid(block_in, config.dropout),
        norm_out=_norm(block_in),
        conv_out=nn.Conv2d(block_in, config.z_channels, 3, padding=1),
    )


def build_decoder(config: VQGANConfig) -> VQDecoder:
    """Wire the decoder of ``config`` (PyTorch default init)."""
    ch, mult = config.channels, config.channel_mult
    block_in = ch * mult[-1]
    conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
    mid = _mid(block_in, config.dropout)
    levels: list[DecoderLevel] = []
    for i in reversed(range(len(mult))):  # built from the lowest resolution up, as the data flows
        side = config.level_resolutions[i]
        block_out = ch * mult[i]
        blocks, attns = [], []
        for _ in range(config.num_res_blocks + 1):
            blocks.append(ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=config.dropout))
            block_in = block_out
            if side in config.attn_resolutions:
                attns.append(AttnBlock(channels=block_in))
        levels.insert(0, DecoderLevel(block=nn.ModuleList(blocks), attn=nn.ModuleList(attns),
                                      upsample=None if i == 0 else Upsample(channels=block_in)))
    return VQDecoder(
        conv_in=conv_in,
        mid=mid,
        up=nn.ModuleList(levels),
        norm_out=_norm(block_in),
        conv_out=nn.Conv2d(block_in, config.out_channels, 3, padding=1),
    )
