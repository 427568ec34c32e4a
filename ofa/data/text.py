"""Text normalisation of OFA's readers (spec §5.0): captions, questions, punctuation-free caption targets."""

from __future__ import annotations

import re
import string

from ofa.errors import DataError

__all__ = ["pre_caption", "pre_question", "strip_punctuation"]

_LEADING = ",.!?*#:;~"
_MULTI_SPACE = re.compile(r"\s{2,}")
_NO_PUNCTUATION = str.maketrans({char: None for char in string.punctuation})


def _check(text: object, max_words: object, what: str) -> None:
    if not isinstance(text, str):
        raise DataError(f"{what} must be a str, got {type(text).__name__}: {text!r:.80}")
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 0:
        raise DataError(f"max_words must be an int >= 0, got {max_words!r}")


def _normalise(text: str, max_words: int) -> str:
    text = text.replace("-", " ").replace("/", " ")
    text = _MULTI_SPACE.sub(" ", text).strip()
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def pre_caption(text: str, max_words: int) -> str:
    """Normalise a caption or referring expression as OFA does.

    Lowercase; strip leading characters from ``,.!?*#:;~``; replace ``-`` and ``/`` with spaces; replace
    ``<person>`` with ``person``; collapse runs of 2+ whitespace characters to one space; strip; keep the first
    ``max_words`` space-separated words.

    Args:
        text: The raw caption.
        max_words: The number of words to keep (>= 0).

    Returns:
        The normalised caption.

    Raises:
        DataError: If ``text`` is not a str or ``max_words`` is not an int >= 0.
    """
    _check(text, max_words, "caption")
    text = text.lower().lstrip(_LEADING).replace("<person>", "person")
    return _normalise(text, max_words)


def pre_question(text: str, max_words: int) -> str:
    """Normalise a question as OFA does: :func:`pre_caption` without the ``<person>`` rule.

    Args:
        text: The raw question.
        max_words: The number of words to keep (>= 0).

    Returns:
        The normalised question (a missing ``?`` is not added here; VQA's encoder adds it).

    Raises:
        DataError: If ``text`` is not a str or ``max_words`` is not an int >= 0.
    """
    _check(text, max_words, "question")
    return _normalise(text.lower().lstrip(_LEADING), max_words)


def strip_punctuation(text: str) -> str:
    """Remove every ASCII punctuation character (``string.punctuation``), as OFA's caption targets do.

    Nothing else changes: no lowercasing and no whitespace stripping.

    Args:
        text: The text.

    Returns:
        ``text`` without ASCII punctuation.

    Raises:
        DataError: If ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise DataError(f"text must be a str, got {type(text).__name__}: {text!r:.80}")
    return text.translate(_NO_PUNCTUATION)
