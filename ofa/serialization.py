"""Our own checkpoint directory format: ``config.json`` (a format tag + the model config) and ``model.pt`` (the
state dict, no pickled objects), both written atomically.

It sits below the model so that :meth:`OFAModel.save_pretrained` needs nothing above it; reading (and every
other format) is :mod:`ofa.checkpoint`'s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["FORMAT_NAME", "WEIGHTS_NAME", "CONFIG_NAME", "write_pretrained"]

FORMAT_NAME = "ofa-unified"
WEIGHTS_NAME = "model.pt"
CONFIG_NAME = "config.json"


def write_pretrained(directory: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor],
                     config: Mapping[str, Any]) -> Path:
    """Write ``state_dict`` to ``model.pt`` and ``{"format": ..., "config": config}`` to ``config.json``.

    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    torch.save(dict(state_dict), tmp)
    os.replace(tmp, directory / WEIGHTS_NAME)
    tmp_config = directory / (CONFIG_NAME + ".tmp")
    tmp_config.write_text(json.dumps({"format": FORMAT_NAME, "config": dict(config)}, indent=2))
    os.replace(tmp_config, directory / CONFIG_NAME)
    return directory
