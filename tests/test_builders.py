"""``ofa.builders.init_location_embeddings``: ordered location embeddings for training from scratch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ofa.builders import build_model, init_location_embeddings
from ofa.errors import ConfigError
from ofa.tokenization import OFATokenizer


def _model_and_bins() -> tuple[torch.nn.Module, range]:
    tok = OFATokenizer.from_test_assets(num_codes=64, num_bins=100)
    torch.manual_seed(0)
    model = build_model("ofa-test", vocab_size=len(tok), embed_dim=64, num_heads=4, init_std=0.1)
    return model, tok.vocab.bin_range()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=0))


def test_bins_become_ordered_and_other_rows_stay() -> None:
    model, bins = _model_and_bins()
    weight = model.encoder.embed_tokens.weight
    before = weight.detach().clone()
    init_location_embeddings(model, bins)
    after = weight.detach()
    outside = torch.ones(after.shape[0], dtype=torch.bool)
    outside[bins.start:bins.stop] = False
    assert torch.equal(after[outside], before[outside])  # text, codes and the zero pad row untouched
    rows = after[bins.start:bins.stop]
    # Similarity falls with the distance between bins, from any starting bin.
    for i in (0, 37, 80):
        near, mid, far = _cos(rows[i], rows[i + 1]), _cos(rows[i], rows[i + 5]), _cos(rows[i], rows[i + 19])
        assert near > mid > far, (i, near, mid, far)
        assert near > 0.75
    # Entries keep the model's init scale (init_std 0.1).
    assert float(rows.std()) == pytest.approx(0.1, rel=0.1)
    # Tied: the output projection sees the same rows.
    assert model.decoder.output_projection.weight.data_ptr() == weight.data_ptr()


def test_image_positions_become_a_two_dimensional_grid() -> None:
    model, bins = _model_and_bins()
    table = model.encoder.embed_image_positions.weight
    row0 = table[0].detach().clone()
    init_location_embeddings(model, bins, std=0.05)
    bucket = model.config.image_bucket_size

    def at(r: int, c: int) -> torch.Tensor:
        return table[1 + r * bucket + c].detach()

    assert torch.equal(table[0], row0)  # id 0 is no image position
    assert _cos(at(3, 4), at(3, 5)) > _cos(at(3, 4), at(3, 12)) > _cos(at(3, 4), at(3, 30))
    assert _cos(at(3, 4), at(4, 4)) > _cos(at(3, 4), at(12, 4)) > _cos(at(3, 4), at(30, 4))
    # The row half and the column half are separate: same column, different row keeps the column half.
    half = table.shape[1] // 2
    assert torch.equal(at(3, 4)[half:], at(20, 4)[half:])
    assert torch.equal(at(3, 4)[:half], at(3, 20)[:half])
    assert float(table[1:].detach().std()) == pytest.approx(0.05, rel=0.1)
    assert torch.equal(model.decoder.embed_image_positions.weight[1:bucket * bucket + 1],
                       table[1:bucket * bucket + 1])


def test_init_is_deterministic_and_the_model_still_trains() -> None:
    model_a, bins = _model_and_bins()
    model_b, _ = _model_and_bins()
    init_location_embeddings(model_a, bins)
    init_location_embeddings(model_b, bins)
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(a, b), name
    tokens = torch.tensor([[0, 5, 6, 2]])
    images = torch.randn(1, 3, 32, 32)
    logits = model_a(tokens, tokens, patch_images=images, patch_masks=torch.tensor([True])).logits
    logits.float().logsumexp(-1).sum().backward()
    assert model_a.encoder.embed_tokens.weight.grad is not None
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("bin_ids, std, fragment", [
    (range(0), None, "bin_ids (range(0, 0))"),
    (range(10, 40, 2), None, "bin_ids (range(10, 40, 2))"),
    (range(500, 5000), None, "within the model's vocabulary"),
    ([1, 2, 3], None, "bin_ids ([1, 2, 3])"),
    (range(10, 20), 0.0, "std (0.0)"),
])
def test_bad_arguments_are_named(bin_ids: object, std: float | None, fragment: str) -> None:
    model, _ = _model_and_bins()
    with pytest.raises(ConfigError) as info:
        init_location_embeddings(model, bin_ids, std=std)  # type: ignore[arg-type]
    assert fragment in str(info.value)
