"""Image transforms of OFA's finetuning tasks (spec §5.0-§5.5); every transform returns float32 ``[3, H, W]``.

* :func:`square_resize`: caption, VQA, SNLI-VE and ImageNet evaluation (bicubic to exactly S x S).
* :func:`grounding_resize`: RefCOCO (the same resize, plus the ratios that map boxes into the resized image).
* :class:`ImageNetTrainTransform`: ImageNet finetuning augmentation.
* :func:`text_only_image`: the zero image that stands in for a missing image in a mixed batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
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


class ImageNetTrainTransform:
    """ImageNet-1K finetuning augmentation (spec §5.5), image -> float32 ``[3, size, size]``.

    In order: RGB; ``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3), bicubic)``; horizontal flip
    with p = 0.5; RandAugment; ToTensor; ImageNet normalisation; ``RandomErasing(p=0.25)`` filled with
    per-pixel normal noise (timm's ``mode="pixel"``, one box).

    The RandAugment step is **a stand-in**: OFA uses timm's ``rand-m9-mstd0.5-inc1``; this uses torchvision's
    ``RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=11)``, so magnitude 9 means 9/10 of each op's
    range as in timm, and fills with the ImageNet mean pixel as timm does. It differs from timm in that the
    magnitude is fixed (timm draws it from N(9, 0.5)), every chosen op is applied (timm applies each with
    p = 0.5), and the op list is torchvision's. OFA's additional custom ``RandomAugment(N=2, M=7)`` step is
    not included.

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
        self._erase = T.RandomErasing(p=0.25, value="random")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"

    def _apply(self, image: Image.Image) -> torch.Tensor:
        tensor = to_tensor(self._pil_ops(_check_image(image)))
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
