"""Top-1 accuracy with its length checks."""

from __future__ import annotations

import pytest
import torch

from ofa.errors import DataError
from ofa.metrics import accuracy


def test_accuracy() -> None:
    assert accuracy(["yes", "no", "maybe", "no"], ["yes", "no", "no", "yes"]) == 0.5
    assert accuracy([1, 2, 3], [1, 2, 3]) == 1.0
    assert accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])) == pytest.approx(2 / 3)


def test_bad_inputs_raise() -> None:
    with pytest.raises(DataError, match="2 predictions but 3 labels"):
        accuracy([1, 2], [1, 2, 3])
    with pytest.raises(DataError, match="no predictions"):
        accuracy([], [])
    with pytest.raises(DataError, match="string"):
        accuracy("abc", "abc")
