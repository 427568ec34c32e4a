"""Fixtures of the pretraining tests: the shape world's pretraining files (8 scenes of 32 px, infilling codes
from a random tiny VQGAN whose 64 codes match the test tokenizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ofa.apps.shapeworld import WorldConfig
from ofa.apps.shapeworld.pretrain import write_pretraining_files
from ofa.vqgan import VQGANConfig, build_vqgan

TINY_VQGAN = VQGANConfig(num_codes=64, embed_dim=32, z_channels=32, channels=32, channel_mult=(1, 2),
                         num_res_blocks=1, attn_resolutions=(), resolution=16)
SIZE = 32  # image-text patch size and auxiliary (infilling / detection) image size of the tests


@pytest.fixture(scope="session")
def pretrain_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vqgan = build_vqgan(TINY_VQGAN).eval()
    out = tmp_path_factory.mktemp("pretrain")
    return write_pretraining_files(out, 8, WorldConfig(image_size=32, max_objects=2, seed=0), vqgan=vqgan,
                                   progress=False)


@pytest.fixture(scope="session")
def task_options(pretrain_files: dict[str, Path]) -> dict[str, Any]:
    return {"negatives": str(pretrain_files["negatives"]), "text_data": str(pretrain_files["text"]),
            "image_data": str(pretrain_files["image"]), "detection_data": str(pretrain_files["detection"]),
            "image_size": SIZE, "aux_image_size": SIZE, "max_image_size": SIZE}
