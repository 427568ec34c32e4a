"""The GumbelVQ VQGAN that turns images into OFA's image-code grids and back (arXiv:2012.09841).

``encode`` maps ``[b, 3, H, W]`` images in ``[-1, 1]`` to ``[b, H/f, W/f]`` raster code grids (``f = 8`` for
``vqgan_gumbel_f8``: 256 px -> 32x32 codes); ``decode`` maps grids back to images; ``forward`` is the training
pass (Gumbel-softmax codes, reconstruction and KL terms). Our own save format is a folder with ``config.json``
and ``weights.pt``; the released taming-transformers files are read by :func:`ofa.vqgan.load_vqgan`.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image
from torch import nn

from ofa.errors import CheckpointError, ConfigError, InputError, TokenizationError
from ofa.tokenization.image_codes import grid_shape
from ofa.vqgan.blocks import VQDecoder, VQEncoder, build_decoder, build_encoder
from ofa.vqgan.config import VQGAN_GUMBEL_F8, VQGANConfig
from ofa.vqgan.io import check_state_dict, read_torch_file
from ofa.vqgan.quantize import GumbelQuantize

__all__ = ["VQGAN", "build_vqgan", "images_from_pil", "images_to_pil"]

_FORMAT = "ofa-vqgan"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"


def _grid_shape(grid_size: int | Sequence[int]) -> tuple[int, int]:
    """:func:`ofa.tokenization.image_codes.grid_shape`, raising :class:`InputError` as the model's inputs do."""
    try:
        return grid_shape(grid_size)
    except TokenizationError as exc:
        raise InputError(str(exc)) from None


class VQGAN(nn.Module):
    """GumbelVQ autoencoder: encoder -> ``quant_conv`` -> Gumbel quantizer -> ``post_quant_conv`` -> decoder.

    Attribute names are taming-transformers' (``encoder``, ``decoder``, ``quant_conv``, ``post_quant_conv``,
    ``quantize.proj``, ``quantize.embed``), so the released weights load by name.

    Args:
        config: the sizes this model was built from (saved with it).
        encoder / decoder: :class:`~ofa.vqgan.blocks.VQEncoder` and :class:`~ofa.vqgan.blocks.VQDecoder`.
        quant_conv: 1x1 conv ``z_channels -> embed_dim`` after the encoder.
        post_quant_conv: 1x1 conv ``embed_dim -> z_channels`` before the decoder.
        quantize: the :class:`~ofa.vqgan.quantize.GumbelQuantize` codebook.
    """

    def __init__(self, *, config: VQGANConfig, encoder: VQEncoder, decoder: VQDecoder, quant_conv: nn.Module,
                 post_quant_conv: nn.Module, quantize: GumbelQuantize) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.quant_conv = quant_conv
        self.post_quant_conv = post_quant_conv
        self.quantize = quantize

    @property
    def downsample_factor(self) -> int:
        """Image side / code-grid side."""
        return self.config.downsample_factor

    @property
    def num_codes(self) -> int:
        """Codebook size; codes are in ``[0, num_codes)``."""
        return self.config.num_codes

    # ----------------------------------------------------------------------------------------------------------
    # Input checks
    # ----------------------------------------------------------------------------------------------------------
    def _check_images(self, images: Any) -> None:
        if not isinstance(images, torch.Tensor):
            raise InputError(f"images must be a tensor [b, {self.config.in_channels}, H, W], got "
                             f"{type(images).__name__}")
        if not images.dtype.is_floating_point:
            raise InputError(f"images must be a floating-point tensor in [-1, 1], got dtype {images.dtype}")
        if images.dim() != 4 or images.shape[1] != self.config.in_channels:
            raise InputError(f"images must have shape [b, {self.config.in_channels}, H, W], got "
                             f"{list(images.shape)}")
        f = self.downsample_factor
        height, width = images.shape[-2:]
        if height < f or width < f or height % f or width % f:
            raise InputError(f"image size {height}x{width} must be a positive multiple of the downsampling "
                             f"factor {f} in both sides")
        if images.shape[0] < 1:
            raise InputError("images must hold at least one image (batch size 0)")

    def _check_codes(self, codes: Any, grid_size: int | Sequence[int] | None) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor):
            raise InputError(f"codes must be a tensor [b, h, w] or [b, h*w], got {type(codes).__name__}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise InputError(f"codes must have an integer dtype, got {codes.dtype}")
        if codes.dim() not in (2, 3) or codes.numel() == 0:
            raise InputError(f"codes must have shape [b, h, w] or [b, h*w] (non-empty), got {list(codes.shape)}")
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= self.num_codes:
            bad = low if low < 0 else high
            raise InputError(f"code {bad} is out of range [0, {self.num_codes})")
        if codes.dim() == 3:
            if grid_size is not None and tuple(codes.shape[1:]) != _grid_shape(grid_size):
                raise InputError(f"code grid {tuple(codes.shape[1:])} does not match grid_size {grid_size!r}")
            return codes.long()
        length = codes.shape[1]
        if grid_size is None:
            side = math.isqrt(length)
            if side * side != length:
                raise InputError(f"{length} codes per image do not form a square grid; pass grid_size=(rows, cols)")
            rows = cols = side
        else:
            rows, cols = _grid_shape(grid_size)
            if rows * cols != length:
                raise InputError(f"{length} codes per image do not fill grid_size {grid_size!r} "
                                 f"({rows}x{cols} = {rows * cols} codes)")
        return codes.long().reshape(codes.shape[0], rows, cols)

    # ----------------------------------------------------------------------------------------------------------
    # Inference
    # ----------------------------------------------------------------------------------------------------------
    def code_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Codebook logits of each grid cell.

        Args:
            images: ``[b, in_channels, H, W]`` in ``[-1, 1]``, ``H`` and ``W`` multiples of the factor ``f``.

        Returns:
            ``[b, num_codes, H/f, W/f]``.

        Raises:
            InputError: For a non-tensor, non-float, wrong channel count or a size not divisible by ``f``.
        """
        self._check_images(images)
        return self.quantize.logits(self.quant_conv(self.encoder(images)))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> code grids (the argmax code per cell: deterministic in any mode; no gradient).

        Args:
            images: ``[b, in_channels, H, W]`` in ``[-1, 1]``, ``H`` and ``W`` multiples of the factor ``f``.

        Returns:
            ``[b, H/f, W/f]`` long codes in ``[0, num_codes)``, raster order when flattened.

        Raises:
            InputError: For a non-tensor, non-float, wrong channel count or a size not divisible by ``f``.
        """
        with torch.no_grad():
            return self.code_logits(images).argmax(dim=1)

    def decode(self, codes: torch.Tensor, grid_size: int | Sequence[int] | None = None) -> torch.Tensor:
        """Code grids -> images (not clamped: about ``[-1, 1]``; see :func:`images_to_pil`).

        Args:
            codes: ``[b, h, w]`` grids, or ``[b, h*w]`` raster-flattened grids.
            grid_size: ``h`` (square) or ``(h, w)``; required for flat non-square grids, checked when given.

        Returns:
            ``[b, out_channels, h*f, w*f]``.

        Raises:
            InputError: For a non-integer tensor, codes outside ``[0, num_codes)`` or a grid of the wrong size.
        """
        grid = self._check_codes(codes, grid_size).to(self.quantize.embed.weight.device)
        return self.decoder(self.post_quant_conv(self.quantize.lookup(grid)))

    def codes_to_pil(self, codes: torch.Tensor, grid_size: int | Sequence[int] | None = None) -> list[Image.Image]:
        """Decode code grids to PIL images (no gradient); arguments as :meth:`decode`."""
        with torch.no_grad():
            return images_to_pil(self.decode(codes, grid_size))

    # ----------------------------------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, temperature: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Autoencode images; in training mode the codes are straight-through Gumbel-softmax samples.

        Args:
            images: ``[b, in_channels, H, W]`` in ``[-1, 1]``, ``H`` and ``W`` multiples of the factor ``f``.
            temperature: Gumbel-softmax temperature (default ``config.temperature``; the release's schedule
                starts at 0.9). Ignored in eval mode, where codes are the argmax.

        Returns:
            ``(reconstruction [b, out_channels, H, W], codes [b, H/f, W/f], losses)`` with ``losses`` holding
            ``"l1"`` (mean absolute reconstruction error), ``"kl"`` (already times ``kl_weight``) and
            ``"loss"`` (their sum). taming's perceptual and adversarial terms are not part of this model.

        Raises:
            InputError: For bad images (see :meth:`encode`) or a non-positive temperature.
        """
        self._check_images(images)
        h = self.quant_conv(self.encoder(images))
        z_q, kl, codes = self.quantize(h, temperature)
        reconstruction = self.decoder(self.post_quant_conv(z_q))
        l1 = (images - reconstruction).abs().mean() if images.shape == reconstruction.shape else None
        losses = {"kl": kl, "loss": kl}
        if l1 is not None:  # in_channels != out_channels leaves no reconstruction target
            losses["l1"] = l1
            losses["loss"] = l1 + kl
        return reconstruction, codes, losses

    # ----------------------------------------------------------------------------------------------------------
    # Our own format: <dir>/config.json + <dir>/weights.pt
    # ----------------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``weights.pt`` (a plain state dict) into ``directory`` (created if needed).

        Returns:
            The directory.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        torch.save(state, out / WEIGHTS_FILE)
        payload = {"format": _FORMAT, "version": 1, "config": self.config.to_dict()}
        (out / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
                        strict: bool = True) -> "VQGAN":
        """Load a folder written by :meth:`save_pretrained` (in eval mode).

        Raises:
            CheckpointError: Missing/invalid files, or weights that do not fit the stored config.
            ConfigError: An invalid stored config.
        """
        folder = Path(directory)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise CheckpointError(f"{str(folder)!r} has no {CONFIG_FILE}; is it a folder written by save_pretrained?")
        try:
            payload = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"could not read {str(config_path)!r} as JSON: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT or "config" not in payload:
            raise CheckpointError(f"{str(config_path)!r} is not an {_FORMAT} config (format "
                                  f"{payload.get('format') if isinstance(payload, dict) else None!r})")
        config = VQGANConfig.from_dict(payload["config"])
        state = read_torch_file(folder / WEIGHTS_FILE, map_location=map_location)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{str(folder / WEIGHTS_FILE)!r} holds a {type(state).__name__}, not a state dict")
        return model_from_state_dict(config, state, strict=strict)


def build_vqgan(config: VQGANConfig = VQGAN_GUMBEL_F8) -> VQGAN:
    """Wire a :class:`VQGAN` (PyTorch default init, training mode).

    Raises:
        ConfigError: If ``config`` is not a :class:`VQGANConfig`.
    """
    if not isinstance(config, VQGANConfig):
        raise ConfigError(f"config must be a VQGANConfig, got {type(config).__name__}")
    return VQGAN(
        config=config,
        encoder=build_encoder(config),
        decoder=build_decoder(config),
        quant_conv=nn.Conv2d(config.z_channels, config.embed_dim, 1),
        post_quant_conv=nn.Conv2d(config.embed_dim, config.z_channels, 1),
        quantize=GumbelQuantize(num_hiddens=config.z_channels, embedding_dim=config.embed_dim,
                                num_codes=config.num_codes, kl_weight=config.kl_weight,
                                temperature=config.temperature, straight_through=config.straight_through),
    )


def model_from_state_dict(config: VQGANConfig, state: Mapping[str, Any], *, strict: bool = True) -> VQGAN:
    """Build the model of ``config`` holding the weights of ``state`` (in eval mode).

    Mis-shaped keys always fail; missing and unexpected keys fail when ``strict`` (otherwise missing weights
    keep their fresh init and unexpected ones are dropped).

    Raises:
        CheckpointError: Listing missing, unexpected and mis-shaped keys.
    """
    # A strict load replaces every tensor, so the skeleton is built without memory or init cost.
    with torch.device("meta") if strict else contextlib.nullcontext():
        model = build_vqgan(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(expected, state, strict=strict)
    targets = model.state_dict()
    incoming = {k: v.to(dtype=targets[k].dtype) if v.is_floating_point() else v
                for k, v in state.items() if k in targets}
    if strict:
        model.load_state_dict(incoming, strict=True, assign=True)
    else:
        if incoming:  # follow map_location, as the strict (assigning) path does
            model.to(next(iter(incoming.values())).device)
            targets = model.state_dict()
        with torch.no_grad():
            for key, value in incoming.items():
                targets[key].copy_(value)
    return model.eval()


def images_from_pil(images: Sequence[Image.Image], size: int | tuple[int, int]) -> torch.Tensor:
    """Resize PIL images (bicubic, converted to RGB) into a ``[-1, 1]`` batch for :meth:`VQGAN.encode`.

    Args:
        images: the images.
        size: output side, or ``(height, width)``.

    Returns:
        ``[b, 3, height, width]`` float32.

    Raises:
        InputError: For an empty list, a non-image or a non-positive size.
    """
    height, width = _image_size(size)
    if isinstance(images, Image.Image) or not isinstance(images, Sequence) or len(images) == 0:
        raise InputError(f"images must be a non-empty list of PIL images, got {type(images).__name__}")
    arrays = []
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise InputError(f"images[{index}] is a {type(image).__name__}, not a PIL image")
        rgb = image.convert("RGB").resize((width, height), resample=Image.Resampling.BICUBIC)
        arrays.append(np.asarray(rgb, dtype=np.float32))
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # [b, 3, h, w] in [0, 255]
    return (batch / 127.5 - 1.0).contiguous()


def _image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    try:
        if isinstance(size, Sequence) and not isinstance(size, str):
            height, width = (operator.index(v) for v in size)
        else:
            height = width = operator.index(size)
    except (TypeError, ValueError):
        raise InputError(f"size ({size!r}) must be an int or a (height, width) pair of ints") from None
    if isinstance(size, bool) or height < 1 or width < 1:
        raise InputError(f"size ({size!r}) must be positive")
    return height, width


def images_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Turn a ``[b, 3 or 1, H, W]`` batch in ``[-1, 1]`` into PIL images (clamped, ``(x + 1) / 2 * 255``).

    Raises:
        InputError: For a non-float tensor, a wrong rank or a channel count other than 1 or 3.
    """
    if not isinstance(images, torch.Tensor) or not images.dtype.is_floating_point:
        raise InputError(f"images must be a floating-point tensor, got "
                         f"{images.dtype if isinstance(images, torch.Tensor) else type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"images must have shape [b, 3, H, W] or [b, 1, H, W], got {list(images.shape)}")
    as_bytes = ((images.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0).to(torch.uint8)  # truncates
    pixels = as_bytes.permute(0, 2, 3, 1).cpu().numpy()  # [b, H, W, c]
    if pixels.shape[-1] == 1:
        return [Image.fromarray(p[..., 0]) for p in pixels]  # uint8 [H, W] -> mode "L"
    return [Image.fromarray(p) for p in pixels]  # uint8 [H, W, 3] -> mode "RGB"
