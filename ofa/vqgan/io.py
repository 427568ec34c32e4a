"""Reading VQGAN weight files and checking a state dict against a model's keys and shapes.

Files are read with ``torch.load(weights_only=True)``; a file that pickles anything else (taming's released
Lightning checkpoint may hold callback and optimizer objects) is refused with a :class:`CheckpointError`
telling the caller to pass ``trust_pickle=True``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ofa.errors import CheckpointError
from ofa.serialization import read_torch_file

__all__ = ["read_torch_file", "check_state_dict"]


def _summarise(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any], *,
                     strict: bool = True) -> None:
    """Compare a state dict with the expected key -> shape map.

    Mis-shaped keys always fail (another geometry: ``num_codes``, ``channels``, ...); missing and unexpected
    keys fail when ``strict``.

    Raises:
        CheckpointError: Listing the missing, unexpected and mis-shaped keys.
    """
    bad_types = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad_types:
        raise CheckpointError(f"state dict values must be tensors; not tensors: {_summarise(bad_types)}")
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mis_shaped = sorted(f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k])})"
                        for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k]))
    parts = []
    if mis_shaped:
        parts.append(f"mis-shaped keys (another geometry?): {_summarise(mis_shaped)}")
    if strict and missing:
        parts.append(f"missing keys: {_summarise(missing)}")
    if strict and unexpected:
        parts.append(f"unexpected keys: {_summarise(unexpected)}")
    if parts:
        raise CheckpointError("VQGAN checkpoint does not match the model; " + "; ".join(parts))
