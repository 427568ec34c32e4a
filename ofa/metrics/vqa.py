"""VQA accuracy (Antol et al. 2015; VQAv2 evaluation) and OFA's confidence-based soft score.

:func:`normalize_answer` follows the answer processing of the official VQA evaluation script:

1. newlines and tabs become spaces; strip;
2. punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it touches a space in the
   text (``"p "`` or ``" p"`` occurs) or when the text has a comma between two digits (``"1,000"``), and replaced
   by a space otherwise; then every ``.`` not followed by a digit is deleted (``"3.5"`` keeps its point);
3. lowercase and split on whitespace; number words ``none, zero .. ten`` become digits; the articles ``a, an, the``
   are dropped; apostrophe-less contractions are restored (``dont`` -> ``don't``); join with single spaces.

By default (``mode="official"``) scoring is exactly the official ``vqaEval.py``'s: the period regex deletes at
most 32 periods per answer (its ``re.sub(..., re.UNICODE)`` passes the flag as the ``count`` argument), and the
answers and the prediction are normalised only for questions whose annotators disagree (after stripping; so "Yes"
against ten "yes" scores 0, as officially). ``mode="normalized"`` always normalises both sides and deletes every
lone period (this library's behaviour before 0.2).
"""

from __future__ import annotations

import math
import re
from typing import Any, Hashable, Literal, Mapping, Sequence

from ofa.errors import DataError

__all__ = ["normalize_answer", "vqa_accuracy", "vqa_score", "soft_score", "VqaMode"]

VqaMode = Literal["official", "normalized"]
_OFFICIAL_MAX_PERIODS = 32  # re.UNICODE == 32, passed as re.sub's count by the official script

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_LONE_PERIOD = re.compile(r"\.(?!\d)")
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}

# Apostrophe-less (or half-apostrophised) spellings and their standard forms, as listed by the VQA evaluation.
# Spellings that are also ordinary words ("its", "well", "were", "id", "ill", "shed", "wed", ...) are absent
# on purpose. The official table also lists keys with a capital I ("Im", "Ive", "Id've"); those can never match
# after lowercasing, so they are left out here with the same effect.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'd've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",  # sic: the official table maps this one the wrong way round
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}


def _process_punctuation(text: str, max_periods: int = 0) -> str:
    # The delete-or-space decision looks at the text as it was before any punctuation was touched.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in _PUNCTUATION:
        if delete_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _LONE_PERIOD.sub("", out, count=max_periods)  # count 0: every one


def normalize_answer(text: str, *, official: bool = True) -> str:
    """Normalise an answer the way the official VQA evaluation does (see the module docstring).

    Args:
        text: a predicted or ground-truth answer.
        official: delete at most 32 lone periods, as the official script does (False: all of them).

    Returns:
        The normalised answer, e.g. ``"Two dogs."`` -> ``"2 dogs"``, ``"the dog"`` -> ``"dog"``.

    Raises:
        DataError: if ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise DataError(f"answer must be a str, got {type(text).__name__} {text!r}")
    text = _process_punctuation(text.replace("\n", " ").replace("\t", " ").strip(),
                                _OFFICIAL_MAX_PERIODS if official else 0)
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def _answer_text(answer: Any) -> str:
    if isinstance(answer, Mapping):
        answer = answer.get("answer")
    if not isinstance(answer, str):
        raise DataError(f"an annotator answer must be a str or a VQA answer dict with a str 'answer', got "
                        f"{answer!r}")
    return answer


def vqa_accuracy(prediction: str, answers: Sequence[str] | Sequence[Mapping[str, Any]], *,
                 mode: VqaMode = "official") -> float:
    """Official VQA accuracy of one prediction: mean over annotators i of ``min(1, #matches among the others / 3)``.

    With the usual 10 answers this is 0.3, 0.6, 0.9 and 1.0 for 1, 2, 3 and >= 4 matching annotators. The
    leave-one-out removes exactly one answer per term, also when answers repeat (as the official script does with
    its answer dicts, which differ by ``answer_id``). With fewer answers the average runs over the answers given
    (so a single answer always scores 0).

    Args:
        prediction: the predicted answer.
        answers: the annotators' answers: strings, or VQA v2 answer dicts (``{"answer": ..., "answer_id": ...}``).
        mode: ``"official"`` normalises only when the (stripped) answers disagree, exactly as ``vqaEval.py``;
            ``"normalized"`` always normalises both sides.

    Returns:
        The accuracy in [0, 1].

    Raises:
        DataError: if ``answers`` is empty or a string, an entry is not a string / answer dict, or ``mode`` is
            unknown.
    """
    if mode not in ("official", "normalized"):
        raise DataError(f"VQA accuracy mode {mode!r} is not one of 'official', 'normalized'")
    if isinstance(answers, str):
        raise DataError(f"answers must be a list of strings, got the string {answers!r}")
    if len(answers) == 0:
        raise DataError("answers is empty; VQA accuracy needs at least one annotator answer")
    if not isinstance(prediction, str):
        raise DataError(f"the prediction must be a str, got {type(prediction).__name__} {prediction!r}")
    texts = [_answer_text(a) for a in answers]
    if mode == "normalized":
        pred = normalize_answer(prediction, official=False)
        gts = [normalize_answer(t, official=False) for t in texts]
    else:
        gts = [t.replace("\n", " ").replace("\t", " ").strip() for t in texts]
        pred = prediction.replace("\n", " ").replace("\t", " ").strip()
        if len(set(gts)) > 1:
            gts = [normalize_answer(t) for t in gts]
            pred = normalize_answer(pred)
    match = [g == pred for g in gts]
    total = sum(match)
    return sum(min(1.0, (total - m) / 3.0) for m in match) / len(match)


def vqa_score(predictions: Mapping[Hashable, str], answers: Mapping[Hashable, Sequence[Any]], *,
              mode: VqaMode = "official") -> float:
    """Mean :func:`vqa_accuracy` over the questions in ``predictions``.

    Args:
        predictions: ``question_id -> predicted answer``.
        answers: ``question_id -> annotator answers`` (strings or VQA answer dicts); must cover every id of
            ``predictions`` (extra ids are ignored, as when evaluating a subset).
        mode: see :func:`vqa_accuracy`.

    Returns:
        The mean accuracy in [0, 1] (multiply by 100 for the usual percentage).

    Raises:
        DataError: if ``predictions`` is empty or a question id has no answers.
    """
    if not predictions:
        raise DataError("predictions is empty; nothing to score")
    missing = [q for q in predictions if q not in answers]
    if missing:
        raise DataError(f"question ids {missing[:5]!r} have no answers ({len(missing)} missing)")
    return sum(vqa_accuracy(p, answers[q], mode=mode) for q, p in predictions.items()) / len(predictions)


def soft_score(prediction: str, answer_confidences: Mapping[str, float]) -> float:
    """OFA's validation metric: the confidence of the (normalised) prediction in the row's answer dict.

    Both the prediction and the dict's answers are normalised with :func:`normalize_answer`; if two answers
    normalise to the same text the larger confidence counts.

    Args:
        prediction: the predicted answer.
        answer_confidences: ``answer -> confidence`` (the official soft accuracy of that answer, e.g. 0.6).

    Returns:
        The confidence of the prediction, 0.0 if it is not among the answers.

    Raises:
        DataError: if a confidence is not a finite number >= 0.
    """
    pred = normalize_answer(prediction)
    best = 0.0
    for answer, value in answer_confidences.items():
        try:
            conf = float(value)
        except (TypeError, ValueError):
            conf = math.nan
        if not 0.0 <= conf < math.inf:
            raise DataError(f"confidence of answer {answer!r} is {value!r}; must be a finite number >= 0")
        if normalize_answer(answer) == pred:
            best = max(best, conf)
    return best
