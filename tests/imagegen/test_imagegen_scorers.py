"""Tests for ofa.metrics.image_text: the scorer protocol, the colour-word scorer, the embedding adapter."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from ofa.errors import ConfigError, InputError
from ofa.metrics.image_text import ColorNameScorer, EmbeddingScorer, ImageTextScorer, build_scorer


def circle(color: tuple[int, int, int], size: int = 32, background: tuple[int, int, int] = (245, 245, 245)
           ) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    ImageDraw.Draw(image).ellipse((6, 6, size - 6, size - 6), fill=color)
    return image


RED, BLUE, GREEN = (210, 40, 40), (40, 70, 210), (40, 160, 60)


def test_red_circle_beats_blue_circle() -> None:
    scorer = ColorNameScorer()
    red, blue = scorer.score(["a red circle", "a red circle"], [circle(RED), circle(BLUE)])
    assert red > blue
    # With the background neutral, only the named colour counts for the red one and blue is penalised.
    red, blue = ColorNameScorer(neutral=("white",)).score(["a red circle"] * 2, [circle(RED), circle(BLUE)])
    assert red > 0 > blue


def test_named_colors_fractions_and_neutral() -> None:
    scorer = ColorNameScorer()
    assert scorer.named_colors("A Grey cat and a RED, red hat") == ["gray", "red"]
    assert scorer.named_colors("a bluebird") == []  # whole words only
    fractions = scorer.color_fractions(Image.new("RGB", (8, 8), RED))
    assert fractions["red"] == 1.0 and sum(fractions.values()) == 1.0
    plain = scorer.score(["a red circle"], [circle(RED)])[0]
    neutral = ColorNameScorer(neutral=("white",)).score(["a red circle"], [circle(RED)])[0]
    assert neutral > plain  # the white background is no longer penalised


def test_text_without_colour_scores_zero_and_large_images_shrink() -> None:
    scorer = ColorNameScorer(max_side=16)
    assert scorer.score(["a circle", "a square"], [circle(RED), circle(BLUE, size=200)]) == [0.0, 0.0]
    assert scorer.score(["blue"], [circle(BLUE, size=200)])[0] > 0


@pytest.mark.parametrize(("texts", "images", "match"), [
    (["a", "b"], [Image.new("RGB", (2, 2))], "one text per image"),
    ("a red circle", [Image.new("RGB", (2, 2))], "list of strings"),
    ([3], [Image.new("RGB", (2, 2))], r"texts\[0\]"),
    (["red"], ["not an image"], r"images\[0\]"),
])
def test_bad_score_inputs_raise(texts: object, images: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        ColorNameScorer().score(texts, images)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"colors": {}}, "at least one colour"),
    ({"colors": {"red": (300, 0, 0)}}, "three ints"),
    ({"neutral": ("beige",)}, "beige"),
    ({"synonyms": {"crimson": "scarlet"}}, "synonyms"),
    ({"prominence": 2.0}, "prominence"),
    ({"max_side": 0}, "max_side"),
])
def test_bad_scorer_settings_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ColorNameScorer(**kwargs)


def test_build_scorer_and_protocol() -> None:
    assert isinstance(build_scorer("color"), ColorNameScorer)
    assert build_scorer("none") is None and build_scorer(None) is None
    scorer = ColorNameScorer()
    assert build_scorer(scorer) is scorer and isinstance(scorer, ImageTextScorer)
    with pytest.raises(ConfigError, match="unknown image scorer 'clip'"):
        build_scorer("clip")
    with pytest.raises(ConfigError, match="no score"):
        build_scorer(object())  # type: ignore[arg-type]


def test_embedding_scorer_is_a_cosine_of_the_embeddings() -> None:
    # A stand-in for CLIP: texts and images embed to one-hot colour axes.
    axes = {"red": 0, "blue": 1}

    def embed_texts(texts: list[str]) -> torch.Tensor:
        return torch.stack([torch.eye(2)[axes[t.split()[1]]] for t in texts])

    def embed_images(images: list[Image.Image]) -> torch.Tensor:
        return torch.tensor([[im.getpixel((16, 16))[0] / 255, im.getpixel((16, 16))[2] / 255] for im in images])

    scorer = EmbeddingScorer(embed_texts, embed_images, scale=100.0, batch_size=1)
    red, blue = scorer.score(["a red circle", "a red circle"], [circle(RED), circle(BLUE)])
    assert red > blue and red <= 100.0 + 1e-4
    assert scorer.score([], []) == []
    bad = EmbeddingScorer(embed_texts, lambda images: torch.zeros(len(images), 3))
    with pytest.raises(InputError, match="dims"):
        bad.score(["a red circle"], [circle(RED)])
    with pytest.raises(ConfigError, match="callables"):
        EmbeddingScorer("x", embed_images)  # type: ignore[arg-type]
