"""Regenerates the tiny test vocabulary in ``ofa/tokenization/assets`` (not imported by the library).

The corpus is synthetic: a few hundred short English sentences made from fixed word lists and templates
(image captions about colours, shapes, animals, people and positions; OFA-style prompts and questions;
numbers). Generation is seeded, and the BPE trainer is deterministic, so running this again reproduces the
shipped files byte for byte::

    python -m ofa.tokenization._make_test_assets            # writes into ofa/tokenization/assets
    python -m ofa.tokenization._make_test_assets OUT_DIR     # writes elsewhere
"""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

from ofa.tokenization.tokenizer import OFATokenizer

logger = logging.getLogger(__name__)

VOCAB_SIZE = 640  # BPE tokens, the 256 byte symbols included
SEED = 20220203

_COLOURS = ["red", "blue", "green", "yellow", "black", "white", "brown", "orange", "purple", "pink", "gray"]
_SHAPES = ["circle", "square", "triangle", "star", "box", "ball", "ring", "line"]
_ANIMALS = ["dog", "cat", "horse", "bird", "cow", "sheep", "elephant", "zebra", "giraffe", "bear"]
_PEOPLE = ["man", "woman", "boy", "girl", "child", "person", "player", "people", "men", "women"]
_THINGS = ["car", "bus", "train", "bike", "boat", "kite", "table", "chair", "umbrella", "plate", "pizza",
           "phone", "clock", "tree", "house", "road", "street", "field", "beach", "room", "window", "bed"]
_ACTIONS = ["riding", "holding", "eating", "playing with", "standing next to", "sitting on", "looking at",
            "walking with", "carrying", "watching"]
_PLACES = ["on the road", "in the field", "on the beach", "in a room", "on the grass", "in the water",
           "near a tree", "on a table", "in the snow", "at the park"]
_POSITIONS = ["left", "right", "top", "bottom", "middle", "center", "front", "back"]
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_ANSWERS = ["yes", "no", "maybe", "two", "three", "red", "blue", "a dog", "a man", "black and white"]
_PROMPTS = [
    " what does the image describe?",
    " what is the complete image? caption:",
    " does the image describe \" {caption} \"?",
    " which region does the text \" {caption} \" describe?",
    " what does the region describe? region:",
    " what is the complete text of \" {caption} \"?",
    " what is in the {pos} of the image?",
    " how many {noun} are there?",
    " what color is the {noun}?",
    " is there a {noun} in the image?",
]


_IRREGULAR = {"man": "men", "woman": "women", "child": "children", "person": "people", "sheep": "sheep",
              "people": "people", "men": "men", "women": "women", "bus": "buses", "box": "boxes"}


def _plural(noun: str) -> str:
    return _IRREGULAR.get(noun, noun + "s")


def _noun(rng: random.Random) -> str:
    return rng.choice(_ANIMALS + _PEOPLE + _THINGS + _SHAPES)


def _caption(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"a {rng.choice(_PEOPLE)} {rng.choice(_ACTIONS)} a {rng.choice(_ANIMALS)}"
    if kind == 1:
        return f"{rng.choice(_NUMBERS)} {rng.choice(_COLOURS)} {_plural(rng.choice(_SHAPES))} {rng.choice(_PLACES)}"
    if kind == 2:
        return f"a {rng.choice(_COLOURS)} {rng.choice(_THINGS)} on the {rng.choice(_POSITIONS)} of the picture"
    if kind == 3:
        return f"the {rng.choice(_ANIMALS)} is {rng.choice(_PLACES)} next to a {rng.choice(_COLOURS)} {_noun(rng)}"
    who = f"{rng.choice(_NUMBERS)} {rng.choice(_PEOPLE)} {rng.choice(_ACTIONS)}"
    return f"{who} {rng.randint(2, 99)} {_plural(_noun(rng))}"


def build_corpus(num_sentences: int = 800, seed: int = SEED) -> list[str]:
    """The synthetic training corpus: captions, prompts, questions and answers, each with a leading space.

    Args:
        num_sentences: How many sentences to generate.
        seed: Seed of the generator.

    Returns:
        The sentences.
    """
    rng = random.Random(seed)
    corpus: list[str] = []
    for i in range(num_sentences):
        kind = i % 4
        if kind == 0:
            corpus.append(" " + _caption(rng))
        elif kind == 1:
            prompt = rng.choice(_PROMPTS)
            corpus.append(prompt.format(caption=_caption(rng), pos=rng.choice(_POSITIONS), noun=_noun(rng)))
        elif kind == 2:
            corpus.append(" " + rng.choice(_ANSWERS))
        else:
            sentence = _caption(rng)
            corpus.append(" " + sentence[0].upper() + sentence[1:] + rng.choice([".", "!", ",", ";", "."]))
    return corpus


def main(argv: list[str] | None = None) -> Path:
    """Trains the tiny tokenizer and writes ``encoder.json``, ``vocab.bpe`` and ``dict.txt``.

    Args:
        argv: ``[OUT_DIR]`` optionally; default is the package's ``assets`` folder.

    Returns:
        The output folder.
    """
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).resolve().parent / "assets"
    tok = OFATokenizer.train(build_corpus(), vocab_size=VOCAB_SIZE, num_codes=64, num_bins=100)
    out.mkdir(parents=True, exist_ok=True)
    tok.bpe.save(out)
    tok.vocab.save_dict_file(out / "dict.txt")
    logger.info("wrote %s: %d BPE tokens, %d dictionary lines", out, len(tok.bpe), tok.vocab.num_text)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
