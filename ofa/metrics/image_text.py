"""Text-image scorers: rerank generated images (spec §5.6) and reward them in CLIP-SCST (spec §6.3).

OFA reranks its sampled images, and rewards them in CLIP-SCST, by the CLIP ViT-B/16 cosine similarity between
the caption and the image. CLIP's weights cannot be had offline, so the library ships the interface
(:class:`ImageTextScorer`), a scorer that needs no weights at all (:class:`ColorNameScorer`, which only knows
colour words) and an adapter for embedding models (:class:`EmbeddingScorer`). CLIP plugs in through the latter,
or through any class with the same ``score`` method. With ``open_clip`` installed and its weights on disk::

    import open_clip, torch
    from ofa.metrics.image_text import EmbeddingScorer

    clip, _, preprocess = open_clip.create_model_and_transforms("ViT-B-16", pretrained="/path/to/weights.bin")
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    clip.eval()

    def embed_texts(texts):
        with torch.no_grad():
            return clip.encode_text(tokenizer(texts))

    def embed_images(images):
        with torch.no_grad():
            return clip.encode_image(torch.stack([preprocess(im) for im in images]))

    scorer = EmbeddingScorer(embed_texts, embed_images, scale=100.0)  # OFA reports cosine x 100

or with Hugging Face ``transformers`` (``CLIPModel`` / ``CLIPProcessor`` from a local folder)::

    def embed_texts(texts):
        return model.get_text_features(**processor(text=texts, return_tensors="pt", padding=True))

    def embed_images(images):
        return model.get_image_features(**processor(images=images, return_tensors="pt"))

A scorer is passed to :class:`~ofa.tasks.image_gen.ImageGenTask` (``scorer=``), to ``ofa generate-image``
(``--scorer``, by name, for the registered ones) and to the trainer's ``clip_scst`` criterion.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ofa.errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

__all__ = ["ImageTextScorer", "ColorNameScorer", "EmbeddingScorer", "COLOR_TABLE", "COLOR_SYNONYMS",
           "SCORERS", "build_scorer"]


@runtime_checkable
class ImageTextScorer(Protocol):
    """Scores how well each image matches its text; higher is better.

    ``score(texts, images)`` takes two lists of the same length and returns one float per ``(text, image)``
    pair (not a matrix). Scores of one text are compared with each other (reranking, leave-one-out rewards), so
    they need no particular scale.
    """

    def score(self, texts: list[str], images: "list[Image.Image]") -> list[float]: ...


COLOR_TABLE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 160, 60),
    "blue": (40, 70, 215),
    "yellow": (235, 205, 30),
    "purple": (130, 50, 170),
    "orange": (240, 130, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "brown": (125, 80, 40),
    "pink": (240, 140, 180),
}
"""Colour words and a typical sRGB value of each (the reference points pixels are assigned to)."""

COLOR_SYNONYMS: dict[str, str] = {"grey": "gray", "violet": "purple"}
"""Other spellings of the colour words of :data:`COLOR_TABLE`."""

_WORD = re.compile(r"[a-z]+")


def _check_pairs(texts: Sequence[str], images: Sequence[Any]) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InputError(f"texts must be a list of strings, got {type(texts).__name__}")
    if not isinstance(images, Sequence):
        raise InputError(f"images must be a list of PIL images, got {type(images).__name__}")
    if len(texts) != len(images):
        raise InputError(f"score() takes one text per image: got {len(texts)} texts and {len(images)} images")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is a {type(text).__name__}, not a string")
    for i, image in enumerate(images):
        if not hasattr(image, "convert"):
            raise InputError(f"images[{i}] is a {type(image).__name__}, not a PIL image")


class ColorNameScorer:
    """A weight-free scorer that rewards the colours a text names and penalises prominent colours it does not.

    Every pixel is assigned to its nearest colour of the table (Euclidean RGB distance), or to none when that
    colour is farther than ``max_distance``. With ``f_c`` the fraction of pixels assigned to colour ``c``::

        score = sum_{c named} f_c - penalty * sum_{c not named, f_c >= prominence, c not neutral} f_c

    A text that names no colour of the table scores 0 for every image (no information: rankings fall back to
    the model's scores). Colour words are matched as whole lowercase words (``"grey"`` counts as gray).

    Args:
        colors: name -> RGB reference colours (default :data:`COLOR_TABLE`).
        synonyms: other word -> table name (default :data:`COLOR_SYNONYMS`).
        max_distance: pixels farther than this from every reference colour count for no colour.
        prominence: the fraction of the image above which an unnamed colour is penalised.
        penalty: weight of the unnamed-colour term.
        neutral: colours never penalised (e.g. ``("white", "gray")`` for scenes on light backgrounds).
        max_side: images are shrunk (nearest neighbour) to at most this side before counting, for speed.

    Raises:
        ConfigError: for an empty table, bad RGB values, unknown synonym/neutral names or out-of-range numbers.
    """

    def __init__(self, colors: Mapping[str, Sequence[int]] | None = None, *,
                 synonyms: Mapping[str, str] | None = None, max_distance: float = 90.0, prominence: float = 0.1,
                 penalty: float = 1.0, neutral: Sequence[str] = (), max_side: int = 64) -> None:
        table = dict(COLOR_TABLE if colors is None else colors)
        if not table:
            raise ConfigError("ColorNameScorer needs at least one colour")
        for name, rgb in table.items():
            if (not isinstance(name, str) or len(tuple(rgb)) != 3
                    or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in rgb)):
                raise ConfigError(f"colour {name!r}: {rgb!r} is not three ints in 0..255")
        self.names = tuple(name.lower() for name in table)
        self.rgb = np.asarray([tuple(rgb) for rgb in table.values()], dtype=np.float32)  # [c, 3]
        self.synonyms = {k.lower(): v.lower() for k, v in (COLOR_SYNONYMS if synonyms is None else synonyms).items()
                         if v.lower() in self.names}
        if synonyms is not None and len(self.synonyms) != len(synonyms):
            raise ConfigError(f"synonyms {dict(synonyms)!r} name colours outside the table {list(self.names)}")
        unknown = [n for n in neutral if n.lower() not in self.names]
        if unknown:
            raise ConfigError(f"neutral colours {unknown} are not in the table {list(self.names)}")
        for name, value, low, high in (("max_distance", max_distance, 0.0, math.inf),
                                       ("prominence", prominence, 0.0, 1.0), ("penalty", penalty, 0.0, math.inf)):
            if not isinstance(value, (int, float)) or not low <= value <= high:
                raise ConfigError(f"{name} ({value!r}) must be a number in [{low}, {high}]")
        if not isinstance(max_side, int) or max_side < 1:
            raise ConfigError(f"max_side ({max_side!r}) must be an int >= 1")
        self.max_distance = float(max_distance)
        self.prominence = float(prominence)
        self.penalty = float(penalty)
        self.neutral = frozenset(n.lower() for n in neutral)
        self.max_side = max_side

    def named_colors(self, text: str) -> list[str]:
        """The table colours ``text`` names, in order of first mention."""
        out: list[str] = []
        for word in _WORD.findall(text.lower()):
            name = self.synonyms.get(word, word)
            if name in self.names and name not in out:
                out.append(name)
        return out

    def color_fractions(self, image: "Image.Image") -> dict[str, float]:
        """Fraction of the pixels assigned to each table colour (they sum to at most 1)."""
        # import cost: the scorers load without torch and PIL
        from PIL import Image

        rgb = image.convert("RGB")
        if max(rgb.size) > self.max_side:
            scale = self.max_side / max(rgb.size)
            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                             resample=Image.Resampling.NEAREST)
        pixels = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)  # [p, 3]
        distance = np.linalg.norm(pixels[:, None, :] - self.rgb[None, :, :], axis=-1)  # [p, c]
        nearest = distance.argmin(axis=1)
        close = distance[np.arange(len(pixels)), nearest] <= self.max_distance
        counts = np.bincount(nearest[close], minlength=len(self.names))
        total = max(len(pixels), 1)
        return {name: float(counts[i]) / total for i, name in enumerate(self.names)}

    def score(self, texts: list[str], images: "list[Image.Image]") -> list[float]:
        """One score per ``(text, image)`` pair (see the class docstring).

        Raises:
            InputError: for lists of different lengths, a non-string text or a non-image.
        """
        _check_pairs(texts, images)
        out = []
        for text, image in zip(texts, images):
            named = self.named_colors(text)
            if not named:
                out.append(0.0)
                continue
            fractions = self.color_fractions(image)
            reward = sum(fractions[c] for c in named)
            unnamed = sum(f for c, f in fractions.items()
                          if c not in named and c not in self.neutral and f >= self.prominence)
            out.append(reward - self.penalty * unnamed)
        return out

    def __repr__(self) -> str:
        return (f"ColorNameScorer(colors={list(self.names)}, max_distance={self.max_distance}, "
                f"prominence={self.prominence}, penalty={self.penalty}, neutral={sorted(self.neutral)})")


class EmbeddingScorer:
    """Cosine similarity of text and image embeddings (CLIP and the like), times ``scale``.

    Args:
        embed_texts: ``list[str] -> [n, d]`` tensor or array.
        embed_images: ``list[PIL.Image] -> [n, d]`` tensor or array.
        scale: multiplies the cosine (OFA's "CLIP score" is cosine x 100).
        batch_size: texts/images embedded per call.

    Raises:
        ConfigError: for a non-callable embedder or ``batch_size < 1``.
    """

    def __init__(self, embed_texts: "Callable[[list[str]], Any]", embed_images: "Callable[[list[Image.Image]], Any]",
                 *, scale: float = 1.0, batch_size: int = 32) -> None:
        if not callable(embed_texts) or not callable(embed_images):
            raise ConfigError("embed_texts and embed_images must be callables (list -> [n, d] embeddings)")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size ({batch_size!r}) must be an int >= 1")
        self.embed_texts = embed_texts
        self.embed_images = embed_images
        self.scale = float(scale)
        self.batch_size = batch_size

    def _embed(self, fn: Callable[[list[Any]], Any], items: list[Any], what: str) -> "torch.Tensor":
        # import cost: the scorers load without torch and PIL
        import torch

        parts = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            value = torch.as_tensor(fn(chunk)).detach().float().cpu()
            if value.dim() != 2 or value.shape[0] != len(chunk):
                raise InputError(f"the {what} embedder returned shape {list(value.shape)} for {len(chunk)} "
                                 f"inputs; expected [{len(chunk)}, d]")
            parts.append(value)
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)

    def score(self, texts: list[str], images: "list[Image.Image]") -> list[float]:
        """``scale * cos(embed_text(t_i), embed_image(x_i))`` for each pair.

        Raises:
            InputError: for mismatched lists or embeddings of the wrong shape.
        """
        _check_pairs(texts, images)
        if not texts:
            return []
        # Each distinct text is embedded once: a reranker scores many images against one caption.
        unique = list(dict.fromkeys(texts))
        text_emb = self._embed(self.embed_texts, unique, "text")
        image_emb = self._embed(self.embed_images, list(images), "image")
        if text_emb.shape[1] != image_emb.shape[1]:
            raise InputError(f"text embeddings have {text_emb.shape[1]} dims but image embeddings "
                             f"{image_emb.shape[1]}")
        rows = text_emb[[unique.index(t) for t in texts]]
        return [self.scale * float(v) for v in (rows * image_emb).sum(-1)]


SCORERS: dict[str, Callable[[], ImageTextScorer] | None] = {"color": ColorNameScorer, "none": None}
"""Scorers that can be named on the command line and in trainer configs (``"none"``: no reranking)."""


def build_scorer(scorer: "str | ImageTextScorer | None") -> ImageTextScorer | None:
    """A scorer from a name of :data:`SCORERS` (``"color"``, ``"none"``), a scorer object, or None.

    Raises:
        ConfigError: for an unknown name or an object without a callable ``score``.
    """
    if scorer is None:
        return None
    if isinstance(scorer, str):
        key = scorer.strip().lower()
        if key not in SCORERS:
            raise ConfigError(f"unknown image scorer {scorer!r}; known: {sorted(SCORERS)} (or pass an object "
                              "with score(texts, images) -> list[float], e.g. a CLIP wrapper)")
        factory = SCORERS[key]
        return None if factory is None else factory()
    if not callable(getattr(scorer, "score", None)):
        raise ConfigError(f"scorer {scorer!r} has no score(texts, images) method")
    return scorer
