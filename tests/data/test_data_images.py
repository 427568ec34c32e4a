"""ofa.data.images: base64 columns, files, bytes and PIL images, always RGB; clear errors."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from ofa.data.images import decode_base64_image, encode_image_base64, load_image
from ofa.errors import DataError, OFAError


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_round_trip_is_exact(image_factory):
    image = image_factory(31, 17)
    text = encode_image_base64(image, format="PNG")
    assert "+" not in text and "/" not in text  # URL-safe alphabet
    back = decode_base64_image(text)
    assert back.mode == "RGB" and back.size == (31, 17)
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_jpeg_round_trip_is_close(image_factory):
    image = Image.new("RGB", (32, 32), (200, 30, 90))
    back = decode_base64_image(encode_image_base64(image))  # JPEG by default
    assert back.size == (32, 32)
    assert np.abs(np.asarray(back, dtype=int) - np.asarray(image, dtype=int)).max() <= 4


def test_standard_alphabet_missing_padding_and_line_breaks_are_accepted(image_factory):
    image = image_factory(40, 40, seed=3)
    data = _png_bytes(image)
    standard = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode()
    assert standard != urlsafe  # the noise image contains both + and / somewhere
    for text in (standard, urlsafe, urlsafe.rstrip("="), base64.encodebytes(data).decode(), standard.encode()):
        assert np.array_equal(np.asarray(decode_base64_image(text)), np.asarray(image))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_decoded_images_are_rgb(image_factory, mode):
    image = image_factory(8, 8, mode=mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    decoded = decode_base64_image(base64.urlsafe_b64encode(buffer.getvalue()).decode())
    assert decoded.mode == "RGB" and decoded.size == (8, 8)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("not*base64!", "invalid base64"),
        ("abcde", "invalid base64"),  # impossible length
        (base64.urlsafe_b64encode(b"hello, not an image").decode(), "not a readable image"),
        ("caf\u00e9", "non-ASCII"),
    ],
)
def test_bad_base64_raises_data_error(text, match):
    with pytest.raises(DataError, match=match):
        decode_base64_image(text)


def test_truncated_image_raises_data_error(image_factory):
    data = _png_bytes(image_factory(64, 64))
    text = base64.urlsafe_b64encode(data[: len(data) // 2]).decode()
    with pytest.raises(DataError, match="not a readable image"):
        decode_base64_image(text)


def test_data_error_is_an_ofa_value_error():
    with pytest.raises(OFAError):
        decode_base64_image("%%%")
    with pytest.raises(ValueError):
        decode_base64_image(12)  # type: ignore[arg-type]


def test_encode_rejects_bad_arguments(image_factory):
    with pytest.raises(DataError, match="format"):
        encode_image_base64(image_factory(), format="GIF")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="PIL"):
        encode_image_base64(np.zeros((4, 4, 3)))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="quality"):
        encode_image_base64(image_factory(), quality=0)
    # JPEG cannot store alpha: RGBA is converted, lowercase format names work.
    assert decode_base64_image(encode_image_base64(image_factory(mode="RGBA"), format="jpeg")).mode == "RGB"


def test_load_image_from_path_bytes_and_pil(tmp_path, image_factory):
    image = image_factory(12, 9, seed=5)
    path = tmp_path / "img.png"
    image.save(path)
    for src in (path, str(path), path.read_bytes(), bytearray(path.read_bytes()), image, image.convert("L")):
        loaded = load_image(src)
        assert loaded.mode == "RGB" and loaded.size == (12, 9)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(image))
    assert load_image(image) is image  # already RGB: no copy


def test_load_image_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match="nope.jpg.*does not exist"):
        load_image(missing)
    text_file = tmp_path / "notes.png"
    text_file.write_text("this is not an image")
    with pytest.raises(DataError, match="notes.png.*not a readable image"):
        load_image(str(text_file))
    with pytest.raises(DataError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(DataError, match="not a readable image"):
        load_image(b"\x00\x01garbage")
    with pytest.raises(DataError, match="expected a path"):
        load_image(3.5)  # type: ignore[arg-type]


# -- EXIF orientation and every PIL mode (issue #14, items 5 and 6) ---------------------------------------------------
def _sideways_jpeg(orientation: int) -> bytes:
    """A 40x20 stored image, left half red, right half blue, with the given EXIF orientation."""
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=98, exif=exif)
    return buffer.getvalue()


def test_exif_orientation_is_applied_by_every_entry_point(tmp_path) -> None:
    data = _sideways_jpeg(6)  # displayed after a 90 degree clockwise turn: the red left half ends on top
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        images = [load_image(path), load_image(data), decode_base64_image(base64.urlsafe_b64encode(data)),
                  load_image(opened)]
    for image in images:
        assert image.size == (20, 40)
        top, bottom = np.asarray(image)[2, 10], np.asarray(image)[37, 10]
        assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    assert load_image(_sideways_jpeg(1)).size == (40, 20)  # orientation 1: as stored


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    values = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369)  # 0 .. 65535
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    out = np.asarray(load_image(buffer.getvalue()))
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert out[..., 0].ravel().tolist() == [round(v / 257) for v in values.ravel().tolist()]  # 0, 17, ... 255
    assert (out[..., 0] == out[..., 2]).all()
    wide = np.asarray(load_image(Image.fromarray(values.astype(np.int32), "I")))
    assert wide[..., 0].ravel().tolist() == out[..., 0].ravel().tolist()


def test_float_grey_from_unit_range_and_nan() -> None:
    values = np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32)
    out = np.asarray(load_image(Image.fromarray(values, "F")))[..., 0]
    assert out.tolist() == [[0, 128], [255, 0]]
    big = np.array([[0.0, 100.0], [300.0, -5.0]], dtype=np.float32)  # not 0..1: taken as 0..255, clipped
    assert np.asarray(load_image(Image.fromarray(big, "F")))[..., 0].tolist() == [[0, 100], [255, 0]]


@pytest.mark.parametrize("mode", ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                                  "LAB", "HSV", "I", "I;16", "I;16B", "F"])
def test_every_mode_becomes_8_bit_rgb(mode) -> None:
    image = Image.new(mode, (5, 3))
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (5, 3)


def test_palette_with_transparency_and_alpha_are_dropped_not_blended() -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1
    assert np.asarray(load_image(palette))[0].tolist() == [[10, 20, 30], [200, 100, 50]]
    rgba = Image.new("RGBA", (1, 1), (40, 50, 60, 0))
    assert np.asarray(load_image(rgba))[0, 0].tolist() == [40, 50, 60]  # OFA's convert("RGB")


def test_an_uncompressed_ycbcr_tiff_loads_with_its_pixels() -> None:
    """Pillow 12 (which gradio pins) cannot read these by itself; the loader reads them as Pillow 13 does."""
    rgb = Image.fromarray(np.random.default_rng(5).integers(0, 256, (9, 13, 3), dtype=np.uint8), "RGB")
    ycbcr = rgb.convert("YCbCr")
    buffer = io.BytesIO()
    ycbcr.save(buffer, format="TIFF")
    loaded = load_image(buffer.getvalue())
    assert loaded.size == (13, 9)
    assert np.array_equal(np.asarray(loaded), np.asarray(ycbcr.convert("RGB")))
