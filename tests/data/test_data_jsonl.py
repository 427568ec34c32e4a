"""ofa.data.jsonl: offset-indexed JSON lines, errors with file:line, images relative to a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ofa.data.jsonl import ImageFolderRecords, JSONLFile, resolve_image_path
from ofa.errors import DataError


def test_records_and_line_numbers(tmp_path):
    records = [{"id": i, "caption": f"caption {i}", "image": f"img/{i}.png"} for i in range(4)]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    jsonl = JSONLFile(path)
    assert len(jsonl) == 4
    assert [jsonl[i] for i in range(4)] == records
    assert jsonl.row_number(3) == 4
    assert list(jsonl.iter_shard(1, 2)) == records[2:]


@pytest.mark.parametrize(("line", "match"), [("{bad json", "invalid JSON"), ("[1, 2]", "expected a JSON object"),
                                             ("", "invalid JSON")])
def test_bad_lines_raise_with_file_and_line(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 0}\n' + line + '\n{"id": 2}\n')
    jsonl = JSONLFile(path)
    assert jsonl[2] == {"id": 2}
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: {match}"):
        jsonl[1]


def test_resolve_image_path(tmp_path):
    assert resolve_image_path({"image": "a/b.jpg"}, tmp_path) == tmp_path / "a" / "b.jpg"
    assert resolve_image_path({"image": "/abs/x.jpg"}, tmp_path) == Path("/abs/x.jpg")
    assert resolve_image_path({"image": "x.jpg"}, None) == Path("x.jpg")
    assert resolve_image_path({"caption": "text only"}, tmp_path) is None
    with pytest.raises(DataError, match="'image'"):
        resolve_image_path({"image": 3}, tmp_path)


def test_image_folder_records(tmp_path, image_factory):
    (tmp_path / "imgs").mkdir()
    image_factory(10, 8).save(tmp_path / "imgs" / "a.png")
    records = [{"id": "a", "image": "a.png"}, {"id": "t", "text": "no image"}, {"id": "m", "image": "missing.png"}]
    folder = ImageFolderRecords(tmp_path / "imgs", records)
    assert len(folder) == 3 and folder.row_number(2) == 3
    assert folder[0]["image"] == tmp_path / "imgs" / "a.png"
    assert records[0]["image"] == "a.png"  # the caller's records are not modified
    assert folder[1] == records[1]
    assert folder.load_image(0).size == (10, 8)
    with pytest.raises(DataError, match="missing.png"):
        folder.load_image(2)
    with pytest.raises(DataError, match="no 'image' field"):
        folder.load_image(1)
    with pytest.raises(DataError, match=r"records\[1\] must be a dict"):
        ImageFolderRecords(tmp_path, [{}, "x"])  # type: ignore[list-item]


def test_image_folder_records_from_jsonl(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1, "image": "x.png"}\n')
    folder = ImageFolderRecords.from_jsonl(path, tmp_path / "root")
    assert folder[0]["image"] == tmp_path / "root" / "x.png"
