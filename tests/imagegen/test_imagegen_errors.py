"""Bad inputs along the text-to-image path raise clear errors naming what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ofa.errors import CheckpointError, ConfigError, InputError
from ofa.tasks.image_gen import ImageGenTask
from ofa.vqgan import VQGANConfig, load_vqgan


def test_wrong_grid_sizes_and_codes_out_of_range(vqgan: Any) -> None:
    task = ImageGenTask(grid_size=2, vqgan=vqgan)
    with pytest.raises(InputError, match="out of range"):
        task.images([torch.tensor([[0, 1], [2, 64]])])
    with pytest.raises(InputError, match="out of range"):
        vqgan.decode(torch.full((1, 2, 2), -1))
    with pytest.raises(InputError, match=r"does not match grid_size 3"):
        vqgan.decode(torch.zeros(1, 2, 2, dtype=torch.long), grid_size=3)
    with pytest.raises(InputError, match="do not form a square grid"):
        vqgan.decode(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(InputError, match="integer dtype"):
        vqgan.decode(torch.zeros(1, 2, 2))
    with pytest.raises(InputError, match="grid 0 has 3 codes; a 2x2 grid needs 4"):
        task.images([torch.tensor([0, 1, 2])])


def test_a_checkpoint_of_another_geometry_is_refused(vqgan_dir: Path, tiny_vqgan_config: VQGANConfig) -> None:
    wider = VQGANConfig(**{**tiny_vqgan_config.to_dict(), "channels": 64})
    with pytest.raises(CheckpointError, match="shape"):
        load_vqgan(vqgan_dir / "weights.pt", config=wider)
    with pytest.raises(ConfigError, match="stores its own config"):
        load_vqgan(vqgan_dir, config=wider)
    with pytest.raises(CheckpointError, match="does not exist"):
        ImageGenTask(grid_size=2, vqgan=vqgan_dir / "nothing-here")
