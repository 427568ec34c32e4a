"""Tests for ofa.tokenization.bpe: GPT-2 byte-level BPE, loaders and the trainer."""

from __future__ import annotations

import json
import pickle
import random
import shutil
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ofa.errors import TokenizationError
from ofa.tokenization import ByteLevelBPE, _make_test_assets, bytes_to_unicode, train_bpe

SHARED_BPE = Path(__file__).resolve().parents[2].parent / "shared" / "bpe"
ASSETS = Path(str(resources.files("ofa.tokenization").joinpath("assets")))

SPEC_VECTORS = [
    (" what does the image describe?", [644, 857, 262, 2939, 6901, 30]),
    (' which region does the text " a man " describe?', [543, 3814, 857, 262, 2420, 366, 257, 582, 366, 6901, 30]),
    (" what is the complete image? caption: a dog", [644, 318, 262, 1844, 2939, 30, 8305, 25, 257, 3290]),
    (" yes", [3763]),
    (" no", [645]),
    (" maybe", [3863]),
    (' what is the complete text of " "?', [644, 318, 262, 1844, 2420, 286, 366, 366, 30]),
    (" a man riding a horse", [257, 582, 10311, 257, 8223]),
]

ROUND_TRIP_TEXTS = [
    "",
    " ",
    "   ",
    "hello world",
    " Hello,   World!!  ",
    "line one\nline two\r\n\ttabbed\n\n",
    "I'm sure they'll say it's fine; we've done what you'd do.",
    "ÀÉÎÕÜ ñ ß ø æ — “quotes” ‘single’ …",
    "日本語のテキスト 中文 한국어 العربية עברית",
    "emoji 🐶🐱 👍🏽 🏳️‍🌈 family 👨‍👩‍👧",
    "numbers 1234567890 3.14159 -42 1e-5 ½ ² ٣",
    "symbols <>{}[]()@#$%^&*_+=|\\/~`",
    "<bin_1> <code_5> <mask> <|endoftext|>",
    "\u00a0non-breaking\u2003em-space\u200bzero-width",
    "\x00\x01 control \x7f chars",
]


@pytest.fixture(scope="module")
def gpt2() -> ByteLevelBPE:
    if not (SHARED_BPE / "encoder.json").is_file() or not (SHARED_BPE / "vocab.bpe").is_file():
        pytest.skip(f"real GPT-2 BPE files not found in {SHARED_BPE}")
    return ByteLevelBPE.from_files(SHARED_BPE / "encoder.json", SHARED_BPE / "vocab.bpe")


@pytest.fixture(scope="module")
def tiny() -> ByteLevelBPE:
    return ByteLevelBPE.from_files(ASSETS / "encoder.json", ASSETS / "vocab.bpe")


# -- byte table -------------------------------------------------------------------------------------------


def test_byte_table_is_a_bijection_to_printable_characters() -> None:
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(not c.isspace() and c.isprintable() for c in table.values())
    assert table[ord(" ")] == "\u0120"  # "Ġ"
    assert table[ord("\n")] == "\u010a"  # "Ċ"
    assert table[ord("a")] == "a"


# -- real GPT-2 files -------------------------------------------------------------------------------------


def test_real_files_sizes(gpt2: ByteLevelBPE) -> None:
    assert len(gpt2) == 50257
    assert len(gpt2.merges) == 50000
    assert gpt2.max_id == 50256
    assert gpt2.token_to_id("Ġthe") == 262
    assert gpt2.id_to_token(50256) == "<|endoftext|>"


@pytest.mark.parametrize(("text", "ids"), SPEC_VECTORS)
def test_spec_vectors(gpt2: ByteLevelBPE, text: str, ids: list[int]) -> None:
    assert gpt2.encode(text) == ids
    assert gpt2.decode(ids) == text


def test_pretokenisation(gpt2: ByteLevelBPE) -> None:
    assert gpt2.tokenize(" what is") == ["Ġwhat", "Ġis"]
    assert gpt2.tokenize("I'm") == ["I", "'m"]
    # A whitespace run keeps its last space for the next word ("\s+(?!\S)").
    assert gpt2.tokenize("a  b") == ["a", "Ġ", "Ġb"]
    assert gpt2.tokenize("a \n") == ["a", "Ġ", "Ċ"]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_real_round_trip_examples(gpt2: ByteLevelBPE, text: str) -> None:
    assert gpt2.decode(gpt2.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=60))
def test_real_round_trip_property(gpt2: ByteLevelBPE, text: str) -> None:
    assert gpt2.decode(gpt2.encode(text)) == text


def test_decode_partial_utf8_is_replaced(gpt2: ByteLevelBPE) -> None:
    ids = gpt2.encode("🐶")
    assert len(ids) > 1
    assert "\ufffd" in gpt2.decode(ids[:1])
    assert gpt2.decode_bytes(ids) == "🐶".encode()


def test_decode_unknown_id_names_it(gpt2: ByteLevelBPE) -> None:
    with pytest.raises(TokenizationError, match=r"50257.*0\.\.50256"):
        gpt2.decode([1, 50257])
    with pytest.raises(TokenizationError, match="-1"):
        gpt2.decode([-1])
    with pytest.raises(TokenizationError):
        gpt2.decode(["13"])  # type: ignore[list-item]


def test_bad_text_raises(gpt2: ByteLevelBPE) -> None:
    with pytest.raises(TokenizationError, match="str"):
        gpt2.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TokenizationError, match="surrogate"):
        gpt2.encode("lone \ud800 surrogate")


def test_pickle_keeps_behaviour(gpt2: ByteLevelBPE) -> None:
    text = " a man riding a horse"
    gpt2.encode(text)  # fill the cache
    clone = pickle.loads(pickle.dumps(gpt2))
    assert clone.encode(text) == gpt2.encode(text)


# -- tiny assets and loaders ------------------------------------------------------------------------------


def test_tiny_assets_merge_common_words(tiny: ByteLevelBPE) -> None:
    assert tiny.tokenize(" what does the image describe?") == ["Ġwhat", "Ġdoes", "Ġthe", "Ġimage", "Ġdescribe", "?"]
    assert 500 <= len(tiny) <= 1000


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=60))
def test_tiny_round_trip_property(tiny: ByteLevelBPE, text: str) -> None:
    assert tiny.decode(tiny.encode(text)) == text


def test_hf_file_names(tmp_path: Path, tiny: ByteLevelBPE) -> None:
    shutil.copy(ASSETS / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(ASSETS / "vocab.bpe", tmp_path / "merges.txt")
    bpe = ByteLevelBPE.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert bpe.encoder == tiny.encoder and bpe.merges == tiny.merges


def test_save_and_reload(tmp_path: Path, tiny: ByteLevelBPE) -> None:
    enc, merges = tiny.save(tmp_path)
    assert merges.read_text(encoding="utf-8").startswith("#version: 0.2\n")
    again = ByteLevelBPE.from_files(enc, merges)
    assert again.encoder == tiny.encoder and again.merges == tiny.merges


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TokenizationError, match="does not exist"):
        ByteLevelBPE.from_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")


def _encoder_text() -> str:
    return (ASSETS / "encoder.json").read_text(encoding="utf-8")


def test_malformed_merges_line() -> None:
    with pytest.raises(TokenizationError, match="line 3"):
        ByteLevelBPE.from_strings(_encoder_text(), "#version: 0.2\nĠ t\nthree tokens here\n")


def test_merge_result_missing_from_encoder() -> None:
    with pytest.raises(TokenizationError, match="not in the encoder"):
        ByteLevelBPE.from_strings(_encoder_text(), "#version: 0.2\nq z\n")


def test_encoder_validation() -> None:
    encoder = json.loads(_encoder_text())
    del encoder["Ġ"]
    with pytest.raises(TokenizationError, match="single-byte"):
        ByteLevelBPE(encoder, [])
    with pytest.raises(TokenizationError, match="JSON"):
        ByteLevelBPE.from_strings("{not json", "")
    with pytest.raises(TokenizationError, match="BART"):
        ByteLevelBPE.from_strings(json.dumps({**json.loads(_encoder_text()), "<s>": 9000, "<pad>": 9001}), "")
    dup = json.loads(_encoder_text())
    dup["extra"] = dup["a"]
    with pytest.raises(TokenizationError, match="same id"):
        ByteLevelBPE(dup, [])


# -- trainer ----------------------------------------------------------------------------------------------


def _corpus() -> list[str]:
    return _make_test_assets.build_corpus(num_sentences=300, seed=7)


def test_trainer_round_trip_and_size() -> None:
    corpus = _corpus()
    bpe = train_bpe(corpus, vocab_size=400)
    assert len(bpe) == 400
    assert sorted(bpe.encoder.values()) == list(range(400))
    for text in corpus[:50] + ROUND_TRIP_TEXTS:
        assert bpe.decode(bpe.encode(text)) == text
    # Training text compresses well below one token per byte.
    assert sum(len(bpe.encode(t)) for t in corpus) < 0.5 * sum(len(t.encode()) for t in corpus)


def test_trainer_is_deterministic() -> None:
    corpus = _corpus()
    shuffled = corpus[:]
    random.Random(3).shuffle(shuffled)
    a, b, c = train_bpe(corpus, 350), train_bpe(corpus, 350), train_bpe(shuffled, 350)
    assert a.merges == b.merges == c.merges
    assert a.encoder == b.encoder == c.encoder


def test_trainer_min_frequency_stops_early() -> None:
    bpe = train_bpe([" abc", " xyz"], vocab_size=1000, min_frequency=2)
    assert len(bpe) == 256 and bpe.merges == []
    bpe = train_bpe([" abc", " xyz"], vocab_size=1000, min_frequency=1)
    assert bpe.tokenize(" abc") == ["Ġabc"]


def test_trainer_bad_arguments() -> None:
    with pytest.raises(TokenizationError, match="255"):
        train_bpe(["a"], vocab_size=255)
    with pytest.raises(TokenizationError, match="min_frequency"):
        train_bpe(["a"], vocab_size=300, min_frequency=0)
    with pytest.raises(TokenizationError, match="str"):
        train_bpe(["a", 3], vocab_size=300)  # type: ignore[list-item]


def test_shipped_assets_are_reproducible(tmp_path: Path) -> None:
    out = _make_test_assets.main([str(tmp_path)])
    for name in ("encoder.json", "vocab.bpe", "dict.txt"):
        assert (out / name).read_bytes() == (ASSETS / name).read_bytes(), name
