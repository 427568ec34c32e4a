"""Top-1 accuracy for classification-style tasks (SNLI-VE, ImageNet, GLUE-style text tasks)."""

from __future__ import annotations

from typing import Any, Sequence

from ofa.errors import DataError

__all__ = ["accuracy"]


def accuracy(predictions: Sequence[Any], labels: Sequence[Any]) -> float:
    """Fraction of positions where the prediction equals the label.

    Args:
        predictions: [n] predicted labels (strings, ints, ...; tensors are compared via ``tolist()``).
        labels: [n] gold labels, compared with ``==``.

    Returns:
        The accuracy in [0, 1] (multiply by 100 for a percentage).

    Raises:
        DataError: if the lengths differ, there is nothing to score, or an argument is a plain string.
    """
    for name, value in (("predictions", predictions), ("labels", labels)):
        if isinstance(value, (str, bytes)):
            raise DataError(f"{name} must be a sequence of labels, got the string {value!r}")
    preds = predictions.tolist() if hasattr(predictions, "tolist") else list(predictions)
    golds = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    if len(preds) != len(golds):
        raise DataError(f"{len(preds)} predictions but {len(golds)} labels; they must pair up one to one")
    if not preds:
        raise DataError("no predictions to score")
    return sum(1 for p, g in zip(preds, golds) if p == g) / len(preds)
