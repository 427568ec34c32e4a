"""ofa.data.dataset: TaskDataset / ShardedTaskIterable over real TSV and JSONL files with a tiny fake task."""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

import pytest
from torch.utils.data import DataLoader

from ofa.data.collate import Batch, collate
from ofa.data.dataset import ShardedTaskIterable, TaskDataset
from ofa.data.images import decode_base64_image, load_image
from ofa.data.jsonl import ImageFolderRecords, JSONLFile, resolve_image_path
from ofa.data.text import pre_caption
from ofa.data.transforms import square_resize
from ofa.data.tsv import TSVFile
from ofa.errors import DataError
from ofa.tasks.base import Example, Prediction, Sample

IMAGE_SIZE = 16
COLS = [0, 3, 2]  # uniq_id, image, caption (the file also has an unused image_id column 1)


class FakeCaptionTask:
    """A minimal caption-like task: enough of the Task protocol for the readers."""

    name = "fake_caption"

    def parse_row(self, fields: Sequence[str]) -> Example:
        if len(fields) != 3:
            raise DataError(f"expected 3 columns (id, image, caption), got {len(fields)}")
        uniq_id, image, caption = fields
        return Example(id=uniq_id, image=decode_base64_image(image), text=caption)

    def parse_record(self, record: dict[str, Any], image_root: Any) -> Example:
        path = resolve_image_path(record, image_root)
        return Example(id=record["id"], image=None if path is None else load_image(path), text=record["caption"])

    def encode(self, example: Example, tok: Any, training: bool = False) -> Sample:
        caption = pre_caption(example.text or "", 20)
        if not caption:
            raise DataError(f"example {example.id!r} has an empty caption")
        image = None if example.image is None else square_resize(example.image, IMAGE_SIZE)
        sample = Sample(id=example.id, source=tok.encode_source(" what does the image describe?"), image=image,
                        patch_mask=image is not None)
        if training:
            target = tok.encode_target(" " + caption)
            sample.target, sample.prev_output = target, [tok.bos_id] + target[:-1]
        return sample

    def decode(self, ids: Sequence[int], tok: Any, sample: Sample | None = None) -> Prediction:
        return Prediction(id=None if sample is None else sample.id)

    def score(self, preds: Sequence[Prediction], refs: Sequence[Example]) -> dict[str, float]:
        return {"n": float(len(preds))}

    def generation_config(self, tok: Any) -> Any:
        return None


def _write_tsv(path, b64_factory, num_rows: int, bad: dict[int, str] | None = None) -> None:
    """Rows ``id_i``; ``bad`` maps a row index to the kind of damage: image | columns | text."""
    bad = bad or {}
    lines = []
    for i in range(num_rows):
        image, caption = b64_factory(20 + i % 5, 12, seed=i), f"A photo number {i}."
        kind = bad.get(i)
        if kind == "image":
            image = "!!not-base64!!"
        elif kind == "text":
            caption = "   "
        fields = [f"id_{i}", f"img_{i}", caption, image]
        if kind == "columns":
            fields = fields[:2]
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n")


BAD = {2: "image", 4: "columns", 7: "text"}  # rows (0-based); lines 3, 5 and 8 of the file


def test_task_dataset_encodes_rows(tmp_path, b64_factory, tok):
    path = tmp_path / "good.tsv"
    _write_tsv(path, b64_factory, 5)
    ds = TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok, training=True)
    assert len(ds) == 5
    sample = ds[3]
    assert sample.id == "id_3" and sample.image.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and sample.patch_mask
    assert sample.target[-1] == tok.eos_id and sample.prev_output[0] == tok.bos_id
    assert tok.decode(sample.target) == " a photo number 3."
    assert TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok)[0].target is None
    assert ds.bad_rows == 0


def test_bad_rows_are_skipped_counted_and_logged(tmp_path, b64_factory, tok, caplog):
    path = tmp_path / "mixed.tsv"
    _write_tsv(path, b64_factory, 10, BAD)
    ds = TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok, training=True, max_bad_rows=3)
    with caplog.at_level(logging.WARNING, logger="ofa.data.dataset"):
        ids = [ds[i].id for i in range(len(ds))]
    # A bad row is replaced by the next good one; the last row wraps to the first.
    assert ids == ["id_0", "id_1", "id_3", "id_3", "id_5", "id_5", "id_6", "id_8", "id_8", "id_9"]
    assert ds.bad_rows == 3
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 3
    for line, reason in ((3, "invalid base64"), (5, "row has 2 columns"), (8, "empty caption")):
        assert any(f"{path}:{line}" in m and reason in m for m in messages), (line, messages)
    # Known bad rows are skipped again without being recounted.
    assert ds[2].id == "id_3" and ds.bad_rows == 3 and len(caplog.records) == 3


def test_too_many_bad_rows_raise(tmp_path, b64_factory, tok):
    path = tmp_path / "mixed.tsv"
    _write_tsv(path, b64_factory, 10, BAD)
    ds = TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok, max_bad_rows=2)
    with pytest.raises(DataError, match=r"3 bad rows .*max_bad_rows=2.*mixed\.tsv:8.*empty caption"):
        for i in range(len(ds)):
            ds[i]
    strict = TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok, max_bad_rows=0)
    with pytest.raises(DataError, match="1 bad rows"):
        strict[2]


def test_all_rows_bad(tmp_path, b64_factory, tok):
    path = tmp_path / "allbad.tsv"
    _write_tsv(path, b64_factory, 3, {0: "image", 1: "text", 2: "columns"})
    ds = TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok, max_bad_rows=5)
    with pytest.raises(DataError, match="all 3 rows are bad"):
        ds[0]


def test_sharded_iterable_skips_bad_rows(tmp_path, b64_factory, tok, caplog):
    path = tmp_path / "mixed.tsv"
    _write_tsv(path, b64_factory, 10, BAD)
    source = TSVFile(path, COLS)
    good = [f"id_{i}" for i in range(10) if i not in BAD]
    with caplog.at_level(logging.WARNING, logger="ofa.data.dataset"):
        whole = ShardedTaskIterable(source, FakeCaptionTask(), tok, max_bad_rows=3)
        assert [s.id for s in whole] == good
    assert whole.bad_rows == 3 and len(caplog.records) == 3
    ranks = [ShardedTaskIterable(source, FakeCaptionTask(), tok, rank=r, world_size=3) for r in range(3)]
    assert [s.id for ds in ranks for s in ds] == good
    assert [ds.shard() for ds in ranks] == [range(0, 4), range(4, 7), range(7, 10)]
    with pytest.raises(DataError, match="more than max_bad_rows=1"):
        list(ShardedTaskIterable(source, FakeCaptionTask(), tok, max_bad_rows=1))
    with pytest.raises(DataError, match="rank"):
        ShardedTaskIterable(source, FakeCaptionTask(), tok, rank=2, world_size=2)


def test_dataloader_workers_see_every_row_once(tmp_path, b64_factory, tok):
    path = tmp_path / "rows.tsv"
    _write_tsv(path, b64_factory, 11)
    source = TSVFile(path, COLS)
    seen: list[str] = []
    for rank in range(2):  # two simulated ranks x two workers = four contiguous shards
        ds = ShardedTaskIterable(source, FakeCaptionTask(), tok, training=True, rank=rank, world_size=2)
        loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
        for batch in loader:
            assert isinstance(batch, Batch) and batch.patch_images.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
            seen.extend(batch.ids)
    assert sorted(seen) == sorted(f"id_{i}" for i in range(11))


def test_map_style_dataset_in_dataloader_with_bad_rows(tmp_path, b64_factory, tok):
    path = tmp_path / "mixed.tsv"
    _write_tsv(path, b64_factory, 10, BAD)
    ds = TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok, training=True, max_bad_rows=3)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 4, 2]  # batch sizes stay fixed
    assert {i for b in batches for i in b.ids} == {f"id_{i}" for i in range(10) if i not in BAD}


def test_jsonl_source_with_image_root(tmp_path, image_factory, tok, caplog):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(3):
        image_factory(20, 10, seed=i).save(root / f"{i}.png")
    records = [{"id": i, "image": f"{i}.png", "caption": f"picture {i}"} for i in range(3)]
    records.append({"id": 3, "image": "missing.png", "caption": "gone"})
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{oops\n")
    ds = TaskDataset(JSONLFile(path), FakeCaptionTask(), tok, training=True, image_root=root)
    with caplog.at_level(logging.WARNING, logger="ofa.data.dataset"):
        ids = [ds[i].id for i in range(len(ds))]
    assert ids == [0, 1, 2, 0, 0] and ds.bad_rows == 2
    text = " ".join(r.getMessage() for r in caplog.records)
    assert f"{path}:4" in text and "missing.png" in text and f"{path}:5" in text and "invalid JSON" in text
    folder = ImageFolderRecords(root, records[:3])
    assert [s.id for s in ShardedTaskIterable(folder, FakeCaptionTask(), tok)] == [0, 1, 2]


def test_construction_errors(tmp_path, b64_factory, tok):
    path = tmp_path / "rows.tsv"
    _write_tsv(path, b64_factory, 2)

    class NoParse:
        name = "no_parse"

        def encode(self, example, tok, training=False):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(DataError, match="no_parse.*parse_row"):
        TaskDataset(TSVFile(path, COLS), NoParse(), tok)
    with pytest.raises(DataError, match="image_root"):
        TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok, image_root=tmp_path)
    with pytest.raises(DataError, match="source must be"):
        TaskDataset([["a"]], FakeCaptionTask(), tok)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="max_bad_rows"):
        TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok, max_bad_rows=-1)
    with pytest.raises(IndexError):
        TaskDataset(TSVFile(path, COLS), FakeCaptionTask(), tok)[2]
