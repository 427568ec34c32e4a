"""Image transforms of OFA's finetuning tasks (spec §5.0-§5.5); every transform returns float32 ``[3, H, W]``.

* :func:`square_resize`: caption, VQA, SNLI-VE and ImageNet evaluation (bicubic to exactly S x S).
* :func:`grounding_resize`: RefCOCO (the same resize, plus the ratios that map boxes into the resized image).
* :class:`RandomAugment`: OFA's own ``RandomAugment(N=2, M=7)`` (ImageNet finetuning and image-text pretraining).
* :class:`ImageNetTrainTransform`: ImageNet finetuning augmentation.
* :func:`text_only_image`: the zero image that stands in for a missing image in a mixed batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ofa.errors import DataError

__all__ = [
    "OFA_MEAN",
    "OFA_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize",
    "to_tensor",
    "square_resize",
    "grounding_resize",
    "RandomAugment",
    "RANDOM_AUGMENT_OPS",
    "ImageNetTrainTransform",
    "text_only_image",
]

OFA_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
OFA_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _check_size(size: object, what: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"{what} must be a positive int, got {size!r}")
    return size


def _check_image(image: object) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise DataError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def normalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` (a new tensor).

    Args:
        tensor: ``[C, H, W]`` floating-point image.
        mean: C channel means.
        std: C channel standard deviations (all non-zero).

    Returns:
        The normalised ``[C, H, W]`` tensor.

    Raises:
        DataError: If ``tensor`` is not a floating ``[C, H, W]`` tensor, or ``mean``/``std`` do not have C
            entries, or ``std`` has a zero.
    """
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or not tensor.is_floating_point():
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise DataError(f"normalize expects a floating [C, H, W] tensor, got {shape}")
    channels = tensor.shape[0]
    if len(mean) != channels or len(std) != channels:
        raise DataError(f"mean ({len(mean)} values) and std ({len(std)} values) must have {channels} values")
    if any(s == 0 for s in std):
        raise DataError(f"std must be non-zero, got {tuple(std)}")
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    return (tensor - mean_t) / std_t


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 ``[3, H, W]`` in [0, 1] (torchvision's ``ToTensor``)."""
    return TF.pil_to_tensor(_check_image(image)).to(torch.float32).div_(255.0)


def square_resize(
    image: Image.Image,
    size: int,
    mean: Sequence[float] = OFA_MEAN,
    std: Sequence[float] = OFA_STD,
) -> torch.Tensor:
    """Bicubic resize to exactly ``size x size`` (the aspect ratio is not kept), then normalise.

    Used by caption, VQA, SNLI-VE (default mean/std 0.5, i.e. values in [-1, 1]) and ImageNet evaluation
    (pass :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`).

    Args:
        image: The image (converted to RGB if needed).
        size: The output side in pixels.
        mean: Channel means for :func:`normalize`.
        std: Channel standard deviations for :func:`normalize`.

    Returns:
        float32 ``[3, size, size]``.

    Raises:
        DataError: If ``image`` is not a PIL image or ``size`` is not a positive int.
    """
    size = _check_size(size)
    image = _check_image(image)
    # PIL's bicubic resize, as torchvision's Resize does for PIL inputs in OFA's pipeline.
    resized = image.resize((size, size), Image.Resampling.BICUBIC)
    return normalize(to_tensor(resized), mean, std)


def grounding_resize(
    image: Image.Image,
    size: int = 512,
    mean: Sequence[float] = OFA_MEAN,
    std: Sequence[float] = OFA_STD,
) -> tuple[torch.Tensor, tuple[float, float]]:
    """RefCOCO's image transform: bicubic to exactly ``size x size``, normalised, with the box scale ratios.

    OFA resizes with "short side ``size``, each side capped at ``size``", which always gives ``size x size``
    (spec §5.2). A box ``(x0, y0, x1, y1)`` in original pixels maps to the resized image by multiplying x by
    ``w_ratio`` and y by ``h_ratio``; predictions map back by dividing.

    Args:
        image: The image (converted to RGB if needed).
        size: The output side in pixels (512 for RefCOCO finetuning).
        mean: Channel means for :func:`normalize`.
        std: Channel standard deviations for :func:`normalize`.

    Returns:
        ``(tensor, (w_ratio, h_ratio))``: float32 ``[3, size, size]`` and ``(size / w, size / h)``.

    Raises:
        DataError: If ``image`` is not a PIL image or ``size`` is not a positive int.
    """
    size = _check_size(size)
    image = _check_image(image)
    width, height = image.size
    return square_resize(image, size, mean, std), (size / width, size / height)


def text_only_image(size: int) -> torch.Tensor:
    """The image of a text-only sample in a mixed batch: float32 zeros ``[3, size, size]`` (masked out).

    Args:
        size: The image side in pixels (the batch's patch image size).

    Raises:
        DataError: If ``size`` is not a positive int.
    """
    size = _check_size(size)
    return torch.zeros(3, size, size, dtype=torch.float32)


RANDOM_AUGMENT_OPS: tuple[str, ...] = ("Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness", "ShearX",
                                       "ShearY", "TranslateX", "TranslateY", "Rotate")
_FILL = (128, 128, 128)


def _signed(value: float, generator: torch.Generator | None) -> float:
    return -value if float(torch.rand((), generator=generator)) > 0.5 else value


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.NEAREST,
                           fillcolor=_FILL)


class RandomAugment:
    """OFA's custom ``RandomAugment(N, M)`` (spec §5.5, §5.7), on PIL images.

    Draws ``num_ops`` ops (with replacement) from ``ops``; each is applied with probability 0.5 at level
    ``magnitude`` out of 10: enhance factor ``M/10 * 1.8 + 0.1`` (Brightness, Sharpness), shear ``±0.3 M/10``,
    translation ``±translate * M/10`` pixels, rotation ``±30 M/10`` degrees (the sign drawn per op), fill grey
    (128, 128, 128). Identity, AutoContrast and Equalize take no level. The ops are PIL's (the original uses its own
    numpy/OpenCV versions of the same operations, so pixels can differ slightly, e.g. at interpolation).

    Args:
        num_ops: ops drawn per image (OFA: 2).
        magnitude: level, 0..10 (OFA: 7).
        ops: a subset of :data:`RANDOM_AUGMENT_OPS` (OFA's pretraining and ImageNet lists are all ten).
        translate: pixels of translation at level 10 (OFA: 10, for 384-480 px images).

    Raises:
        DataError: a bad count, level or op name.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 7, ops: Sequence[str] = RANDOM_AUGMENT_OPS,
                 translate: float = 10.0) -> None:
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
            raise DataError(f"RandomAugment num_ops ({num_ops!r}) must be an int >= 0")
        if not 0 <= magnitude <= 10:
            raise DataError(f"RandomAugment magnitude ({magnitude!r}) must be in [0, 10]")
        unknown = [op for op in ops if op not in RANDOM_AUGMENT_OPS]
        if unknown or not ops:
            raise DataError(f"RandomAugment ops {list(ops)!r}: unknown {unknown}; accepted: "
                            f"{list(RANDOM_AUGMENT_OPS)} (at least one)")
        if not translate >= 0:
            raise DataError(f"RandomAugment translate ({translate!r}) must be >= 0 pixels")
        self.num_ops, self.magnitude, self.ops, self.translate = num_ops, float(magnitude), tuple(ops), translate

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_ops={self.num_ops}, magnitude={self.magnitude:g})"

    def _apply(self, name: str, image: Image.Image, generator: torch.Generator | None) -> Image.Image:
        level = self.magnitude / 10
        if name == "AutoContrast":
            return ImageOps.autocontrast(image)
        if name == "Equalize":
            return ImageOps.equalize(image)
        if name == "Brightness":
            return ImageEnhance.Brightness(image).enhance(level * 1.8 + 0.1)
        if name == "Sharpness":
            return ImageEnhance.Sharpness(image).enhance(level * 1.8 + 0.1)
        if name == "ShearX":
            return _affine(image, (1, _signed(0.3 * level, generator), 0, 0, 1, 0))
        if name == "ShearY":
            return _affine(image, (1, 0, 0, _signed(0.3 * level, generator), 1, 0))
        if name == "TranslateX":
            return _affine(image, (1, 0, _signed(self.translate * level, generator), 0, 1, 0))
        if name == "TranslateY":
            return _affine(image, (1, 0, 0, 0, 1, _signed(self.translate * level, generator)))
        if name == "Rotate":
            return image.rotate(_signed(30 * level, generator), resample=Image.Resampling.NEAREST, fillcolor=_FILL)
        return image  # Identity

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
        """Augment one RGB image; randomness from ``generator`` (default torch's global generator)."""
        image = _check_image(image)
        picks = torch.randint(0, len(self.ops), (self.num_ops,), generator=generator).tolist()
        for pick in picks:
            if float(torch.rand((), generator=generator)) > 0.5:  # each drawn op is kept with p = 0.5
                continue
            image = self._apply(self.ops[pick], image, generator)
        return image


class ImageNetTrainTransform:
    """ImageNet-1K finetuning augmentation (spec §5.5), image -> float32 ``[3, size, size]``.

    In order: RGB; ``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3), bicubic)``; horizontal flip
    with p = 0.5; RandAugment; RandomAugment(2, 7); ToTensor; ImageNet normalisation; ``RandomErasing(p=0.25)`` filled with
    per-pixel normal noise (timm's ``mode="pixel"``, one box).

    The RandAugment step is **a stand-in**: OFA uses timm's ``rand-m9-mstd0.5-inc1``; this uses torchvision's
    ``RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=11)``, so magnitude 9 means 9/10 of each op's
    range as in timm, and fills with the ImageNet mean pixel as timm does. It differs from timm in that the
    magnitude is fixed (timm draws it from N(9, 0.5)), every chosen op is applied (timm applies each with
    p = 0.5), and the op list is torchvision's. Then OFA's own :class:`RandomAugment` ``(N=2, M=7)``, with
    translations scaled to the image (10 px at 480 px as in OFA's scripts' inputs).

    Randomness comes from torch's global generator (seed with :func:`torch.manual_seed`), or, when a
    ``torch.Generator`` is given (to the constructor or the call), from a seed drawn from it: the pipeline
    then runs inside :func:`torch.random.fork_rng`, so the global generator is left untouched.

    Args:
        size: The output side in pixels (480 in OFA's ImageNet finetuning).
        generator: Default generator for calls that do not pass one.
    """

    def __init__(self, size: int = 480, generator: torch.Generator | None = None) -> None:
        self.size = _check_size(size)
        self.generator = generator
        fill = [round(255 * m) for m in IMAGENET_MEAN]
        self._pil_ops = T.Compose(
            [
                T.RandomResizedCrop(
                    self.size,
                    scale=(0.08, 1.0),
                    ratio=(3 / 4, 4 / 3),
                    interpolation=T.InterpolationMode.BICUBIC,
                ),
                T.RandomHorizontalFlip(p=0.5),
                T.RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=11, fill=fill),
            ]
        )
        self._random_augment = RandomAugment(2, 7, translate=10.0 * self.size / 480)
        self._erase = T.RandomErasing(p=0.25, value="random")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"

    def _apply(self, image: Image.Image) -> torch.Tensor:
        tensor = to_tensor(self._random_augment(self._pil_ops(_check_image(image))))
        return self._erase(normalize(tensor, IMAGENET_MEAN, IMAGENET_STD))

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment one image.

        Args:
            image: The image (converted to RGB if needed).
            generator: Source of randomness for this call (default: the constructor's, else torch's global).

        Returns:
            float32 ``[3, size, size]``, ImageNet-normalised.

        Raises:
            DataError: If ``image`` is not a PIL image.
        """
        generator = generator if generator is not None else self.generator
        if generator is None:
            return self._apply(image)
        # torchvision's transforms only draw from the global generator; seed it privately from ours.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._apply(image)
