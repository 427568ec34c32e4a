"""Load the released taming-transformers GumbelVQ checkpoint (or our own folder) into a :class:`VQGAN`.

The release is a Lightning checkpoint whose ``state_dict`` holds ``encoder.*``, ``decoder.*``, ``quant_conv.*``,
``post_quant_conv.*``, ``quantize.proj.*``, ``quantize.embed.weight`` and the training loss's ``loss.*``
(discriminator, perceptual network), with the architecture in a YAML file next to it. A typical layout::

    vqgan_gumbel_f8/checkpoints/last.ckpt
    vqgan_gumbel_f8/configs/model.yaml
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from ofa.errors import CheckpointError, ConfigError
from ofa.vqgan.config import VQGANConfig
from ofa.vqgan.io import read_torch_file
from ofa.vqgan.model import CONFIG_FILE, VQGAN, model_from_state_dict

__all__ = ["load_vqgan", "read_taming_yaml"]

logger = logging.getLogger(__name__)

_CHECKPOINT_NAMES = ("model.ckpt", "last.ckpt", "checkpoints/model.ckpt", "checkpoints/last.ckpt")
_YAML_NAMES = ("model.yaml", "configs/model.yaml")
_LEARNED_QUANTIZE = ("quantize.proj.", "quantize.embed.")


def read_taming_yaml(path: str | os.PathLike[str]) -> VQGANConfig:
    """Parse a taming-transformers ``model.yaml`` (PyYAML ``safe_load``) into a :class:`VQGANConfig`.

    Raises:
        CheckpointError: If the file is absent or not YAML.
        ConfigError: If it does not describe a supported GumbelVQ (see :meth:`VQGANConfig.from_taming`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"VQGAN config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CheckpointError(f"could not read {str(path)!r} as YAML: {exc}") from exc
    try:
        return VQGANConfig.from_taming(data)
    except ConfigError as exc:
        raise ConfigError(f"{str(path)!r}: {exc}") from exc


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _resolve(path: Path, config: Any) -> tuple[Path, VQGANConfig]:
    if path.is_dir():
        checkpoint = _first_file(path, _CHECKPOINT_NAMES)
        if checkpoint is None:
            raise CheckpointError(f"{str(path)!r} holds none of {list(_CHECKPOINT_NAMES)} (nor {CONFIG_FILE})")
        yaml_candidates = [path / n for n in _YAML_NAMES]
    elif path.is_file():
        checkpoint = path
        yaml_candidates = [path.with_suffix(".yaml"), path.parent / "model.yaml",
                           path.parent.parent / "configs" / "model.yaml"]
    else:
        raise CheckpointError(f"VQGAN checkpoint {str(path)!r} does not exist")
    if isinstance(config, VQGANConfig):
        return checkpoint, config
    if isinstance(config, Mapping):
        return checkpoint, VQGANConfig.from_taming(config)
    if isinstance(config, (str, os.PathLike)):
        return checkpoint, read_taming_yaml(config)
    if config is not None:
        raise ConfigError(f"config must be a VQGANConfig, a taming config mapping, a YAML path or None, "
                          f"got {type(config).__name__}")
    found = next((p for p in yaml_candidates if p.is_file()), None)
    if found is None:
        raise CheckpointError(f"no VQGAN config found for {str(checkpoint)!r} (looked for "
                              f"{[str(p) for p in yaml_candidates]}); pass config=<model.yaml or VQGANConfig>")
    return checkpoint, read_taming_yaml(found)


def _model_state(checkpoint: Any, path: Path) -> dict[str, Any]:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        state = checkpoint["state_dict"]
    elif isinstance(checkpoint, Mapping) and checkpoint and all(isinstance(v, torch.Tensor)
                                                                 for v in checkpoint.values()):
        state = checkpoint  # a bare state dict
    else:
        keys = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else []
        raise CheckpointError(f"{str(path)!r} holds neither a 'state_dict' nor a bare state dict "
                              f"({type(checkpoint).__name__} with keys {keys[:10]})")
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in state.items():
        key = str(key)
        # The training loss (discriminator, LPIPS) and any non-learned quantizer buffers are not the model.
        if key.startswith("loss.") or (key.startswith("quantize.") and not key.startswith(_LEARNED_QUANTIZE)):
            dropped.append(key)
        else:
            kept[key] = value
    if dropped:
        logger.info("ignoring %d training-only keys of %s (e.g. %s)", len(dropped), path, dropped[0])
    return kept


def load_vqgan(
    path: str | os.PathLike[str],
    config: VQGANConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    trust_pickle: bool = False,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> VQGAN:
    """Load a GumbelVQ VQGAN (in eval mode) from the released layout or from :meth:`VQGAN.save_pretrained`.

    Args:
        path: a checkpoint file (``last.ckpt``, or a bare state dict), a folder holding ``model.ckpt`` /
            ``last.ckpt`` (also under ``checkpoints/``) and ``model.yaml`` (also under ``configs/``), or a
            folder written by :meth:`VQGAN.save_pretrained` (``config.json`` + ``weights.pt``).
        config: the architecture: a :class:`VQGANConfig`, a parsed taming config, a YAML path, or ``None`` to
            look for ``model.yaml`` next to the checkpoint (``<file>.yaml``, ``model.yaml``,
            ``../configs/model.yaml``). Ignored for our own folders, which store theirs.
        trust_pickle: unpickle arbitrary objects; the released Lightning file may need it (runs code from the
            file: only for files you trust).
        strict: fail on missing or unexpected model keys (``loss.*`` keys are always ignored). Mis-shaped keys
            fail either way.
        map_location: where the weights are placed.

    Raises:
        CheckpointError: Absent/unreadable files, pickled objects without ``trust_pickle``, or weights that do
            not fit the config (listing missing, unexpected and mis-shaped keys).
        ConfigError: A config that is not a supported GumbelVQ.
    """
    folder = Path(path)
    if folder.is_dir() and (folder / CONFIG_FILE).is_file():
        if config is not None:
            raise ConfigError(f"{str(folder)!r} stores its own config ({CONFIG_FILE}); do not pass config")
        return VQGAN.from_pretrained(folder, map_location=map_location, strict=strict)
    checkpoint_path, vq_config = _resolve(folder, config)
    checkpoint = read_torch_file(checkpoint_path, trust_pickle=trust_pickle, map_location=map_location)
    state = _model_state(checkpoint, checkpoint_path)
    return model_from_state_dict(vq_config, state, strict=strict)
