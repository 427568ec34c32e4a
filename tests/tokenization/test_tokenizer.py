"""Tests for ofa.tokenization.tokenizer: OFATokenizer end to end."""

from __future__ import annotations

import json
import pickle
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ofa.errors import TokenizationError
from ofa.tokenization import ByteLevelBPE, OFATokenizer, UnifiedVocab, _make_test_assets, tiny_tokenizer

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
BPE_DIR = SHARED / "bpe"
GOLDEN = SHARED / "golden" / "golden_tiny.pt"
ASSETS = Path(str(resources.files("ofa.tokenization").joinpath("assets")))

SPEC_OFA_IDS = [
    (" what does the image describe?", [99, 473, 5, 2274, 6190, 116]),
    (' which region does the text " a man " describe?', [61, 976, 473, 5, 2788, 22, 10, 313, 22, 6190, 116]),
    (" what is the complete image? caption: a dog", [99, 16, 5, 1498, 2274, 116, 3747, 35, 10, 2335]),
    (" yes", [4420]),
    (" no", [117]),
    (" maybe", [2085]),
    (' what is the complete text of " "?', [99, 16, 5, 1498, 2788, 9, 22, 22, 116]),
    (" a man riding a horse", [10, 313, 5793, 10, 5253]),
]

# Texts with no "<": every GPT-2 id is in the full dict, so these round-trip exactly.
plain_text = st.text(alphabet=st.characters(blacklist_characters="<", blacklist_categories=("Cs",)), max_size=50)


@pytest.fixture(scope="module")
def full() -> OFATokenizer:
    if not (BPE_DIR / "dict.txt").is_file():
        pytest.skip(f"real tokenizer files not found in {BPE_DIR}")
    return OFATokenizer.from_files(BPE_DIR)


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    if not GOLDEN.is_file():
        pytest.skip(f"{GOLDEN} not found")
    return torch.load(GOLDEN, map_location="cpu")


@pytest.fixture(scope="module")
def tiny() -> OFATokenizer:
    return tiny_tokenizer()


# -- real OFA vocabulary ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ids"), SPEC_OFA_IDS)
def test_spec_vectors(full: OFATokenizer, text: str, ids: list[int]) -> None:
    assert full.encode(text) == ids
    assert full.decode(ids) == text


def test_spec_full_source(full: OFATokenizer) -> None:
    assert full.encode_source(" what does the image describe?") == [0, 99, 473, 5, 2274, 6190, 116, 2]
    assert full.encode_target(" yes") == [4420, 2]
    assert len(full) == 59457


def test_golden_inputs(full: OFATokenizer, golden: dict[str, Any]) -> None:
    inputs = golden["inputs"]
    small = OFATokenizer.from_files(BPE_DIR, num_codes=512, num_bins=200, max_text_symbols=2000)
    assert small.vocab.symbols == golden["vocab"]
    assert small.encode(" what is the man doing?") == [99, 16, 5, 313, 608, 116]
    assert small.encode(" what is this?") == [99, 16, 42, 116]
    for tok in (full, small):
        batch = tok.batch_encode(inputs["src_texts"])
        assert torch.equal(batch["input_ids"], inputs["src_tokens"])
        assert batch["lengths"].tolist() == inputs["src_lengths"].tolist() == [8, 6]
        prev = tok.batch_encode(inputs["tgt_texts"], add_eos=False)["input_ids"]
        assert torch.equal(prev, inputs["prev_output_tokens"])
        target = tok.batch_encode(inputs["tgt_texts"], add_bos=False)["input_ids"]
        assert torch.equal(target, inputs["target"])
        for answer, ids in zip(inputs["trie_answers"], inputs["trie_answer_tokens"]):
            assert tok.encode(" " + answer) == list(ids)
    assert small.encode(" two men") == [80, 604]
    assert small.encode(" black and white") == [909, 8, 1104]
    assert small.decode(inputs["src_tokens"][1]) == " what is this?"
    assert small.decode_batch(inputs["prev_output_tokens"]) == inputs["tgt_texts"]
    # Golden bins range: [2517, 2717).
    assert small.vocab.bin_range() == range(*inputs["bin_constraint_range"])


@pytest.mark.parametrize(
    "text",
    [
        " Hello,   World!!  ",
        "line one\nline two\r\n\ttabbed\n",
        "I'm sure they'll say it's fine.",
        "日本語 中文 한국어 émoji 🐶👍🏽 🏳️‍🌈",
        "numbers 1234567890 3.14159 -42 ½",
        "",
    ],
)
def test_full_round_trip_examples(full: OFATokenizer, text: str) -> None:
    assert full.decode(full.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(text=plain_text)
def test_full_round_trip_property(full: OFATokenizer, text: str) -> None:
    assert full.decode(full.encode(text)) == text


def test_decode_partial_utf8_is_replaced(full: OFATokenizer) -> None:
    ids = full.encode(" 🐶")
    assert "\ufffd" in full.decode(ids[:2])


def test_unknown_gpt2_ids_become_unk(full: OFATokenizer) -> None:
    small = OFATokenizer(full.bpe, UnifiedVocab.from_dict_file(BPE_DIR / "dict.txt", 8, 10, max_text_symbols=2000))
    ids = small.encode(" supercalifragilistic")
    assert small.vocab.unk_id in ids
    assert "<unk>" in small.decode(ids)


# -- literal tokens -----------------------------------------------------------------------------------------


def test_literal_tokens_without_stray_space(full: OFATokenizer) -> None:
    v = full.vocab
    text = " what does the region describe? region: <bin_1> <bin_2> <bin_300> <bin_999>"
    ids = full.encode(text)
    prompt = full.encode(" what does the region describe? region:")
    assert ids == prompt + [v.bin_id(1), v.bin_id(2), v.bin_id(300), v.bin_id(999)]
    space = full.vocab.id_of(str(full.bpe.token_to_id("Ġ")))
    assert space not in ids
    assert full.decode(ids) == text


def test_literal_token_space_rule(full: OFATokenizer) -> None:
    v = full.vocab
    cat = full.encode(" cat")
    assert full.encode("<bin_1> <bin_2>") == [v.bin_id(1), v.bin_id(2)]
    assert full.encode("<bin_1> cat") == [v.bin_id(1), *cat]  # the space after stays with the word
    assert full.encode("<code_7><mask>") == [v.code_id(7), v.mask_id]
    assert full.decode([v.code_id(7), v.mask_id]) == "<code_7> <mask>"
    assert full.encode(" <bin_5>") == [v.bin_id(5)]  # documented lossy case: leading " " before a literal
    assert full.decode(full.encode("a  <bin_5>")) == "a  <bin_5>"  # only one space is the separator
    assert full.decode([0, v.bin_id(3), *cat, 2, 1, 1]) == "<bin_3> cat"
    assert full.decode([v.unk_id, v.mask_id]) == "<unk> <mask>"
    assert full.decode([v.id_of("madeupword0000")]) == "madeupword0000"
    not_literal = "<bin_x> <code_> <Mask> <bin_-1>"
    assert full.encode(not_literal) == [v.id_of(str(g)) for g in full.bpe.encode(not_literal)]


def test_literal_out_of_range_raises(full: OFATokenizer) -> None:
    with pytest.raises(TokenizationError, match=r"<bin_1000>.*0\.\.999"):
        full.encode(" region: <bin_1000>")
    with pytest.raises(TokenizationError, match=r"<code_8192>.*0\.\.8191"):
        full.encode("<code_8192>")


literal = st.one_of(
    st.integers(0, 999).map(lambda k: f"<bin_{k}>"),
    st.integers(0, 8191).map(lambda k: f"<code_{k}>"),
    st.just("<mask>"),
)


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(st.one_of(plain_text.filter(lambda t: t[:1] not in ("", " ")), literal), max_size=6))
def test_mixed_round_trip_property(full: OFATokenizer, pieces: list[str]) -> None:
    # Canonical form: pieces joined with single spaces (literal tokens are space-separated, as OFA writes them).
    text = " ".join(pieces)
    assert full.decode(full.encode(text)) == text


# -- decode errors ------------------------------------------------------------------------------------------


def test_decode_out_of_range_names_id_and_range(tiny: OFATokenizer) -> None:
    n = len(tiny)
    with pytest.raises(TokenizationError, match=rf"token id {n} is out of range; valid ids are 0\.\.{n - 1}"):
        tiny.decode([5, n])
    with pytest.raises(TokenizationError, match="-3"):
        tiny.decode(torch.tensor([-3]))
    with pytest.raises(TokenizationError, match="ints"):
        tiny.decode("5 6")  # type: ignore[arg-type]
    with pytest.raises(TokenizationError, match="1-D"):
        tiny.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TokenizationError, match="str"):
        tiny.encode(None)  # type: ignore[arg-type]


# -- batches ------------------------------------------------------------------------------------------------


def test_batch_encode_padding_and_truncation(tiny: OFATokenizer) -> None:
    texts = [" a red ball", " a man"]
    a, b = tiny.encode(texts[0]), tiny.encode(texts[1])
    assert len(a) > len(b)
    out = tiny.batch_encode(texts)
    width = len(a) + 2
    assert out["input_ids"].shape == (2, width) and out["input_ids"].dtype == torch.long
    assert out["input_ids"][1].tolist() == [0, *b, 2] + [1] * (len(a) - len(b))
    assert out["attention_mask"].sum(1).tolist() == out["lengths"].tolist() == [len(a) + 2, len(b) + 2]
    assert torch.equal(out["padding_mask"], out["input_ids"].eq(1))
    left = tiny.batch_encode(texts, padding_side="left")
    assert left["input_ids"][1].tolist() == [1] * (len(a) - len(b)) + [0, *b, 2]
    assert torch.equal(left["padding_mask"], left["input_ids"].eq(1))
    cut = tiny.batch_encode(texts, max_length=3, return_tensors=False)
    assert cut["input_ids"] == [[0, a[0], 2], [0, b[0], 2]]
    assert cut["lengths"] == [3, 3]
    plain = tiny.batch_encode(texts, add_bos=False, add_eos=False, return_tensors=False)
    assert plain["input_ids"][0] == a


def test_batch_encode_errors(tiny: OFATokenizer) -> None:
    with pytest.raises(TokenizationError, match="empty"):
        tiny.batch_encode([])
    with pytest.raises(TokenizationError, match="sequence of str"):
        tiny.batch_encode(" a str")
    with pytest.raises(TokenizationError, match="padding_side"):
        tiny.batch_encode([" a"], padding_side="middle")  # type: ignore[arg-type]
    with pytest.raises(TokenizationError, match="max_length"):
        tiny.batch_encode([" a"], max_length=1)
    with pytest.raises(TokenizationError, match="2-D"):
        tiny.decode_batch(torch.zeros(3, dtype=torch.long))


# -- boxes and codes ----------------------------------------------------------------------------------------


def test_box_round_trip(tiny: OFATokenizer) -> None:
    v = tiny.vocab  # 100 bins
    ids = tiny.encode_box((64, 48, 320, 240), original_size=(640, 480))
    assert ids == [v.bin_id(b) for b in (10, 10, 50, 50)]
    box = tiny.decode_box([0, *ids, 2], original_size=(640, 480))
    assert box == pytest.approx((64.0, 48.0, 320.0, 240.0), abs=640 / 99)
    assert tiny.encode_box((0, 0, 512, 256)) == [v.bin_id(b) for b in (0, 0, 99, 50)]
    assert tiny.decode_box(torch.tensor([v.bin_id(0), v.bin_id(0), v.bin_id(99), v.bin_id(99)])) == (0, 0, 512, 512)
    text = " what does the region describe? region: " + " ".join(tiny.vocab.symbol(i) for i in ids)
    assert tiny.encode(text)[-4:] == ids


def test_decode_boxes(tiny: OFATokenizer) -> None:
    v = tiny.vocab
    first = [v.bin_id(b) for b in (0, 0, 99, 99)]
    second = [v.bin_id(b) for b in (33, 0, 66, 99)]
    seq = [0, *first, *tiny.encode(" dog"), *second, *tiny.encode(" cat"), 2]
    boxes = tiny.decode_boxes(seq, max_image_size=99)
    assert boxes == [(0, 0, 99, 99), (33, 0, 66, 99)]
    assert tiny.decode_boxes(tiny.encode(" no boxes")) == []
    with pytest.raises(TokenizationError, match="run of 3 bin ids"):
        tiny.decode_boxes(first[:3] + tiny.encode(" dog"))
    with pytest.raises(TokenizationError, match="exactly 4"):
        tiny.decode_box(first + first[:1])
    with pytest.raises(TokenizationError, match="not a location-bin"):
        tiny.decode_box(first[:3] + [v.code_id(0)])
    with pytest.raises(TokenizationError, match="out of range"):
        tiny.decode_boxes([len(tiny)])


def test_codes(tiny: OFATokenizer) -> None:
    v = tiny.vocab  # 64 codes
    grid = torch.arange(16).view(4, 4)
    ids = tiny.encode_codes(grid, grid_size=4)
    assert ids == [v.code_id(c) for c in range(16)]
    assert torch.equal(tiny.decode_codes([0, *ids, 2], grid_size=(4, 4)), grid)
    with pytest.raises(TokenizationError, match=r"code 64 .*0\.\.63"):
        tiny.encode_codes([64])
    with pytest.raises(TokenizationError, match="not an image-code"):
        tiny.decode_codes([v.bin_id(0)])


# -- files --------------------------------------------------------------------------------------------------


def test_tiny_assets(tiny: OFATokenizer) -> None:
    assert len(tiny) == tiny.vocab.num_text + 4 + 1 + 64 + 100
    assert tiny.vocab.num_text == len(tiny.bpe)
    assert sum(p.stat().st_size for p in ASSETS.iterdir()) < 100_000
    ids = tiny.encode(" what does the image describe?")
    assert tiny.vocab.unk_id not in ids and len(ids) == 6
    assert OFATokenizer.from_test_assets(num_codes=8, num_bins=10).vocab.bin_range().stop == len(tiny.bpe) + 5 + 18


@settings(max_examples=150, deadline=None)
@given(text=plain_text)
def test_tiny_round_trip_property(tiny: OFATokenizer, text: str) -> None:
    ids = tiny.encode(text)
    assert tiny.vocab.unk_id not in ids
    assert tiny.decode(ids) == text


def test_from_files_missing(tmp_path: Path) -> None:
    with pytest.raises(TokenizationError, match=r"encoder\.json \+ vocab\.bpe.*vocab\.json \+ merges\.txt.*dict\.txt"):
        OFATokenizer.from_files(tmp_path)
    shutil.copy(ASSETS / "encoder.json", tmp_path / "encoder.json")
    shutil.copy(ASSETS / "vocab.bpe", tmp_path / "vocab.bpe")
    with pytest.raises(TokenizationError, match="dict.txt"):
        OFATokenizer.from_files(tmp_path)


def test_from_files_hf_names(tmp_path: Path, tiny: OFATokenizer) -> None:
    shutil.copy(ASSETS / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(ASSETS / "vocab.bpe", tmp_path / "merges.txt")
    shutil.copy(ASSETS / "dict.txt", tmp_path / "dict.txt")
    tok = OFATokenizer.from_files(tmp_path, num_codes=64, num_bins=100)
    assert tok.vocab == tiny.vocab
    assert tok.encode(" a red ball") == tiny.encode(" a red ball")


def test_malformed_dict_in_directory(tmp_path: Path) -> None:
    shutil.copy(ASSETS / "encoder.json", tmp_path / "encoder.json")
    shutil.copy(ASSETS / "vocab.bpe", tmp_path / "vocab.bpe")
    (tmp_path / "dict.txt").write_text("13 5\nthis is bad\n", encoding="utf-8")
    with pytest.raises(TokenizationError, match="line 2"):
        OFATokenizer.from_files(tmp_path)
    (tmp_path / "dict.txt").write_text("13 5\n99999 1\n", encoding="utf-8")
    with pytest.raises(TokenizationError, match="99999"):
        OFATokenizer.from_files(tmp_path)


def test_save_and_load_pretrained(tmp_path: Path, tiny: OFATokenizer) -> None:
    tiny.save_pretrained(tmp_path / "tok")
    cfg = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert cfg["num_codes"] == 64 and cfg["num_bins"] == 100 and cfg["vocab_size"] == len(tiny)
    again = OFATokenizer.from_pretrained(tmp_path / "tok")
    assert again.vocab == tiny.vocab and again.vocab.text_counts == tiny.vocab.text_counts
    assert again.bpe.merges == tiny.bpe.merges
    with pytest.raises(TokenizationError, match="tokenizer_config.json"):
        OFATokenizer.from_pretrained(tmp_path)
    cfg["vocab_size"] += 1
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(TokenizationError, match="vocab_size"):
        OFATokenizer.from_pretrained(tmp_path / "tok")


def test_save_pretrained_truncated_real_vocab(tmp_path: Path, full: OFATokenizer) -> None:
    small = OFATokenizer(full.bpe, UnifiedVocab.from_dict_file(BPE_DIR / "dict.txt", 512, 200, max_text_symbols=2000))
    small.save_pretrained(tmp_path)
    again = OFATokenizer.from_pretrained(tmp_path)
    assert len(again) == 2717 and again.vocab == small.vocab
    assert again.encode(" what is the man doing?") == [99, 16, 5, 313, 608, 116]


def test_pickle(tiny: OFATokenizer) -> None:
    clone = pickle.loads(pickle.dumps(tiny))
    assert clone.encode(" a man <bin_3>") == tiny.encode(" a man <bin_3>")


# -- training a tokenizer for a new domain -------------------------------------------------------------------


def test_train_new_domain() -> None:
    corpus = _make_test_assets.build_corpus(num_sentences=300, seed=11)
    tok = OFATokenizer.train(corpus, vocab_size=400, num_codes=16, num_bins=50)
    again = OFATokenizer.train(corpus, vocab_size=400, num_codes=16, num_bins=50)
    assert tok.vocab == again.vocab and tok.vocab.text_counts == again.vocab.text_counts
    assert tok.vocab.num_text == len(tok.bpe) == 400
    assert len(tok) == 4 + 400 + 1 + 16 + 50
    counts = tok.vocab.text_counts
    assert list(counts) == sorted(counts, reverse=True) and counts[0] > 0
    # the most frequent GPT-2 id gets the first text id, as in fairseq dictionaries
    first = tok.encode(corpus[0])
    assert min(first) >= 4
    for text in corpus[:40] + [" unseen 🐙 words!"]:
        ids = tok.encode(text)
        assert tok.vocab.unk_id not in ids and tok.decode(ids) == text


def test_bad_numeric_symbol_rejected() -> None:
    bpe = ByteLevelBPE.from_files(ASSETS / "encoder.json", ASSETS / "vocab.bpe")
    with pytest.raises(TokenizationError, match=r"'100000'.*0\.\."):
        OFATokenizer(bpe, UnifiedVocab(["5", "100000"], num_codes=1, num_bins=2))


def test_literal_text_encodes_special_spellings_as_plain_text(tok: Any) -> None:
    """#14 item 7: ``as_literal()`` / ``literal=True`` leave ``<bin_12>``, ``<code_5>`` and ``<mask>`` as text."""
    text = " is <bin_12> a <code_5> <mask>?"
    special = {tok.vocab.bin_id(12), tok.vocab.code_id(5), tok.vocab.mask_id}
    assert special <= set(tok.encode(text))
    literal = tok.as_literal()
    plain = literal.encode(text)
    assert not special & set(plain) and plain == tok.encode(text, literal=True)
    assert tok.decode(plain) == text
    assert tok.encode(text, literal=False) == tok.encode(text)  # the shared tokenizer is unchanged
    assert literal.encode(text, literal=False) == tok.encode(text)
    assert literal.vocab is tok.vocab and len(literal) == len(tok)
