"""GPT-2 byte-level BPE: encoding, decoding, file loading and a small trainer.

OFA tokenises text with the GPT-2 byte-level BPE (``encoder.json`` + ``vocab.bpe``; spec §4.2):

1. the text is split into pre-tokens with the GPT-2 pattern (contractions, letter runs, digit runs, other
   symbol runs, whitespace), each optionally led by one space;
2. the UTF-8 bytes of each pre-token are mapped to printable unicode characters with a fixed byte table, so
   every byte string is a string of "symbols";
3. adjacent symbols are merged by merge rank (lowest first) until no ranked pair is left;
4. every resulting token is looked up in the encoder to give a GPT-2 id.

Decoding concatenates the tokens, maps the characters back to bytes and decodes UTF-8 with
``errors="replace"``. Because the byte table covers all 256 bytes, ``decode(encode(text)) == text`` for
every string that can be UTF-8 encoded.

The module also holds :func:`train_bpe`, which learns merges from a corpus of texts, so the library can
build a tokenizer for a new domain (and for its own tiny test vocabulary).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import logging
import operator
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import regex

from ofa.errors import TokenizationError

__all__ = ["ByteLevelBPE", "train_bpe", "bytes_to_unicode", "GPT2_PRETOKENIZE_PATTERN"]

logger = logging.getLogger(__name__)

#: The GPT-2 pre-tokenisation pattern: contractions, then optional-space-led runs of letters, of digits and
#: of other non-space symbols, then whitespace (a whitespace run not followed by a non-space, else any run).
GPT2_PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_MERGES_HEADER = "#version: 0.2"
_CACHE_SIZE = 65536


@functools.lru_cache(maxsize=1)
def _pretokenizer() -> Any:
    # Compiled lazily (and once) so that importing the module does no work.
    return regex.compile(GPT2_PRETOKENIZE_PATTERN)


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte table: a bijection from the 256 byte values to printable unicode characters.

    Bytes that are printable and not whitespace in Latin-1 (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) map to
    the character with the same code point. The remaining 68 bytes, in increasing order, map to
    ``chr(256)``, ``chr(257)``, ... so that, e.g., the space byte 0x20 becomes ``"Ġ"`` (U+0120).

    Returns:
        A new dict ``{byte: character}`` with 256 entries.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _byte_decoder() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _to_symbols(pretoken: str) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in pretoken.encode("utf-8"))


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TokenizationError(f"text must be a str, got {type(text).__name__}: {text!r:.80}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start : err.end]
        raise TokenizationError(
            f"text cannot be UTF-8 encoded (character {bad!r} at index {err.start}); only valid unicode "
            "strings (no lone surrogates) are accepted"
        ) from err
    return text


class ByteLevelBPE:
    """GPT-2 style byte-level BPE over an encoder (token → id) and a ranked list of merges.

    Args:
        encoder: Token string (in byte-table characters) → GPT-2 id. Ids must be unique and every one of the
            256 single-byte symbols must be present, so that any text can be encoded.
        merges: Ranked merges, best first, each a pair of token strings whose concatenation is in ``encoder``.

    Raises:
        TokenizationError: If the encoder lacks a byte symbol, has duplicate ids, or a merge produces a token
            that the encoder does not contain.
    """

    def __init__(self, encoder: Mapping[str, int], merges: Sequence[tuple[str, str]]) -> None:
        self._encoder: dict[str, int] = dict(encoder)
        self._decoder: dict[int, str] = {i: t for t, i in self._encoder.items()}
        if len(self._decoder) != len(self._encoder):
            counts = Counter(self._encoder.values())
            dup = sorted(i for i, c in counts.items() if c > 1)[:5]
            raise TokenizationError(f"BPE encoder maps several tokens to the same id(s) {dup}; ids must be unique")
        if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in self._decoder):
            bad = next(i for i in self._decoder if not isinstance(i, int) or isinstance(i, bool) or i < 0)
            raise TokenizationError(f"BPE encoder id {bad!r} is not a non-negative int")
        missing = [c for c in bytes_to_unicode().values() if c not in self._encoder]
        if missing:
            raise TokenizationError(
                f"BPE encoder lacks {len(missing)} single-byte symbol(s), e.g. {missing[:5]}; all 256 byte "
                "symbols are required so that every text can be encoded"
            )
        self._merges: list[tuple[str, str]] = [tuple(m) for m in merges]  # type: ignore[misc]
        self._ranks: dict[tuple[str, str], int] = {}
        for rank, (a, b) in enumerate(self._merges):
            if a + b not in self._encoder:
                raise TokenizationError(
                    f"BPE merge #{rank} ({a!r}, {b!r}) produces {a + b!r}, which is not in the encoder"
                )
            self._ranks.setdefault((a, b), rank)
        self._max_id = max(self._decoder)
        self._byte_decoder = _byte_decoder()
        self._make_cache()

    # -- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> ByteLevelBPE:
        """Loads GPT-2 BPE files (``encoder.json`` + ``vocab.bpe``, or HF's ``vocab.json`` + ``merges.txt``).

        Args:
            encoder_json: JSON object ``{token: id}`` (GPT-2 ids).
            vocab_bpe: Merges, one ``"a b"`` pair per line, best first, after an optional ``#version`` line.

        Returns:
            The loaded BPE.

        Raises:
            TokenizationError: If a file is missing or malformed.
        """
        enc_path, bpe_path = Path(encoder_json), Path(vocab_bpe)
        for p in (enc_path, bpe_path):
            if not p.is_file():
                raise TokenizationError(f"BPE file {str(p)!r} does not exist")
        return cls.from_strings(
            enc_path.read_text(encoding="utf-8"),
            bpe_path.read_text(encoding="utf-8"),
            source=f"{enc_path} + {bpe_path}",
        )

    @classmethod
    def from_strings(cls, encoder_json: str, merges_text: str, *, source: str = "<string>") -> ByteLevelBPE:
        """Builds a BPE from the contents of an encoder JSON file and a merges file.

        Args:
            encoder_json: Text of ``encoder.json`` / ``vocab.json``.
            merges_text: Text of ``vocab.bpe`` / ``merges.txt``.
            source: Where the text came from, for error messages.

        Returns:
            The loaded BPE.

        Raises:
            TokenizationError: If the text is malformed.
        """
        try:
            encoder = json.loads(encoder_json)
        except json.JSONDecodeError as err:
            raise TokenizationError(f"BPE encoder of {source} is not valid JSON: {err}") from err
        if not isinstance(encoder, dict):
            raise TokenizationError(f"BPE encoder of {source} must be a JSON object {{token: id}}")
        if "<s>" in encoder and "<pad>" in encoder:
            # HF BART/RoBERTa vocab.json maps tokens straight to fairseq model ids, not to GPT-2 ids.
            raise TokenizationError(
                f"BPE encoder of {source} contains '<s>' and '<pad>', so it looks like a BART/RoBERTa vocab.json "
                "with model ids; a GPT-2 encoder (token -> GPT-2 id) plus dict.txt is required"
            )
        return cls(encoder, _parse_merges(merges_text, source))

    # -- pickling: the per-word cache is a local lru_cache wrapper ------------------------------------------

    def _make_cache(self) -> None:
        self._bpe_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(self._bpe_word)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_bpe_cached"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._make_cache()

    # -- properties ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._encoder)

    def __repr__(self) -> str:
        return f"ByteLevelBPE(tokens={len(self._encoder)}, merges={len(self._merges)})"

    @property
    def encoder(self) -> dict[str, int]:
        """A copy of the token → GPT-2 id mapping."""
        return dict(self._encoder)

    @property
    def merges(self) -> list[tuple[str, str]]:
        """A copy of the ranked merges, best first."""
        return list(self._merges)

    @property
    def max_id(self) -> int:
        """The largest GPT-2 id."""
        return self._max_id

    def token_to_id(self, token: str) -> int:
        """The GPT-2 id of a token string (in byte-table characters, e.g. ``"Ġthe"``).

        Raises:
            TokenizationError: If the token is not in the encoder.
        """
        try:
            return self._encoder[token]
        except KeyError:
            raise TokenizationError(f"token {token!r} is not in the BPE encoder") from None

    def id_to_token(self, gpt2_id: int) -> str:
        """The token string of a GPT-2 id.

        Raises:
            TokenizationError: If the id is not in the encoder.
        """
        try:
            return self._decoder[gpt2_id]
        except (KeyError, TypeError):
            raise TokenizationError(
                f"GPT-2 id {gpt2_id!r} is not in the BPE vocabulary (ids 0..{self.max_id})"
            ) from None

    # -- encoding / decoding ------------------------------------------------------------------------------

    def _bpe_word(self, word: str) -> tuple[str, ...]:
        symbols = list(word)
        ranks = self._ranks
        while len(symbols) > 1:
            best_rank, best = None, None
            for pair in itertools.pairwise(symbols):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best = r, pair
            if best is None:
                break
            a, b = best
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def tokenize(self, text: str) -> list[str]:
        """Splits text into BPE token strings (byte-table characters, e.g. ``["Ġwhat", "Ġis"]``).

        Raises:
            TokenizationError: If ``text`` is not a str or cannot be UTF-8 encoded.
        """
        _check_text(text)
        out: list[str] = []
        for pretoken in _pretokenizer().findall(text):
            out.extend(self._bpe_cached(_to_symbols(pretoken)))
        return out

    def encode(self, text: str) -> list[int]:
        """Encodes text to GPT-2 ids (no special tokens, no normalisation).

        Args:
            text: Any unicode string; a leading space is significant (``" what"`` → ``"Ġwhat"``).

        Returns:
            The GPT-2 ids.

        Raises:
            TokenizationError: If ``text`` is not a str or cannot be UTF-8 encoded.
        """
        enc = self._encoder
        return [enc[t] for t in self.tokenize(text)]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Decodes GPT-2 ids to the raw bytes they stand for.

        Raises:
            TokenizationError: If an id is not in the vocabulary.
        """
        dec, bdec = self._decoder, self._byte_decoder
        out = bytearray()
        for i in ids:
            try:
                tok = dec.get(operator.index(i))
            except TypeError:
                tok = None
            if tok is None:
                raise TokenizationError(
                    f"GPT-2 id {i!r} is not in the BPE vocabulary (ids 0..{self.max_id})"
                )
            out.extend(bdec[c] for c in tok)
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Decodes GPT-2 ids to text (UTF-8 with ``errors="replace"``).

        Raises:
            TokenizationError: If an id is not in the vocabulary.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- saving -------------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Writes ``encoder.json`` and ``vocab.bpe`` (GPT-2 formats) into ``directory`` (created if needed).

        Returns:
            The paths of the two files.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        enc_path, bpe_path = d / "encoder.json", d / "vocab.bpe"
        enc_path.write_text(json.dumps(self._encoder, ensure_ascii=False), encoding="utf-8")
        lines = [_MERGES_HEADER, *(f"{a} {b}" for a, b in self._merges)]
        bpe_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return enc_path, bpe_path


def _parse_merges(text: str, source: str) -> list[tuple[str, str]]:
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise TokenizationError(
                f"merges of {source}, line {lineno}: {line!r} is not a pair 'a b' of two space-separated tokens"
            )
        merges.append((parts[0], parts[1]))
    return merges


# ---------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------


def _pairs(word: Sequence[str]) -> Counter[tuple[str, str]]:
    return Counter(itertools.pairwise(word))


def _merge_word(word: Sequence[str], a: str, b: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> ByteLevelBPE:
    """Learns a byte-level BPE from a corpus.

    Texts are pre-tokenised with the GPT-2 pattern and turned into byte-symbol words. Training starts from
    the 256 single-byte tokens (ids 0..255 in byte-table order, as GPT-2 does) and repeatedly merges the most
    frequent adjacent pair, counted over word frequencies, until the vocabulary has ``vocab_size`` tokens or
    no pair occurs ``min_frequency`` times. Ties are broken by the smaller pair in string order, so the
    result depends only on the multiset of texts. Pair counts are updated incrementally: each merge only
    revisits the words that contain the merged pair.

    Args:
        texts: Training texts (any unicode, e.g. with a leading space as OFA prompts have).
        vocab_size: Target number of tokens, at least 256.
        min_frequency: Smallest pair count that may still be merged, at least 1.

    Returns:
        The trained BPE (GPT-2 ids 0..len-1).

    Raises:
        TokenizationError: If ``vocab_size`` < 256, ``min_frequency`` < 1, or a text is not a valid str.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
        raise TokenizationError(f"vocab_size ({vocab_size!r}) must be an int >= 256 (the byte symbols)")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise TokenizationError(f"min_frequency ({min_frequency!r}) must be an int >= 1")

    word_freq: Counter[str] = Counter()
    pat = _pretokenizer()
    for text in texts:
        for pretoken in pat.findall(_check_text(text)):
            word_freq[_to_symbols(pretoken)] += 1

    encoder = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    words: list[list[str]] = [list(w) for w in word_freq]
    freqs: list[int] = list(word_freq.values())
    pair_counts: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for idx, (w, f) in enumerate(zip(words, freqs)):
        for pair, n in _pairs(w).items():
            pair_counts[pair] += n * f
            where.setdefault(pair, set()).add(idx)
    # Max-heap via negated counts; stale entries are skipped when popped (lazy deletion).
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[str, str]] = []
    merged_pairs: set[tuple[str, str]] = set()
    while len(encoder) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if -neg != count or count <= 0:
            continue
        if count < min_frequency:
            break
        a, b = pair
        if pair not in merged_pairs:
            # A pair can reappear after later merges re-create it; its first rank already covers it.
            merged_pairs.add(pair)
            merges.append(pair)
        encoder.setdefault(a + b, len(encoder))
        changed: set[tuple[str, str]] = set()
        for idx in sorted(where.pop(pair, ())):
            w = words[idx]
            new = _merge_word(w, a, b)
            if len(new) == len(w):
                continue
            f = freqs[idx]
            old_pairs, new_pairs = _pairs(w), _pairs(new)
            for p in old_pairs.keys() | new_pairs.keys():
                delta = (new_pairs.get(p, 0) - old_pairs.get(p, 0)) * f
                if delta:
                    pair_counts[p] += delta
                    changed.add(p)
            for p in new_pairs:
                if p != pair:
                    where.setdefault(p, set()).add(idx)
            words[idx] = new
        pair_counts.pop(pair, None)
        for p in changed:
            c = pair_counts.get(p, 0)
            if c > 0 and p != pair:
                heapq.heappush(heap, (-c, p))
            elif c <= 0:
                pair_counts.pop(p, None)
    logger.info("trained byte-level BPE: %d tokens, %d merges from %d distinct words", len(encoder), len(merges),
                len(words))
    return ByteLevelBPE(encoder, merges)
