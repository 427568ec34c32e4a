"""Built-in tasks against the spec (§5): prompts, targets, token layouts, TSV rows, decoding and metrics on
hand-made predictions."""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest
import torch
from PIL import Image

import ofa
from ofa.data.collate import collate
from ofa.data.images import encode_image_base64
from ofa.data.text import pre_caption
from ofa.errors import ConfigError, DataError
from ofa.generation import GenerationConfig, Hypothesis, TrieConstraint
from ofa.tasks.answers import AnswerPrediction
from ofa.tasks.base import Example, Prediction, Sample
from ofa.tasks.caption import CaptionPrediction
from ofa.tasks.image_gen import ImageGenPrediction
from ofa.tasks.refcoco import GroundingPrediction
from ofa.tasks.vqa import parse_answers
from ofa.tokenization.boxes import box_to_bins

SIZE = 64  # the test preset's patch size


@pytest.fixture
def image(pil_image: Callable[..., Image.Image]) -> Image.Image:
    return pil_image(0, (80, 48))


def b64(image: Image.Image) -> str:
    return encode_image_base64(image, "PNG")


def assert_same_pixels(a: Image.Image, b: Image.Image) -> None:
    assert a.size == b.size and a.mode == b.mode == "RGB"
    assert a.tobytes() == b.tobytes()


# -- caption ----------------------------------------------------------------------------------------------------
def test_caption_source_target_and_image(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("caption", image_size=SIZE)
    example = Example(id="c1", image=image, target=["A man, riding a horse! On the beach.", "another"])
    sample = task.encode(example, tok, training=True)
    assert sample.source == tok.encode_source(" what does the image describe?")
    body = tok.encode(" A man riding a horse On the beach")  # punctuation removed, case kept
    assert sample.target == body + [tok.eos_id]
    assert sample.prev_output == [tok.bos_id] + body
    assert sample.image.shape == (3, SIZE, SIZE) and sample.patch_mask
    assert float(sample.image.min()) >= -1.0 and float(sample.image.max()) <= 1.0
    assert sample.meta["original_size"] == (80, 48)

    inference = task.encode(example, tok)
    assert inference.target is None and inference.prev_output is None and inference.source == sample.source


def test_caption_target_keeps_20_words(tok: Any, image: Image.Image) -> None:
    words = [f"w{i}" for i in range(25)]
    sample = ofa.get_task("caption", image_size=SIZE).encode(
        Example(id=0, image=image, target=" ".join(words)), tok, training=True)
    assert sample.target == tok.encode(" " + " ".join(words[:20])) + [tok.eos_id]


def test_caption_generation_settings_and_decode(tok: Any) -> None:
    task = ofa.get_task("caption")
    config = task.generation_config(tok)
    assert (config.beam_size, config.max_len_b, config.min_len, config.no_repeat_ngram_size) == (5, 16, 1, 3)
    assert task.image_size == 480
    pred = task.decode(tok.encode(" a man, riding a horse.") + [tok.eos_id], tok, Sample(id="x", source=[]))
    assert isinstance(pred, CaptionPrediction) and pred.text == "a man riding a horse" and pred.id == "x"


def test_caption_bad_examples(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("caption", image_size=SIZE)
    with pytest.raises(DataError, match="no reference"):
        task.encode(Example(id=0, image=image, target=[]), tok, training=True)
    with pytest.raises(DataError, match="needs an image"):
        task.encode(Example(id=0, target=["a cat"]), tok)


def test_caption_parse_row(image: Image.Image) -> None:
    task = ofa.get_task("caption")
    example = task.parse_row(["u1", "img7", "a cat on a mat&& a cat sleeping ", "cat&&mat", b64(image)])
    assert example.id == "u1" and example.extra["image_id"] == "img7"
    assert example.target == ["a cat on a mat", "a cat sleeping"]
    assert_same_pixels(example.image, image)
    with pytest.raises(DataError, match="5 TSV columns, got 4"):
        task.parse_row(["u1", "img7", "a cat", b64(image)])


def test_caption_scores_on_hand_made_predictions() -> None:
    task = ofa.get_task("caption", tokenizer="simple", metrics=("BLEU", "ROUGE_L", "CIDEr"))
    refs = [Example(id=1, target=["a man riding a brown horse on the beach"]),
            Example(id=2, target=["two dogs playing with a red ball in the grass"])]
    perfect = task.score([CaptionPrediction(id=1, text="a man riding a brown horse on the beach"),
                          CaptionPrediction(id=2, text="two dogs playing with a red ball in the grass")], refs)
    assert set(perfect) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE_L", "CIDEr"}
    assert all(isinstance(v, float) for v in perfect.values())
    assert perfect["BLEU-4"] == pytest.approx(1.0, abs=1e-6) and perfect["ROUGE_L"] == pytest.approx(1.0)
    wrong = task.score([CaptionPrediction(id=1, text="a cat"), CaptionPrediction(id=2, text="a cat")], refs)
    assert wrong["BLEU-1"] < perfect["BLEU-1"] and wrong["CIDEr"] < perfect["CIDEr"]
    assert wrong["ROUGE_L"] < 0.5


def test_caption_scores_with_the_ptb_tokenizer() -> None:
    from ofa.metrics.caption import java_available

    if not java_available():
        pytest.skip("no java on PATH")
    task = ofa.get_task("caption", tokenizer="ptb", metrics=("BLEU",))
    scores = task.score([CaptionPrediction(id=1, text="A man riding a horse.")],
                        [Example(id=1, target=["a man riding a horse"])])
    assert scores["BLEU-1"] == pytest.approx(1.0, abs=1e-6)


# -- refcoco ----------------------------------------------------------------------------------------------------
def test_refcoco_source_and_target_at_512(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("refcoco")
    assert task.image_size == 512 and task.max_image_size == 512
    expression = "The Red-Square, on the left"
    sample = task.encode(Example(id=0, image=image, text=expression, target=(10, 5, 40, 30)), tok, training=True)
    assert sample.source == tok.encode_source(f' which region does the text " {pre_caption(expression, 80)} " '
                                              f'describe?')
    assert tok.decode(sample.source) == ' which region does the text " the red square, on the left " describe?'
    bins = box_to_bins((10, 5, 40, 30), (80, 48), 512, tok.vocab.num_bins, 512)
    # x: 10 * 512/80 / 512 * 99 = 12.375; y: 5 * 512/48 / 512 * 99 = 10.31; 49.5 rounds half to even; 61.9
    assert bins == (12, 10, 50, 62)
    assert sample.target == [tok.vocab.bin_id(b) for b in bins] + [tok.eos_id]
    assert sample.prev_output == [tok.bos_id] + sample.target[:4]
    assert sample.image.shape == (3, 512, 512)
    assert sample.meta["ratios"] == (512 / 80, 512 / 48)


def test_refcoco_small_preset_box_round_trip(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("refcoco", image_size=SIZE, max_image_size=SIZE)
    box = (10.0, 5.0, 40.0, 30.0)
    sample = task.encode(Example(id="r", image=image, text="x", target="10,5,40,30"), tok, training=True)
    assert sample.image.shape == (3, SIZE, SIZE)
    assert sample.target[:4] == [tok.vocab.bin_id(b) for b in box_to_bins(box, (80, 48), SIZE, 100, SIZE)]
    pred = task.decode(sample.target, tok, sample)
    assert isinstance(pred, GroundingPrediction) and pred.id == "r"
    # one bin is 1/99 of max_image_size in patch pixels; a quarter of that (times w or h / SIZE) at most
    for got, want, side in zip(pred.box, box, (80, 48, 80, 48)):
        assert abs(got - want) <= SIZE / 99 / 2 * side / SIZE + 1e-9
    assert task.decode(tok.encode(" not a box") + [tok.eos_id], tok, sample).box is None


def test_refcoco_hypothesis_to_prediction(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("refcoco", image_size=SIZE, max_image_size=SIZE)
    sample = task.encode(Example(id=3, image=image, text="x"), tok)
    ids = [tok.vocab.bin_id(b) for b in (0, 0, 99, 99)] + [tok.eos_id]
    log_probs = torch.log(torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9]))
    pred = task.from_hypothesis(Hypothesis(torch.tensor(ids), -1.0, log_probs), tok, sample)
    assert pred.box == pytest.approx((0.0, 0.0, 80.0, 48.0))
    assert pred.bins == (0, 0, 99, 99) and pred.confidence == pytest.approx(0.5) and pred.score == -1.0
    bad = task.from_hypothesis(Hypothesis(torch.tensor(tok.encode(" ab cd") + [tok.eos_id]), -2.0,
                                          torch.zeros(3)), tok, sample)
    assert bad.box is None and bad.score == -2.0


def test_refcoco_generation_settings(tok: Any) -> None:
    config = ofa.get_task("refcoco").generation_config(tok)
    assert (config.beam_size, config.min_len, config.max_len_b, config.max_len_a) == (5, 4, 4, 0)
    assert config.no_repeat_ngram_size == 3  # OFA's RefCOCO evaluation script
    assert len(config.processors) == 1  # the location constraint
    assert ofa.get_task("refcoco", no_repeat_ngram_size=0).generation_config(tok).no_repeat_ngram_size == 0
    assert not ofa.get_task("refcoco", constrain_to_bins=False).generation_config(tok).processors


def test_refcoco_accuracy_on_hand_made_boxes() -> None:
    task = ofa.get_task("refcoco")
    refs = [Example(id=i, target=(0, 0, 100, 100)) for i in range(4)]
    hit, miss = GroundingPrediction(box=(0, 0, 100, 90)), GroundingPrediction(box=(50, 50, 150, 150))
    assert task.score([hit, miss], refs[:2]) == {"acc@0.5": 0.5}
    # no box, and a box with x0 > x1 (a model can emit one), are misses rather than errors
    inverted = GroundingPrediction(box=(90, 0, 10, 100))
    assert task.score([hit, GroundingPrediction(), inverted, hit], refs) == {"acc@0.5": 0.5}
    touching = GroundingPrediction(box=(100, 0, 200, 100))
    assert task.score([touching], refs[:1]) == {"acc@0.5": 0.0}
    with pytest.raises(DataError):
        task.score([hit], refs)


def test_refcoco_parse_row(image: Image.Image) -> None:
    task = ofa.get_task("refcoco")
    example = task.parse_row(["u1", "im1", "the dog", "1.5,2,30,40.25", b64(image)])
    assert example.text == "the dog" and example.target == (1.5, 2.0, 30.0, 40.25)
    assert_same_pixels(example.image, image)
    for region in ["1,2,3", "a,b,c,d", "5,0,1,1", "nan,0,1,1"]:
        with pytest.raises(DataError, match="bad box"):
            task.parse_row(["u1", "im1", "the dog", region, b64(image)])
    with pytest.raises(DataError, match="columns"):
        task.parse_row(["u1", "the dog", "1,2,3,4", b64(image)])
    with pytest.raises(DataError):
        task.parse_row(["u1", "im1", "the dog", "1,2,3,4", "not base64 !!"])


# -- region caption ---------------------------------------------------------------------------------------------
def test_region_caption_prompt_has_the_region_bins(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("region_caption", image_size=SIZE, max_image_size=SIZE)
    region = (8, 4, 64, 40)
    sample = task.encode(Example(id=0, image=image, target=["a red block."], extra={"region": region}), tok,
                         training=True)
    bins = [tok.vocab.bin_id(b) for b in box_to_bins(region, (80, 48), SIZE, 100, SIZE)]
    assert sample.source == [tok.bos_id] + tok.encode("  what does the region describe? region:") + bins + \
        [tok.eos_id]
    literal = "  what does the region describe? region: " + " ".join(f"<bin_{tok.vocab.bin_index(b)}>" for b in bins)
    assert sample.source == tok.encode_source(literal)
    assert sample.target == tok.encode(" a red block") + [tok.eos_id]
    assert sample.image.shape == (3, SIZE, SIZE) and sample.meta["region"] == region


def test_region_caption_needs_a_region(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("region_caption", image_size=SIZE)
    for extra in [{}, {"region": None}]:
        with pytest.raises(DataError, match="region"):
            task.encode(Example(id=0, image=image, extra=extra), tok)
    with pytest.raises(DataError, match="bad box"):
        task.encode(Example(id=0, image=image, extra={"region": 7}), tok)


def test_region_caption_parse_row(image: Image.Image) -> None:
    example = ofa.get_task("region_caption").parse_row(["u", "i", "a dog", "1,2,3,4", b64(image)])
    assert example.target == ["a dog"] and example.extra["region"] == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(DataError):
        ofa.get_task("region_caption").parse_row(["u", "i", "a dog", "1,2,3,4"])


# -- vqa_gen ----------------------------------------------------------------------------------------------------
CANDIDATES = ["red", "blue", "two", "hot dog", "hot"]


def expected_constraints(answer: list[int], candidates: list[list[int]], eos: int) -> list[list[int]]:
    """Per answer position (and the eos after it): the candidates' next tokens, computed without the Trie."""
    out = []
    for k in range(len(answer) + 1):
        allowed = {c[k] for c in candidates if len(c) > k and c[:k] == answer[:k]}
        if any(c == answer[:k] for c in candidates):
            allowed.add(eos)
        out.append(sorted(allowed))
    return out


def test_vqa_prompt_and_prev_output_layout(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("vqa_gen", image_size=SIZE, candidates=CANDIDATES)
    example = Example(id=9, image=image, text="What colour is the Car", target={"red": 0.6, "hot dog": 0.9})
    sample = task.encode(example, tok, training=True)
    assert sample.source == tok.encode_source(" what colour is the car?")
    prompt = sample.source[:-1]
    answer = tok.encode(" hot dog")  # the answer with the highest confidence
    assert sample.decoder_prompt == prompt
    assert sample.prev_output == prompt + answer
    assert sample.target == [tok.pad_id] * (len(prompt) - 1) + answer + [tok.eos_id]
    assert len(sample.target) == len(sample.prev_output)
    assert sample.weight == pytest.approx(0.9)
    cands = [tok.encode(" " + c) for c in CANDIDATES]
    allowed = expected_constraints(answer, cands, tok.eos_id)
    assert sample.constraint is not None and len(sample.constraint) == len(sample.target)
    assert sample.constraint[: len(prompt) - 1] == [[]] * (len(prompt) - 1)
    assert [sorted(c) for c in sample.constraint[len(prompt) - 1:]] == allowed
    assert tok.eos_id in allowed[-1]

    batch = collate([sample], pad_id=tok.pad_id)
    assert batch.prefix_tokens.tolist() == [prompt[1:]]


def test_vqa_objects_weights_and_annotator_lists(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("vqa_gen", image_size=SIZE, add_object=True, max_objects=2)
    sample = task.encode(Example(id=0, image=image, text="how many cars?", target=["two"] * 2 + ["red"] * 8,
                                 extra={"objects": ["car", "road", "tree"]}), tok, training=True)
    assert sample.source == tok.encode_source(" how many cars? object: car road")
    assert sample.prev_output[-len(tok.encode(" red")):] == tok.encode(" red")
    assert sample.weight == pytest.approx(1.0) and sample.constraint is None  # no candidates, no trie
    assert task.mode == "beam"
    with pytest.raises(DataError, match="no answers"):
        task.encode(Example(id=0, image=image, text="q", target={}), tok, training=True)


def test_vqa_training_answer_is_cut_to_max_answer_tokens(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("vqa_gen", image_size=SIZE, max_answer_tokens=2)
    sample = task.encode(Example(id=0, image=image, text="q?", target={"a very long answer here": 1.0}), tok,
                         training=True)
    assert sample.target[-3:] == tok.encode(" a very long answer here")[:2] + [tok.eos_id]


def test_vqa_modes(tok: Any) -> None:
    assert ofa.get_task("vqa_gen", candidates=CANDIDATES).mode == "allcand"
    assert ofa.get_task("vqa_gen").mode == "beam"
    with pytest.raises(ConfigError, match="candidate"):
        ofa.get_task("vqa_gen", mode="trie")
    with pytest.raises(ConfigError, match="mode"):
        ofa.get_task("vqa_gen", candidates=CANDIDATES, mode="nope")
    trie = ofa.get_task("vqa_gen", candidates=CANDIDATES, mode="trie").generation_config(tok)
    assert any(isinstance(p, TrieConstraint) for p in trie.processors) and not trie.normalize_scores
    beam = ofa.get_task("vqa_gen", mode="beam").generation_config(tok)
    assert beam.processors == () and beam.beam_size == 5


def test_vqa_decode_after_the_prompt(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("vqa_gen", image_size=SIZE, candidates=CANDIDATES, mode="trie")
    sample = task.encode(Example(id=5, image=image, text="what?"), tok)
    prompt = sample.decoder_prompt[1:]
    tokens = torch.tensor(prompt + tok.encode(" hot dog") + [tok.eos_id])
    scores = torch.full((len(tokens),), -0.5)
    pred = task.from_hypothesis(Hypothesis(tokens, -9.0, scores), tok, sample)
    assert isinstance(pred, AnswerPrediction) and pred.answer == "hot dog" and pred.id == 5
    assert pred.score == pytest.approx(-0.5 * (len(tok.encode(" hot dog")) + 1))


def test_parse_answers() -> None:
    assert parse_answers("0.6|!+two&&1.0|!+2") == {"two": 0.6, "2": 1.0}
    for bad in ["two", "x|!+two", ""]:
        with pytest.raises(DataError):
            parse_answers(bad)


def test_vqa_parse_row(image: Image.Image) -> None:
    task = ofa.get_task("vqa_gen")
    example = task.parse_row(["q1", "im1", "what is it?", "0.6|!+two&&1.0|!+2", "car&&road", b64(image)])
    assert example.id == "q1" and example.text == "what is it?"
    assert example.target == {"two": 0.6, "2": 1.0} and example.extra["objects"] == ["car", "road"]
    assert task.parse_row(["q1", "im1", "q?", "1.0|!+a", "", b64(image)]).extra["objects"] == []
    with pytest.raises(DataError, match="6 TSV columns"):
        task.parse_row(["q1", "im1", "what is it?", "0.6|!+two", b64(image)])


def test_vqa_scores() -> None:
    task = ofa.get_task("vqa_gen")
    annotators = ["two"] * 2 + ["red"] * 8  # 2 of 10 annotators: official accuracy 0.6
    refs = [Example(id=1, target=annotators), Example(id=2, target={"red": 0.3, "blue": 0.9})]
    assert task.score([AnswerPrediction(answer="two"), AnswerPrediction(answer="blue")], refs) == \
        {"vqa_acc": pytest.approx((0.6 + 0.9) / 2)}
    assert task.score([AnswerPrediction(answer="red"), AnswerPrediction(answer="green")], refs) == \
        {"vqa_acc": pytest.approx(1.0 / 2)}
    with pytest.raises(DataError):
        task.score([AnswerPrediction(answer="red")], refs)


# -- snli_ve ----------------------------------------------------------------------------------------------------
def test_snli_ve_prompts_and_labels(tok: Any, image: Image.Image) -> None:
    task = ofa.get_task("snli_ve", image_size=SIZE)
    example = Example(id=0, image=image, text="Two dogs run.", target="neutral",
                      extra={"premise": "Dogs - playing in the park"})
    sample = task.encode(example, tok, training=True)
    assert sample.source == tok.encode_source(
        ' can image and text1 " dogs playing in the park " imply text2 " two dogs run. "?')
    assert sample.prev_output == sample.source[:-1] + tok.encode(" maybe")
    assert sample.target[-2:] == tok.encode(" maybe")[-1:] + [tok.eos_id]
    plain = ofa.get_task("snli_ve", image_size=SIZE, add_caption=False).encode(example, tok)
    assert plain.source == tok.encode_source(' does the image describe " two dogs run. "?')
    for label, answer in [("contradiction", "no"), ("entailment", "yes"), ("neutral", "maybe"), ("yes", "yes")]:
        assert task.answer_text(Example(target=label)) == answer
    with pytest.raises(DataError, match="label"):
        task.encode(Example(id=0, image=image, text="x", target="unsure"), tok, training=True)
    assert task.candidates == ["no", "yes", "maybe"] and task.mode == "allcand"


def test_snli_ve_parse_row_and_accuracy(image: Image.Image) -> None:
    task = ofa.get_task("snli_ve")
    example = task.parse_row(["u", "im", b64(image), "a dog", "a dog on grass", "entailment "])
    assert example.text == "a dog" and example.extra["premise"] == "a dog on grass"
    assert example.target == "entailment"
    assert_same_pixels(example.image, image)
    with pytest.raises(DataError):
        task.parse_row(["u", "im", b64(image), "a dog", "entailment"])
    refs = [Example(target="entailment"), Example(target="neutral")]
    assert task.score([AnswerPrediction(answer="yes"), AnswerPrediction(answer="no")], refs) == {"accuracy": 0.5}


# -- image_classify ---------------------------------------------------------------------------------------------
def test_image_classify_uses_imagenet_normalisation(tok: Any) -> None:
    task = ofa.get_task("image_classify", image_size=SIZE, class_names=["golden retriever", "tabby cat"])
    image = Image.new("RGB", (30, 20), (255, 0, 128))
    sample = task.encode(Example(id=0, image=image, target="golden retriever"), tok, training=True)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for channel, value in enumerate((255, 0, 128)):
        want = (value / 255 - mean[channel]) / std[channel]
        assert torch.allclose(sample.image[channel], torch.full((SIZE, SIZE), want), atol=1e-5)
    assert sample.source == tok.encode_source(" what does the image describe?")
    answer = tok.encode(" golden retriever")
    assert sample.decoder_prompt == [tok.bos_id]  # no question prompt in the decoder
    assert sample.prev_output == [tok.bos_id] + answer and sample.target == answer + [tok.eos_id]
    cands = [tok.encode(" golden retriever"), tok.encode(" tabby cat")]
    assert [sorted(c) for c in sample.constraint] == expected_constraints(answer, cands, tok.eos_id)


def test_image_classify_errors_parse_row_and_top1(tok: Any, image: Image.Image) -> None:
    with pytest.raises(ConfigError, match="class_names"):
        ofa.get_task("image_classify")
    task = ofa.get_task("image_classify", image_size=SIZE, class_names=["cat", "dog"])
    with pytest.raises(DataError, match="class names"):
        task.encode(Example(id=0, image=image, target="horse"), tok, training=True)
    example = task.parse_row([b64(image), "2", "dog "])
    assert example.target == "dog" and example.id == "2"
    with pytest.raises(DataError):
        task.parse_row([b64(image), "dog"])
    refs = [Example(target="cat"), Example(target="dog"), Example(target="dog")]
    preds = [AnswerPrediction(answer=a) for a in ("cat", "cat", "dog")]
    assert task.score(preds, refs) == {"top1": pytest.approx(2 / 3)}


# -- image_gen --------------------------------------------------------------------------------------------------
def test_image_gen_target_is_codes(tok: Any) -> None:
    task = ofa.get_task("image_gen", grid_size=2)
    sample = task.encode(Example(id=0, text="A Red Square", target=[[1, 2], [3, 63]]), tok, training=True)
    assert sample.source == tok.encode_source(" what is the complete image? caption: a red square")
    assert sample.target == [tok.vocab.code_id(c) for c in (1, 2, 3, 63)] + [tok.eos_id]
    assert sample.prev_output == [tok.bos_id] + sample.target[:-1]
    assert sample.code_mask and sample.image is None and not sample.patch_mask
    with pytest.raises(DataError, match="codes"):
        task.encode(Example(id=0, text="x", target=[1, 2, 3]), tok, training=True)
    with pytest.raises(DataError, match="no image codes"):
        task.encode(Example(id=0, text="x"), tok, training=True)


def test_image_gen_settings_decode_and_score(tok: Any) -> None:
    task = ofa.get_task("image_gen", grid_size=2, num_samples=3, top_k=5)
    config = task.generation_config(tok)
    assert (config.strategy, config.beam_size, config.min_len, config.max_len_b, config.sampling_topk) == \
        ("sample", 3, 4, 4, 5)
    pred = task.decode([tok.vocab.code_id(c) for c in (4, 5, 6, 7)] + [tok.eos_id], tok)
    assert isinstance(pred, ImageGenPrediction) and pred.codes.tolist() == [[4, 5], [6, 7]]
    assert pred.to_dict()["samples"] == [[[4, 5], [6, 7]]]
    refs = [Example(target=[4, 5, 6, 0])]
    assert task.score([pred], refs) == {"code_accuracy": 0.75}


def test_image_gen_parse_row_and_model_mismatch(tok: Any, small_model: Any) -> None:
    task = ofa.get_task("image_gen", grid_size=2)
    example = task.parse_row(["u", "1 2 3 4", "a red square"])
    assert example.target == [1, 2, 3, 4] and example.text == "a red square" and example.image is None
    with pytest.raises(DataError, match="integers"):
        task.parse_row(["u", "1 two 3 4", "a red square"])
    with pytest.raises(DataError, match="columns"):
        task.parse_row(["u", "a red square"])
    wrong = ofa.get_task("image_gen", grid_size=3)
    batch = collate([wrong.encode(Example(id=0, text="x"), tok)], pad_id=tok.pad_id)
    with pytest.raises(ConfigError, match="code_image_size"):
        wrong.predict(small_model, batch, tok)


# -- sst2 -------------------------------------------------------------------------------------------------------
def test_sst2_is_text_only(tok: Any, small_model: Any) -> None:
    task = ofa.get_task("sst2")
    sample = task.encode(Example(id=0, text="a  great   movie", target="1"), tok, training=True)
    assert sample.source == tok.encode_source(' is the sentiment of text " a great movie " positive or negative?')
    assert sample.image is None and not sample.patch_mask
    assert sample.prev_output == sample.source[:-1] + tok.encode(" positive")
    batch = collate([sample], pad_id=tok.pad_id)
    assert batch.patch_images is None
    logits = small_model(batch.src_tokens, batch.prev_output_tokens).logits
    assert logits.shape == (1, len(sample.prev_output), len(tok))
    for label, answer in [("1", "positive"), ("0", "negative"), ("Positive", "positive"), ("negative", "negative")]:
        assert task.answer_text(Example(target=label)) == answer
    with pytest.raises(DataError):
        task.answer_text(Example(target="2"))
    example = task.parse_row(["s1", "it was fine", "0"])
    assert (example.id, example.text, example.target, example.image) == ("s1", "it was fine", "0", None)
    with pytest.raises(DataError):
        task.parse_row(["s1", "it was fine"])
    refs = [Example(target="1"), Example(target="0")]
    assert task.score([AnswerPrediction(answer="positive")] * 2, refs) == {"accuracy": 0.5}


# -- shared -----------------------------------------------------------------------------------------------------
def test_prediction_to_dict_is_json_ready() -> None:
    import json

    pred = ImageGenPrediction(id=1, score=-1.0, codes=torch.tensor([[1, 2], [3, 4]]),
                              samples=[torch.tensor([[1, 2], [3, 4]])], sample_scores=[-1.0])
    json.dumps(pred.to_dict())
    box = GroundingPrediction(id=0, box=(1.0, 2.0, 3.0, 4.0), bins=(1, 2, 3, 4))
    assert json.loads(json.dumps(box.to_dict()))["box"] == [1.0, 2.0, 3.0, 4.0]
    ranked = AnswerPrediction(answer="a", ranked=[("a", -0.1), ("b", -0.2)])
    assert json.loads(json.dumps(ranked.to_dict()))["ranked"] == [["a", -0.1], ["b", -0.2]]
    assert Prediction(id=3).to_dict() == {"id": 3, "score": None}


@pytest.mark.parametrize("name", ["caption", "refcoco", "region_caption", "vqa_gen", "snli_ve", "image_classify"])
def test_image_tasks_reject_a_missing_image(name: str, tok: Any) -> None:
    options: dict[str, Any] = {"image_size": SIZE}
    if name == "image_classify":
        options["class_names"] = ["a", "b"]
    example = Example(id=0, text="some text", extra={"region": (0, 0, 1, 1)})
    with pytest.raises(DataError, match="image"):
        ofa.get_task(name, **options).encode(example, tok)


def test_nan_box_is_a_data_error() -> None:
    from ofa.tasks.common import parse_box

    assert parse_box([0, 0, 1, 1]) == (0.0, 0.0, 1.0, 1.0)
    for bad in [None, 3, (0, 0, math.inf, 1), "0,0,1"]:
        with pytest.raises(DataError):
            parse_box(bad)  # type: ignore[arg-type]


def test_generation_configs_are_generation_configs(tok: Any) -> None:
    for name in ofa.list_tasks():
        options: dict[str, Any] = {"class_names": ["a"]} if name == "image_classify" else {}
        task = ofa.get_task(name, **options)
        assert isinstance(task.generation_config(tok), GenerationConfig), name
