"""ofa.data.transforms: output sizes, dtypes, ranges, ratios, and seedable ImageNet augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ofa.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OFA_MEAN,
    OFA_STD,
    RANDOM_AUGMENT_OPS,
    ImageNetTrainTransform,
    RandomAugment,
    grounding_resize,
    normalize,
    square_resize,
    text_only_image,
    to_tensor,
)
from ofa.errors import DataError


def test_constants():
    assert OFA_MEAN == OFA_STD == (0.5, 0.5, 0.5)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


def test_square_resize_shape_range_and_pixels(image_factory):
    image = image_factory(40, 20)
    out = square_resize(image, 16)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    # Exactly PIL's bicubic resize, to [0, 1], then (x - 0.5) / 0.5.
    expected = np.asarray(image.resize((16, 16), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    expected = torch.from_numpy(expected).permute(2, 0, 1) * 2 - 1
    assert torch.allclose(out, expected, atol=1e-6)


def test_square_resize_imagenet_normalisation_and_grey_input(image_factory):
    grey = image_factory(10, 30, mode="L")
    out = square_resize(grey, 8, IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (3, 8, 8)
    raw = (out * torch.tensor(IMAGENET_STD).view(3, 1, 1)) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert torch.allclose(raw[0], raw[1], atol=1e-6)  # grey -> identical channels


def test_grounding_resize_size_and_ratios(image_factory):
    out, (w_ratio, h_ratio) = grounding_resize(image_factory(40, 25), size=32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert w_ratio == pytest.approx(32 / 40) and h_ratio == pytest.approx(32 / 25)
    default, ratios = grounding_resize(image_factory(256, 128))
    assert default.shape == (3, 512, 512) and ratios == (2.0, 4.0)


def test_normalize():
    x = torch.rand(3, 4, 5)
    y = normalize(x, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    assert torch.allclose(y[1], (x[1] - 0.2) / 0.25)
    assert not torch.equal(x, y)  # new tensor, input untouched
    with pytest.raises(DataError, match="3 values"):
        normalize(x, (0.5,), (0.5,))
    with pytest.raises(DataError, match="non-zero"):
        normalize(x, OFA_MEAN, (0.5, 0.0, 0.5))
    with pytest.raises(DataError, match=r"\[C, H, W\]"):
        normalize(torch.rand(4, 5), OFA_MEAN, OFA_STD)


def test_to_tensor_range(image_factory):
    t = to_tensor(image_factory(5, 6))
    assert t.shape == (3, 6, 5) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1


def test_text_only_image():
    z = text_only_image(8)
    assert z.shape == (3, 8, 8) and z.dtype == torch.float32 and not z.any()


@pytest.mark.parametrize("size", [0, -3, 2.5, True, None])
def test_bad_sizes_raise(image_factory, size):
    with pytest.raises(DataError, match="size"):
        square_resize(image_factory(), size)
    with pytest.raises(DataError, match="size"):
        text_only_image(size)


def test_non_image_raises():
    with pytest.raises(DataError, match="PIL"):
        square_resize(torch.zeros(3, 8, 8), 8)  # type: ignore[arg-type]


def test_imagenet_train_transform_shape_and_default_size(image_factory):
    image = image_factory(96, 64)
    out = ImageNetTrainTransform(size=48)(image)
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert ImageNetTrainTransform()(image).shape == (3, 480, 480)


def test_imagenet_train_transform_is_seedable(image_factory):
    image = image_factory(96, 64, seed=1)
    transform = ImageNetTrainTransform(size=32)
    state = torch.random.get_rng_state()
    a = transform(image, generator=torch.Generator().manual_seed(7))
    b = transform(image, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(a, b)
    outs = [transform(image, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    # The constructor's generator, and torch's global seed, work too.
    seeded = ImageNetTrainTransform(size=32, generator=torch.Generator().manual_seed(7))
    assert torch.equal(seeded(image), a)
    torch.manual_seed(3)
    c = transform(image)
    torch.manual_seed(3)
    assert torch.equal(transform(image), c)


# -- RandomAugment(N, M): OFA's custom op set ------------------------------------------------------------------------
def _block_image() -> Image.Image:
    """A 20x20 dark image with a white 4x4 block at x 8..11, y 6..9."""
    pixels = np.full((20, 20, 3), 40, dtype=np.uint8)
    pixels[6:10, 8:12] = 255
    return Image.fromarray(pixels)


def _only(op: str, **kwargs) -> RandomAugment:
    # one op, drawn once; _kept_seed() gives a generator whose coin keeps it (p = 0.5)
    return RandomAugment(1, ops=(op,), **kwargs)


def _kept_seed() -> torch.Generator:
    """A generator whose first 'keep' coin says apply (found by trying seeds, the draws are randint then rand)."""
    for seed in range(100):
        g = torch.Generator().manual_seed(seed)
        torch.randint(0, 1, (1,), generator=g)
        if float(torch.rand((), generator=g)) <= 0.5:
            return torch.Generator().manual_seed(seed)
    raise AssertionError("no seed keeps the op")


def test_random_augment_translate_moves_pixels_and_fills_grey():
    image = _block_image()
    out = np.asarray(_only("TranslateX", magnitude=10, translate=3)(image, _kept_seed()))
    white = np.argwhere(out[..., 0] == 255)
    assert sorted({int(x) for x in white[:, 1]}) in ([5, 6, 7, 8], [11, 12, 13, 14])  # 3 px left or right
    assert {int(y) for y in white[:, 0]} == {6, 7, 8, 9}
    edge = out[:, 0] if white[:, 1].min() > 8 else out[:, -1]  # the side the image moved away from
    assert (edge == 128).all()


def test_random_augment_brightness_factor_and_identity():
    image = _block_image()
    out = np.asarray(_only("Brightness", magnitude=7)(image, _kept_seed()))
    assert out[0, 0, 0] == round(40 * (0.7 * 1.8 + 0.1))  # 54: factor 1.36 at level 7
    assert (np.asarray(_only("Identity")(image, _kept_seed())) == np.asarray(image)).all()


def test_random_augment_rotate_keeps_size_and_grey_corners():
    out = _only("Rotate", magnitude=10)(_block_image(), _kept_seed())  # +-30 degrees
    assert out.size == (20, 20)
    assert tuple(np.asarray(out)[0, 0]) == (128, 128, 128)


def test_random_augment_is_seeded_and_keeps_about_half_the_ops():
    augment = RandomAugment(2, 7)
    image = _block_image()
    a = [np.asarray(augment(image, torch.Generator().manual_seed(s))) for s in range(3)]
    b = [np.asarray(augment(image, torch.Generator().manual_seed(s))) for s in range(3)]
    assert all((x == y).all() for x, y in zip(a, b))
    single = RandomAugment(1, 10, ops=("Equalize",))  # equalize always changes this two-tone image
    g = torch.Generator().manual_seed(0)
    changed = sum(not (np.asarray(single(image, g)) == np.asarray(image)).all() for _ in range(400))
    assert 160 <= changed <= 240  # p = 0.5 per drawn op


@pytest.mark.parametrize("kwargs, match", [({"num_ops": -1}, "num_ops"), ({"num_ops": True}, "num_ops"),
                                           ({"magnitude": 11}, "magnitude"), ({"ops": ("Solarize",)}, "Solarize"),
                                           ({"ops": ()}, "at least one"), ({"translate": -1.0}, "translate")])
def test_random_augment_bad_arguments(kwargs, match):
    with pytest.raises(DataError, match=match):
        RandomAugment(**kwargs)
    assert set(RANDOM_AUGMENT_OPS) == {"Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness", "ShearX",
                                       "ShearY", "TranslateX", "TranslateY", "Rotate"}
