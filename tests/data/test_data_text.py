"""ofa.data.text: OFA's pre_caption / pre_question (spec §5.0) and the caption-target punctuation removal."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ofa.data.text import pre_caption, pre_question, strip_punctuation
from ofa.errors import DataError


@pytest.mark.parametrize(
    ("text", "max_words", "expected"),
    [
        ("#A Man-made  Cake/Pie, <person>  here.", 30, "a man made cake pie, person here."),
        ("#A Man-made  Cake/Pie, <person>  here.", 4, "a man made cake"),
        ("...?!Two dogs", 10, "two dogs"),
        ("  A dog  ", 10, "a dog"),
        (" ,hi", 5, ",hi"),  # leading characters are stripped before whitespace, as in OFA
        ("a\t\tb\n\nc", 10, "a b c"),
        ("a\tb", 10, "a\tb"),  # a single whitespace character is not a run
        ("one two three", 0, ""),
        ("<PERSON> runs", 5, "person runs"),  # lowercased first, so the tag matches
        ("", 5, ""),
    ],
)
def test_pre_caption(text, max_words, expected):
    assert pre_caption(text, max_words) == expected


@pytest.mark.parametrize(
    ("text", "max_words", "expected"),
    [
        ("Is this a  dog-house?", 80, "is this a dog house?"),
        ("Where is <person>?", 10, "where is <person>?"),  # no <person> rule for questions
        ("~What color is the car/truck", 80, "what color is the car truck"),
        ("How many people are in the picture?", 3, "how many people"),
    ],
)
def test_pre_question(text, max_words, expected):
    assert pre_question(text, max_words) == expected


def test_strip_punctuation_removes_ascii_punctuation_only():
    assert strip_punctuation("A man's dog, running!") == "A mans dog running"
    assert strip_punctuation(string.punctuation) == ""
    assert strip_punctuation(" café — ok ") == " café — ok "  # non-ASCII dash kept, no stripping


@given(st.text(max_size=60), st.integers(min_value=0, max_value=12))
def test_pre_caption_invariants(text, max_words):
    out = pre_caption(text, max_words)
    assert out == out.strip()
    assert "  " not in out and "-" not in out and "/" not in out
    assert len(out.split(" ")) <= max(max_words, 1)
    assert pre_caption(out, max_words) == out or out[:1] in ",.!?*#:;~"


@pytest.mark.parametrize("bad", [None, 3, b"bytes"])
def test_non_text_raises(bad):
    with pytest.raises(DataError, match="must be a str"):
        pre_caption(bad, 5)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="must be a str"):
        strip_punctuation(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 2.0, True, None])
def test_bad_max_words_raises(bad):
    with pytest.raises(DataError, match="max_words"):
        pre_question("a question", bad)  # type: ignore[arg-type]
