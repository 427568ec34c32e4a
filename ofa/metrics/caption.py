"""Caption metrics computed the way COCOEvalCap does (spec section 5.1), through the installed ``pycocoevalcap``.

COCOEvalCap lowercases and tokenises references and candidates with Stanford's PTBTokenizer (Java), drops
punctuation tokens, then runs Bleu(4), Meteor, Rouge (ROUGE-L) and Cider (which is CIDEr-D) on the token strings.
:func:`caption_scores` feeds the same scorers the same strings, so with ``tokenizer="ptb"`` its numbers equal
COCOEvalCap's run on the candidate ids.

Without Java, ``tokenizer="simple"`` uses :func:`simple_tokenize`, a regex approximation of the PTB step. It
agrees with PTB on ordinary captions (lowercase; punctuation tokens removed; clitics split as in "do n't",
"man 's"; brackets kept as ``-lrb-`` ...) but differs on rarer cases: a period ending an abbreviation inside a
sentence is removed ("mr. smith" -> "mr smith", PTB keeps "mr."); unusual punctuation runs ("!?") are removed
(PTB keeps them as one token); PTB's special splits beyond can-not/gon-na/got-ta/wan-na/lem-me/gim-me are
absent; Unicode quotes and dashes are left alone. Scores from the two paths are therefore close, not equal.

METEOR needs Java as well; without it METEOR is left out of the result with a logged warning. SPICE also needs
Stanford models that are downloaded on first use, so it is never computed here (logged, left out).
"""

from __future__ import annotations

import logging
import re
import shutil
from typing import Any, Hashable, Literal, Mapping, Sequence

from ofa.errors import ConfigError, DataError, OFAError

__all__ = ["caption_scores", "java_available", "simple_tokenize"]

logger = logging.getLogger(__name__)

TokenizerName = Literal["auto", "ptb", "simple"]
_METRICS = {"BLEU": "BLEU", "METEOR": "METEOR", "ROUGE_L": "ROUGE_L", "ROUGE-L": "ROUGE_L", "ROUGE": "ROUGE_L",
            "CIDER": "CIDEr", "CIDER-D": "CIDEr", "SPICE": "SPICE"}

# Tokens COCOEvalCap deletes after PTB tokenisation. Its list also names -LRB- ... -RCB- in upper case, but PTB
# run with -lowerCase emits them lowercased, so bracket tokens survive there; simple_tokenize keeps them too.
_PTB_DROPPED = frozenset({"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"})
# Java also ends lines at these characters; they would shift PTB's one-line-per-caption output.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x85\u2028\u2029]")

_SPECIAL_WORDS = {"cannot": "can not", "gonna": "gon na", "gotta": "got ta", "wanna": "wan na", "lemme": "lem me",
                  "gimme": "gim me"}
_SPECIAL_RE = re.compile(r"\b(" + "|".join(_SPECIAL_WORDS) + r")\b")
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "[": " -lsb- ", "]": " -rsb- ", "{": " -lcb- ", "}": " -rcb- "}
_BRACKET_RE = re.compile(r"[()\[\]{}]")
_SPLIT_SYMBOLS = re.compile(r"([&+*%$#])")  # PTB makes these separate tokens
_ALWAYS_DROPPED = re.compile(r"\.\.\.|[\"`?!;]")
_COMMA_COLON = re.compile(r"(?<!\d)[,:]|[,:](?!\d)")  # "1,000" and "10:30" keep theirs
_CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")
_KEPT_AS_IS = frozenset(_CLITICS) | {b.strip() for b in _BRACKETS.values()}
_CLITIC = re.compile(r"^(.+?)(" + "|".join(_CLITICS) + r")$")


def java_available() -> bool:
    """Whether a ``java`` executable is on PATH (needed by the PTB tokenizer and METEOR)."""
    return shutil.which("java") is not None


def simple_tokenize(text: str) -> str:
    """Java-free approximation of COCOEvalCap's PTB tokenisation plus punctuation removal.

    Args:
        text: one caption.

    Returns:
        Lowercased tokens joined by single spaces, e.g. ``"A man's dog, running."`` -> ``"a man 's dog running"``.
    """
    text = _LINE_BREAKS.sub(" ", text.lower())
    text = _SPECIAL_RE.sub(lambda m: _SPECIAL_WORDS[m.group(1)], text)
    text = _BRACKET_RE.sub(lambda m: _BRACKETS[m.group(0)], text)
    text = _SPLIT_SYMBOLS.sub(r" \1 ", text)
    text = _ALWAYS_DROPPED.sub(" ", text)
    text = _COMMA_COLON.sub(" ", text)
    out: list[str] = []
    for token in text.split():
        if token.endswith(".") and "." not in token[:-1]:
            token = token[:-1]  # sentence-final period; "u.s." and "p.m." keep theirs, as in PTB
        if token in _KEPT_AS_IS:  # bracket names, and clitics already split as in "ca n't"
            out.append(token)
            continue
        token = token.lstrip("'-")
        clitic = _CLITIC.match(token)
        parts = [clitic.group(1), clitic.group(2)] if clitic else [token]
        parts[0] = parts[0].rstrip("'-")
        out.extend(p for p in parts if p and p not in _PTB_DROPPED)
    return " ".join(out)


def _parse_metrics(metrics: Sequence[str]) -> list[str]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    wanted: list[str] = []
    for name in metrics:
        canonical = _METRICS.get(str(name).upper())
        if canonical is None:
            raise ConfigError(f"unknown caption metric {name!r}; accepted: BLEU, METEOR, ROUGE_L, CIDEr, SPICE")
        if canonical not in wanted:
            wanted.append(canonical)
    if not wanted:
        raise ConfigError("metrics is empty; name at least one of BLEU, METEOR, ROUGE_L, CIDEr")
    return wanted


def _resolve_tokenizer(tokenizer: str) -> Literal["ptb", "simple"]:
    if tokenizer not in ("auto", "ptb", "simple"):
        raise ConfigError(f"tokenizer {tokenizer!r} is not one of 'auto', 'ptb', 'simple'")
    if tokenizer == "simple":
        return "simple"
    if java_available():
        return "ptb"
    if tokenizer == "ptb":
        raise ConfigError("tokenizer 'ptb' needs Java (no 'java' on PATH); install a JRE or use tokenizer='simple'")
    logger.warning("no 'java' on PATH: tokenising captions with the Java-free 'simple' tokenizer; scores will "
                   "be close to, not equal to, COCOEvalCap's")
    return "simple"


def _validate(references: Mapping[Hashable, Sequence[str]],
              candidates: Mapping[Hashable, str]) -> list[Hashable]:
    if not isinstance(references, Mapping) or not isinstance(candidates, Mapping):
        raise DataError(f"references and candidates must be dicts keyed by image id, got "
                        f"{type(references).__name__} and {type(candidates).__name__}")
    if not candidates:
        raise DataError("candidates is empty; nothing to score")
    ids = list(candidates)
    missing = [k for k in ids if k not in references]
    if missing:
        raise DataError(f"candidate ids {missing[:5]!r} have no references ({len(missing)} missing); candidate ids "
                        "must be a subset of reference ids")
    for k in ids:
        if not isinstance(candidates[k], str):
            raise DataError(f"candidates[{k!r}] is {type(candidates[k]).__name__}; must be a str")
        refs = references[k]
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise DataError(f"references[{k!r}] must be a list of str, got {type(refs).__name__}")
        if len(refs) == 0:
            raise DataError(f"references[{k!r}] is an empty list; every scored image needs at least one reference")
        for r in refs:
            if not isinstance(r, str):
                raise DataError(f"references[{k!r}] holds {type(r).__name__} {r!r}; references must be str")
    return ids


def _ptb_tokenize(sentences: list[str]) -> list[str]:
    """PTB-tokenise ``sentences`` in one Java call (as COCOEvalCap does, punctuation tokens removed)."""
    # optional dependency (the eval extra)
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # Blank lines are not sent (Java may drop trailing ones and shift the rest); they tokenise to "" anyway.
    todo = {i: [{"caption": _LINE_BREAKS.sub(" ", s)}] for i, s in enumerate(sentences) if s.strip()}
    out = [""] * len(sentences)
    if todo:
        done = PTBTokenizer().tokenize(todo)
        if set(done) != set(todo) or any(len(v) != 1 for v in done.values()):
            raise OFAError(f"PTBTokenizer returned {sum(len(v) for v in done.values())} lines for {len(todo)} "
                           "captions; is Java working?")
        for i, v in done.items():
            out[i] = v[0]
    return out


def caption_scores(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str], *,
                   tokenizer: TokenizerName = "auto",
                   metrics: Sequence[str] = ("BLEU", "METEOR", "ROUGE_L", "CIDEr")) -> dict[str, float]:
    """COCO caption metrics of ``candidates`` against ``references``, as COCOEvalCap computes them.

    Only the ids in ``candidates`` are scored (and CIDEr's document frequencies come from their references),
    like COCOEvalCap with ``params['image_id']`` set to the result ids.

    Args:
        references: ``image id -> reference captions`` (raw text).
        candidates: ``image id -> generated caption`` (raw text); ids must be a subset of ``references``.
        tokenizer: ``"ptb"`` (Stanford PTBTokenizer via Java, what COCOEvalCap uses), ``"simple"``
            (:func:`simple_tokenize`, no Java) or ``"auto"`` (ptb when Java is on PATH, else simple + warning).
        metrics: any of ``"BLEU"``, ``"METEOR"``, ``"ROUGE_L"``, ``"CIDEr"``, ``"SPICE"`` (case-insensitive).

    Returns:
        Scores on pycocoevalcap's scale (papers report x100): keys ``BLEU-1`` .. ``BLEU-4``, ``METEOR``,
        ``ROUGE_L``, ``CIDEr`` for the requested metrics. METEOR is absent when Java is missing and SPICE always
        (both logged as warnings).

    Raises:
        ConfigError: on an unknown tokenizer or metric, or ``tokenizer="ptb"`` without Java.
        DataError: on no candidates, a candidate id without references, an empty reference list or non-str text.
    """
    wanted = _parse_metrics(metrics)
    mode = _resolve_tokenizer(tokenizer)
    ids = _validate(references, candidates)
    ref_counts = [len(references[k]) for k in ids]
    raw = [c for k in ids for c in references[k]] + [candidates[k] for k in ids]
    tokens = _ptb_tokenize(raw) if mode == "ptb" else [simple_tokenize(s) for s in raw]
    gts: dict[int, list[str]] = {}
    pos = 0
    for i, count in enumerate(ref_counts):
        gts[i] = tokens[pos:pos + count]
        pos += count
    res = {i: [tokens[pos + i]] for i in range(len(ids))}
    return _run_scorers(gts, res, wanted)


def _run_scorers(gts: dict[Any, list[str]], res: dict[Any, list[str]], wanted: list[str]) -> dict[str, float]:
    scores: dict[str, float] = {}
    if "BLEU" in wanted:
        # optional dependency (the eval extra)
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if "METEOR" in wanted:
        if java_available():
            # optional dependency (the eval extra)
            from pycocoevalcap.meteor.meteor import Meteor

            meteor = Meteor()
            try:
                scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
            finally:
                del meteor  # its __del__ stops the Java process
        else:
            logger.warning("METEOR skipped: it needs Java and there is no 'java' on PATH")
    if "ROUGE_L" in wanted:
        # optional dependency (the eval extra)
        from pycocoevalcap.rouge.rouge import Rouge

        scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in wanted:
        # optional dependency (the eval extra)
        from pycocoevalcap.cider.cider import Cider

        scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if "SPICE" in wanted:
        logger.warning("SPICE skipped: it needs Stanford CoreNLP models that are downloaded on first use, "
                       "which is not possible offline")
    return scores
