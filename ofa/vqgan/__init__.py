"""The GumbelVQ VQGAN (taming-transformers ``vqgan_gumbel_f8``) behind OFA's image-code targets.

* :mod:`~ofa.vqgan.config`: :class:`VQGANConfig`, presets ``VQGAN_GUMBEL_F8`` and ``VQGAN_TEST``.
* :mod:`~ofa.vqgan.blocks`: ResNet/attention/resampling blocks, encoder and decoder with taming's names.
* :mod:`~ofa.vqgan.quantize`: the Gumbel-softmax codebook.
* :mod:`~ofa.vqgan.model`: :class:`VQGAN` (``encode``/``decode``/``forward``, ``save_pretrained``).
* :mod:`~ofa.vqgan.loading`: :func:`load_vqgan` for the released checkpoint + ``model.yaml``.
* :mod:`~ofa.vqgan.train`: :func:`train_vqgan`, a small from-scratch recipe for a new image domain.
"""

from __future__ import annotations

from ofa.vqgan.config import VQGAN_GUMBEL_F8, VQGAN_TEST, VQGANConfig
from ofa.vqgan.loading import load_vqgan, read_taming_yaml
from ofa.vqgan.model import VQGAN, build_vqgan, images_from_pil, images_to_pil
from ofa.vqgan.quantize import GumbelQuantize
from ofa.vqgan.train import VQGAN_PRESETS, VQGAN_SMALL_F8, reconstruction_error, train_vqgan

__all__ = [
    "VQGANConfig",
    "VQGAN_GUMBEL_F8",
    "VQGAN_TEST",
    "VQGAN",
    "GumbelQuantize",
    "build_vqgan",
    "load_vqgan",
    "read_taming_yaml",
    "images_from_pil",
    "images_to_pil",
    "train_vqgan",
    "reconstruction_error",
    "VQGAN_PRESETS",
    "VQGAN_SMALL_F8",
]
