"""Deprecated alias of :mod:`ofa.metrics.image_text` (moved in 0.2, removed in 0.3)."""

from ofa._deprecated import forward

__getattr__ = forward("ofa.tasks.image_scorers")
