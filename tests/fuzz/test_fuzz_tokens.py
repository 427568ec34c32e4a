"""Fuzz: BPE text (any Unicode, lone surrogates), token ids (out of range, special ids in the wrong place, wrong
dtypes and shapes) into the tokenizer and the model, and generation configs (every field, wrong types,
out-of-range values) through ``generate``. Each works (text round-trips; outputs are in the vocabulary) or raises
an OFAError naming the value."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import strategies as st

from ofa.generation import GenerationConfig, generate
from ofa.tokenization import OFATokenizer

SHARED_BPE = Path(__file__).resolve().parents[3] / "shared" / "bpe"
ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60)
TRICKY = st.sampled_from(["<bin_12>", "<code_5>", "<mask>", "<s>", "</s>", "<pad>", "<unk>", " \u0120", "\u00a0",
                          "\ud800", "e\u0301", "\U0001f600", "\x00", "\r\n", "  ", "\t"])
TEXTS = st.lists(st.one_of(ANY_TEXT, TRICKY), max_size=5).map("".join)


@pytest.fixture(scope="module")
def official_tok() -> OFATokenizer:
    if not (SHARED_BPE / "encoder.json").is_file():
        pytest.skip(f"the official BPE files are absent ({SHARED_BPE})")
    return OFATokenizer.from_files(SHARED_BPE, num_bins=1000, num_codes=8192)


def _text_body(fuzz: Any, tok: OFATokenizer) -> Any:
    literal = tok.as_literal()

    def body(text: str) -> None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            valid = False
        else:
            valid = True
        for encoder in (tok, literal):
            try:
                ids = encoder.encode(text)
            except Exception as exc:  # noqa: BLE001 - the property decides
                fuzz.expect(exc, "text", "literal token")
                assert not valid or encoder is tok, f"valid text refused: {exc}"
                continue
            assert valid and all(0 <= i < len(tok) and isinstance(i, int) for i in ids)
            if encoder is literal:
                assert tok.decode(ids) == text  # plain text round-trips exactly

    return body


def test_bpe_text_tiny_vocabulary(fuzz: Any, profile: Any, tok: OFATokenizer) -> None:
    fuzz.run("bpe_text", profile, 150, TEXTS, _text_body(fuzz, tok))


def test_bpe_text_official_vocabulary(fuzz: Any, profile: Any, official_tok: OFATokenizer) -> None:
    fuzz.run("bpe_text_official", profile, 100, TEXTS, _text_body(fuzz, official_tok))


ID_VALUES = st.one_of(st.integers(-5, 900), st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, 2, 3]))


@st.composite
def token_tensors(draw: Any) -> Any:
    kind = draw(st.sampled_from(["tensor", "tensor", "tensor", "list", "float", "bool", "3d", "empty"]))
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 12))
    values = [[draw(ID_VALUES) for _ in range(cols)] for _ in range(rows)]
    if kind == "list":
        return values
    if kind == "empty":
        return torch.zeros(rows, 0, dtype=torch.long)
    tensor = torch.tensor(values, dtype=torch.long)
    if kind == "float":
        return tensor.float()
    if kind == "bool":
        return tensor > 0
    if kind == "3d":
        return tensor[None]
    return tensor


def test_token_ids(fuzz: Any, profile: Any, tok: OFATokenizer, small_model: Any) -> None:
    vocab = small_model.config.vocab_size
    config = GenerationConfig(beam_size=2, max_len_b=3)

    def body(tokens: Any) -> None:
        try:
            flat = tokens.flatten().tolist() if isinstance(tokens, torch.Tensor) else sum(tokens, [])
            text = tok.decode(flat)
        except Exception as exc:  # noqa: BLE001 - the property decides
            fuzz.expect(exc, "id", "ids")
        else:
            assert isinstance(text, str)
        try:
            with torch.no_grad():
                hypos = generate(small_model, tokens, config=config, pad_id=tok.pad_id)
        except Exception as exc:  # noqa: BLE001 - the property decides
            fuzz.expect(exc, "src_tokens", "token", "id")
            return
        for per_input in hypos:
            for h in per_input:
                assert all(0 <= int(i) < vocab for i in h.tokens) and math.isfinite(h.score)

    fuzz.run("token_ids", profile, 50, token_tensors(), body)


FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "strategy": st.sampled_from(["beam", "greedy", "sample", "nucleus", "", 3]),
    "beam_size": st.one_of(st.integers(-2, 4), st.sampled_from([2.0, "2", True, None])),
    "max_len_a": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, "1", None])),
    "max_len_b": st.one_of(st.integers(-2, 6), st.sampled_from([2.5, "3", None, True, 10**12])),
    "min_len": st.one_of(st.integers(-2, 6), st.sampled_from([1.5, "1", None])),
    "normalize_scores": st.sampled_from([True, False, 0, "yes", None]),
    "len_penalty": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["1", None])),
    "temperature": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, "1", None])),
    "unk_penalty": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["0", None])),
    "no_repeat_ngram_size": st.one_of(st.integers(-2, 4), st.sampled_from([1.5, "2", None])),
    "sampling_topk": st.one_of(st.integers(-3, 5), st.sampled_from([2.5, "3", None])),
    "sampling_topp": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["0.5", None])),
    "seed": st.one_of(st.none(), st.integers(-2**70, 2**70), st.sampled_from(["1", 1.5])),
    "ban_special_until_max_len": st.sampled_from([True, False, "no", None]),
    "processors": st.sampled_from([(), None, (1,), "x", (lambda ids, scores, ctx: scores,)]),
    "return_all": st.sampled_from([True, False, 1, "no"]),
}


def _expected_names(field: str) -> tuple[str, ...]:
    return (field, "processor", "max_len", "sampling_topk / sampling_topp", "min_len")


def test_generation_configs(fuzz: Any, profile: Any, tok: OFATokenizer, small_model: Any) -> None:
    src = torch.tensor([[tok.bos_id, 50, 60, 70, tok.eos_id], [tok.bos_id, 80, tok.eos_id, tok.pad_id, tok.pad_id]])
    names = [f.name for f in dataclasses.fields(GenerationConfig)]
    assert sorted(names) == sorted(FIELD_VALUES), "a new GenerationConfig field needs a fuzz strategy"
    strategy = st.fixed_dictionaries({}, optional=FIELD_VALUES)

    def body(changes: dict[str, Any]) -> None:
        try:
            config = GenerationConfig(**changes)
        except Exception as exc:  # noqa: BLE001 - the property decides
            fuzz.expect(exc, *[n for f in changes for n in _expected_names(f)])
            return
        # accepted: every field has a sane value of its type
        assert isinstance(config.beam_size, int) and config.beam_size >= 1
        assert isinstance(config.max_len_b, int) and not isinstance(config.max_len_b, bool)
        assert isinstance(config.min_len, int) and isinstance(config.no_repeat_ngram_size, int)
        assert isinstance(config.sampling_topk, int)
        assert all(math.isfinite(getattr(config, f)) for f in ("max_len_a", "len_penalty", "temperature",
                                                               "unk_penalty", "sampling_topp"))
        assert config.seed is None or isinstance(config.seed, int)
        assert all(isinstance(getattr(config, f), bool) for f in ("normalize_scores", "ban_special_until_max_len",
                                                                  "return_all"))
        try:
            with torch.no_grad():
                hypos = generate(small_model, src, config=config, pad_id=tok.pad_id)
        except Exception as exc:  # noqa: BLE001 - the property decides
            fuzz.expect(exc, "min_len", "max_len", "seed", "constraint", "no legal token", "beam")
            return
        assert len(hypos) == 2
        for per_input in hypos:
            assert per_input
            for h in per_input:
                assert all(0 <= int(i) < len(tok) for i in h.tokens)
                assert not math.isnan(h.score)

    fuzz.run("generation_configs", profile, 60, strategy, body)
