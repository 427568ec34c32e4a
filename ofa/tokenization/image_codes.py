"""Image-code grids ↔ token ids (spec §4.5).

Image generation and infilling targets are VQGAN codes (GumbelVQ, 8192 codes, downsampling 8): a 256×256
image gives a 32×32 grid, the 128×128 pretraining centre crop a 16×16 grid. Grids are flattened in raster
(row-major) order and code ``c`` becomes ``<code_c>``; the id arithmetic itself lives in
:class:`~ofa.tokenization.vocab.UnifiedVocab`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TypeAlias

import torch

from ofa.errors import TokenizationError
from ofa.tokenization.vocab import UnifiedVocab

__all__ = ["codes_to_ids", "ids_to_codes", "grid_shape"]

GridSize: TypeAlias = "int | Sequence[int]"  # one side (square grid) or (rows, cols)


def grid_shape(grid_size: GridSize) -> tuple[int, int]:
    """``(rows, cols)`` of a grid size given as one side or a pair.

    Raises:
        TokenizationError: If the size is not one or two positive ints.
    """
    try:
        if isinstance(grid_size, Sequence) and not isinstance(grid_size, str):
            rows, cols = (operator.index(v) for v in grid_size)
        else:
            rows = cols = operator.index(grid_size)
    except (TypeError, ValueError):
        raise TokenizationError(f"grid_size ({grid_size!r}) must be an int or a (rows, cols) pair of ints") from None
    if rows <= 0 or cols <= 0 or isinstance(grid_size, bool):
        raise TokenizationError(f"grid_size ({grid_size!r}) must be positive")
    return rows, cols


def _as_long_tensor(values: object, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        t = values.detach()
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TokenizationError(f"{name} must have an integer dtype, got {t.dtype}")
        return t.to(device="cpu", dtype=torch.long)
    try:
        t = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TokenizationError(f"{name} must be a rectangular grid or flat sequence of ints: {err}") from None
    if t.numel() == 0:
        return t.long()  # torch.as_tensor([]) is float32
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TokenizationError(f"{name} must contain ints, got dtype {t.dtype}")
    return t.long()


def codes_to_ids(codes: object, vocab: UnifiedVocab, grid_size: GridSize | None = None) -> list[int]:
    """Flattens a code grid in raster order and maps each code to its ``<code_c>`` token id.

    Args:
        codes: ``[rows, cols]`` or flat ``[rows * cols]`` codes, as a tensor or (nested) sequence of ints.
        vocab: The vocabulary (gives ``num_codes`` and the id offset).
        grid_size: Expected grid, one side or ``(rows, cols)``; None accepts any size.

    Returns:
        The token ids, row by row.

    Raises:
        TokenizationError: If the grid is not 1-D/2-D, does not match ``grid_size``, or a code is not in
            ``range(vocab.num_codes)``.
    """
    t = _as_long_tensor(codes, "codes")
    if t.dim() not in (1, 2):
        raise TokenizationError(f"codes must be a 1-D or 2-D grid, got shape {tuple(t.shape)}")
    if grid_size is not None:
        rows, cols = grid_shape(grid_size)
        expected_ok = tuple(t.shape) == (rows, cols) if t.dim() == 2 else t.numel() == rows * cols
        if not expected_ok:
            raise TokenizationError(
                f"codes of shape {tuple(t.shape)} do not match grid_size {rows}x{cols} "
                f"({rows * cols} codes, as [{rows}, {cols}] or flat)"
            )
    return vocab.codes_to_ids(t.flatten()).tolist()


def ids_to_codes(ids: object, vocab: UnifiedVocab, grid_size: GridSize | None = None) -> torch.Tensor:
    """Maps ``<code_c>`` token ids back to codes, reshaped to the grid if one is given.

    Args:
        ids: Flat token ids (tensor or sequence); every one must be a code token.
        vocab: The vocabulary.
        grid_size: One side or ``(rows, cols)``; None returns a flat tensor.

    Returns:
        LongTensor ``[rows, cols]`` (or ``[n]`` without ``grid_size``).

    Raises:
        TokenizationError: If an id is not a code token or the count does not fill the grid.
    """
    t = _as_long_tensor(ids, "ids")
    if t.dim() != 1:
        raise TokenizationError(f"ids must be a flat sequence, got shape {tuple(t.shape)}")
    codes = vocab.ids_to_codes(t)
    if grid_size is None:
        return codes
    rows, cols = grid_shape(grid_size)
    if codes.numel() != rows * cols:
        raise TokenizationError(
            f"{codes.numel()} code tokens cannot fill a {rows}x{cols} grid ({rows * cols} needed)"
        )
    return codes.view(rows, cols)
