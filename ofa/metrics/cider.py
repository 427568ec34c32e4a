"""CIDEr-D (Vedantam et al., arXiv:1411.5726) as computed by the COCO caption toolkit, vectorised with numpy.

The formula is the one of ``pycocoevalcap.cider.Cider`` (which, despite its name, is CIDEr-D):

* each sentence is split on whitespace and turned into counts of its 1..n-grams;
* an n-gram g with term frequency tf gets the weight ``tf * (log(N) - log(max(1, df(g))))``, where ``df(g)`` is the
  number of documents (images) whose references contain g and N the number of documents;
* for a candidate c and one reference r, per order k:
  ``s_k = sum_g min(w_c(g), w_r(g)) * w_r(g) / (|w_c^k| * |w_r^k|)`` (the division is skipped when a norm is 0),
  times the Gaussian length penalty ``exp(-(l_c - l_r)^2 / (2 sigma^2))``;
* the score of c is ``10 * mean_k(sum_r s_k) / len(refs)``; the corpus score is the mean over candidates.

The length ``l`` in the penalty is the number of bigrams of the sentence (``max(words - 1, 0)``; always 0 when
``n == 1``), exactly as in the reference code; the difference of two such lengths equals the difference in words
unless one sentence is empty.

Every n-gram is identified by a node of a prefix tree (parent n-gram id, last word id), so that looking up document
frequencies, counting and matching n-grams are sorted-array operations instead of per-n-gram Python work. The
tree of a :class:`DocumentFrequency` holds every n-gram it counts; n-grams it has never seen get fresh ids per call.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence, Union

import numpy as np

from ofa.errors import CheckpointError, ConfigError, DataError

__all__ = ["DocumentFrequency", "CiderDScorer", "cider_d"]

# Node keys are parent_id * _RADIX + word_id; both stay below 2**31 so keys fit in int64.
_RADIX = 1 << 31
_FORMAT = "ofa.cider_df.v1"

PathType = Union[str, "PathLike[str]"]


@dataclass(frozen=True)
class _Indexed:
    """The n-grams of a set of unique sentences, as sorted sparse rows (sentence, node) -> weight inputs."""

    entry_sent: np.ndarray  # [e] int64, sorted by (sentence, node)
    entry_node: np.ndarray  # [e] int64
    entry_order: np.ndarray  # [e] int64, 0-based n-gram order
    entry_tf: np.ndarray  # [e] float64 term frequency
    sent_start: np.ndarray  # [s + 1] int64, entries of sentence i are [sent_start[i], sent_start[i + 1])
    penalty_len: np.ndarray  # [s] float64, length used by the Gaussian penalty
    new_keys: np.ndarray  # [m] int64, keys (parent * radix + word) of the nodes first seen in this call
    new_words: list[str]  # words first seen in this call, ids len(vocab) + i
    num_nodes: int  # ids in [1, num_nodes] are in use after this call


class DocumentFrequency:
    """Document frequencies of 1..max_n-grams over a corpus of documents (one document = one image's references).

    Build one with :meth:`from_references` (or :meth:`from_counts` for counts computed elsewhere, e.g. the
    ``document_frequency`` dict and ``ref_len`` of OFA's cached CIDEr pickle), then reuse it for many calls.

    Args:
        words: the vocabulary; word ``i`` has id ``i``.
        parents: [k] node id of each node's prefix (0 = the empty prefix); node ``i`` has id ``i + 1``.
        last_words: [k] word id of each node's last word.
        counts: [k] document frequency of each node's n-gram (0 for prefixes that were only added to close the tree).
        num_documents: number of documents the counts come from (``N`` in ``log(N)``).
        max_n: largest n-gram order counted.

    Raises:
        ConfigError: if the arrays disagree in length, ``num_documents`` is not positive or ``max_n`` < 1.
    """

    def __init__(self, words: Sequence[str], parents: np.ndarray, last_words: np.ndarray, counts: np.ndarray, *,
                 num_documents: float, max_n: int) -> None:
        parents = np.asarray(parents, dtype=np.int64)
        last_words = np.asarray(last_words, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.float64)
        if not (parents.shape == last_words.shape == counts.shape) or parents.ndim != 1:
            raise ConfigError(f"parents {parents.shape}, last_words {last_words.shape} and counts {counts.shape} "
                              "must be 1-d arrays of one length")
        if not num_documents > 0:
            raise ConfigError(f"num_documents ({num_documents}) must be > 0")
        if max_n < 1:
            raise ConfigError(f"max_n ({max_n}) must be >= 1")
        num = parents.shape[0]
        if num and (parents.min() < 0 or np.any(parents > np.arange(num)) or last_words.min() < 0
                    or last_words.max() >= len(words)):
            raise ConfigError("parents must point at earlier nodes and last_words into words")
        self.words = list(words)
        self.word_ids = {w: i for i, w in enumerate(self.words)}
        if len(self.word_ids) != len(self.words):
            raise ConfigError("words must be unique")
        self.parents = parents
        self.last_words = last_words
        self.counts = counts
        self.num_documents = float(num_documents)
        self.max_n = int(max_n)
        keys = parents * _RADIX + last_words
        order = np.argsort(keys)
        self._sorted_keys = keys[order]
        self._sorted_ids = order.astype(np.int64) + 1
        if num > 1 and np.any(self._sorted_keys[1:] == self._sorted_keys[:-1]):
            raise ConfigError("the same n-gram appears twice in the document frequency table")
        self._log_df = np.log(np.maximum(counts, 1.0))

    def __len__(self) -> int:
        """Number of n-grams in the table."""
        return int(self.parents.shape[0])

    @property
    def log_num_documents(self) -> float:
        """``log(N)``, the ``ref_len`` term of the reference implementation."""
        return math.log(self.num_documents)

    @classmethod
    def empty(cls, *, max_n: int = 4) -> DocumentFrequency:
        """A table with no n-grams (``num_documents`` 1); used internally before counting a corpus."""
        zeros = np.zeros(0, dtype=np.int64)
        return cls([], zeros, zeros, zeros.astype(np.float64), num_documents=1, max_n=max_n)

    @classmethod
    def from_references(cls, references: Mapping[Hashable, Sequence[str]] | Iterable[Sequence[str]], *,
                        max_n: int = 4) -> DocumentFrequency:
        """Count, for every 1..max_n-gram, the documents whose references contain it.

        Args:
            references: one list of (tokenised, space-separated) reference sentences per document, as a
                mapping ``id -> refs`` or an iterable of lists.
            max_n: largest n-gram order to count.

        Returns:
            The table, with ``num_documents`` = number of documents.

        Raises:
            DataError: if there are no documents or a document has no reference.
        """
        groups = list(references.values()) if isinstance(references, Mapping) else list(references)
        if not groups:
            raise DataError("references is empty; need at least one document to count n-grams")
        for i, refs in enumerate(groups):
            _check_sentences(refs, f"references[{i}]")
            if len(refs) == 0:
                raise DataError(f"references[{i}] is an empty list; every document needs at least one reference")
        base = cls.empty(max_n=max_n)
        sentences, groups_idx = _dedupe_groups(groups)
        indexed = base._index(sentences, max_n)
        df = _document_counts(indexed, groups_idx)
        keys = indexed.new_keys
        return cls(indexed.new_words, keys // _RADIX, keys % _RADIX, df[1:], num_documents=len(groups),
                   max_n=max_n)

    @classmethod
    def from_counts(cls, counts: Mapping[tuple[str, ...], float], num_documents: float) -> DocumentFrequency:
        """Build a table from ``{ngram_tuple: document_count}`` (e.g. OFA's cached ``document_frequency`` dict).

        Args:
            counts: document frequency per n-gram, n-grams as tuples of words.
            num_documents: number of documents (OFA's pickle calls it ``ref_len``; it is *not* yet logged).

        Returns:
            The table; missing prefixes of listed n-grams are added with count 0.

        Raises:
            ConfigError: on an empty n-gram, a non-string word or a negative count.
        """
        word_ids: dict[str, int] = {}
        node_ids: dict[tuple[str, ...], int] = {}
        parents: list[int] = []
        last: list[int] = []
        values: list[float] = []
        max_n = 1

        def node(gram: tuple[str, ...]) -> int:
            found = node_ids.get(gram)
            if found is not None:
                return found
            parent = node(gram[:-1]) if len(gram) > 1 else 0
            word = gram[-1]
            if not isinstance(word, str):
                raise ConfigError(f"n-gram {gram!r} holds a non-string word {word!r}")
            parents.append(parent)
            last.append(word_ids.setdefault(word, len(word_ids)))
            values.append(0.0)
            node_ids[gram] = len(parents)
            return len(parents)

        for gram in sorted(counts, key=len):
            if not isinstance(gram, tuple) or not gram:
                raise ConfigError(f"n-gram keys must be non-empty tuples of words, got {gram!r}")
            count = float(counts[gram])
            if not count >= 0:
                raise ConfigError(f"document frequency of {gram!r} is {count}; must be >= 0")
            values[node(gram) - 1] = count
            max_n = max(max_n, len(gram))
        return cls(list(word_ids), np.array(parents, dtype=np.int64), np.array(last, dtype=np.int64),
                   np.array(values, dtype=np.float64), num_documents=num_documents, max_n=max_n)

    def get(self, ngram: Sequence[str]) -> float:
        """Document frequency of one n-gram (0 if absent)."""
        parent = 0
        for word in ngram:
            word_id = self.word_ids.get(word)
            if word_id is None:
                return 0.0
            found = self._lookup(np.array([parent * _RADIX + word_id], dtype=np.int64))[0]
            if found < 0:
                return 0.0
            parent = int(found)
        return float(self.counts[parent - 1]) if parent else 0.0

    def to_counts(self) -> dict[tuple[str, ...], float]:
        """The table as ``{ngram_tuple: count}`` (n-grams with count 0 left out)."""
        grams: list[tuple[str, ...]] = []
        for parent, word in zip(self.parents.tolist(), self.last_words.tolist()):
            grams.append((grams[parent - 1] if parent else ()) + (self.words[word],))
        return {g: float(c) for g, c in zip(grams, self.counts.tolist()) if c > 0}

    def save(self, path: PathType) -> None:
        """Write the table to ``path``: JSON when it ends in ``.json``, otherwise a ``torch.save`` dict of tensors.

        Neither format needs pickle to load (:meth:`load` reads torch files with ``weights_only=True``).
        """
        path = Path(path)
        payload: dict[str, Any] = {"format": _FORMAT, "num_documents": self.num_documents, "max_n": self.max_n,
                                   "words": self.words}
        if path.suffix == ".json":
            payload.update(parents=self.parents.tolist(), last_words=self.last_words.tolist(),
                           counts=self.counts.tolist())
            path.write_text(json.dumps(payload), encoding="utf-8")
            return
        # import cost: the metrics load without torch
        import torch

        payload.update(parents=torch.from_numpy(self.parents), last_words=torch.from_numpy(self.last_words),
                       counts=torch.from_numpy(self.counts))
        torch.save(payload, path)

    @classmethod
    def load(cls, path: PathType) -> DocumentFrequency:
        """Read a table written by :meth:`save`.

        Raises:
            CheckpointError: if the file is not such a table.
        """
        path = Path(path)
        if path.suffix == ".json":
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise CheckpointError(f"{path} is not valid JSON: {err}") from err
        else:
            # import cost: the metrics load without torch
            import torch

            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises several unrelated types for foreign files
                raise CheckpointError(f"{path} is not a document-frequency file saved by torch: {err}") from err
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise CheckpointError(f"{path} is not a document-frequency table (expected format {_FORMAT!r})")
        arrays = {k: np.asarray(payload[k].numpy() if hasattr(payload[k], "numpy") else payload[k])
                  for k in ("parents", "last_words", "counts")}
        return cls(payload["words"], arrays["parents"].astype(np.int64), arrays["last_words"].astype(np.int64),
                   arrays["counts"].astype(np.float64), num_documents=payload["num_documents"],
                   max_n=payload["max_n"])

    # --- internals -------------------------------------------------------------------------------------------

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        """Node ids of ``keys`` (parent * radix + word), -1 where the table does not hold them."""
        if self._sorted_keys.size == 0:
            return np.full(keys.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_keys, keys), self._sorted_keys.size - 1)
        return np.where(self._sorted_keys[pos] == keys, self._sorted_ids[pos], -1)

    def _index(self, sentences: Sequence[str], n: int) -> _Indexed:
        """Split, id and count the 1..n-grams of unique ``sentences`` against this table."""
        vocab = self.word_ids
        new_words: dict[str, int] = {}
        base = len(self.words)
        token_lists = [s.split() for s in sentences]
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        get = vocab.get
        flat = [get(w, -1) for tokens in token_lists for w in tokens]
        if -1 in flat:
            tokens_flat = [w for tokens in token_lists for w in tokens]
            flat = [new_words.setdefault(w, base + len(new_words)) if i < 0 else i
                    for i, w in zip(flat, tokens_flat)]
        if base + len(new_words) >= _RADIX:
            raise ConfigError(f"vocabulary of {base + len(new_words)} words exceeds the supported {_RADIX - 1}")
        num_sent = len(sentences)
        width = int(lengths.max()) if num_sent else 0
        words = np.full((num_sent, width), -1, dtype=np.int64)  # [s, l]
        if flat:
            rows = np.repeat(np.arange(num_sent), lengths)
            cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            words[rows, cols] = np.asarray(flat, dtype=np.int64)

        next_id = len(self) + 1
        new_keys: list[np.ndarray] = []
        sents: list[np.ndarray] = []
        nodes: list[np.ndarray] = []
        orders: list[np.ndarray] = []
        prev = np.zeros((num_sent, width), dtype=np.int64)  # node of the (k-1)-gram starting at each position
        for k in range(1, n + 1):
            span = width - k + 1
            if span <= 0:
                break
            valid = np.arange(span)[None, :] + k <= lengths[:, None]  # [s, span]
            parent = prev[:, :span][valid]
            last = words[:, k - 1:k - 1 + span][valid]
            # Look up each distinct key once, in sorted order (far fewer cache misses on a large table).
            uniq, inverse = np.unique(parent * _RADIX + last, return_inverse=True)
            uniq_ids = self._lookup(uniq)
            unknown = uniq_ids < 0
            num_unknown = int(unknown.sum())
            if num_unknown:
                uniq_ids[unknown] = np.arange(next_id, next_id + num_unknown)
                next_id += num_unknown
                new_keys.append(uniq[unknown])
            ids = uniq_ids[inverse]
            cur = np.zeros((num_sent, span), dtype=np.int64)
            cur[valid] = ids
            prev = cur
            sents.append(np.nonzero(valid)[0])
            nodes.append(ids)
            orders.append(np.full(ids.shape, k - 1, dtype=np.int64))

        if nodes:
            sent_all = np.concatenate(sents)
            node_all = np.concatenate(nodes)
            order_all = np.concatenate(orders)
        else:
            sent_all = node_all = order_all = np.zeros(0, dtype=np.int64)
        combined = sent_all * next_id + node_all
        uniq, first, tf = np.unique(combined, return_index=True, return_counts=True)
        entry_sent = uniq // next_id
        sent_start = np.searchsorted(entry_sent, np.arange(num_sent + 1))
        penalty_len = np.maximum(lengths - 1, 0).astype(np.float64) if n >= 2 else np.zeros(num_sent)
        return _Indexed(entry_sent=entry_sent, entry_node=uniq % next_id, entry_order=order_all[first],
                        entry_tf=tf.astype(np.float64), sent_start=sent_start, penalty_len=penalty_len,
                        new_keys=np.concatenate(new_keys) if new_keys else np.zeros(0, dtype=np.int64),
                        new_words=list(new_words), num_nodes=next_id - 1)

    def _log_df_of(self, nodes: np.ndarray) -> np.ndarray:
        """``log(max(1, df))`` per node id; ids beyond the table (unseen n-grams) get 0."""
        known = nodes <= len(self)
        out = np.zeros(nodes.shape, dtype=np.float64)
        out[known] = self._log_df[nodes[known] - 1]
        return out


class CiderDScorer:
    """CIDEr-D with fixed document frequencies, for scoring many candidate batches (e.g. the SCST reward).

    Example::

        scorer = CiderDScorer.from_references(train_refs)   # once: counts n-grams of the training corpus
        rewards = scorer.score(samples, refs_per_sample)     # per call: [num_samples] float64

    OFA's SCST reward (spec section 6.2) strips punctuation and a trailing "." from both sides and appends
    " <eos>" before scoring; do that to the strings passed here (and to the corpus) to reproduce it.

    Args:
        document_frequency: the n-gram document frequencies (and document count) to weight n-grams with.
        n: largest n-gram order (4 in CIDEr-D).
        sigma: standard deviation of the Gaussian length penalty (6 in CIDEr-D).

    Raises:
        ConfigError: if ``n`` < 1, ``n`` exceeds the orders counted in ``document_frequency``, or ``sigma`` <= 0.
    """

    def __init__(self, document_frequency: DocumentFrequency, *, n: int = 4, sigma: float = 6.0) -> None:
        _check_n_sigma(n, sigma)
        if n > document_frequency.max_n:
            raise ConfigError(f"n ({n}) exceeds the largest n-gram order ({document_frequency.max_n}) counted in "
                              "document_frequency")
        self.document_frequency = document_frequency
        self.n = n
        self.sigma = float(sigma)

    @classmethod
    def from_references(cls, references: Mapping[Hashable, Sequence[str]] | Iterable[Sequence[str]], *,
                        n: int = 4, sigma: float = 6.0) -> CiderDScorer:
        """Count document frequencies over ``references`` (one list of sentences per image) and wrap them."""
        _check_n_sigma(n, sigma)
        return cls(DocumentFrequency.from_references(references, max_n=n), n=n, sigma=sigma)

    def save(self, path: PathType) -> None:
        """Save the document frequencies (see :meth:`DocumentFrequency.save`); ``n``/``sigma`` are not stored."""
        self.document_frequency.save(path)

    @classmethod
    def load(cls, path: PathType, *, n: int = 4, sigma: float = 6.0) -> CiderDScorer:
        """Load document frequencies saved by :meth:`save`."""
        return cls(DocumentFrequency.load(path), n=n, sigma=sigma)

    def score(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
        """CIDEr-D of each candidate against its own references.

        Args:
            candidates: [c] tokenised, space-separated sentences.
            references: [c] the reference sentences of each candidate (the same list may repeat, e.g. for the
                5 samples of one image; identical sentences are processed once).

        Returns:
            [c] float64 scores (CIDEr-D scale: 1.0 here is 100 in papers).

        Raises:
            DataError: if the lengths differ, a candidate has no references or an entry is not a string.
        """
        if len(candidates) != len(references):
            raise DataError(f"{len(candidates)} candidates but {len(references)} reference lists")
        _check_sentences(candidates, "candidates")
        for i, refs in enumerate(references):
            _check_sentences(refs, f"references[{i}]")
            if len(refs) == 0:
                raise DataError(f"references[{i}] is an empty list; every candidate needs at least one reference")
        return _score(self.document_frequency, self.n, self.sigma, list(candidates), list(references), corpus_df=False)


def cider_d(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str],
            document_frequency: DocumentFrequency | None = None, *, n: int = 4,
            sigma: float = 6.0) -> tuple[float, dict[Hashable, float]]:
    """Corpus CIDEr-D, equal to ``pycocoevalcap.cider.Cider().compute_score`` on the same tokenised input.

    Args:
        references: ``id -> reference sentences`` (tokenised, space-separated). Only the ids in ``candidates``
            are used, as in COCOEvalCap evaluated on the result ids.
        candidates: ``id -> candidate sentence``; every id must be in ``references``.
        document_frequency: n-gram document frequencies to use; None counts them over the references of the
            scored ids (what the COCO toolkit does).
        n: largest n-gram order.
        sigma: standard deviation of the Gaussian length penalty.

    Returns:
        (mean score, ``id -> score``) in the order of ``candidates``.

    Raises:
        DataError: on no candidates, a candidate id missing from references, an empty reference list or a
            non-string sentence.
        ConfigError: on bad ``n``/``sigma`` or ``n`` above the orders counted in ``document_frequency``.
    """
    _check_n_sigma(n, sigma)
    if not candidates:
        raise DataError("candidates is empty; nothing to score")
    missing = [k for k in candidates if k not in references]
    if missing:
        raise DataError(f"candidate ids {missing[:5]!r} have no references ({len(missing)} missing)")
    ids = list(candidates)
    cands = [candidates[k] for k in ids]
    refs = [references[k] for k in ids]
    _check_sentences(cands, "candidates")
    for k, group in zip(ids, refs):
        _check_sentences(group, f"references[{k!r}]")
        if len(group) == 0:
            raise DataError(f"references[{k!r}] is an empty list; every candidate needs at least one reference")
    if document_frequency is None:
        scores = _score(DocumentFrequency.empty(max_n=n), n, sigma, cands, refs, corpus_df=True)
    else:
        if n > document_frequency.max_n:
            raise ConfigError(f"n ({n}) exceeds the largest n-gram order ({document_frequency.max_n}) counted in "
                              "document_frequency")
        scores = _score(document_frequency, n, sigma, cands, refs, corpus_df=False)
    return float(np.mean(scores)), {k: float(s) for k, s in zip(ids, scores)}


# --- shared machinery ----------------------------------------------------------------------------------------


def _check_n_sigma(n: int, sigma: float) -> None:
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"n ({n!r}) must be an int >= 1")
    if not sigma > 0:
        raise ConfigError(f"sigma ({sigma!r}) must be > 0")


def _check_sentences(sentences: Sequence[Any], what: str) -> None:
    if isinstance(sentences, str):
        raise DataError(f"{what} must be a list of sentences, got the string {sentences!r}")
    for s in sentences:
        if not isinstance(s, str):
            raise DataError(f"{what} holds {type(s).__name__} {s!r}; sentences must be str")


def _dedupe_groups(groups: Sequence[Sequence[str]]) -> tuple[list[str], list[list[int]]]:
    """Unique sentences and, per group, the indices of its sentences."""
    index: dict[str, int] = {}
    out = [[index.setdefault(s, len(index)) for s in group] for group in groups]
    return list(index), out


def _ragged_gather(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, index) for every ``index in range(starts[i], starts[i] + sizes[i])``, concatenated over i."""
    owner = np.repeat(np.arange(sizes.size), sizes)
    offsets = np.cumsum(sizes) - sizes
    index = np.arange(int(sizes.sum())) - np.repeat(offsets, sizes) + np.repeat(starts, sizes)
    return owner, index


def _document_counts(indexed: _Indexed, groups_idx: Sequence[Sequence[int]]) -> np.ndarray:
    """[num_nodes + 1] number of groups (documents) whose sentences contain each node."""
    doc_of_pair = np.repeat(np.arange(len(groups_idx)), [len(g) for g in groups_idx])
    sent_of_pair = np.fromiter((s for g in groups_idx for s in g), dtype=np.int64, count=doc_of_pair.size)
    starts = indexed.sent_start[sent_of_pair]
    sizes = indexed.sent_start[sent_of_pair + 1] - starts
    pair, entry = _ragged_gather(starts, sizes)
    width = indexed.num_nodes + 1
    doc_node = np.unique(doc_of_pair[pair] * width + indexed.entry_node[entry])
    return np.bincount(doc_node % width, minlength=width).astype(np.float64)


def _score(table: DocumentFrequency, n: int, sigma: float, candidates: list[str],
           references: list[Sequence[str]], corpus_df: bool) -> np.ndarray:
    """Per-candidate CIDEr-D; with ``corpus_df`` the document frequencies are counted over ``references``."""
    num_cand = len(candidates)
    sentences, groups = _dedupe_groups([[c] for c in candidates] + [list(r) for r in references])
    cand_sent = np.array([g[0] for g in groups[:num_cand]], dtype=np.int64)
    ref_groups = groups[num_cand:]
    indexed = table._index(sentences, n)

    if corpus_df:
        df = _document_counts(indexed, ref_groups)
        log_df = np.log(np.maximum(df, 1.0))[indexed.entry_node]
        log_n = math.log(len(ref_groups))
    else:
        log_df = table._log_df_of(indexed.entry_node)
        log_n = table.log_num_documents
    weight = indexed.entry_tf * (log_n - log_df)  # [e]

    num_sent = len(sentences)
    norm = np.sqrt(np.bincount(indexed.entry_sent * n + indexed.entry_order, weights=weight * weight,
                               minlength=num_sent * n).astype(np.float64)).reshape(num_sent, n)  # [s, n]

    # One row per (candidate, reference) pair.
    pair_cand = np.repeat(np.arange(num_cand), [len(g) for g in ref_groups])
    pair_ref = np.fromiter((s for g in ref_groups for s in g), dtype=np.int64, count=pair_cand.size)
    pair_c_sent = cand_sent[pair_cand]
    starts = indexed.sent_start[pair_c_sent]
    pair, entry = _ragged_gather(starts, indexed.sent_start[pair_c_sent + 1] - starts)
    # Only n-grams that occur in some reference can match; dropping the rest first shrinks the join below.
    in_refs = np.zeros(indexed.num_nodes + 1, dtype=bool)
    ref_sents = np.unique(pair_ref)
    ref_pair, ref_entry = _ragged_gather(indexed.sent_start[ref_sents],
                                         indexed.sent_start[ref_sents + 1] - indexed.sent_start[ref_sents])
    in_refs[indexed.entry_node[ref_entry]] = True
    keep = in_refs[indexed.entry_node[entry]]
    pair, entry = pair[keep], entry[keep]

    # Weight of each candidate n-gram in the paired reference (0 if absent), by binary search on (sent, node).
    width = indexed.num_nodes + 1
    entry_key = indexed.entry_sent * width + indexed.entry_node  # sorted
    query = pair_ref[pair] * width + indexed.entry_node[entry]
    pos = np.minimum(np.searchsorted(entry_key, query), max(entry_key.size - 1, 0))
    found = entry_key[pos] == query if entry_key.size else np.zeros(query.shape, dtype=bool)
    w_ref = np.where(found, weight[pos] if entry_key.size else 0.0, 0.0)
    w_cand = weight[entry]
    clipped = np.minimum(w_cand, w_ref) * w_ref
    num_pairs = pair_cand.size
    val = np.bincount(pair * n + indexed.entry_order[entry], weights=clipped,
                      minlength=num_pairs * n).astype(np.float64).reshape(num_pairs, n)  # [p, n]

    norm_c = norm[pair_c_sent]
    norm_r = norm[pair_ref]
    divide = (norm_c != 0) & (norm_r != 0)
    val = np.divide(val, norm_c * norm_r, out=val, where=divide)
    delta = indexed.penalty_len[pair_c_sent] - indexed.penalty_len[pair_ref]
    val *= np.exp(-(delta * delta) / (2.0 * sigma * sigma))[:, None]

    per_pair = val.mean(axis=1)
    total = np.bincount(pair_cand, weights=per_pair, minlength=num_cand)
    num_refs = np.array([len(g) for g in ref_groups], dtype=np.float64)
    return total / num_refs * 10.0
