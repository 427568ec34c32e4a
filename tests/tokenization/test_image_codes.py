"""Tests for ofa.tokenization.image_codes: code grids <-> ids (spec §4.5)."""

from __future__ import annotations

import pytest
import torch

from ofa.errors import TokenizationError
from ofa.tokenization import UnifiedVocab, codes_to_ids, grid_shape, ids_to_codes


@pytest.fixture(scope="module")
def vocab() -> UnifiedVocab:
    return UnifiedVocab([str(i) for i in range(10)], num_codes=16, num_bins=8)  # codes at 15..30


def test_grid_round_trip_raster_order(vocab: UnifiedVocab) -> None:
    grid = torch.tensor([[0, 1, 2], [3, 4, 15]])
    ids = codes_to_ids(grid, vocab, grid_size=(2, 3))
    assert ids == [15, 16, 17, 18, 19, 30]
    assert torch.equal(ids_to_codes(ids, vocab, grid_size=(2, 3)), grid)
    assert ids_to_codes(ids, vocab).tolist() == [0, 1, 2, 3, 4, 15]


def test_nested_lists_and_flat_input(vocab: UnifiedVocab) -> None:
    assert codes_to_ids([[1, 2], [3, 4]], vocab, grid_size=2) == [16, 17, 18, 19]
    assert codes_to_ids([1, 2, 3, 4], vocab, grid_size=2) == [16, 17, 18, 19]
    assert codes_to_ids([], vocab) == []


def test_full_ofa_offset() -> None:
    full = UnifiedVocab([str(i) for i in range(50260)], num_codes=8192, num_bins=1000)
    assert codes_to_ids([0, 8191], full) == [50265, 58456]


def test_errors(vocab: UnifiedVocab) -> None:
    with pytest.raises(TokenizationError, match=r"code 16 .*0\.\.15"):
        codes_to_ids([0, 16], vocab)
    with pytest.raises(TokenizationError, match="-1"):
        codes_to_ids([-1], vocab)
    with pytest.raises(TokenizationError, match="grid_size 2x2"):
        codes_to_ids([[1, 2, 3], [4, 5, 6]], vocab, grid_size=2)
    with pytest.raises(TokenizationError, match="grid_size 2x2"):
        codes_to_ids([1, 2, 3], vocab, grid_size=(2, 2))
    with pytest.raises(TokenizationError, match="1-D or 2-D"):
        codes_to_ids(torch.zeros(2, 2, 2, dtype=torch.long), vocab)
    with pytest.raises(TokenizationError, match="int"):
        codes_to_ids([0.5, 1.0], vocab)
    with pytest.raises(TokenizationError, match="rectangular"):
        codes_to_ids([[1, 2], [3]], vocab)
    with pytest.raises(TokenizationError, match="token id 14 is not an image-code"):
        ids_to_codes([15, 14], vocab)
    with pytest.raises(TokenizationError, match="cannot fill a 2x2 grid"):
        ids_to_codes([15, 16, 17], vocab, grid_size=2)
    with pytest.raises(TokenizationError, match="grid_size"):
        grid_shape(0)
    with pytest.raises(TokenizationError, match="grid_size"):
        grid_shape((2, "a"))  # type: ignore[arg-type]
