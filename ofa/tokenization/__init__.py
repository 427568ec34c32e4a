"""Tokenization for OFA: GPT-2 byte-level BPE, the unified vocabulary, boxes and image codes.

* :class:`UnifiedVocab` owns every token-id range (specials, text, ``<mask>``, ``<code_k>``, ``<bin_k>``).
* :class:`ByteLevelBPE` / :func:`train_bpe`: GPT-2 BPE encoding, decoding, loading and training.
* :mod:`~ofa.tokenization.boxes`: pure box ↔ bin quantisation.
* :mod:`~ofa.tokenization.image_codes`: VQGAN code grids ↔ ids.
* :class:`OFATokenizer`: everything above behind one object.
"""

from __future__ import annotations

from ofa.tokenization.boxes import (
    bins_to_box,
    box_to_bins,
    dequantize_box,
    dequantize_coords,
    quantize_box,
    quantize_coords,
    resize_ratios,
)
from ofa.tokenization.bpe import ByteLevelBPE, bytes_to_unicode, train_bpe
from ofa.tokenization.image_codes import codes_to_ids, grid_shape, ids_to_codes
from ofa.tokenization.tokenizer import LITERAL_TOKEN_PATTERN, OFATokenizer, tiny_tokenizer
from ofa.tokenization.vocab import MASK_SYMBOL, SPECIAL_SYMBOLS, TokenKind, UnifiedVocab

__all__ = [
    "OFATokenizer",
    "tiny_tokenizer",
    "UnifiedVocab",
    "TokenKind",
    "SPECIAL_SYMBOLS",
    "MASK_SYMBOL",
    "ByteLevelBPE",
    "train_bpe",
    "bytes_to_unicode",
    "quantize_coords",
    "dequantize_coords",
    "quantize_box",
    "dequantize_box",
    "box_to_bins",
    "bins_to_box",
    "resize_ratios",
    "codes_to_ids",
    "ids_to_codes",
    "grid_shape",
    "LITERAL_TOKEN_PATTERN",
]
