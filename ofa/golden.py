"""Deprecated alias of :mod:`ofa.apps.golden` (moved in 0.2, removed in 0.3)."""

from ofa._deprecated import forward

__getattr__ = forward("ofa.golden")


if __name__ == "__main__":  # `python -m ofa.golden` keeps working, with the warning
    import sys

    sys.exit(__getattr__("main")())
