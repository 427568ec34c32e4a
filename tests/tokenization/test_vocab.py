"""Tests for ofa.tokenization.vocab: the unified id layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ofa.errors import TokenizationError
from ofa.tokenization import TokenKind, UnifiedVocab

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DICT = SHARED / "bpe" / "dict.txt"
GOLDEN = SHARED / "golden" / "golden_tiny.pt"


@pytest.fixture(scope="module")
def full() -> UnifiedVocab:
    if not DICT.is_file():
        pytest.skip(f"{DICT} not found")
    return UnifiedVocab.from_dict_file(DICT)


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    if not GOLDEN.is_file():
        pytest.skip(f"{GOLDEN} not found")
    return torch.load(GOLDEN, map_location="cpu")


def small(num_text: int = 5, num_codes: int = 3, num_bins: int = 4) -> UnifiedVocab:
    return UnifiedVocab([str(100 + i) for i in range(num_text)], num_codes=num_codes, num_bins=num_bins)


# -- the real OFA layout ----------------------------------------------------------------------------------


def test_full_layout(full: UnifiedVocab) -> None:
    assert len(full) == 59457
    assert full.num_text == 50260 and full.num_codes == 8192 and full.num_bins == 1000
    assert (full.bos_id, full.pad_id, full.eos_id, full.unk_id) == (0, 1, 2, 3)
    assert full.mask_id == 50264
    assert full.code_id(0) == 50265 and full.code_id(8191) == 58456
    assert full.bin_id(0) == 58457 and full.bin_id(999) == 59456
    assert full.text_range() == range(4, 50264)
    assert full.code_range() == range(50265, 58457)
    assert full.bin_range() == range(58457, 59457)
    # spec §4.1 examples
    assert full.id_of("13") == 4 and full.id_of("262") == 5 and full.id_of("11") == 6
    assert full.id_of("50256") == 50260
    assert [full.id_of(f"madeupword000{k}") for k in range(3)] == [50261, 50262, 50263]
    assert full.symbol(50264) == "<mask>" and full.symbol(50265) == "<code_0>" and full.symbol(59456) == "<bin_999>"
    assert full.text_counts[0] == 850314647
    # identities from spec §4.1
    assert full.bin_index(59000) == 59000 - (len(full) - 1000)
    assert full.code_id(17) == 17 + len(full) - 8192 - 1000
    assert all(full.id_of(str(g)) != full.unk_id for g in range(50257))


def test_one_kind_per_id_over_full_vocab(full: UnifiedVocab) -> None:
    ranges = {
        TokenKind.SPECIAL: range(0, 4),
        TokenKind.TEXT: full.text_range(),
        TokenKind.MASK: range(full.mask_id, full.mask_id + 1),
        TokenKind.CODE: full.code_range(),
        TokenKind.BIN: full.bin_range(),
    }
    assert sum(len(r) for r in ranges.values()) == len(full)
    for i in range(len(full)):
        kind = full.kind(i)
        assert i in ranges[kind]
    ids = torch.arange(len(full))
    total = full.is_special(ids).long() + full.is_text(ids).long() + full.is_code(ids).long() + full.is_bin(ids).long()
    assert total.tolist() == [0 if i == full.mask_id else 1 for i in range(len(full))]


def test_golden_vocabulary(golden: dict[str, Any]) -> None:
    if not DICT.is_file():
        pytest.skip(f"{DICT} not found")
    vocab = UnifiedVocab.from_dict_file(DICT, num_codes=512, num_bins=200, max_text_symbols=2000)
    assert len(vocab) == 2717
    assert vocab.mask_id == 2004 and vocab.code_id(0) == 2005 and vocab.bin_id(0) == 2517
    assert vocab.symbols == golden["vocab"]
    parsed = UnifiedVocab.from_symbols(golden["vocab"])
    assert parsed == vocab
    assert (parsed.num_codes, parsed.num_bins, parsed.num_text) == (512, 200, 2000)


# -- properties over arbitrary layouts --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(num_text=st.integers(0, 30), num_codes=st.integers(0, 20), num_bins=st.integers(2, 20))
def test_layout_properties(num_text: int, num_codes: int, num_bins: int) -> None:
    vocab = small(num_text, num_codes, num_bins)
    assert len(vocab) == 4 + num_text + 1 + num_codes + num_bins
    for i in range(len(vocab)):
        kind = vocab.kind(i)
        assert vocab.id_of(vocab.symbol(i)) == i
        assert (kind is TokenKind.CODE) == (i in vocab.code_range())
        assert (kind is TokenKind.BIN) == (i in vocab.bin_range())
        assert (kind is TokenKind.TEXT) == (i in vocab.text_range())
        if kind is TokenKind.CODE:
            assert vocab.code_id(vocab.code_index(i)) == i
        if kind is TokenKind.BIN:
            assert vocab.bin_id(vocab.bin_index(i)) == i
    assert UnifiedVocab.from_symbols(vocab.symbols) == vocab


# -- lookups and errors -----------------------------------------------------------------------------------


def test_lookups() -> None:
    vocab = small()
    assert vocab.id_of("nope") == vocab.unk_id
    assert vocab.text_symbol_to_id("100") == 4
    assert vocab.text_symbol_to_id("<bin_0>") == vocab.unk_id
    assert "<bin_3>" in vocab and "<bin_4>" not in vocab
    assert vocab.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]


def test_range_errors_name_value_and_range() -> None:
    vocab = UnifiedVocab(["5"], num_codes=8, num_bins=1000)
    with pytest.raises(TokenizationError, match=r"bin 1000 .*0\.\.999"):
        vocab.bin_id(1000)
    with pytest.raises(TokenizationError, match=r"-1.*0\.\.7"):
        vocab.code_id(-1)
    with pytest.raises(TokenizationError, match=rf"{len(vocab)}.*0\.\.{len(vocab) - 1}"):
        vocab.kind(len(vocab))
    with pytest.raises(TokenizationError, match="-1"):
        vocab.symbol(-1)
    with pytest.raises(TokenizationError, match="not a location-bin"):
        vocab.bin_index(4)
    with pytest.raises(TokenizationError, match="not an image-code"):
        vocab.code_index(vocab.bin_id(0))
    with pytest.raises(TokenizationError, match="int"):
        vocab.bin_id(1.5)  # type: ignore[arg-type]


def test_constructor_errors() -> None:
    with pytest.raises(TokenizationError, match="num_bins"):
        UnifiedVocab(["5"], num_bins=1)
    with pytest.raises(TokenizationError, match="num_codes"):
        UnifiedVocab(["5"], num_codes=-1)
    with pytest.raises(TokenizationError, match="reserved"):
        UnifiedVocab(["5", "<mask>"])
    with pytest.raises(TokenizationError, match="reserved"):
        UnifiedVocab(["<bin_3>"])
    with pytest.raises(TokenizationError, match="repeated"):
        UnifiedVocab(["5", "5"])
    with pytest.raises(TokenizationError, match="whitespace"):
        UnifiedVocab(["a b"])


def test_vectorised_helpers() -> None:
    vocab = small(num_text=2, num_codes=3, num_bins=4)  # text 4-5, mask 6, codes 7-9, bins 10-13
    ids = torch.tensor([[0, 4, 6, 7], [9, 10, 13, 1]])
    assert vocab.is_bin(ids).tolist() == [[False, False, False, False], [False, True, True, False]]
    assert vocab.is_code(ids).tolist() == [[False, False, False, True], [True, False, False, False]]
    assert vocab.is_text(ids).tolist() == [[False, True, False, False], [False, False, False, False]]
    assert vocab.is_special(ids).tolist() == [[True, False, False, False], [False, False, False, True]]
    assert vocab.bins_to_ids(torch.tensor([0, 3])).tolist() == [10, 13]
    assert vocab.ids_to_bins(torch.tensor([10, 13])).tolist() == [0, 3]
    assert vocab.codes_to_ids(torch.tensor([[0, 2]])).tolist() == [[7, 9]]
    assert vocab.ids_to_codes(torch.tensor([7, 9])).tolist() == [0, 2]
    with pytest.raises(TokenizationError, match="bin 4"):
        vocab.bins_to_ids(torch.tensor([4]))
    with pytest.raises(TokenizationError, match="code 3"):
        vocab.codes_to_ids(torch.tensor([3]))
    with pytest.raises(TokenizationError, match="token id 9 is not a location-bin"):
        vocab.ids_to_bins(torch.tensor([10, 9]))
    with pytest.raises(TokenizationError, match="integer dtype"):
        vocab.codes_to_ids(torch.tensor([1.0]))


# -- dict.txt parsing -------------------------------------------------------------------------------------


def test_dict_lines_parsing() -> None:
    vocab = UnifiedVocab.from_dict_lines(["13 10", "262 5 #fairseq:overwrite", "madeupword0000 0"], 2, 2)
    assert vocab.text_symbols == ("13", "262", "madeupword0000")
    assert vocab.text_counts == (10, 5, 0)
    assert vocab.dict_lines() == ["13 10", "262 5", "madeupword0000 0"]
    assert UnifiedVocab.from_dict_lines(["13 10", "262 5"], max_text_symbols=1).text_symbols == ("13",)


@pytest.mark.parametrize("bad", ["13", "13 abc", "13 5 extra", "", " 13 5", "13\t5"])
def test_malformed_dict_line(bad: str) -> None:
    with pytest.raises(TokenizationError, match="line 2"):
        UnifiedVocab.from_dict_lines(["262 5", bad], source="dict.txt")


def test_dict_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizationError, match="does not exist"):
        UnifiedVocab.from_dict_file(tmp_path / "dict.txt")
    path = tmp_path / "dict.txt"
    path.write_text("13 5\n262 3\n", encoding="utf-8")
    with pytest.raises(TokenizationError, match=r"max_text_symbols \(3\).*2 lines"):
        UnifiedVocab.from_dict_file(path, max_text_symbols=3)
    path.write_text("13 5\n13 3\n", encoding="utf-8")
    with pytest.raises(TokenizationError, match="repeated"):
        UnifiedVocab.from_dict_file(path)


def test_save_dict_file_round_trip(tmp_path: Path) -> None:
    vocab = UnifiedVocab(["13", "262", "11"], num_codes=4, num_bins=5, text_counts=[9, 8, 7])
    again = UnifiedVocab.from_dict_file(vocab.save_dict_file(tmp_path / "dict.txt"), num_codes=4, num_bins=5)
    assert again == vocab and again.text_counts == (9, 8, 7)


@pytest.mark.parametrize(
    "symbols",
    [
        ["<s>", "<pad>", "<unk>", "</s>", "<mask>", "<bin_0>", "<bin_1>"],  # specials out of order
        ["<s>", "<pad>", "</s>", "<unk>", "13", "<bin_0>", "<bin_1>"],  # no <mask>
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<code_1>", "<bin_0>", "<bin_1>"],  # codes skip 0
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<bin_0>", "<bin_1>", "13"],  # trailing text
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<bin_0>"],  # one bin only
    ],
)
def test_from_symbols_rejects_bad_layouts(symbols: list[str]) -> None:
    with pytest.raises(TokenizationError):
        UnifiedVocab.from_symbols(symbols)
