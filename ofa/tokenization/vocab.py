"""The unified OFA vocabulary: the one place that maps token ids to meanings.

Layout (spec §4.1, the order the reference fairseq ``Dictionary`` is built in):

====================  ==============================================================================
ids                   symbols
====================  ==============================================================================
0, 1, 2, 3            ``<s>`` (bos), ``<pad>``, ``</s>`` (eos), ``<unk>``
4 … 4+T-1             the T text symbols: the ``dict.txt`` lines in file order. Each symbol is a GPT-2
                      BPE id written as a decimal string (``"13"``), or a filler such as ``madeupword0000``
4+T                   ``<mask>``
4+T+1 … 4+T+K         ``<code_0>`` … ``<code_{K-1}>`` (VQGAN image codes)
4+T+K+1 … 4+T+K+N     ``<bin_0>`` … ``<bin_{N-1}>`` (location bins)
====================  ==============================================================================

Full OFA: T = 50260, K = 8192, N = 1000, 59457 tokens, ``<mask>`` = 50264, ``<code_0>`` = 50265,
``<bin_0>`` = 58457.
"""

from __future__ import annotations

import enum
import logging
import operator
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from ofa.errors import TokenizationError

__all__ = ["UnifiedVocab", "TokenKind", "SPECIAL_SYMBOLS", "MASK_SYMBOL", "BOS_ID", "PAD_ID", "EOS_ID", "UNK_ID",
           "SPECIAL_IDS"]

logger = logging.getLogger(__name__)

#: The four fairseq specials, in id order.
SPECIAL_SYMBOLS: tuple[str, str, str, str] = ("<s>", "<pad>", "</s>", "<unk>")
#: Their ids, fixed by that order in every OFA vocabulary (code that has no vocabulary at hand reads them here).
BOS_ID, PAD_ID, EOS_ID, UNK_ID = range(len(SPECIAL_SYMBOLS))
#: ``range(0, 4)``: OFA's constraints always leave these ids allowed (``constraint_range`` keeps 0-3).
SPECIAL_IDS: range = range(len(SPECIAL_SYMBOLS))
MASK_SYMBOL = "<mask>"


class TokenKind(enum.Enum):
    """What a token id stands for."""

    SPECIAL = "special"  # <s>, <pad>, </s>, <unk>
    TEXT = "text"  # a dict.txt symbol (GPT-2 id string or filler)
    MASK = "mask"  # <mask>
    CODE = "code"  # <code_k>
    BIN = "bin"  # <bin_k>


def _code_symbol(c: int) -> str:
    return f"<code_{c}>"


def _bin_symbol(k: int) -> str:
    return f"<bin_{k}>"


def _is_reserved(symbol: str) -> bool:
    if symbol in SPECIAL_SYMBOLS or symbol == MASK_SYMBOL:
        return True
    for prefix in ("<code_", "<bin_"):
        if symbol.startswith(prefix) and symbol.endswith(">") and symbol[len(prefix) : -1].isdigit():
            return True
    return False


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TokenizationError(f"{name} ({value!r}) must be an int >= {minimum}")
    return value


def _as_index(value: object, what: str) -> int:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TokenizationError(f"{what} must be an int, got {type(value).__name__}: {value!r:.80}") from None


class UnifiedVocab:
    """Token ids for specials, text, ``<mask>``, image codes and location bins (see the module docstring).

    Build one with :meth:`from_dict_file`, :meth:`from_symbols` or the constructor.

    Args:
        text_symbols: The text symbols in id order (the ``dict.txt`` symbols).
        num_codes: Number of image-code tokens K (>= 0).
        num_bins: Number of location-bin tokens N (>= 2, so bins can span a coordinate range).
        text_counts: Optional counts of the text symbols (the second ``dict.txt`` column); zeros if omitted.

    Raises:
        TokenizationError: If a text symbol is empty, contains whitespace, is reserved (``<s>``, ``<mask>``,
            ``<bin_3>`` ...) or repeated, or a size is out of range.
    """

    def __init__(
        self,
        text_symbols: Sequence[str],
        num_codes: int = 8192,
        num_bins: int = 1000,
        text_counts: Sequence[int] | None = None,
    ) -> None:
        self._num_codes = _check_count("num_codes", num_codes, 0)
        self._num_bins = _check_count("num_bins", num_bins, 2)
        text = [str(s) for s in text_symbols]
        seen: set[str] = set()
        for i, s in enumerate(text):
            if not s or any(ch.isspace() for ch in s):
                raise TokenizationError(f"text symbol #{i} {s!r} is empty or contains whitespace")
            if _is_reserved(s):
                raise TokenizationError(
                    f"text symbol #{i} {s!r} is reserved for specials, <mask>, <code_k> or <bin_k>"
                )
            if s in seen:
                raise TokenizationError(f"text symbol #{i} {s!r} is repeated; text symbols must be unique")
            seen.add(s)
        if text_counts is None:
            counts = [0] * len(text)
        else:
            counts = [int(c) for c in text_counts]
            if len(counts) != len(text):
                raise TokenizationError(
                    f"text_counts has {len(counts)} entries but there are {len(text)} text symbols"
                )
        self._text: tuple[str, ...] = tuple(text)
        self._counts: tuple[int, ...] = tuple(counts)

        self._text_start = len(SPECIAL_SYMBOLS)
        self._mask_id = self._text_start + len(text)
        self._code_start = self._mask_id + 1
        self._bin_start = self._code_start + self._num_codes
        self._size = self._bin_start + self._num_bins
        self._index: dict[str, int] = {s: i for i, s in enumerate(SPECIAL_SYMBOLS)}
        self._index.update((s, self._text_start + i) for i, s in enumerate(text))
        self._index[MASK_SYMBOL] = self._mask_id
        self._index.update((_code_symbol(c), self._code_start + c) for c in range(self._num_codes))
        self._index.update((_bin_symbol(k), self._bin_start + k) for k in range(self._num_bins))

    # -- constructors -------------------------------------------------------------------------------------

    @classmethod
    def from_dict_file(
        cls,
        path: str | Path,
        num_codes: int = 8192,
        num_bins: int = 1000,
        max_text_symbols: int | None = None,
    ) -> UnifiedVocab:
        """Reads a fairseq ``dict.txt`` (lines ``"symbol count"``) and adds ``<mask>``, codes and bins.

        Args:
            path: The ``dict.txt`` file.
            num_codes: Number of ``<code_k>`` tokens (8192 in OFA).
            num_bins: Number of ``<bin_k>`` tokens (1000 in OFA).
            max_text_symbols: Keep only the first M lines (e.g. 2000 for the golden test model); None keeps all.

        Returns:
            The vocabulary.

        Raises:
            TokenizationError: If the file is missing or a line is malformed, or ``max_text_symbols`` exceeds
                the number of lines.
        """
        p = Path(path)
        if not p.is_file():
            raise TokenizationError(f"dictionary file {str(p)!r} does not exist")
        lines = p.read_text(encoding="utf-8").split("\n")  # "\n" only, as fairseq reads the file
        if lines and lines[-1] == "":
            lines.pop()
        return cls.from_dict_lines(
            lines,
            num_codes=num_codes,
            num_bins=num_bins,
            max_text_symbols=max_text_symbols,
            source=str(p),
        )

    @classmethod
    def from_dict_lines(
        cls,
        lines: Iterable[str],
        num_codes: int = 8192,
        num_bins: int = 1000,
        max_text_symbols: int | None = None,
        *,
        source: str = "<lines>",
    ) -> UnifiedVocab:
        """Like :meth:`from_dict_file`, from the lines of a ``dict.txt``.

        A line is ``"symbol count"``, optionally followed by fairseq's ``#fairseq:overwrite`` flag.
        Blank lines are rejected (fairseq would also fail on them).

        Raises:
            TokenizationError: If a line is malformed or ``max_text_symbols`` is out of range.
        """
        if max_text_symbols is not None:
            _check_count("max_text_symbols", max_text_symbols, 0)
        symbols: list[str] = []
        counts: list[int] = []
        for lineno, raw in enumerate(lines, start=1):
            if max_text_symbols is not None and len(symbols) >= max_text_symbols:
                break
            line = raw.rstrip("\r\n")
            parts = line.split(" ")
            if len(parts) == 3 and parts[2] == "#fairseq:overwrite":
                parts = parts[:2]
            if len(parts) != 2 or not parts[0] or not parts[1].lstrip("-").isdigit():
                raise TokenizationError(
                    f"{source}, line {lineno}: {line!r} is not '<symbol> <count>' (one space, integer count)"
                )
            symbols.append(parts[0])
            counts.append(int(parts[1]))
        if max_text_symbols is not None and len(symbols) < max_text_symbols:
            raise TokenizationError(
                f"max_text_symbols ({max_text_symbols}) exceeds the {len(symbols)} lines of {source}"
            )
        try:
            return cls(symbols, num_codes=num_codes, num_bins=num_bins, text_counts=counts)
        except TokenizationError as err:
            raise TokenizationError(f"{source}: {err}") from None

    @classmethod
    def from_symbols(cls, symbols: Sequence[str]) -> UnifiedVocab:
        """Parses a complete symbol list (e.g. a vocabulary stored with a checkpoint).

        The list must follow the layout exactly: the four specials, the text symbols, ``<mask>``,
        ``<code_0>`` … ``<code_{K-1}>``, then ``<bin_0>`` … ``<bin_{N-1}>``.

        Args:
            symbols: All symbols in id order.

        Returns:
            The vocabulary; ``vocab.symbols == list(symbols)``.

        Raises:
            TokenizationError: Naming the first position where the list departs from the layout.
        """
        syms = [str(s) for s in symbols]
        if tuple(syms[:4]) != SPECIAL_SYMBOLS:
            raise TokenizationError(f"a vocabulary must start with {list(SPECIAL_SYMBOLS)}, got {syms[:4]}")
        try:
            mask_id = syms.index(MASK_SYMBOL)
        except ValueError:
            raise TokenizationError(f"the symbol list ({len(syms)} symbols) has no {MASK_SYMBOL!r}") from None
        pos = mask_id + 1
        num_codes = 0
        while pos < len(syms) and syms[pos] == _code_symbol(num_codes):
            num_codes += 1
            pos += 1
        num_bins = 0
        while pos < len(syms) and syms[pos] == _bin_symbol(num_bins):
            num_bins += 1
            pos += 1
        if pos != len(syms):
            raise TokenizationError(
                f"symbol #{pos} {syms[pos]!r} breaks the layout: after <mask> (#{mask_id}) expected "
                f"{_code_symbol(num_codes)!r} or {_bin_symbol(num_bins)!r} in sequence up to the end"
            )
        return cls(syms[4:mask_id], num_codes=num_codes, num_bins=num_bins)

    # -- sizes and ranges ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (
            f"UnifiedVocab(size={self._size}, num_text={len(self._text)}, num_codes={self._num_codes}, "
            f"num_bins={self._num_bins})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UnifiedVocab):
            return NotImplemented
        return (self._text, self._num_codes, self._num_bins) == (other._text, other._num_codes, other._num_bins)

    __hash__ = None  # type: ignore[assignment]

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._index

    @property
    def bos_id(self) -> int:
        """Id of ``<s>`` (0)."""
        return BOS_ID

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>`` (1)."""
        return PAD_ID

    @property
    def eos_id(self) -> int:
        """Id of ``</s>`` (2)."""
        return EOS_ID

    @property
    def unk_id(self) -> int:
        """Id of ``<unk>`` (3)."""
        return UNK_ID

    @property
    def mask_id(self) -> int:
        """Id of ``<mask>`` (4 + num_text)."""
        return self._mask_id

    @property
    def num_text(self) -> int:
        """Number of text symbols T."""
        return len(self._text)

    @property
    def num_codes(self) -> int:
        """Number of image-code tokens K."""
        return self._num_codes

    @property
    def num_bins(self) -> int:
        """Number of location-bin tokens N."""
        return self._num_bins

    @property
    def special_ids(self) -> tuple[int, int, int, int]:
        """``(bos, pad, eos, unk)``."""
        return (BOS_ID, PAD_ID, EOS_ID, UNK_ID)

    def special_range(self) -> range:
        """Ids of ``<s>``, ``<pad>``, ``</s>``, ``<unk>``."""
        return range(0, self._text_start)

    def text_range(self) -> range:
        """Ids of the text symbols."""
        return range(self._text_start, self._mask_id)

    def code_range(self) -> range:
        """Ids of ``<code_0>`` … ``<code_{K-1}>``."""
        return range(self._code_start, self._bin_start)

    def bin_range(self) -> range:
        """Ids of ``<bin_0>`` … ``<bin_{N-1}>``."""
        return range(self._bin_start, self._size)

    # -- symbols --------------------------------------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        """All symbols in id order (a new list)."""
        return [*SPECIAL_SYMBOLS, *self._text, MASK_SYMBOL, *map(_code_symbol, range(self._num_codes)),
                *map(_bin_symbol, range(self._num_bins))]

    @property
    def text_symbols(self) -> tuple[str, ...]:
        """The text symbols in id order."""
        return self._text

    @property
    def text_counts(self) -> tuple[int, ...]:
        """The counts of the text symbols (the ``dict.txt`` second column; zeros when unknown)."""
        return self._counts

    def _check_id(self, token_id: object) -> int:
        i = _as_index(token_id, "token id")
        if not 0 <= i < self._size:
            raise TokenizationError(f"token id {i} is out of range; valid ids are 0..{self._size - 1}")
        return i

    def symbol(self, token_id: int) -> str:
        """The symbol of an id.

        Raises:
            TokenizationError: If the id is not in ``range(len(self))``.
        """
        i = self._check_id(token_id)
        if i < self._text_start:
            return SPECIAL_SYMBOLS[i]
        if i < self._mask_id:
            return self._text[i - self._text_start]
        if i == self._mask_id:
            return MASK_SYMBOL
        if i < self._bin_start:
            return _code_symbol(i - self._code_start)
        return _bin_symbol(i - self._bin_start)

    def id_of(self, symbol: str) -> int:
        """The id of a symbol; unknown symbols give ``unk_id``."""
        return self._index.get(symbol, self.unk_id)

    def text_symbol_to_id(self, symbol: str) -> int:
        """The id of a text symbol (e.g. the GPT-2 id string ``"262"``); ``unk_id`` if it is not a text symbol."""
        i = self._index.get(symbol)
        return i if i is not None and self._text_start <= i < self._mask_id else self.unk_id

    def dict_lines(self) -> list[str]:
        """The ``dict.txt`` lines (``"symbol count"``) of the text symbols."""
        return [f"{s} {c}" for s, c in zip(self._text, self._counts)]

    def save_dict_file(self, path: str | Path) -> Path:
        """Writes the text symbols as a fairseq ``dict.txt``.

        Returns:
            The path written.
        """
        p = Path(path)
        p.write_text("".join(line + "\n" for line in self.dict_lines()), encoding="utf-8")
        return p

    # -- kinds, codes and bins ------------------------------------------------------------------------------

    def kind(self, token_id: int) -> TokenKind:
        """Which kind of token an id is.

        Raises:
            TokenizationError: If the id is out of range.
        """
        i = self._check_id(token_id)
        if i < self._text_start:
            return TokenKind.SPECIAL
        if i < self._mask_id:
            return TokenKind.TEXT
        if i == self._mask_id:
            return TokenKind.MASK
        if i < self._bin_start:
            return TokenKind.CODE
        return TokenKind.BIN

    def code_id(self, code: int) -> int:
        """Token id of image code ``code``.

        Raises:
            TokenizationError: If ``code`` is not in ``range(num_codes)``.
        """
        c = _as_index(code, "image code")
        if not 0 <= c < self._num_codes:
            raise TokenizationError(
                f"image code {c} is out of range; accepted codes are 0..{self._num_codes - 1} "
                f"(num_codes={self._num_codes})"
            )
        return self._code_start + c

    def code_index(self, token_id: int) -> int:
        """Image code of a ``<code_k>`` token id.

        Raises:
            TokenizationError: If the id is not a code token.
        """
        i = _as_index(token_id, "token id")
        if i not in self.code_range():
            raise TokenizationError(
                f"token id {i} is not an image-code token; code ids are {self._code_start}.."
                f"{self._bin_start - 1}"
            )
        return i - self._code_start

    def bin_id(self, k: int) -> int:
        """Token id of location bin ``k``.

        Raises:
            TokenizationError: If ``k`` is not in ``range(num_bins)``.
        """
        b = _as_index(k, "bin")
        if not 0 <= b < self._num_bins:
            raise TokenizationError(
                f"bin {b} is out of range; accepted bins are 0..{self._num_bins - 1} (num_bins={self._num_bins})"
            )
        return self._bin_start + b

    def bin_index(self, token_id: int) -> int:
        """Bin number of a ``<bin_k>`` token id.

        Raises:
            TokenizationError: If the id is not a bin token.
        """
        i = _as_index(token_id, "token id")
        if i not in self.bin_range():
            raise TokenizationError(
                f"token id {i} is not a location-bin token; bin ids are {self._bin_start}..{self._size - 1}"
            )
        return i - self._bin_start

    # -- vectorised helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _in(ids: torch.Tensor, r: range) -> torch.Tensor:
        return (ids >= r.start) & (ids < r.stop)

    def is_special(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool tensor, True where ``ids`` are ``<s>``, ``<pad>``, ``</s>`` or ``<unk>``."""
        return self._in(ids, self.special_range())

    def is_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool tensor, True where ``ids`` are text tokens."""
        return self._in(ids, self.text_range())

    def is_code(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool tensor, True where ``ids`` are image-code tokens."""
        return self._in(ids, self.code_range())

    def is_bin(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool tensor, True where ``ids`` are location-bin tokens."""
        return self._in(ids, self.bin_range())

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Image codes → token ids, elementwise (any shape, integer dtype).

        Raises:
            TokenizationError: If ``codes`` is not an integer tensor or a code is outside ``range(num_codes)``.
        """
        _check_int_tensor(codes, "codes")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self._num_codes):
            bad = int(codes.min()) if int(codes.min()) < 0 else int(codes.max())
            raise TokenizationError(
                f"image code {bad} is out of range; accepted codes are 0..{self._num_codes - 1}"
            )
        return codes.long() + self._code_start

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Code token ids → image codes, elementwise.

        Raises:
            TokenizationError: If an id is not a code token.
        """
        _check_int_tensor(ids, "ids")
        ok = self.is_code(ids)
        if not bool(ok.all()):
            bad = int(ids[~ok].flatten()[0])
            raise TokenizationError(
                f"token id {bad} is not an image-code token; code ids are {self._code_start}..{self._bin_start - 1}"
            )
        return ids.long() - self._code_start

    def bins_to_ids(self, bins: torch.Tensor) -> torch.Tensor:
        """Bin numbers → token ids, elementwise.

        Raises:
            TokenizationError: If a bin is outside ``range(num_bins)``.
        """
        _check_int_tensor(bins, "bins")
        if bins.numel() and (int(bins.min()) < 0 or int(bins.max()) >= self._num_bins):
            bad = int(bins.min()) if int(bins.min()) < 0 else int(bins.max())
            raise TokenizationError(f"bin {bad} is out of range; accepted bins are 0..{self._num_bins - 1}")
        return bins.long() + self._bin_start

    def ids_to_bins(self, ids: torch.Tensor) -> torch.Tensor:
        """Bin token ids → bin numbers, elementwise.

        Raises:
            TokenizationError: If an id is not a bin token.
        """
        _check_int_tensor(ids, "ids")
        ok = self.is_bin(ids)
        if not bool(ok.all()):
            bad = int(ids[~ok].flatten()[0])
            raise TokenizationError(
                f"token id {bad} is not a location-bin token; bin ids are {self._bin_start}..{self._size - 1}"
            )
        return ids.long() - self._bin_start


def _check_int_tensor(t: object, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TokenizationError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TokenizationError(f"{name} must have an integer dtype, got {t.dtype}")
