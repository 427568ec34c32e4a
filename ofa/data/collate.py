"""Collate :class:`~ofa.tasks.base.Sample` records into a padded :class:`Batch`.

Token sequences are right-padded with ``pad_id``. ``prefix_tokens`` follows OFA's VQA collate exactly: the
samples' decoder prompts (``source[:-1]`` for VQA / SNLI-VE) are right-padded into a matrix and its first
column (``<s>``) is dropped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ofa.errors import DataError
from ofa.records import Sample
from ofa.tokenization.vocab import PAD_ID

__all__ = ["Batch", "PartedBatch", "collate", "collate_parts", "pad_sequences"]


@dataclass(eq=False)  # tensors have no single truth value, so no generated __eq__
class Batch:
    """A padded batch.

    Attributes:
        ids: The samples' ids.
        src_tokens: ``[b, L]`` long, encoder input ids, right-padded.
        patch_images: ``[b, 3, H, W]`` float, or None when no sample has an image.
        patch_masks: ``[b]`` bool, True where the image is real; None with ``patch_images``.
        prev_output_tokens: ``[b, T]`` long decoder inputs, or None at inference.
        target: ``[b, T]`` long targets (pad = ignored), or None at inference.
        code_masks: ``[b]`` bool, True where the target is image codes.
        weights: ``[b]`` float32 per-sample loss weights.
        prefix_tokens: ``[b, P]`` long, decoder prompts without their ``<s>``, right-padded; or None.
        decoder_prompts: The unpadded decoder prompts (with ``<s>``), or None.
        constraints: Per sample, the allowed ids per target position (or None for that sample); None when
            no sample has constraints.
        samples: The samples themselves (for their ``meta``).
        pad_id: The padding id used.
    """

    ids: list[Any]
    src_tokens: torch.Tensor
    patch_images: torch.Tensor | None
    patch_masks: torch.Tensor | None
    prev_output_tokens: torch.Tensor | None
    target: torch.Tensor | None
    code_masks: torch.Tensor
    weights: torch.Tensor
    prefix_tokens: torch.Tensor | None = None
    decoder_prompts: list[list[int]] | None = None
    constraints: list[list[list[int]] | None] | None = None
    samples: list[Sample] = field(default_factory=list)
    pad_id: int = PAD_ID

    def __len__(self) -> int:
        return int(self.src_tokens.shape[0])

    @property
    def ntokens(self) -> int:
        """Number of non-pad target tokens (0 without targets)."""
        if self.target is None:
            return 0
        return int(self.target.ne(self.pad_id).sum().item())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor moved to ``device`` (lists and samples are shared)."""
        moved: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device, non_blocking=non_blocking)
        return dataclasses.replace(self, **moved)


@dataclass(eq=False)
class PartedBatch:
    """The samples of one micro-batch that take separate forward passes, one :class:`Batch` per ``Sample.part``
    (None where a part has no sample): OFA pretraining's image-text batch ("v1") and its text/image-infilling
    and detection batch ("v2"), which differ in image size and patch sampling."""

    parts: tuple[Batch | None, ...]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts if p is not None)

    @property
    def ntokens(self) -> int:
        return sum(p.ntokens for p in self.parts if p is not None)

    @property
    def ids(self) -> list[Any]:
        return [i for p in self.parts if p is not None for i in p.ids]

    def map(self, fn: Callable[[Batch], Batch]) -> PartedBatch:
        """``fn`` applied to every part."""
        return PartedBatch(tuple(None if p is None else fn(p) for p in self.parts))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PartedBatch:
        return self.map(lambda p: p.to(device, non_blocking=non_blocking))


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int, what: str = "sequences") -> torch.Tensor:
    """Right-pad id lists into a ``[b, max_len]`` long tensor.

    Args:
        sequences: The id lists.
        pad_id: The padding id.
        what: Name used in error messages.

    Raises:
        DataError: If a sequence is not a list of ints.
    """
    max_len = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), max_len), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            try:
                out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            except (TypeError, ValueError, RuntimeError) as err:
                raise DataError(f"{what}[{row}] is not a flat list of ints ({err}): {list(seq)[:20]!r}") from err
    return out


def _all_or_none(samples: Sequence[Sample], name: str) -> bool:
    """True if every sample has ``name`` set, False if none has; DataError for a mix."""
    present = [getattr(s, name) is not None for s in samples]
    if any(present) and not all(present):
        missing = [s.id for s, p in zip(samples, present) if not p]
        raise DataError(f"some samples have {name} and some do not (missing in ids {missing[:10]}); "
                        "a batch must be all training or all inference samples")
    return all(present)


def _id_lists(samples: Sequence[Sample], name: str) -> list[list[int]] | None:
    """Every sample's ``name`` id list, or None when no sample has one (DataError for a mix)."""
    if not _all_or_none(samples, name):
        return None
    return [list(getattr(s, name)) for s in samples]


def _collate_images(samples: Sequence[Sample]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    images = [s.image for s in samples]
    real = [img for img in images if img is not None]
    if not real:
        return None, None
    for s in samples:
        if s.image is not None and (not isinstance(s.image, torch.Tensor) or s.image.dim() != 3):
            shape = tuple(s.image.shape) if isinstance(s.image, torch.Tensor) else type(s.image).__name__
            raise DataError(f"sample {s.id!r}: image must be a [3, H, W] tensor, got {shape}")
    shapes = {tuple(img.shape) for img in real}
    if len(shapes) > 1:
        by_shape = {tuple(s.image.shape): s.id for s in samples if s.image is not None}
        raise DataError(
            "all images in a batch must have the same shape, got "
            + ", ".join(f"{list(shape)} (sample {sid!r})" for shape, sid in sorted(by_shape.items()))
        )
    template = real[0]
    patch_images = torch.stack(
        [img if img is not None else torch.zeros_like(template) for img in images]
    )
    patch_masks = torch.tensor([s.image is not None and bool(s.patch_mask) for s in samples], dtype=torch.bool)
    return patch_images, patch_masks


def collate_parts(items: Sequence[Sample | Sequence[Sample] | None], pad_id: int = PAD_ID) -> Batch | PartedBatch:
    """Collate dataset items that may be groups of samples (a task's ``encode_group``): a :class:`Batch` when
    every sample has ``part`` 0, else a :class:`PartedBatch` with one batch per part.

    Raises:
        DataError: as :func:`collate`, or a negative ``part``.
    """
    flat: list[Sample | None] = []
    for item in items:
        if item is None or isinstance(item, Sample):
            flat.append(item)
        else:
            flat.extend(item)
    kept = [s for s in flat if s is not None]
    parts = {getattr(s, "part", 0) for s in kept}
    if parts <= {0}:
        return collate(flat, pad_id)
    if any(not isinstance(p, int) or p < 0 for p in parts):
        raise DataError(f"Sample.part must be an int >= 0, got {sorted(parts, key=str)}")
    return PartedBatch(tuple(_collate([s for s in kept if s.part == p], pad_id) if p in parts else None
                             for p in range(max(parts) + 1)))


def collate(samples: Sequence[Sample | None], pad_id: int = PAD_ID) -> Batch:
    """Pad and stack samples into a :class:`Batch`.

    ``None`` entries (rows a reader chose to drop) are removed first. Samples without an image in a batch with
    images get a zero image and ``patch_mask=False``; a sample's own ``patch_mask`` is kept otherwise.

    Args:
        samples: The samples.
        pad_id: The padding id (1 in OFA's dictionary).

    Returns:
        The batch.

    Raises:
        DataError: If no sample is left, images differ in shape (the message lists them), some samples have
            targets/decoder prompts and others not, or a sample's ``target`` and ``prev_output`` differ in
            length.
    """
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
        raise DataError(f"collate expects a list of Sample, got {type(samples).__name__}")
    kept = [s for s in samples if s is not None]
    if not kept:
        raise DataError("collate got no samples" if not samples else f"collate got {len(samples)} samples, all None")
    for s in kept:
        if not hasattr(s, "source") or not hasattr(s, "decoder_prompt"):
            raise DataError(f"collate expects Sample records, got {type(s).__name__}")
    parts = sorted({s.part for s in kept}, key=str)
    if parts != [0]:
        raise DataError(f"samples for several forward passes (Sample.part {parts}) need collate_parts")
    return _collate(kept, pad_id)


def _collate(kept: list[Sample], pad_id: int) -> Batch:
    patch_images, patch_masks = _collate_images(kept)

    targets = _id_lists(kept, "target")
    prev_outputs = _id_lists(kept, "prev_output")
    if targets is not None and prev_outputs is not None:
        for s, tgt, prev in zip(kept, targets, prev_outputs):
            if len(tgt) != len(prev):
                raise DataError(f"sample {s.id!r}: target has {len(tgt)} ids but prev_output has {len(prev)}; "
                                "they must have the same length")
    target = None if targets is None else pad_sequences(targets, pad_id, "target")
    prev_output_tokens = None if prev_outputs is None else pad_sequences(prev_outputs, pad_id, "prev_output")

    prefix_tokens = None
    decoder_prompts = _id_lists(kept, "decoder_prompt")
    if decoder_prompts is not None:
        # OFA: merge the prompts (right-padded), then drop the <s> column.
        prefix_tokens = pad_sequences(decoder_prompts, pad_id, "decoder_prompt")[:, 1:].contiguous()

    constraints = None
    if any(s.constraint is not None for s in kept):
        constraints = [s.constraint for s in kept]

    return Batch(
        ids=[s.id for s in kept],
        src_tokens=pad_sequences([s.source for s in kept], pad_id, "source"),
        patch_images=patch_images,
        patch_masks=patch_masks,
        prev_output_tokens=prev_output_tokens,
        target=target,
        code_masks=torch.tensor([bool(s.code_mask) for s in kept], dtype=torch.bool),
        weights=torch.tensor([float(s.weight) for s in kept], dtype=torch.float32),
        prefix_tokens=prefix_tokens,
        decoder_prompts=decoder_prompts,
        constraints=constraints,
        samples=kept,
        pad_id=pad_id,
    )
