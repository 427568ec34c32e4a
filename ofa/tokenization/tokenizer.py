"""OFATokenizer: text, boxes and image codes ↔ unified token ids (spec §4.2–§4.5).

Text goes through GPT-2 byte-level BPE (:class:`ByteLevelBPE`); each GPT-2 id, as a decimal string, is
looked up in the fairseq dictionary that :class:`UnifiedVocab` holds (unknown → ``<unk>``). No lowercasing
or other normalisation happens here; tasks do that.

Literal tokens in text
    OFA prompts may contain location, code and mask tokens written literally, e.g.
    ``" what does the region describe? region: <bin_12> <bin_40> <bin_500> <bin_610>"``. :meth:`encode`
    finds every ``<bin_K>``, ``<code_K>`` and ``<mask>`` (regex ``<(?:bin|code)_\\d+>|<mask>``) and maps it
    straight to its id; the text between them goes through BPE. Spaces are handled by one rule:

    * **encode**: exactly one space immediately before a literal token is a separator and is dropped
      (so ``"region: <bin_1> <bin_2>"`` gives ``BPE("region:") + [bin_1, bin_2]``, with no stray ``"Ġ"``
      token); any other whitespace, including the space after a literal token, stays with the text
      (``"<bin_1> cat"`` → ``[bin_1] + BPE(" cat")``, i.e. ``"Ġcat"`` as for any word).
    * **decode**: every literal token except one at the very start is written with one space before it.

    So ``decode(encode(t)) == t`` whenever every literal token in ``t`` is preceded by a space or starts
    ``t``, and ``t`` does not start with a space followed by a literal token. (The reference's
    GPT-2 ``decode`` concatenates literal tokens with no spaces; its tasks read bins from ids, not text.)

    Text typed by a user must not smuggle location or code tokens into a prompt: a tokenizer made with
    :meth:`OFATokenizer.as_literal` (or ``encode(text, literal=True)``) encodes ``"<bin_12>"`` as the plain
    characters it spells. :class:`~ofa.pipeline.Pipeline` encodes with such a tokenizer; the built-in tasks put
    boxes and codes into prompts as ids, never as text, so nothing they need is lost.
"""

from __future__ import annotations

import copy
import json
import logging
import operator
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch

from ofa.errors import TokenizationError
from ofa.tokenization import boxes as _boxes
from ofa.tokenization.bpe import ByteLevelBPE, train_bpe
from ofa.tokenization.image_codes import GridSize, codes_to_ids, ids_to_codes
from ofa.tokenization.vocab import UnifiedVocab

__all__ = ["OFATokenizer", "tiny_tokenizer", "LITERAL_TOKEN_PATTERN"]

logger = logging.getLogger(__name__)

#: Literal tokens that :meth:`OFATokenizer.encode` maps directly instead of running them through BPE.
LITERAL_TOKEN_PATTERN = r"<(?:bin|code)_(\d+)>|<mask>"
_LITERAL_RE = re.compile(LITERAL_TOKEN_PATTERN)

_BPE_FILE_PAIRS = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))
_DICT_FILE = "dict.txt"
_CONFIG_FILE = "tokenizer_config.json"
_CONFIG_FORMAT = "ofa-tokenizer"


def _as_id_list(ids: object, what: str = "ids") -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() > 1:
            raise TokenizationError(f"{what} must be 1-D, got shape {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TokenizationError(f"{what} must have an integer dtype, got {ids.dtype}")
        return [int(i) for i in ids.tolist()]
    if isinstance(ids, (str, bytes)):
        raise TokenizationError(f"{what} must be a sequence of ints, got {type(ids).__name__} {ids!r:.80}")
    try:
        return [operator.index(i) for i in ids]  # type: ignore[attr-defined]
    except TypeError:
        raise TokenizationError(f"{what} must be a sequence of ints, got {ids!r:.120}") from None


def _find_bpe_files(directory: Path) -> tuple[Path, Path] | None:
    for enc, merges in _BPE_FILE_PAIRS:
        if (directory / enc).is_file() and (directory / merges).is_file():
            return directory / enc, directory / merges
    return None


class OFATokenizer:
    """Encodes text (with literal ``<bin_K>``/``<code_K>``/``<mask>`` tokens), boxes and image codes.

    Args:
        bpe: The GPT-2 byte-level BPE.
        vocab: The unified vocabulary; its text symbols name GPT-2 ids of ``bpe`` as decimal strings
            (other text symbols, such as ``madeupword0000``, are never produced by :meth:`encode`).

    Raises:
        TokenizationError: If a numeric text symbol is not an id of ``bpe``.
    """

    def __init__(self, bpe: ByteLevelBPE, vocab: UnifiedVocab) -> None:
        self.bpe = bpe
        self.vocab = vocab
        self.literal_text = False
        unk = vocab.unk_id
        self._gpt2_to_id: list[int] = [unk] * (bpe.max_id + 1)
        self._id_to_gpt2: dict[int, int] = {}
        for token_id, sym in zip(vocab.text_range(), vocab.text_symbols):
            if not (sym.isdigit() and sym.isascii() and str(int(sym)) == sym):
                continue  # fillers such as madeupword0000 decode literally
            g = int(sym)
            if g >= len(self._gpt2_to_id):
                raise TokenizationError(
                    f"dictionary symbol {sym!r} (id {token_id}) is not a GPT-2 id of the BPE (0..{bpe.max_id})"
                )
            self._gpt2_to_id[g] = token_id
            self._id_to_gpt2[token_id] = g

    # -- constructors -------------------------------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        directory: str | Path,
        num_codes: int = 8192,
        num_bins: int = 1000,
        max_text_symbols: int | None = None,
    ) -> OFATokenizer:
        """Loads ``encoder.json`` + ``vocab.bpe`` (or ``vocab.json`` + ``merges.txt``) and ``dict.txt``; or the HF
        port's ``vocab.json`` + ``merges.txt`` alone, whose ids are already the dictionary's.

        Args:
            directory: Folder holding the files (e.g. the reference ``utils/BPE``).
            num_codes: Number of image-code tokens (8192 in OFA).
            num_bins: Number of location bins (1000 in OFA).
            max_text_symbols: Keep only the first M ``dict.txt`` lines (None: all).

        Returns:
            The tokenizer.

        Raises:
            TokenizationError: If files are missing (listing what was looked for) or malformed.
        """
        d = Path(directory)
        found = _find_bpe_files(d)
        dict_path = d / _DICT_FILE
        if found is not None and found[0].name == "vocab.json" and not dict_path.is_file():
            return cls._from_hf_files(*found, num_codes=num_codes, num_bins=num_bins,
                                      max_text_symbols=max_text_symbols)
        if found is None or not dict_path.is_file():
            pairs = " or ".join(f"{a} + {b}" for a, b in _BPE_FILE_PAIRS)
            raise TokenizationError(
                f"tokenizer files not found in {str(d)!r}: looked for ({pairs}) and {_DICT_FILE}"
            )
        bpe = ByteLevelBPE.from_files(*found)
        vocab = UnifiedVocab.from_dict_file(dict_path, num_codes, num_bins, max_text_symbols)
        logger.debug("loaded tokenizer from %s: %r, %r", d, bpe, vocab)
        return cls(bpe, vocab)

    @classmethod
    def _from_hf_files(cls, vocab_json: Path, merges: Path, *, num_codes: int, num_bins: int,
                       max_text_symbols: int | None) -> OFATokenizer:
        """The HF port's BART-style files (spec §7.4): ``vocab.json`` maps BPE tokens straight to the final ids
        (``<s> <pad> </s> <unk>`` = 0..3, text, ``<mask>`` last), so the dictionary is the identity on 4..mask-1."""
        try:
            table = json.loads(vocab_json.read_text(encoding="utf-8"))
            ids = {str(k): int(v) for k, v in table.items()}
        except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as err:
            raise TokenizationError(f"{str(vocab_json)!r} is not a JSON object of token ids: {err}") from None
        specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        mask = ids.get("<mask>")
        if any(ids.get(k) != v for k, v in specials.items()) or mask is None or mask != max(ids.values()):
            raise TokenizationError(
                f"{str(vocab_json)!r} has no dict.txt beside it and is not a BART-style vocabulary (<s>, <pad>, "
                f"</s>, <unk> = 0..3 and <mask> the largest id); found {({k: ids.get(k) for k in specials})}, "
                f"<mask>={mask}")
        text = [str(i) for i in range(4, mask)]
        if max_text_symbols is not None:
            text = text[:max_text_symbols]
        if not merges.is_file():
            raise TokenizationError(f"BPE file {str(merges)!r} does not exist")
        # the BPE maps tokens to these ids; the specials are the vocabulary's, never produced from text
        table = {k: v for k, v in ids.items() if k not in specials and k != "<mask>"}
        bpe = ByteLevelBPE.from_strings(json.dumps(table), merges.read_text(encoding="utf-8"),
                                        source=f"{vocab_json} + {merges}")
        vocab = UnifiedVocab(text, num_codes=num_codes, num_bins=num_bins)
        logger.debug("loaded an HF-format tokenizer from %s: %r, %r", vocab_json.parent, bpe, vocab)
        return cls(bpe, vocab)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> OFATokenizer:
        """Loads a tokenizer written by :meth:`save_pretrained` (sizes come from ``tokenizer_config.json``).

        Raises:
            TokenizationError: If a file is missing or the config does not match the files.
        """
        d = Path(directory)
        cfg_path = d / _CONFIG_FILE
        if not cfg_path.is_file():
            raise TokenizationError(
                f"{str(cfg_path)!r} does not exist; use OFATokenizer.from_files for bare BPE + dict.txt folders"
            )
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            num_codes, num_bins = int(cfg["num_codes"]), int(cfg["num_bins"])
            max_text = cfg.get("max_text_symbols")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise TokenizationError(f"{str(cfg_path)!r} is not a valid tokenizer config: {err!r}") from None
        tok = cls.from_files(d, num_codes=num_codes, num_bins=num_bins, max_text_symbols=max_text)
        size = cfg.get("vocab_size")
        if size is not None and size != len(tok.vocab):
            raise TokenizationError(
                f"{str(cfg_path)!r} says vocab_size={size} but the files give {len(tok.vocab)} tokens"
            )
        return tok

    @classmethod
    def from_test_assets(cls, num_codes: int = 64, num_bins: int = 100) -> OFATokenizer:
        """The tiny English tokenizer shipped in ``ofa/tokenization/assets`` (for tests and examples).

        Its BPE was trained by ``ofa/tokenization/_make_test_assets.py`` on a small synthetic corpus of
        image descriptions and OFA-style prompts; its dictionary contains every BPE id, so any text encodes
        without ``<unk>``.

        Args:
            num_codes: Number of image-code tokens.
            num_bins: Number of location bins.
        """
        root = resources.files("ofa.tokenization").joinpath("assets")
        bpe = ByteLevelBPE.from_strings(
            root.joinpath("encoder.json").read_text(encoding="utf-8"),
            root.joinpath("vocab.bpe").read_text(encoding="utf-8"),
            source="ofa.tokenization assets",
        )
        vocab = UnifiedVocab.from_dict_lines(
            root.joinpath(_DICT_FILE).read_text(encoding="utf-8").splitlines(),
            num_codes=num_codes,
            num_bins=num_bins,
            source="ofa.tokenization assets/dict.txt",
        )
        return cls(bpe, vocab)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        num_codes: int = 8192,
        num_bins: int = 1000,
        min_frequency: int = 2,
    ) -> OFATokenizer:
        """Trains a BPE on ``texts`` and builds a matching dictionary: a tokenizer for a new domain.

        The dictionary lists every BPE id as a decimal string, ordered by its count in the encoded corpus
        (descending; ties by id), as fairseq dictionaries are; unseen ids come last with count 0.

        Args:
            texts: Training texts (read once into memory).
            vocab_size: Number of BPE tokens (>= 256), i.e. of text symbols; the whole vocabulary adds
                4 specials, ``<mask>``, ``num_codes`` and ``num_bins``.
            num_codes: Number of image-code tokens.
            num_bins: Number of location bins.
            min_frequency: Smallest pair count the BPE trainer still merges.

        Returns:
            The tokenizer.

        Raises:
            TokenizationError: On invalid sizes or texts.
        """
        corpus = list(texts)
        bpe = train_bpe(corpus, vocab_size, min_frequency=min_frequency)
        counts: Counter[int] = Counter()
        for text in corpus:
            counts.update(bpe.encode(text))
        order = sorted(range(bpe.max_id + 1), key=lambda g: (-counts[g], g))
        vocab = UnifiedVocab(
            [str(g) for g in order], num_codes=num_codes, num_bins=num_bins, text_counts=[counts[g] for g in order]
        )
        return cls(bpe, vocab)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Writes ``encoder.json``, ``vocab.bpe``, ``dict.txt`` and ``tokenizer_config.json``.

        Args:
            directory: Target folder (created if needed).

        Returns:
            The folder.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.bpe.save(d)
        self.vocab.save_dict_file(d / _DICT_FILE)
        cfg: dict[str, Any] = {
            "format": _CONFIG_FORMAT,
            "num_codes": self.vocab.num_codes,
            "num_bins": self.vocab.num_bins,
            "max_text_symbols": self.vocab.num_text,
            "vocab_size": len(self.vocab),
        }
        (d / _CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        return d

    # -- properties ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"OFATokenizer({self.bpe!r}, {self.vocab!r})"

    @property
    def bos_id(self) -> int:
        """Id of ``<s>``."""
        return self.vocab.bos_id

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>``."""
        return self.vocab.pad_id

    @property
    def eos_id(self) -> int:
        """Id of ``</s>``."""
        return self.vocab.eos_id

    # -- text ---------------------------------------------------------------------------------------------

    def _encode_plain(self, text: str) -> list[int]:
        g2m = self._gpt2_to_id
        return [g2m[g] for g in self.bpe.encode(text)]

    def _literal_id(self, match: re.Match[str]) -> int:
        token = match.group(0)
        if token == "<mask>":
            return self.vocab.mask_id
        k = int(match.group(1))
        try:
            return self.vocab.bin_id(k) if token.startswith("<bin_") else self.vocab.code_id(k)
        except TokenizationError as err:
            raise TokenizationError(f"literal token {token!r} at index {match.start()} of the text: {err}") from None

    def as_literal(self) -> OFATokenizer:
        """A tokenizer sharing this one's vocabulary whose :meth:`encode` treats all text as plain characters:
        ``"<bin_12>"``, ``"<code_5>"`` and ``"<mask>"`` are BPE-encoded like any other text (see the module
        docstring). Use it for text that comes from users."""
        twin = copy.copy(self)
        twin.literal_text = True
        return twin

    def encode(self, text: str, literal: bool | None = None) -> list[int]:
        """Text → model ids, without bos/eos and without normalisation.

        Literal ``<bin_K>``, ``<code_K>`` and ``<mask>`` become their ids; see the module docstring for the
        space rule around them.

        Args:
            text: The text; OFA prompts start with a space (``" what does the image describe?"``).
            literal: encode ``<bin_K>``/``<code_K>``/``<mask>`` as the characters they spell instead of as
                special tokens (default: this tokenizer's ``literal_text``, False unless made by
                :meth:`as_literal`).

        Returns:
            The ids.

        Raises:
            TokenizationError: If ``text`` is not a valid str or names a bin or code out of range.
        """
        if not isinstance(text, str):
            raise TokenizationError(f"text must be a str, got {type(text).__name__}: {text!r:.80}")
        if self.literal_text if literal is None else literal:
            return self._encode_plain(text)
        ids: list[int] = []
        pos = 0
        for m in _LITERAL_RE.finditer(text):
            chunk = text[pos : m.start()]
            if chunk.endswith(" "):
                chunk = chunk[:-1]  # the separator before a literal token
            ids.extend(self._encode_plain(chunk))
            ids.append(self._literal_id(m))
            pos = m.end()
        ids.extend(self._encode_plain(text[pos:]))
        return ids

    def word_starts(self, ids: Sequence[int]) -> list[bool]:
        """Per id, whether it is a GPT-2 text token that begins with a space (``Ġ``): BART's word-initial tokens.

        Specials, ``<mask>``, codes and bins are not word starts.
        """
        space = "\u0120"  # GPT-2's printable stand-in for the byte 0x20
        starts = []
        for i in ids:
            g = self._id_to_gpt2.get(int(i))
            starts.append(g is not None and self.bpe.id_to_token(g).startswith(space))
        return starts

    def encode_source(self, text: str) -> list[int]:
        """``[bos] + encode(text) + [eos]`` (encoder input)."""
        return [self.bos_id, *self.encode(text), self.eos_id]

    def encode_target(self, text: str) -> list[int]:
        """``encode(text) + [eos]`` (decoder target; the decoder input is ``[bos] + encode(text)``)."""
        return [*self.encode(text), self.eos_id]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Model ids → text.

        ``<s>``, ``</s>`` and ``<pad>`` are dropped. Runs of GPT-2 text ids are decoded together (UTF-8 with
        ``errors="replace"``). Every other id is written as its symbol (``<bin_3>``, ``<code_7>``,
        ``<mask>``, ``<unk>``, ``madeupword0000``) with one space before it unless it starts the output.

        Args:
            ids: 1-D ids (list or tensor).

        Returns:
            The text.

        Raises:
            TokenizationError: If an id is outside ``range(len(vocab))``.
        """
        id_list = _as_id_list(ids)
        size = len(self.vocab)
        skip = {self.bos_id, self.eos_id, self.pad_id}
        parts: list[str] = []
        run: list[int] = []
        for i in id_list:
            if not 0 <= i < size:
                raise TokenizationError(f"token id {i} is out of range; valid ids are 0..{size - 1}")
            if i in skip:
                continue
            g = self._id_to_gpt2.get(i)
            if g is not None:
                run.append(g)
                continue
            if run:
                parts.append(self.bpe.decode(run))
                run = []
            sym = self.vocab.symbol(i)
            parts.append(f" {sym}" if parts else sym)
        if run:
            parts.append(self.bpe.decode(run))
        return "".join(parts)

    # -- batches --------------------------------------------------------------------------------------------

    def batch_encode(
        self,
        texts: Sequence[str],
        add_bos: bool = True,
        add_eos: bool = True,
        max_length: int | None = None,
        padding_side: Literal["right", "left"] = "right",
        return_tensors: bool = True,
    ) -> dict[str, Any]:
        """Encodes and pads a batch (OFA right-pads with ``<pad>`` = 1).

        Args:
            texts: The texts (a non-empty sequence of str).
            add_bos: Prepend ``<s>``.
            add_eos: Append ``</s>``.
            max_length: Longest allowed sequence, bos/eos included; longer texts lose their last text
                tokens (bos and eos are kept). None: no limit.
            padding_side: ``"right"`` (OFA) or ``"left"``.
            return_tensors: Return tensors (else lists).

        Returns:
            ``input_ids`` (LongTensor ``[b, t]``), ``attention_mask`` (BoolTensor ``[b, t]``, True at real
            tokens), ``padding_mask`` (its negation, True at pads, as key-padding masks expect) and
            ``lengths`` (LongTensor ``[b]``, non-pad counts). Lists of lists / list of ints without tensors.

        Raises:
            TokenizationError: If ``texts`` is empty or a str, ``max_length`` is too small for bos/eos, or
                ``padding_side`` is unknown.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TokenizationError(f"texts must be a sequence of str, got {type(texts).__name__}")
        if len(texts) == 0:
            raise TokenizationError("texts is empty; batch_encode needs at least one text")
        if padding_side not in ("right", "left"):
            raise TokenizationError(f"padding_side ({padding_side!r}) must be 'right' or 'left'")
        n_special = int(add_bos) + int(add_eos)
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < max(n_special, 1)
        ):
            raise TokenizationError(
                f"max_length ({max_length!r}) must be an int >= {max(n_special, 1)} (bos/eos included) or None"
            )
        seqs: list[list[int]] = []
        for text in texts:
            ids = self.encode(text)
            if max_length is not None:
                ids = ids[: max_length - n_special]
            seqs.append([self.bos_id] * add_bos + ids + [self.eos_id] * add_eos)
        width = max(len(s) for s in seqs)
        padded, mask = [], []
        for s in seqs:
            pad = [self.pad_id] * (width - len(s))
            real, fill = [True] * len(s), [False] * len(pad)
            padded.append(s + pad if padding_side == "right" else pad + s)
            mask.append(real + fill if padding_side == "right" else fill + real)
        lengths = [len(s) for s in seqs]
        if not return_tensors:
            return {
                "input_ids": padded,
                "attention_mask": mask,
                "padding_mask": [[not m for m in row] for row in mask],
                "lengths": lengths,
            }
        attention = torch.tensor(mask, dtype=torch.bool).view(len(seqs), width)
        return {
            "input_ids": torch.tensor(padded, dtype=torch.long).view(len(seqs), width),
            "attention_mask": attention,
            "padding_mask": ~attention,
            "lengths": torch.tensor(lengths, dtype=torch.long),
        }

    def decode_batch(self, batch_ids: Sequence[Sequence[int]] | torch.Tensor) -> list[str]:
        """Decodes each row of ``[b, t]`` ids (pads, bos and eos are dropped).

        Raises:
            TokenizationError: If an id is out of range.
        """
        if isinstance(batch_ids, torch.Tensor):
            if batch_ids.dim() != 2:
                raise TokenizationError(f"batch_ids must be 2-D [b, t], got shape {tuple(batch_ids.shape)}")
            rows: Iterable[Any] = batch_ids.tolist()
        else:
            rows = batch_ids
        return [self.decode(row) for row in rows]

    # -- boxes ----------------------------------------------------------------------------------------------

    def _strip(self, ids: object) -> list[int]:
        skip = {self.bos_id, self.eos_id, self.pad_id}
        size = len(self.vocab)
        out = []
        for i in _as_id_list(ids):
            if not 0 <= i < size:
                raise TokenizationError(f"token id {i} is out of range; valid ids are 0..{size - 1}")
            if i not in skip:
                out.append(i)
        return out

    def encode_box(
        self,
        box_xyxy: Sequence[float],
        original_size: _boxes.Size | None = None,
        patch_size: _boxes.Size = 512,
        max_image_size: float = 512,
    ) -> list[int]:
        """A box → four ``<bin_k>`` ids (x0, y0, x1, y1), with ``num_bins`` from the vocabulary.

        Args:
            box_xyxy: The box, in original-image pixels if ``original_size`` is given, else in patch-image
                pixels (already resized).
            original_size: ``(width, height)`` of the original image, or None.
            patch_size: Size the image is resized to (ignored without ``original_size``).
            max_image_size: Normaliser (512 in OFA).

        Raises:
            TokenizationError: On a bad box or size.
        """
        n = self.vocab.num_bins
        if original_size is None:
            bins = _boxes.quantize_coords(box_xyxy, max_image_size, n)
        else:
            bins = _boxes.box_to_bins(box_xyxy, original_size, patch_size, n, max_image_size)
        return [self.vocab.bin_id(b) for b in bins]

    def _bins_to_box(
        self, bins: Sequence[int], original_size: _boxes.Size | None, patch_size: _boxes.Size, max_image_size: float
    ) -> tuple[float, float, float, float]:
        n = self.vocab.num_bins
        if original_size is None:
            return _boxes.dequantize_coords(bins, max_image_size, n)
        return _boxes.bins_to_box(bins, original_size, patch_size, n, max_image_size)

    def decode_box(
        self,
        ids: Sequence[int] | torch.Tensor,
        original_size: _boxes.Size | None = None,
        patch_size: _boxes.Size = 512,
        max_image_size: float = 512,
    ) -> tuple[float, float, float, float]:
        """Four bin ids (bos/eos/pad ignored) → a box; the inverse of :meth:`encode_box`.

        Raises:
            TokenizationError: If, after dropping bos/eos/pad, the ids are not exactly four bin tokens.
        """
        ids_ = self._strip(ids)
        if len(ids_) != 4:
            raise TokenizationError(f"a box needs exactly 4 bin ids (bos/eos/pad ignored), got {len(ids_)}: {ids_}")
        bins = [self.vocab.bin_index(i) for i in ids_]
        return self._bins_to_box(bins, original_size, patch_size, max_image_size)

    def decode_boxes(
        self,
        ids: Sequence[int] | torch.Tensor,
        original_size: _boxes.Size | None = None,
        patch_size: _boxes.Size = 512,
        max_image_size: float = 512,
    ) -> list[tuple[float, float, float, float]]:
        """Every box in a sequence that mixes bins with other tokens (e.g. detection: box, label, box, ...).

        Consecutive bin ids are grouped in fours; other ids are skipped.

        Raises:
            TokenizationError: If a run of consecutive bin ids is not a multiple of 4 long.
        """
        out: list[tuple[float, float, float, float]] = []
        run: list[int] = []
        id_list = self._strip(ids) + [-1]  # sentinel closes the last run
        bin_ids = self.vocab.bin_range()
        for pos, i in enumerate(id_list):
            if i in bin_ids:
                run.append(self.vocab.bin_index(i))
                continue
            if len(run) % 4:
                raise TokenizationError(
                    f"a run of {len(run)} bin ids ending at position {pos} is not a multiple of 4 (x0 y0 x1 y1)"
                )
            for k in range(0, len(run), 4):
                out.append(self._bins_to_box(run[k : k + 4], original_size, patch_size, max_image_size))
            run = []
        return out

    # -- image codes ------------------------------------------------------------------------------------------

    def encode_codes(self, codes: Any, grid_size: GridSize | None = None) -> list[int]:
        """A code grid (``[rows, cols]`` or flat, raster order) → ``<code_c>`` ids.

        Raises:
            TokenizationError: If a code is out of range or the grid does not match ``grid_size``.
        """
        return codes_to_ids(codes, self.vocab, grid_size)

    def decode_codes(self, ids: Sequence[int] | torch.Tensor, grid_size: GridSize | None = None) -> torch.Tensor:
        """``<code_c>`` ids (bos/eos/pad ignored) → LongTensor of codes, ``[rows, cols]`` if ``grid_size``.

        Raises:
            TokenizationError: If an id is not a code token or the count does not fill the grid.
        """
        return ids_to_codes(torch.tensor(self._strip(ids), dtype=torch.long), self.vocab, grid_size)


def tiny_tokenizer(num_codes: int = 64, num_bins: int = 100) -> OFATokenizer:
    """Shortcut for :meth:`OFATokenizer.from_test_assets`."""
    return OFATokenizer.from_test_assets(num_codes=num_codes, num_bins=num_bins)
