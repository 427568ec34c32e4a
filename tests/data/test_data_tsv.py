"""ofa.data.tsv / ofa.data.lines: the offset index against naive reading, selected columns, sharding."""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset

from ofa.data.tsv import TSVFile, shard_for_worker, shard_range
from ofa.errors import DataError

ROWS = [
    "0\tfirst\ta dog",
    "1\tsecond\tcafé ünïcode — ok",
    "",  # an empty line in the middle is a (bad) row of its own
    "3\tfourth\t" + "x" * 5000,
    "4\t\t",  # empty fields are kept
    "5\tsixth\ta cat",
]


def _naive(path) -> list[str]:
    lines = path.read_bytes().decode("utf-8").split("\n")
    while lines and lines[-1].strip("\r") == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("tail", ["", "\n", "\n\n\n"])
def test_offsets_match_naive_reading(tmp_path, ending, tail):
    path = tmp_path / "data.tsv"
    path.write_bytes((ending.join(ROWS) + tail.replace("\n", ending)).encode("utf-8"))
    tsv = TSVFile(path)
    naive = _naive(path)
    assert len(tsv) == len(naive) == len(ROWS)
    for i, line in enumerate(naive):
        assert tsv[i] == line.split("\t")
        assert tsv.row_number(i) == i + 1
    assert tsv[-1] == ROWS[-1].split("\t")
    assert list(tsv) == [line.split("\t") for line in naive]


def test_larger_file_and_random_access_order(tmp_path):
    path = tmp_path / "big.tsv"
    lines = [f"{i}\t{'ab' * (i % 17)}\t{i * i}" for i in range(5000)]
    path.write_text("\n".join(lines) + "\n")
    tsv = TSVFile(path)
    assert len(tsv) == 5000
    for i in (4999, 0, 2500, 17, 4998):
        assert tsv[i] == lines[i].split("\t")


def test_empty_and_blank_files(tmp_path):
    for content in (b"", b"\n", b"\r\n\n"):
        path = tmp_path / "empty.tsv"
        path.write_bytes(content)
        assert len(TSVFile(path)) == 0


def test_selected_cols_pick_and_order(tmp_path):
    path = tmp_path / "cols.tsv"
    path.write_text("id0\timg0\tcap0\tlabels0\tb64_0\nid1\timg1\n")
    tsv = TSVFile(path, selected_cols=[0, 4, 2])
    assert tsv[0] == ["id0", "b64_0", "cap0"]
    with pytest.raises(DataError, match=r"cols\.tsv:2: row has 2 columns.*needs at least 5"):
        tsv[1]


def test_separator_and_bad_arguments(tmp_path):
    path = tmp_path / "comma.tsv"
    path.write_text("a,b,c\n")
    assert TSVFile(path, separator=",")[0] == ["a", "b", "c"]
    with pytest.raises(DataError, match="selected_cols"):
        TSVFile(path, selected_cols=[0, -1])
    with pytest.raises(DataError, match="selected_cols"):
        TSVFile(path, selected_cols="012")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="separator"):
        TSVFile(path, separator="")
    with pytest.raises(DataError, match="missing.tsv.*does not exist"):
        TSVFile(tmp_path / "missing.tsv")
    with pytest.raises(IndexError):
        TSVFile(path)[1]


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"ok\tfine\ncaf\xe9\tbad\n")
    tsv = TSVFile(path)
    assert tsv[0] == ["ok", "fine"]
    with pytest.raises(DataError, match=r"latin\.tsv:2: not valid UTF-8"):
        tsv[1]


def test_bom_is_ignored(tmp_path):
    path = tmp_path / "bom.tsv"
    path.write_bytes("\ufeffa\tb\n".encode("utf-8"))
    assert TSVFile(path)[0] == ["a", "b"]


def test_pickle_round_trip_after_reading(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("a\tb\nc\td\n")
    tsv = TSVFile(path, selected_cols=[1])
    assert tsv[0] == ["b"]  # opens a handle, which must not be pickled
    clone = pickle.loads(pickle.dumps(tsv))
    assert clone[1] == ["d"] and len(clone) == 2 and clone.path == tsv.path
    tsv.close()
    assert tsv[1] == ["d"]  # reopens


@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=1, max_value=70))
def test_shard_ranges_are_disjoint_contiguous_and_cover(num_rows, num_shards):
    shards = [shard_range(num_rows, s, num_shards) for s in range(num_shards)]
    assert [i for r in shards for i in r] == list(range(num_rows))  # in order, each row once
    sizes = [len(r) for r in shards]
    assert max(sizes) - min(sizes) <= 1
    assert all(r.step == 1 for r in shards)


@pytest.mark.parametrize(("args", "match"), [((5, 2, 2), "shard_id"), ((5, 0, 0), "num_shards"),
                                              ((-1, 0, 1), "num_rows"), ((5, 1.0, 2), "shard_id")])
def test_shard_range_rejects_bad_arguments(args, match):
    with pytest.raises(DataError, match=match):
        shard_range(*args)


@pytest.mark.parametrize("num_rows", [0, 1, 3, 10])
def test_iter_shard_yields_every_row_once(tmp_path, num_rows):
    path = tmp_path / "rows.tsv"
    path.write_text("".join(f"{i}\trow{i}\n" for i in range(num_rows)))
    tsv = TSVFile(path, selected_cols=[0])
    for num_shards in range(1, 13):
        seen = [int(f[0]) for s in range(num_shards) for f in tsv.iter_shard(s, num_shards)]
        assert seen == list(range(num_rows))


class _ShardIds(IterableDataset):
    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        yield torch.tensor(shard_for_worker(self.rank, self.world_size))


def test_shard_for_worker_outside_and_inside_workers():
    assert shard_for_worker() == (0, 1)
    assert shard_for_worker(2, 3) == (2, 3)
    with pytest.raises(DataError, match="rank"):
        shard_for_worker(3, 3)
    loader = DataLoader(_ShardIds(rank=1, world_size=2), batch_size=None, num_workers=2)
    assert sorted(tuple(t.tolist()) for t in loader) == [(2, 4), (3, 4)]
