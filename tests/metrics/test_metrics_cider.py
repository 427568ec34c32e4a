"""Our vectorised CIDEr-D against pycocoevalcap's Cider, a plain formula reference, and the SCST scorer."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ofa.errors import CheckpointError, ConfigError, DataError
from ofa.metrics import CiderDScorer, DocumentFrequency, cider_d, simple_tokenize

VOCAB = [f"w{i}" for i in range(30)]


def pycoco_cider(refs: dict[Hashable, list[str]], cands: dict[Hashable, str],
                 sigma: float = 6.0) -> tuple[float, list[float]]:
    from pycocoevalcap.cider.cider import Cider

    score, scores = Cider(sigma=sigma).compute_score(refs, {k: [v] for k, v in cands.items()})
    return float(score), [float(s) for s in scores]


def formula_cider(cand: str, refs: Sequence[str], df: dict[tuple[str, ...], float], num_docs: float,
                  n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D of one candidate, written straight from the definition, one n-gram at a time."""

    def vector(sentence: str) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
        words = sentence.split()
        grams = Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
        for g, tf in grams.items():
            vec[len(g) - 1][g] = tf * (math.log(num_docs) - math.log(max(1.0, df.get(g, 0.0))))
        norms = [math.sqrt(sum(v * v for v in vec[k].values())) for k in range(n)]
        length = max(len(words) - 1, 0) if n >= 2 else 0  # bigram count, as in the reference code
        return vec, norms, length

    vc, nc, lc = vector(cand)
    total = 0.0
    for ref in refs:
        vr, nr, lr = vector(ref)
        per_order = []
        for k in range(n):
            val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vc[k].items())
            if nc[k] != 0 and nr[k] != 0:
                val /= nc[k] * nr[k]
            per_order.append(val * math.exp(-((lc - lr) ** 2) / (2 * sigma ** 2)))
        total += sum(per_order) / n
    return 10.0 * total / len(refs)


def tokenised(coco_refs: dict[int, list[str]], coco_cands: dict[int, str]) -> tuple[dict, dict]:
    refs = {k: [simple_tokenize(r) for r in coco_refs[k]] for k in coco_cands}
    cands = {k: simple_tokenize(c) for k, c in coco_cands.items()}
    return refs, cands


def test_equals_pycocoevalcap_on_the_caption_set(coco_refs: dict[int, list[str]],
                                                 coco_cands: dict[int, str]) -> None:
    refs, cands = tokenised(coco_refs, coco_cands)
    expected, expected_per_id = pycoco_cider(refs, cands)
    score, per_id = cider_d(refs, cands)
    assert list(per_id) == list(cands)
    assert score == pytest.approx(expected, abs=1e-6)
    assert list(per_id.values()) == pytest.approx(expected_per_id, abs=1e-6)
    # Extra reference-only ids are ignored, as in COCOEvalCap run on the result ids.
    assert cider_d({**refs, 99: ["some other image"]}, cands) == (score, per_id)


def test_sigma_is_honoured(coco_refs: dict[int, list[str]], coco_cands: dict[int, str]) -> None:
    refs, cands = tokenised(coco_refs, coco_cands)
    score, _ = cider_d(refs, cands, sigma=2.0)
    assert score == pytest.approx(pycoco_cider(refs, cands, sigma=2.0)[0], abs=1e-6)
    assert score != pytest.approx(cider_d(refs, cands)[0], abs=1e-3)


candidate = st.lists(st.sampled_from(VOCAB), min_size=0, max_size=12).map(" ".join)
# pycocoevalcap crashes when no reference has any n-gram, so references have at least one word.
reference = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=12).map(" ".join)
corpus = st.lists(st.tuples(candidate, st.lists(reference, min_size=1, max_size=5)), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(corpus)
def test_equals_pycocoevalcap_on_random_sentences(data: list[tuple[str, list[str]]]) -> None:
    cands = {i: c for i, (c, _) in enumerate(data)}
    refs = {i: r for i, (_, r) in enumerate(data)}
    expected, expected_per_id = pycoco_cider(refs, cands)
    score, per_id = cider_d(refs, cands)
    assert score == pytest.approx(expected, abs=1e-6)
    assert list(per_id.values()) == pytest.approx(expected_per_id, abs=1e-6)


def _random_corpus(seed: int, num_images: int, lo: int = 3, hi: int = 12) -> list[list[str]]:
    rng = random.Random(seed)
    return [[" ".join(rng.choice(VOCAB) for _ in range(rng.randint(lo, hi))) for _ in range(rng.randint(1, 5))]
            for _ in range(num_images)]


def test_scorer_with_training_frequencies_matches_cider_d_and_the_formula() -> None:
    train = _random_corpus(0, 40)
    df = DocumentFrequency.from_references(train)
    scorer = CiderDScorer(df)
    refs = {i: r for i, r in enumerate(_random_corpus(1, 8))}
    rng = random.Random(2)
    cands = {i: " ".join(rng.choice(VOCAB + ["unseen"]) for _ in range(rng.randint(0, 10))) for i in refs}
    _, per_id = cider_d(refs, cands, df)
    batch = scorer.score(list(cands.values()), list(refs.values()))
    assert isinstance(batch, np.ndarray) and batch.dtype == np.float64 and batch.shape == (len(cands),)
    assert batch.tolist() == pytest.approx(list(per_id.values()), abs=1e-9)
    counts = df.to_counts()
    expected = [formula_cider(cands[i], refs[i], counts, len(train)) for i in refs]
    assert batch.tolist() == pytest.approx(expected, abs=1e-9)


def test_corpus_frequencies_equal_explicit_ones(coco_refs: dict[int, list[str]],
                                                coco_cands: dict[int, str]) -> None:
    refs, cands = tokenised(coco_refs, coco_cands)
    df = DocumentFrequency.from_references(refs)
    assert df.num_documents == len(refs)
    score, per_id = cider_d(refs, cands, df)
    expected, expected_per_id = cider_d(refs, cands)
    assert score == pytest.approx(expected, abs=1e-12)
    assert list(per_id.values()) == pytest.approx(list(expected_per_id.values()), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_other_orders_match_the_formula(n: int) -> None:
    refs = _random_corpus(3, 6)
    cands = [" ".join(r[0].split()[::-1]) for r in refs]
    df = DocumentFrequency.from_references(refs, max_n=n)
    got = CiderDScorer(df, n=n).score(cands, refs)
    counts = df.to_counts()
    assert max(len(g) for g in counts) == n
    assert got.tolist() == pytest.approx([formula_cider(c, r, counts, len(refs), n=n) for c, r in zip(cands, refs)],
                                         abs=1e-9)


def test_scst_batch_with_repeated_references_and_candidates() -> None:
    train = _random_corpus(4, 30)
    scorer = CiderDScorer.from_references(train)
    refs = _random_corpus(5, 3)
    rng = random.Random(6)
    samples = [" ".join(rng.choice(VOCAB) for _ in range(6)) for _ in range(3 * 5)]
    samples[1] = samples[0]  # duplicate beams happen
    per_sample_refs = [refs[i // 5] for i in range(15)]
    got = scorer.score(samples, per_sample_refs)
    one_by_one = [scorer.score([s], [r])[0] for s, r in zip(samples, per_sample_refs)]
    assert got.tolist() == pytest.approx(one_by_one, abs=1e-12)
    assert got[0] == got[1]
    perfect = scorer.score([refs[0][0]], [[refs[0][0]]])[0]
    assert perfect > 0


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    scorer = CiderDScorer.from_references(_random_corpus(7, 20))
    path = tmp_path / f"df{suffix}"
    scorer.save(path)
    loaded = CiderDScorer.load(path)
    assert loaded.document_frequency.to_counts() == scorer.document_frequency.to_counts()
    assert loaded.document_frequency.num_documents == 20
    refs = _random_corpus(8, 4)
    cands = [r[-1] + " w1" for r in refs]
    assert loaded.score(cands, refs).tolist() == scorer.score(cands, refs).tolist()


def test_load_rejects_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(CheckpointError, match="not a document-frequency table"):
        DocumentFrequency.load(path)
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError):
        DocumentFrequency.load(bad)


def test_from_counts_matches_from_references_and_fills_prefixes() -> None:
    train = _random_corpus(9, 15)
    df = DocumentFrequency.from_references(train)
    rebuilt = DocumentFrequency.from_counts(df.to_counts(), num_documents=df.num_documents)
    refs = _random_corpus(10, 3)
    cands = [r[0] for r in refs]
    assert CiderDScorer(rebuilt).score(cands, refs).tolist() == pytest.approx(
        CiderDScorer(df).score(cands, refs).tolist(), abs=1e-12)
    partial = DocumentFrequency.from_counts({("a", "b", "c"): 2.0, ("b",): 1.0}, num_documents=3)
    assert partial.max_n == 3 and len(partial) == 4  # a, a b (added with count 0), a b c, b
    assert partial.get(("a", "b", "c")) == 2.0 and partial.get(("a", "b")) == 0.0 and partial.get(("x",)) == 0.0


def test_document_frequency_counts_documents_not_occurrences() -> None:
    df = DocumentFrequency.from_references({"x": ["a a b", "a c"], "y": ["b a"]})
    assert df.num_documents == 2
    assert df.get(("a",)) == 2 and df.get(("b",)) == 2 and df.get(("c",)) == 1
    assert df.get(("a", "a")) == 1 and df.get(("b", "a")) == 1 and df.get(("a", "a", "b")) == 1


def test_scores_320_candidates_quickly() -> None:
    rng = random.Random(11)
    words = [f"v{i}" for i in range(2000)]

    def sent() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(8, 14)))

    scorer = CiderDScorer.from_references([[sent() for _ in range(5)] for _ in range(2000)])
    refs = [[sent() for _ in range(5)] for _ in range(64)]
    cands = [sent() for _ in range(320)]
    per_cand = [refs[i // 5] for i in range(320)]
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        scorer.score(cands, per_cand)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.05  # ~3-5 ms on one core; loose so a busy CI machine passes


def test_bad_inputs_raise() -> None:
    with pytest.raises(DataError, match="no references"):
        cider_d({1: ["a b"]}, {2: "a b"})
    with pytest.raises(DataError, match="empty list"):
        cider_d({1: []}, {1: "a b"})
    with pytest.raises(DataError, match="nothing to score"):
        cider_d({1: ["a b"]}, {})
    with pytest.raises(DataError, match="must be str"):
        cider_d({1: ["a b", 3]}, {1: "a b"})  # type: ignore[list-item]
    scorer = CiderDScorer.from_references([["a b"]])
    with pytest.raises(DataError, match="2 candidates but 1"):
        scorer.score(["a", "b"], [["a"]])
    with pytest.raises(DataError, match="string"):
        scorer.score(["a"], ["a b"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="n \\(4\\) exceeds"):
        CiderDScorer(DocumentFrequency.from_references([["a b"]], max_n=2))
    with pytest.raises(ConfigError, match="sigma"):
        cider_d({1: ["a"]}, {1: "a"}, sigma=0.0)
    with pytest.raises(ConfigError, match="n \\(0\\)"):
        cider_d({1: ["a"]}, {1: "a"}, n=0)
    with pytest.raises(DataError, match="empty"):
        DocumentFrequency.from_references([])


def test_empty_sentences_match_pycocoevalcap() -> None:
    refs = {1: ["", "w1 w2 w3"], 2: ["w2"], 3: ["w1 w2", "w3 w3 w3 w4"]}
    cands = {1: "w1 w2", 2: "", 3: "w3"}
    expected, expected_per_id = pycoco_cider(refs, cands)
    score, per_id = cider_d(refs, cands)
    assert score == pytest.approx(expected, abs=1e-6)
    assert list(per_id.values()) == pytest.approx(expected_per_id, abs=1e-6)
    assert per_id[2] == 0.0
