"""The contract every registered task meets (built-ins and plugins alike):

example -> encode -> collate -> model forward (teacher forcing, ``ofa-test``) -> predict / generate -> decode ->
score, plus one real image file per task through :func:`ofa.pipeline`.

A task needs an entry in ``EXAMPLES`` (options for the test preset and two examples). A new built-in task
without one fails here on purpose; a third-party task other than the example plugin is skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from PIL import Image

import ofa
from ofa.data.collate import collate
from ofa.pretraining.files import VLRow
from ofa.tasks import task_info
from ofa.tasks.base import Example, Prediction, Sample

SIZE = 64
GRID = 2  # image_gen grid of the test model (code_image_size 16)
# no Java start-up (METEOR, PTB) and a short beam: random weights give garbage text anyway
QUICK_CAPTION = {"tokenizer": "simple", "metrics": ("BLEU", "ROUGE_L", "CIDEr"), "beam_size": 2, "max_len": 6}

ExampleFactory = Callable[[Image.Image, int], Example]

# name -> (task options, example factory(image, index), whether the task reads an image)
EXAMPLES: dict[str, tuple[dict[str, Any], ExampleFactory, bool]] = {
    "caption": ({"image_size": SIZE, **QUICK_CAPTION},
                lambda im, i: Example(id=i, image=im, target=["a red square on grey", "a square"]), True),
    "refcoco": ({"image_size": SIZE, "max_image_size": SIZE},
                lambda im, i: Example(id=i, image=im, text="the square on the left",
                                      target=(2.0 + i, 3.0, 30.0, 40.0 - i)), True),
    "region_caption": ({"image_size": SIZE, "max_image_size": SIZE, **QUICK_CAPTION},
                       lambda im, i: Example(id=i, image=im, target=["a corner of the image"],
                                             extra={"region": (0, 0, 20 + i, 20)}), True),
    "vqa_gen": ({"image_size": SIZE, "candidates": ["red", "blue", "two", "hot dog"]},
                lambda im, i: Example(id=i, image=im, text="what colour is the square" + " really" * i,
                                      target={"red": 1.0, "blue": 0.3}), True),
    "snli_ve": ({"image_size": SIZE},
                lambda im, i: Example(id=i, image=im, text="a square", target=["entailment", "neutral"][i % 2],
                                      extra={"premise": "a red square on grey"}), True),
    "image_classify": ({"image_size": SIZE, "class_names": ["square", "circle", "red triangle"]},
                       lambda im, i: Example(id=i, image=im, target="square"), True),
    "image_gen": ({"grid_size": GRID, "num_samples": 2},
                  lambda im, i: Example(id=i, text="a red square", target=[[1, 2], [3, 4 + i]]), False),
    "sst2": ({}, lambda im, i: Example(id=i, text="a wonderful little film" + "!" * i, target=str(i % 2)), False),
    "count_objects": ({"image_size": SIZE}, lambda im, i: Example(id=i, image=im, target=1 + i), True),
    # Grounding rows need no negative-sample resources (caption and qa rows do: tests/pretraining covers them).
    "pretrain": ({"image_size": SIZE, "aux_image_size": SIZE, "max_image_size": SIZE},
                 lambda im, i: Example(id=i, image=im, text="the square on the left", extra={"row": VLRow(
                     id=str(i), image=im, caption="the square on the left", question="", refs=f"{2 + i},3,30,40",
                     gt_objects=[], dataset="test", type="visual_grounding")}), True),
}

EXAMPLE_PLUGIN = "count_objects"  # plugins/ofa-example-task: must be covered like a built-in


def _distributions() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for info in task_info():
        out.setdefault(info.name, set()).add(info.distribution)
    return out


def _case(name: str) -> tuple[Any, dict[str, Any], ExampleFactory, bool]:
    """The task built with its test options, or fail/skip when it has no example factory."""
    if name not in EXAMPLES:
        dists = _distributions().get(name, set())
        if name == EXAMPLE_PLUGIN or "ofa-unified" in dists or "<registered>" in dists:
            pytest.fail(f"task {name!r} ({', '.join(sorted(dists))}) has no example factory: add one to EXAMPLES "
                        f"in {Path(__file__).name} so it is covered by the contract test")
        pytest.skip(f"third-party task {name!r} from {', '.join(sorted(dists))} has no example factory here")
    options, factory, needs_image = EXAMPLES[name]
    return ofa.get_task(name, **options), options, factory, needs_image


def _check_ids(ids: list[int], vocab_size: int, what: str) -> None:
    assert all(isinstance(i, int) and 0 <= i < vocab_size for i in ids), f"{what} has ids outside the vocab: {ids}"


def _check_training_sample(sample: Sample, tok: Any, needs_image: bool) -> None:
    assert isinstance(sample, Sample)
    _check_ids(sample.source, len(tok), "source")
    assert len(sample.source) >= 3 and sample.source[0] == tok.bos_id and sample.source[-1] == tok.eos_id
    assert sample.target is not None and sample.prev_output is not None
    _check_ids(sample.target, len(tok), "target")
    _check_ids(sample.prev_output, len(tok), "prev_output")
    assert sample.target[-1] == tok.eos_id and tok.eos_id not in sample.target[:-1]
    assert sample.prev_output[0] == tok.bos_id
    assert len(sample.prev_output) == len(sample.target)
    # teacher forcing: the decoder input is the target shifted right, wherever the target is trained
    for k in range(1, len(sample.target)):
        if sample.target[k - 1] != tok.pad_id:
            assert sample.prev_output[k] == sample.target[k - 1], (k, sample.prev_output, sample.target)
    if sample.constraint is not None:
        assert len(sample.constraint) == len(sample.target)
        for allowed, want in zip(sample.constraint, sample.target):
            assert want == tok.pad_id or want in allowed  # the trie never forbids the target itself
    assert isinstance(sample.weight, float) and sample.weight > 0
    if needs_image:
        assert isinstance(sample.image, torch.Tensor) and sample.image.shape == (3, SIZE, SIZE)
        assert sample.image.dtype == torch.float32 and bool(torch.isfinite(sample.image).all())
        assert sample.patch_mask
    else:
        assert sample.image is None and not sample.patch_mask


def _check_predictions(preds: list[Prediction], examples: list[Example], task: Any) -> None:
    assert len(preds) == len(examples)
    for pred, ex in zip(preds, examples):
        assert isinstance(pred, Prediction), type(pred)
        assert pred.id == ex.id
        assert pred.score is None or isinstance(pred.score, float)
        json.dumps(pred.to_dict())  # the CLI prints it


def _check_scores(scores: Any) -> None:
    assert isinstance(scores, dict) and scores
    for key, value in scores.items():
        assert isinstance(key, str) and isinstance(value, float) and math.isfinite(value), (key, value)


@pytest.mark.parametrize("name", ofa.list_tasks())
def test_task_contract(name: str, tok: Any, small_model: Any, pil_image: Callable[..., Image.Image]) -> None:
    task, _, factory, needs_image = _case(name)
    assert task.name == name
    examples = [factory(pil_image(1, (80, 48)), 0), factory(pil_image(2, (50, 70)), 1)]

    # encode (training) -> collate -> teacher-forced forward
    samples = [task.encode(ex, tok, training=True) for ex in examples]
    for sample in samples:
        _check_training_sample(sample, tok, needs_image)
    batch = collate(samples, pad_id=tok.pad_id)
    with torch.no_grad():
        out = small_model(batch.src_tokens, batch.prev_output_tokens, batch.patch_images, batch.patch_masks,
                         batch.code_masks)
    assert out.logits.shape == (2, batch.prev_output_tokens.shape[1], len(tok))
    assert bool(torch.isfinite(out.logits).all())

    # encode (inference) -> predict (or plain generation for a minimal plugin) -> decode
    inference = [task.encode(ex, tok) for ex in examples]
    assert all(s.target is None and s.prev_output is None for s in inference)
    assert [s.source for s in inference] == [s.source for s in samples]
    infer_batch = collate(inference, pad_id=tok.pad_id)
    if hasattr(task, "predict"):
        preds = task.predict(small_model, infer_batch, tok)
    else:
        from ofa.generation import generate

        hypos = generate(small_model, infer_batch.src_tokens, patch_images=infer_batch.patch_images,
                         patch_masks=infer_batch.patch_masks, config=task.generation_config(tok),
                         prefix_tokens=infer_batch.prefix_tokens)
        preds = [task.decode(h[0].tokens.tolist(), tok, s) for h, s in zip(hypos, inference)]
    _check_predictions(preds, examples, task)

    # decode the reference target ids directly, then score both
    decoded = task.decode(samples[0].target, tok, inference[0])
    assert isinstance(decoded, Prediction) and decoded.id == examples[0].id
    _check_scores(task.score(preds, examples))
    _check_scores(task.score([decoded], examples[:1]))


@pytest.mark.parametrize("name", ofa.list_tasks())
def test_task_through_the_pipeline_on_an_image_file(name: str, tok: Any, small_model: Any,
                                                    image_file: Callable[..., Path]) -> None:
    task, _, factory, needs_image = _case(name)
    path = image_file(seed=3, size=(72, 40))
    example = factory(Image.open(path), 0)
    runner = ofa.pipeline(task, model=small_model, tokenizer=tok)
    pred = runner(str(path) if needs_image else None, text=example.text, **example.extra)
    assert isinstance(pred, Prediction) and pred.id == 0
    json.dumps(pred.to_dict())
    same = runner([path] if needs_image else None, text=[example.text] if example.text else None,
                  **example.extra)
    assert isinstance(same, list) and len(same) == 1 and type(same[0]) is type(pred)
    assert same[0].score == pytest.approx(pred.score, abs=1e-4) if pred.score is not None else True


def test_every_builtin_task_has_an_example_factory() -> None:
    missing = [p.name for p in task_info() if p.distribution == "ofa-unified" and p.name not in EXAMPLES]
    assert not missing, f"built-in tasks without an example factory: {missing}"


def test_the_example_plugin_is_installed() -> None:
    if EXAMPLE_PLUGIN not in ofa.list_tasks():
        pytest.skip("plugins/ofa-example-task is not installed (pip install -e plugins/ofa-example-task)")
    assert _distributions()[EXAMPLE_PLUGIN] == {"ofa-example-task"}


def test_a_task_without_an_example_factory_fails_unless_third_party(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    dists = {"new_builtin": {"ofa-unified"}, "notebook": {"<registered>"}, "someone_elses": {"their-dist"}}
    monkeypatch.setattr(sys.modules[__name__], "_distributions", lambda: dists)
    for name in ["new_builtin", "notebook"]:
        with pytest.raises(pytest.fail.Exception, match=f"{name!r}.*no example factory"):
            _case(name)
    with pytest.raises(pytest.skip.Exception, match="third-party task 'someone_elses' from their-dist"):
        _case("someone_elses")
