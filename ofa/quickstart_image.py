"""Deprecated alias of :mod:`ofa.apps.quickstart_image` (moved in 0.2, removed in 0.3)."""

from ofa._deprecated import forward

__getattr__ = forward("ofa.quickstart_image")
