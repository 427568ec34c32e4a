"""caption_scores against pycocoevalcap's scorers called directly, the Java-free path, and input checks."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from typing import Any

import pytest

from ofa.errors import ConfigError, DataError
from ofa.metrics import caption_scores, java_available, simple_tokenize

HAS_JAVA = shutil.which("java") is not None
requires_java = pytest.mark.skipif(not HAS_JAVA, reason="needs Java (PTBTokenizer / METEOR)")
NO_METEOR = ("BLEU", "ROUGE_L", "CIDEr")


@pytest.fixture(scope="module")
def direct(coco_refs: dict[int, list[str]], coco_cands: dict[int, str]) -> dict[str, Any]:
    """What COCOEvalCap computes on the candidate ids: PTB-tokenise gts and res, then each scorer.

    METEOR is left out here: its Java start-up takes seconds, so the test below runs it once, through
    caption_scores, and checks that it received exactly these tokenised strings.
    """
    if not HAS_JAVA:
        pytest.skip("needs Java")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = list(coco_cands)
    gts = PTBTokenizer().tokenize({i: [{"caption": c} for c in coco_refs[i]] for i in ids})
    res = PTBTokenizer().tokenize({i: [{"caption": coco_cands[i]}] for i in ids})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{i + 1}": b for i, b in enumerate(bleu)}
    scores["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    return {"scores": scores, "gts": gts, "res": res}


@requires_java
def test_ptb_path_equals_pycocoevalcap_exactly(direct: dict[str, Any], coco_refs: dict[int, list[str]],
                                               coco_cands: dict[int, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from pycocoevalcap.meteor.meteor import Meteor

    seen: list[tuple[Any, Any, float]] = []
    real = Meteor.compute_score

    def spy(self: Any, gts: Any, res: Any) -> Any:
        out = real(self, gts, res)
        seen.append((gts, res, out[0]))
        return out

    monkeypatch.setattr(Meteor, "compute_score", spy)
    ours = caption_scores(coco_refs, coco_cands, tokenizer="ptb")
    assert list(ours) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE_L", "CIDEr"]
    assert {k: v for k, v in ours.items() if k != "METEOR"} == direct["scores"]
    # METEOR: the real scorer ran once, on exactly COCOEvalCap's tokenised input (in the same order).
    (gts, res, meteor), = seen
    assert list(gts.values()) == list(direct["gts"].values())
    assert list(res.values()) == list(direct["res"].values())
    assert ours["METEOR"] == meteor
    assert all(isinstance(v, float) for v in ours.values())
    assert 0.5 < ours["CIDEr"] < 5.0 and 0.0 < ours["METEOR"] < 1.0  # sane magnitudes on this easy set


@requires_java
def test_auto_uses_ptb_when_java_is_present(direct: dict[str, Any], coco_refs: dict[int, list[str]],
                                            coco_cands: dict[int, str]) -> None:
    assert java_available()
    ours = caption_scores(coco_refs, coco_cands, tokenizer="auto", metrics=("BLEU", "CIDEr"))
    assert ours == {k: v for k, v in direct["scores"].items() if k != "ROUGE_L"}


@requires_java
def test_simple_tokenizer_agrees_with_ptb_on_the_caption_set(direct: dict[str, Any],
                                                            coco_refs: dict[int, list[str]],
                                                            coco_cands: dict[int, str]) -> None:
    for i, cand in coco_cands.items():
        assert simple_tokenize(cand) == direct["res"][i][0]
        assert [simple_tokenize(r) for r in coco_refs[i]] == direct["gts"][i]


def test_without_java_simple_path_skips_meteor(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                               coco_refs: dict[int, list[str]], coco_cands: dict[int, str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    assert not java_available()
    with caplog.at_level(logging.WARNING, logger="ofa.metrics.caption"):
        ours = caption_scores(coco_refs, coco_cands)
    assert set(ours) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE_L", "CIDEr"}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "simple" in messages and "METEOR skipped" in messages
    with pytest.raises(ConfigError, match="needs Java"):
        caption_scores(coco_refs, coco_cands, tokenizer="ptb")


def test_simple_path_equals_pycocoevalcap_on_simple_tokens(monkeypatch: pytest.MonkeyPatch,
                                                           coco_refs: dict[int, list[str]],
                                                           coco_cands: dict[int, str]) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    gts = {i: [simple_tokenize(r) for r in coco_refs[i]] for i in coco_cands}
    res = {i: [simple_tokenize(c)] for i, c in coco_cands.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"BLEU-{i + 1}": b for i, b in enumerate(bleu)}
    expected["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    assert caption_scores(coco_refs, coco_cands, tokenizer="simple", metrics=NO_METEOR) == expected


def test_reference_only_ids_are_ignored(coco_refs: dict[int, list[str]], coco_cands: dict[int, str]) -> None:
    trimmed = {k: coco_refs[k] for k in coco_cands}
    assert "6" not in trimmed and 6 in coco_refs
    assert caption_scores(coco_refs, coco_cands, tokenizer="simple", metrics=NO_METEOR) == \
        caption_scores(trimmed, coco_cands, tokenizer="simple", metrics=NO_METEOR)


def test_spice_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture, coco_refs: dict[int, list[str]],
                                         coco_cands: dict[int, str]) -> None:
    with caplog.at_level(logging.WARNING, logger="ofa.metrics.caption"):
        ours = caption_scores(coco_refs, coco_cands, tokenizer="simple", metrics=("cider", "SPICE"))
    assert list(ours) == ["CIDEr"]
    assert any("SPICE" in r.getMessage() for r in caplog.records)


def test_identical_candidates_score_high() -> None:
    refs = {"a": ["a cat on a mat", "the cat sits on the mat"], "b": ["a dog in the park", "a dog runs outside"]}
    cands = {"a": "a cat on a mat", "b": "a dog in the park"}
    scores = caption_scores(refs, cands, tokenizer="simple", metrics=("BLEU", "ROUGE_L"))
    assert scores["BLEU-1"] == pytest.approx(1.0, abs=1e-6) and scores["ROUGE_L"] > 0.8


@pytest.mark.parametrize(
    ("refs", "cands", "match"),
    [
        ({1: ["a cat"]}, {2: "a cat"}, "no references"),
        ({1: []}, {1: "a cat"}, "empty list"),
        ({1: "a cat"}, {1: "a cat"}, "list of str"),
        ({1: ["a cat"]}, {}, "nothing to score"),
        ({1: ["a cat"]}, {1: 3}, "must be a str"),
        ({1: ["a cat", None]}, {1: "a cat"}, "references must be str"),
    ],
)
def test_bad_inputs_raise(refs: Any, cands: Any, match: str) -> None:
    with pytest.raises(DataError, match=match):
        caption_scores(refs, cands, tokenizer="simple")


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError, match="BLEU-5"):
        caption_scores({1: ["a"]}, {1: "a"}, tokenizer="simple", metrics=("BLEU-5",))
    with pytest.raises(ConfigError, match="'nltk'"):
        caption_scores({1: ["a"]}, {1: "a"}, tokenizer="nltk")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="empty"):
        caption_scores({1: ["a"]}, {1: "a"}, tokenizer="simple", metrics=())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man's dog, running.", "a man 's dog running"),
        ("Don't do it!", "do n't do it"),
        ("The t-shirt is red; isn't it?", "the t-shirt is red is n't it"),
        ('He said "hi" to `me\'', "he said hi to me"),
        ("3.5 dogs, 1,000 cats at 10:30", "3.5 dogs 1,000 cats at 10:30"),
        ("A cat... sitting", "a cat sitting"),
        ("  spaces   here ", "spaces here"),
        ("we're they've I'll he'd I'm", "we 're they 've i 'll he 'd i 'm"),
        ("cats' toys", "cats toys"),
        ("c&d e+f 50%", "c & d e + f 50 %"),
        ("A (big) {red} [ball] - here -- there", "a -lrb- big -rrb- -lcb- red -rcb- -lsb- ball -rsb- here there"),
        ("CAN'T cannot o'clock", "ca n't can not o'clock"),
        ("it's 5 p.m.", "it 's 5 p.m."),
        ("", ""),
    ],
)
def test_simple_tokenize_cases(text: str, expected: str) -> None:
    # Expected values are what PTBTokenizer + COCOEvalCap's punctuation filter output for these inputs.
    assert simple_tokenize(text) == expected


def test_import_does_not_load_pycocoevalcap() -> None:
    code = "import sys, ofa.metrics; assert 'pycocoevalcap' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
