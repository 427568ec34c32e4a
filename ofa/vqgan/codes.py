"""Training targets for ``image_gen``: images -> VQGAN code grids, and caption files -> image_gen TSVs.

OFA's text-to-image data (spec §5.6) is a TSV of ``uniq_id, codes (space-separated), caption`` whose codes come
from the VQGAN encoder. :func:`write_image_gen_tsv` makes such a file from any image-caption file (OFA's caption
TSV, e.g. the synthetic world's ``caption_train.tsv``, or a JSONL of image paths and captions); the result is
read by :meth:`ofa.tasks.image_gen.ImageGenTask.parse_row` and trains with ``ofa-train task=image_gen``.
Command line: ``ofa encode-images --data caption_train.tsv --vqgan DIR --out image_gen_train.tsv``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import torch
from tqdm.auto import tqdm

from ofa.data.image_text import read_image_text
from ofa.errors import ConfigError, DataError, InputError
from ofa.vqgan import images_from_pil, load_vqgan

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ofa.vqgan import VQGAN

__all__ = ["encode_images_to_codes", "write_image_gen_tsv", "check_codebook"]

logger = logging.getLogger(__name__)


def _image_side(vqgan: "VQGAN", image_size: int | None) -> int:
    side = vqgan.config.resolution if image_size is None else image_size
    f = vqgan.downsample_factor
    if isinstance(side, bool) or not isinstance(side, int) or side < f or side % f:
        raise ConfigError(f"image_size ({side!r}) must be a positive multiple of the VQGAN's downsampling factor {f}")
    return side


def encode_images_to_codes(vqgan: "VQGAN", images: "Sequence[Image.Image] | torch.Tensor", *,
                           image_size: int | None = None, batch_size: int = 16) -> list[list[int]]:
    """Encode images into flat (raster-order) code lists, one per image.

    Args:
        vqgan: the :class:`~ofa.vqgan.VQGAN` (its device is used; eval mode is not required, encoding
            takes the argmax code).
        images: PIL images (resized, bicubic, to ``image_size`` squared) or a ``[b, 3, H, W]`` tensor in
            ``[-1, 1]`` (used as is).
        image_size: side the PIL images are resized to (default ``vqgan.config.resolution``); the grid side is
            ``image_size / vqgan.downsample_factor``.
        batch_size: images per encoder pass.

    Returns:
        ``len(images)`` lists of ``(H/f) * (W/f)`` ints in ``[0, vqgan.num_codes)``.

    Raises:
        ConfigError: an image size that is not a multiple of the downsampling factor, or ``batch_size < 1``.
        InputError: an empty list, a non-image, or a malformed tensor.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size ({batch_size!r}) must be an int >= 1")
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise InputError(f"images must be a [b, 3, H, W] tensor, got shape {list(images.shape)}")
        total = images.shape[0]
    else:
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence) or len(images) == 0:
            raise InputError(f"images must be a non-empty list of PIL images or a tensor, got "
                             f"{type(images).__name__}")
        side = _image_side(vqgan, image_size)
        total = len(images)
    device = vqgan.quantize.embed.weight.device
    out: list[list[int]] = []
    for start in range(0, total, batch_size):
        if isinstance(images, torch.Tensor):
            chunk = images[start:start + batch_size]
        else:
            chunk = images_from_pil(list(images[start:start + batch_size]), side)
        codes = vqgan.encode(chunk.to(device=device, dtype=vqgan.quantize.embed.weight.dtype))  # [b, h, w]
        out.extend(codes.reshape(codes.shape[0], -1).cpu().tolist())
    return out


def _clean_field(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def write_image_gen_tsv(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    vqgan: "VQGAN | str | os.PathLike[str]",
    *,
    image_size: int | None = None,
    captions: Literal["first", "all"] = "first",
    fmt: Literal["tsv", "jsonl"] | None = None,
    id_column: int | None = 0,
    caption_column: int = 2,
    image_column: int = -1,
    image_root: str | os.PathLike[str] | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Turn an image-caption file into the image_gen TSV layout ``uniq_id, codes, caption``.

    Args:
        data: a TSV with a base64 image column (default: OFA's caption layout, captions in column 2 joined by
            ``&&``, image last) or a JSONL of ``{"id", "image": path, "caption" | "captions"}``.
        out: the TSV to write (its folder is created).
        vqgan: a :class:`~ofa.vqgan.VQGAN` or a path :func:`~ofa.vqgan.load_vqgan` reads.
        image_size: side the images are resized to before encoding (default ``vqgan.config.resolution``).
            The model that trains on the file needs ``code_image_size = 8 * image_size / f`` (``grid_size``
            ``= image_size / f`` for the task), ``f`` being the VQGAN's downsampling factor.
        captions: ``"first"`` writes one row per image (its first caption), ``"all"`` one row per caption
            (ids ``{uniq_id}-{k}``).
        fmt, id_column, caption_column, image_column, image_root: how to read ``data``
            (see :func:`ofa.data.image_text.read_image_text`).
        batch_size: images per encoder pass.
        limit: encode only the first ``limit`` images.
        progress: show a progress bar.

    Returns:
        ``{"rows", "images", "grid_size", "num_codes", "out"}``.

    Raises:
        ConfigError: a bad ``captions`` mode or image size.
        DataError: unreadable input rows, or an image without a caption.
    """
    if captions not in ("first", "all"):
        raise ConfigError(f"captions ({captions!r}) must be 'first' or 'all'")
    if isinstance(vqgan, (str, os.PathLike)):
        vqgan = load_vqgan(vqgan)
    side = _image_side(vqgan, image_size)
    records = read_image_text(data, fmt=fmt, id_column=id_column, text_column=caption_column,
                              image_column=image_column, image_root=image_root, limit=limit)
    bar = None
    if progress:
        bar = tqdm(desc="encode images", unit="img", dynamic_ncols=True)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rows = images = 0

    def flush(pending: list[Any], f: Any) -> int:
        written = 0
        for record, codes in zip(pending, encode_images_to_codes(vqgan, [r.image for r in pending],
                                                                 image_size=side, batch_size=batch_size)):
            codes_text = " ".join(map(str, codes))
            texts = record.texts if captions == "all" else record.texts[:1]
            for k, text in enumerate(texts):
                uid = _clean_field(record.id) if captions == "first" else f"{_clean_field(record.id)}-{k}"
                f.write(f"{uid}\t{codes_text}\t{_clean_field(text)}\n")
                written += 1
        return written

    with open(out_path, "w", encoding="utf-8") as f:
        pending: list[Any] = []
        for record in records:
            if not record.texts:
                raise DataError(f"{data}: image {record.id!r} has no caption (caption column {caption_column})")
            pending.append(record)
            images += 1
            if len(pending) == batch_size:
                rows += flush(pending, f)
                pending = []
                if bar is not None:
                    bar.update(batch_size)
        if pending:
            rows += flush(pending, f)
            if bar is not None:
                bar.update(len(pending))
    if bar is not None:
        bar.close()
    grid = side // vqgan.downsample_factor
    logger.info("wrote %d image_gen rows (%d images, %dx%d codes) to %s", rows, images, grid, grid, out_path)
    return {"rows": rows, "images": images, "grid_size": grid, "num_codes": vqgan.num_codes, "out": str(out_path)}


def check_codebook(vqgan: Any, tok: Any) -> None:
    """Fail unless the VQGAN's codebook has exactly as many codes as the tokenizer has code tokens.

    Raises:
        ConfigError: naming both sizes.
    """
    if int(vqgan.num_codes) != tok.vocab.num_codes:
        raise ConfigError(f"the VQGAN's codebook size ({vqgan.num_codes}) must equal the tokenizer's number of "
                          f"code tokens ({tok.vocab.num_codes})")
