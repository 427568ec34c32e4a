"""Exceptions raised by :mod:`ofa`.

Every error the library raises on bad input derives from :class:`OFAError`, so callers can catch one type.
The ``ValueError`` subclasses keep working with code that already catches ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "OFAError",
    "ConfigError",
    "TokenizationError",
    "InputError",
    "CheckpointError",
    "GenerationError",
    "PluginError",
    "PluginConflictError",
    "DataError",
    "OFAWarning",
]


class OFAError(Exception):
    """Base class of every exception raised by :mod:`ofa`."""


class ConfigError(OFAError, ValueError):
    """A configuration value is unknown, out of range or inconsistent with another one."""


class TokenizationError(OFAError, ValueError):
    """Text, ids, boxes or vocabulary files that the tokenizer cannot handle."""


class InputError(OFAError, ValueError):
    """A tensor given to the model has the wrong shape, dtype, range or batch size."""


class CheckpointError(OFAError, ValueError):
    """A checkpoint file is truncated, foreign, or does not match the model (missing/unexpected/mis-shaped keys)."""


class GenerationError(OFAError, ValueError):
    """Invalid decoding settings, or constraints that leave no legal token."""


class PluginError(OFAError):
    """A task plugin failed to import or does not implement the Task protocol."""


class PluginConflictError(PluginError):
    """Two installed distributions register the same task name."""


class DataError(OFAError, ValueError):
    """A data file, row, record or image that cannot be read (bad base64, wrong column count, bad JSON, ...)."""


class OFAWarning(UserWarning):
    """Something the library did to an input that changes the result (text cut to a task's length limit, ...)."""
