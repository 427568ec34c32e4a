"""Image I/O: OFA's base64 image columns, files on disk and raw bytes, always returned as RGB PIL images.

Every image that enters is turned upright by its EXIF orientation (phone photos are often stored sideways), so
boxes are in the displayed frame, and converted to 8-bit RGB by what its mode means (16-bit grey scaled, not
clipped; float grey from 0..1; alpha dropped as OFA does).

OFA's TSVs store each image as URL-safe base64 (``-`` and ``_`` instead of ``+`` and ``/``) of the encoded
file (JPEG or PNG). :func:`decode_base64_image` also accepts the standard alphabet, missing padding and
embedded line breaks, so files made with either encoder can be read.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import Literal

import numpy as np
import PIL
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ofa.errors import DataError

__all__ = ["decode_base64_image", "encode_image_base64", "load_image"]

_FORMATS = ("JPEG", "PNG")
# Map the standard alphabet onto the URL-safe one, and drop whitespace (MIME encoders wrap lines).
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_WHITESPACE = b" \t\r\n\v\f"


def _preview(text: str | bytes, limit: int = 40) -> str:
    """A short, printable prefix of ``text`` for error messages (images can be megabytes long)."""
    head = text[:limit]
    if isinstance(head, bytes):
        head = head.decode("ascii", errors="replace")
    suffix = "..." if len(text) > limit else ""
    return f"{head!r}{suffix} (length {len(text)})"


def _open_image(data: bytes, what: str) -> Image.Image:
    """Encoded image bytes -> RGB image, fully loaded; ``what`` names the source in errors."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            _read_ycbcr_tiff_as_pillow_13(image)
            return _to_rgb(_upright(image))
    except Image.DecompressionBombError as err:
        raise DataError(f"{what}: image is too large to decode safely ({err})") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        # PIL reports truncated or corrupt files as OSError/ValueError/SyntaxError depending on the plugin.
        raise DataError(f"{what}: not a readable image ({type(err).__name__}: {err})") from err


_PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def _read_ycbcr_tiff_as_pillow_13(image: Image.Image) -> None:
    """Pillow 12 and older open an uncompressed YCbCr TIFF as RGB with 4-byte ``RGBX`` pixels and then fail
    ("image file is truncated"); Pillow 13 reads it as YCbCr. gradio (the ``demo`` extra) pins Pillow below 13,
    so such a file is set up here as Pillow 13 reads it: the same pixels, checked against Pillow 13."""
    if _PILLOW_MAJOR >= 13 or not isinstance(image, ImageFile.ImageFile) or image.format != "TIFF" \
            or image.mode != "RGB":
        return
    tags = getattr(image, "tag_v2", {})
    tiles = list(image.tile or [])
    if tags.get(262) != 6 or tags.get(259, 1) != 1 or not tiles:  # photometric YCbCr, no compression
        return
    args = [t.args for t in tiles]
    if all(t.codec_name == "raw" for t in tiles) and all(isinstance(a, tuple) and a[:1] == ("RGBX",) for a in args):
        image._mode = "YCbCr"
        image.tile = [t._replace(args=("YCbCr", *a[1:])) for t, a in zip(tiles, args) if isinstance(a, tuple)]


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _upright(image: Image.Image) -> Image.Image:
    """``image`` rotated / flipped as its EXIF orientation says (unchanged without one)."""
    orientation = image.getexif().get(0x0112, 1)  # the Orientation tag
    if orientation in (None, 1):
        return image
    upright = ImageOps.exif_transpose(image)
    return upright if upright is not None else image


def _to_rgb(image: Image.Image) -> Image.Image:
    """A loaded 8-bit RGB copy of ``image``.

    16-bit and 32-bit integer grey (``I;16*``, ``I``) is scaled from 0..65535 to 0..255 (PIL's own conversion clips
    at 255, turning most pixels white); float grey (``F``) is taken as 0..1 when its finite values lie there, else
    as 0..255 (NaN -> 0); alpha is dropped, as OFA's readers do (``P`` with transparency goes through RGBA);
    premultiplied ``La`` / ``RGBa`` are unpremultiplied first; every other mode uses PIL's conversion (CMYK, YCbCr,
    LAB, HSV, 1, L, LA, PA, RGBX).
    """
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        scale = 255.0 if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0 else 1.0
        values = np.nan_to_num(values * scale, nan=0.0, posinf=255.0, neginf=0.0)
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    elif image.mode == "La":
        image = image.convert("LA")
    elif image.mode == "RGBa":
        image = image.convert("RGBA")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns when a palette image with transparency goes straight to RGB
    return image.convert("RGB")


def decode_base64_image(text: str | bytes) -> Image.Image:
    """Decode one base64 image column of an OFA TSV.

    Args:
        text: URL-safe (OFA) or standard base64 of an encoded image file; padding may be missing and
            whitespace is ignored.

    Returns:
        The image, in RGB mode.

    Raises:
        DataError: If ``text`` is not a str/bytes, is empty, is not valid base64, or does not decode to an
            image PIL can read. The message says which, with a short prefix of the text.
    """
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError as err:
            raise DataError(
                f"base64 image contains a non-ASCII character at index {err.start}: {_preview(text)}"
            ) from None
    elif isinstance(text, (bytes, bytearray)):
        raw = bytes(text)
    else:
        raise DataError(f"base64 image must be str or bytes, got {type(text).__name__}")
    compact = raw.translate(None, _WHITESPACE).translate(_TO_URLSAFE)
    if not compact:
        raise DataError("base64 image is empty")
    compact += b"=" * (-len(compact) % 4)
    try:
        # b64decode(validate=True) rejects characters outside the alphabet instead of silently skipping them.
        data = base64.b64decode(compact, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as err:
        raise DataError(f"invalid base64 image ({err}): {_preview(text)}") from None
    return _open_image(data, f"base64 image {_preview(text, 16)}")


def encode_image_base64(image: Image.Image, format: Literal["JPEG", "PNG"] = "JPEG", quality: int = 95) -> str:
    """Encode an image as URL-safe base64, the way OFA's TSVs store it.

    Args:
        image: The image. JPEG output is converted to RGB first (JPEG has no alpha).
        format: ``"JPEG"`` or ``"PNG"`` (case-insensitive); PNG is lossless.
        quality: JPEG quality, 1..100 (ignored for PNG).

    Returns:
        The URL-safe base64 text (ASCII, padded, no line breaks).

    Raises:
        DataError: If ``image`` is not a PIL image, or ``format``/``quality`` is not accepted.
    """
    if not isinstance(image, Image.Image):
        raise DataError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    fmt = format.upper() if isinstance(format, str) else format
    if fmt not in _FORMATS:
        raise DataError(f"format must be one of {_FORMATS}, got {format!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise DataError(f"quality must be an int in 1..100, got {quality!r}")
    buffer = io.BytesIO()
    if fmt == "JPEG":
        _to_rgb(image).save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG")
    return base64.urlsafe_b64encode(buffer.getvalue()).decode("ascii")


def load_image(src: str | os.PathLike[str] | bytes | bytearray | Image.Image) -> Image.Image:
    """Load an image from a path, raw encoded bytes or a PIL image, as RGB.

    Args:
        src: A file path (str or path-like), the bytes of an encoded image file, or a PIL image
            (returned as is when already RGB and upright, else turned upright and converted).

    Returns:
        The image, in RGB mode, fully loaded (the file is closed).

    Raises:
        DataError: If the file is missing or unreadable or is not an image (the message names the path), the
            bytes are not an image, or ``src`` has another type.
    """
    if isinstance(src, Image.Image):
        upright = _upright(src)
        return upright if upright.mode == "RGB" else _to_rgb(upright)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise DataError("image bytes are empty")
        return _open_image(data, f"image bytes {_preview(data, 16)}")
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            reason = "is a directory" if path.is_dir() else "does not exist"
            raise DataError(f"image file {str(path)!r} {reason}")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DataError(f"image file {str(path)!r} cannot be read ({err.strerror or err})") from err
        return _open_image(data, f"image file {str(path)!r}")
    raise DataError(
        f"cannot load an image from {type(src).__name__}; expected a path, encoded bytes or a PIL image"
    )
