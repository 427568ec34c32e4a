"""ofa.data.collate: padding, images, OFA's prefix_tokens rule, constraints and errors."""

from __future__ import annotations

import pytest
import torch

from ofa.data.collate import Batch, collate, pad_sequences
from ofa.errors import DataError
from ofa.tasks.base import Sample

PAD = 1


def _sample(i: int, length: int, image: torch.Tensor | None = None, **kwargs) -> Sample:
    source = [0] + [10 + i + k for k in range(length - 2)] + [2]
    return Sample(id=i, source=source, image=image, patch_mask=image is not None, **kwargs)


def test_padding_values_and_shapes():
    samples = [
        _sample(0, 5, target=[7, 8, 2], prev_output=[0, 7, 8], weight=0.5),
        _sample(1, 3, target=[9, 2], prev_output=[0, 9], code_mask=True),
    ]
    batch = collate(samples)
    assert batch.ids == [0, 1] and len(batch) == 2
    assert batch.src_tokens.tolist() == [[0, 10, 11, 12, 2], [0, 11, 2, PAD, PAD]]
    assert batch.target.tolist() == [[7, 8, 2], [9, 2, PAD]]
    assert batch.prev_output_tokens.tolist() == [[0, 7, 8], [0, 9, PAD]]
    assert batch.src_tokens.dtype == batch.target.dtype == torch.long
    assert batch.weights.tolist() == [0.5, 1.0] and batch.weights.dtype == torch.float32
    assert batch.code_masks.tolist() == [False, True] and batch.code_masks.dtype == torch.bool
    assert batch.patch_images is None and batch.patch_masks is None
    assert batch.prefix_tokens is None and batch.decoder_prompts is None and batch.constraints is None
    assert batch.ntokens == 5
    assert batch.samples == samples
    assert collate(samples, pad_id=-7).src_tokens[1, -1].item() == -7


def test_inference_batch_has_no_targets():
    batch = collate([_sample(0, 4), _sample(1, 4)])
    assert batch.target is None and batch.prev_output_tokens is None and batch.ntokens == 0


def test_mixed_image_and_text_only_samples():
    image = torch.randn(3, 8, 8)
    samples = [_sample(0, 4, image), _sample(1, 4), _sample(2, 4, torch.zeros(3, 8, 8))]
    samples[2].patch_mask = False  # a task's own zero image for a text-only sample
    batch = collate(samples)
    assert batch.patch_images.shape == (3, 3, 8, 8) and batch.patch_images.dtype == torch.float32
    assert torch.equal(batch.patch_images[0], image)
    assert not batch.patch_images[1].any()
    assert batch.patch_masks.tolist() == [True, False, False]


def test_images_of_different_shapes_raise():
    samples = [_sample(0, 4, torch.zeros(3, 8, 8)), _sample(1, 4, torch.zeros(3, 16, 16))]
    with pytest.raises(DataError, match=r"same shape.*\[3, 8, 8\] \(sample 0\).*\[3, 16, 16\] \(sample 1\)"):
        collate(samples)
    with pytest.raises(DataError, match=r"\[3, H, W\]"):
        collate([_sample(0, 4, torch.zeros(8, 8))])


def test_prefix_tokens_follow_ofa_rule_on_golden_example():
    sources = [[0, 99, 16, 5, 313, 608, 116, 2], [0, 99, 16, 42, 116, 2]]
    samples = [Sample(id=i, source=s, decoder_prompt=s[:-1]) for i, s in enumerate(sources)]
    batch = collate(samples)
    assert batch.src_tokens.tolist() == [[0, 99, 16, 5, 313, 608, 116, 2], [0, 99, 16, 42, 116, 2, 1, 1]]
    assert batch.prefix_tokens.tolist() == [[99, 16, 5, 313, 608, 116], [99, 16, 42, 116, 1, 1]]
    assert batch.decoder_prompts == [s[:-1] for s in sources]


def test_constraints_are_kept_per_sample():
    allowed = [[5, 6], [2]]
    batch = collate([_sample(0, 4, target=[5, 2], prev_output=[0, 5], constraint=allowed),
                     _sample(1, 4, target=[7, 2], prev_output=[0, 7])])
    assert batch.constraints == [allowed, None]


def test_none_samples_are_dropped_and_empty_raises():
    batch = collate([None, _sample(0, 3), None])
    assert batch.ids == [0]
    with pytest.raises(DataError, match="no samples"):
        collate([])
    with pytest.raises(DataError, match="all None"):
        collate([None, None])


def test_inconsistent_samples_raise():
    with pytest.raises(DataError, match="some samples have target"):
        collate([_sample(0, 3, target=[2], prev_output=[0]), _sample(1, 3)])
    with pytest.raises(DataError, match="some samples have decoder_prompt"):
        collate([_sample(0, 3, decoder_prompt=[0]), _sample(1, 3)])
    with pytest.raises(DataError, match="same length"):
        collate([_sample(0, 3, target=[5, 2], prev_output=[0])])
    with pytest.raises(DataError, match="source"):
        collate([Sample(id=0, source=[[0, 1], [2]])])  # type: ignore[list-item]
    with pytest.raises(DataError, match="list of Sample"):
        collate(_sample(0, 3))  # type: ignore[arg-type]


def test_to_device_moves_tensors_only():
    batch = collate([_sample(0, 4, torch.zeros(3, 4, 4), target=[5, 2], prev_output=[0, 5])])
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved is not batch
    assert torch.equal(moved.src_tokens, batch.src_tokens) and moved.samples is batch.samples
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        assert batch.to("cuda").src_tokens.is_cuda


def test_pad_sequences():
    assert pad_sequences([[1], [], [3, 4, 5]], 0).tolist() == [[1, 0, 0], [0, 0, 0], [3, 4, 5]]
    assert pad_sequences([], 0).shape == (0, 0)
