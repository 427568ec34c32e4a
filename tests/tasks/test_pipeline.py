"""``ofa.pipeline``: single vs list inputs, order, internal batching, input kinds, errors, progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image

import ofa
from ofa.errors import DataError, InputError, PluginError
from ofa.pipeline import Failure, Pipeline
from ofa.tasks.answers import AnswerPrediction
from ofa.tasks.caption import CaptionPrediction
from ofa.tasks.refcoco import GroundingPrediction

CAPTION = {"image_size": 64, "beam_size": 2, "max_len": 4}  # short: random weights give garbage text anyway


@pytest.fixture
def images(pil_image: Callable[..., Image.Image]) -> list[Image.Image]:
    return [pil_image(seed, size) for seed, size in enumerate([(80, 48), (48, 80), (64, 64), (100, 30), (31, 33)])]


@pytest.fixture
def caption(small_model: Any, tok: Any) -> Pipeline:
    return ofa.pipeline("caption", model=small_model, tokenizer=tok, **CAPTION)


def same(a: list[Any], b: list[Any]) -> None:
    """Same predictions: equal outputs, scores equal up to float noise from different batch shapes."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y) and x.id == y.id
        want = y.to_dict()
        for key, value in x.to_dict().items():
            if key in ("score", "confidence"):
                assert value == pytest.approx(want[key], abs=1e-4), key
            elif key == "ranked":
                assert [c for c, _ in value] == [c for c, _ in want[key]]
            else:
                assert value == want[key], key


def test_single_input_gives_one_prediction(caption: Pipeline, images: list[Image.Image]) -> None:
    pred = caption(images[0])
    assert isinstance(pred, CaptionPrediction) and isinstance(pred.text, str) and pred.id == 0
    assert isinstance(pred.score, float)


def test_list_gives_a_list_in_order(caption: Pipeline, images: list[Image.Image]) -> None:
    many = caption(images[:3])
    assert isinstance(many, list) and [p.id for p in many] == [0, 1, 2]
    singles = [caption(im) for im in images[:3]]
    for i, (p, s) in enumerate(zip(many, singles)):
        s.id = i
    same(many, singles)
    backwards = caption(images[:3][::-1])
    assert [p.text for p in backwards] == [p.text for p in many][::-1]
    assert [p.score for p in backwards] == pytest.approx([p.score for p in many][::-1], abs=1e-4)
    assert caption([images[0]])[0].text == many[0].text  # a one-element list is still a list


def test_small_batches_give_the_same_predictions(small_model: Any, tok: Any, images: list[Image.Image]) -> None:
    for name, options, text in [
        ("caption", CAPTION, None),
        ("refcoco", {"image_size": 64, "max_image_size": 64}, ["the dog", "a cat on the left", "x", "y z", "w"]),
        ("vqa_gen", {"image_size": 64, "candidates": ["red", "two", "hot dog"]},
         ["what is it?", "how many dogs are on the grass", "why", "what colour", "is it"]),
    ]:
        one_batch = ofa.pipeline(name, model=small_model, tokenizer=tok, batch_size=8, **options)(images, text=text)
        small = ofa.pipeline(name, model=small_model, tokenizer=tok, batch_size=2, **options)(images, text=text)
        assert len(one_batch) == 5
        same(one_batch, small)


def test_paths_pil_and_bytes_are_accepted(caption: Pipeline, pil_image: Callable[..., Image.Image],
                                          image_file: Callable[..., Path]) -> None:
    path = image_file(seed=7, size=(60, 40))
    from_pil = caption(pil_image(7, (60, 40)))
    for source in [str(path), path, path.read_bytes(), Image.open(path)]:
        got = caption(source)
        assert got.text == from_pil.text and got.score == pytest.approx(from_pil.score, abs=1e-5)
    mixed = caption([str(path), pil_image(7, (60, 40)).convert("L").convert("RGB"), path])
    assert mixed[0].text == mixed[2].text == from_pil.text
    rgba = pil_image(7, (60, 40)).convert("RGBA")  # converted to RGB
    assert caption(rgba).text == from_pil.text


def test_text_fields_and_broadcasting(small_model: Any, tok: Any, images: list[Image.Image]) -> None:
    refcoco = ofa.pipeline("refcoco", model=small_model, tokenizer=tok, image_size=64, max_image_size=64)
    preds = refcoco(images[:2], text="the dog")  # one text for every image
    assert all(isinstance(p, GroundingPrediction) and p.box is not None for p in preds)
    assert isinstance(refcoco(images[0], text=["the dog"]), list)

    region = ofa.pipeline("region_caption", model=small_model, tokenizer=tok, max_image_size=64, **CAPTION)
    box = [0, 0, 20, 20]
    shared = region.examples(images[:4], region=box)  # a single box is shared, even with 4 inputs
    assert [ex.extra["region"] for ex in shared] == [box] * 4
    boxes = [[0, 0, 5 + i, 5 + i] for i in range(4)]
    assert [ex.extra["region"] for ex in region.examples(images[:4], region=boxes)] == boxes
    assert region.examples(images[0], region=box)[0].extra["region"] == box
    with pytest.raises(InputError, match="region"):
        region.examples(images[:4], region=boxes[:3])
    assert all(isinstance(p, CaptionPrediction) for p in region(images[:2], region=box))

    sst2 = ofa.pipeline("sst2", model=small_model, tokenizer=tok)
    answers = sst2(text=["a fine film", "dull"])
    assert [type(a) for a in answers] == [AnswerPrediction] * 2
    assert all(a.answer in ("positive", "negative") for a in answers)
    assert isinstance(sst2(text="great"), AnswerPrediction)


def test_bad_inputs_raise_clear_errors(caption: Pipeline, small_model: Any, tok: Any,
                                       images: list[Image.Image], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="2 images for 3 inputs"):
        caption(images[:2], text=["a", "b", "c"])
    with pytest.raises(InputError, match="no inputs"):
        caption()
    with pytest.raises(InputError, match="no inputs"):
        caption([])
    with pytest.raises(DataError, match="missing.png"):
        caption(str(tmp_path / "missing.png"))
    with pytest.raises(DataError, match="needs an image"):
        caption(text="no image here")
    small_tok = ofa.OFATokenizer.from_test_assets(num_bins=50)
    with pytest.raises(InputError, match=f"{len(small_tok)}.*{len(tok)}"):
        ofa.pipeline("caption", model=small_model, tokenizer=small_tok)
    with pytest.raises(InputError, match="tokenizer"):
        ofa.pipeline("caption", model=small_model)
    with pytest.raises(InputError, match="batch_size"):
        ofa.pipeline("caption", model=small_model, tokenizer=tok, batch_size=0)
    with pytest.raises(PluginError, match="caption"):
        ofa.pipeline("no_such_task", model=small_model, tokenizer=tok)


def test_progress_bar(small_model: Any, tok: Any, images: list[Image.Image],
                      capsys: pytest.CaptureFixture[str]) -> None:
    quiet = ofa.pipeline("caption", model=small_model, tokenizer=tok, batch_size=2, progress=False, **CAPTION)
    expected = quiet(images[:3])
    assert capsys.readouterr().err == ""
    loud = ofa.pipeline("caption", model=small_model, tokenizer=tok, batch_size=2, progress=True, **CAPTION)
    same(loud(images[:3]), expected)
    err = capsys.readouterr().err
    assert "caption" in err and "2/2" in err
    auto = ofa.pipeline("caption", model=small_model, tokenizer=tok, batch_size=2, **CAPTION)
    same(auto(images[:3]), expected)  # more inputs than one batch: shown by default
    assert "2/2" in capsys.readouterr().err


def test_checkpoint_directory_gives_model_and_tokenizer(checkpoint_dir: Path, caption: Pipeline,
                                                        images: list[Image.Image]) -> None:
    loaded = ofa.pipeline("caption", model=str(checkpoint_dir), **CAPTION)
    assert len(loaded.tokenizer) == len(caption.tokenizer)
    same([loaded(images[0])], [caption(images[0])])


def test_a_task_object_is_accepted(small_model: Any, tok: Any, images: list[Image.Image]) -> None:
    task = ofa.get_task("image_classify", image_size=64, class_names=["cat", "dog"])
    pred = ofa.pipeline(task, model=small_model, tokenizer=tok)(images[0])
    assert isinstance(pred, AnswerPrediction) and pred.answer in ("cat", "dog")
    assert [c for c, _ in pred.ranked] == sorted(["cat", "dog"], key=lambda c: c != pred.answer)


def test_stream_holds_one_batch_of_images_at_a_time(caption: Pipeline, image_file: Callable[..., Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """#14 item 4: images are decoded per batch and released after it, so the number of full-resolution images
    alive at once is bounded by the batch size, not the number of inputs."""
    import weakref

    import ofa.data.images as images_module

    paths = [image_file(seed, size=(1200, 900), name=f"big{seed}.png") for seed in range(9)]
    alive: set[int] = set()
    peak = [0]
    real_load = images_module.load_image

    def counting_load(src: Any) -> Image.Image:
        image = real_load(src)
        key = id(image)
        alive.add(key)
        peak[0] = max(peak[0], len(alive))
        weakref.finalize(image, alive.discard, key)
        return image

    monkeypatch.setattr(images_module, "load_image", counting_load)
    caption.batch_size = 2
    results = []
    for example, prediction in caption.stream([str(p) for p in paths]):
        results.append(prediction)
        del example, prediction
    assert [r.id for r in results] == list(range(9))
    assert all(isinstance(r, CaptionPrediction) for r in results)
    # at most the batch being predicted plus the next one's first image while the previous is released
    assert peak[0] <= 3, peak[0]
    whole = caption([str(p) for p in paths])  # __call__ streams too, same predictions
    assert [p.text for p in whole] == [r.text for r in results]  # type: ignore[union-attr]


def test_stream_records_bad_inputs_and_predicts_the_rest(caption: Pipeline, image_file: Callable[..., Path],
                                                         tmp_path: Path) -> None:
    good = [str(image_file(seed, name=f"g{seed}.png")) for seed in range(3)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(good[0]).read_bytes()[:40])
    inputs = [good[0], str(tmp_path / "missing.png"), good[1], str(broken), good[2]]
    caption.batch_size = 2
    out = list(caption.stream(inputs, errors="record"))
    assert [type(result).__name__ for _, result in out] == ["CaptionPrediction", "Failure", "CaptionPrediction",
                                                             "Failure", "CaptionPrediction"]
    failures = [result for _, result in out if isinstance(result, Failure)]
    assert [f.id for f in failures] == [1, 3]
    assert "missing.png" in str(failures[0].error) and "broken.png" in str(failures[1].error)
    assert failures[0].to_dict()["error"].startswith("DataError: ")
    alone = caption([good[0], good[1], good[2]])
    assert [r.text for _, r in out if not isinstance(r, Failure)] == [p.text for p in alone]
    with pytest.raises(DataError, match="missing.png"):
        list(caption.stream(inputs))  # errors="raise" is the default
    with pytest.raises(InputError, match="errors='skip'"):
        list(caption.stream(inputs, errors="skip"))


def test_user_text_is_literal_in_the_pipeline(small_model: Any, tok: Any, images: list[Image.Image]) -> None:
    """#14 item 7: a question that spells ``<bin_12>`` is text, not a location token, unless literal_text=False."""
    vqa = ofa.pipeline("vqa_gen", model=small_model, tokenizer=tok, image_size=64, candidates=["red", "blue"])
    sample = vqa.task.encode(vqa.examples(images[0], text="is <bin_12> red?")[0], vqa._encoder)
    bin_ids = set(range(tok.vocab.bin_id(0), tok.vocab.bin_id(0) + tok.vocab.num_bins))
    assert not bin_ids & set(sample.source)
    assert tok.decode(sample.source).strip().endswith("is <bin_12> red?")
    raw = ofa.pipeline("vqa_gen", model=small_model, tokenizer=tok, image_size=64, candidates=["red", "blue"],
                       literal_text=False)
    assert tok.vocab.bin_id(12) in raw.task.encode(raw.examples(images[0], text="is <bin_12> red?")[0],
                                                   raw._encoder).source
    assert isinstance(vqa(images[0], text="is <code_5> <mask> red?"), AnswerPrediction)


def test_bad_user_text_is_named_by_input_and_position(caption: Pipeline, small_model: Any, tok: Any,
                                                      images: list[Image.Image]) -> None:
    vqa = ofa.pipeline("vqa_gen", model=small_model, tokenizer=tok, image_size=64, candidates=["red", "blue"])
    bad = b"what \xff colour?".decode("utf-8", errors="surrogateescape")  # how Python decodes a non-UTF-8 argv
    with pytest.raises(InputError, match=r"text of input 1 is not valid Unicode: character '\\udcff' at index 5"):
        vqa([images[0], images[1]], text=["fine", bad])
    with pytest.raises(InputError, match="text is a int"):
        vqa(images[0], text=7)


def test_long_text_is_cut_with_a_warning_naming_the_limit(small_model: Any, tok: Any,
                                                          images: list[Image.Image]) -> None:
    vqa = ofa.pipeline("vqa_gen", model=small_model, tokenizer=tok, image_size=64, candidates=["red", "blue"])
    long_question = " ".join(["what colour is the big shape"] * 30)
    with pytest.warns(ofa.errors.OFAWarning, match=r"has \d+ tokens; only the first 80 \(the task's "
                                                   r"max_source_tokens\)"):
        vqa(images[0], text=long_question)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vqa(images[0], text="what colour is it?")  # short text: no warning
    for _ in range(10):  # one task object reports at most max_truncation_warnings of them
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            vqa(images[0], text=long_question)
    assert seen == []


def test_bf16_pipeline(small_model: Any, tok: Any, images: list[Image.Image]) -> None:
    """The bf16 path through the API: the model is cast (a copy when given a loaded model is the caller's
    business), images follow its dtype, predictions come back."""
    import copy

    import torch

    model = copy.deepcopy(small_model)
    bf16 = ofa.pipeline("caption", model=model, tokenizer=tok, dtype=torch.bfloat16, **CAPTION)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    pred = bf16(images[0])
    assert isinstance(pred, CaptionPrediction) and isinstance(pred.text, str)
    with pytest.raises(InputError, match="dtype"):
        ofa.pipeline("caption", model=copy.deepcopy(small_model), tokenizer=tok, dtype=torch.int8, **CAPTION)
