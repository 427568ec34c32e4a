"""Deprecated alias of :mod:`ofa.apps.cli` (moved in 0.2, removed in 0.3)."""

from ofa._deprecated import forward

__getattr__ = forward("ofa.cli")


if __name__ == "__main__":  # `python -m ofa.cli` keeps working, with the warning
    import sys

    sys.exit(__getattr__("main")())
