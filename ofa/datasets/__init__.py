"""Deprecated alias of :mod:`ofa.apps.shapeworld` (moved in 0.2, removed in 0.3)."""

from ofa._deprecated import forward

__getattr__ = forward("ofa.datasets")
