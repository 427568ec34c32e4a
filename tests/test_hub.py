"""Hub ids (issue #16 item 2): ``load_checkpoint``, ``pipeline`` and ``--checkpoint`` resolve ``org/name`` through
``huggingface_hub``, here offline (HF_HUB_OFFLINE=1) against a cache laid out the way ``huggingface_hub`` lays it
out: ``models--org--name/{blobs,refs,snapshots/<commit>}`` with snapshot files symlinked to content-named blobs."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import huggingface_hub.constants
import pytest
import torch

import ofa
from ofa.apps.cli import main
from ofa.errors import CheckpointError
from ofa.hub import is_hub_id, resolve_source
from ofa.pipeline import load_tokenizer

COMMIT = hashlib.sha1(b"ofa-test").hexdigest()
OPTIONS = {"image_size": 64, "beam_size": 2, "max_len": 6}


def _cache_repo(cache: Path, repo: str, source: Path, refs: tuple[str, ...] = ("main",), commit: str = COMMIT) -> Path:
    """Put ``source``'s files into ``cache`` as ``huggingface_hub`` stores a downloaded snapshot of ``repo``."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (folder / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def port() -> tuple[Any, Any]:
    """A model and tokenizer with the HF port's fixed 8192 codes and 1000 bins (its tokenizer adds exactly those)."""
    tok = ofa.OFATokenizer.from_test_assets(num_codes=8192, num_bins=1000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = ofa.build_model("ofa-test", vocab_size=len(tok))
    return model.eval(), tok


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, small_model: Any, tok: Any, hf: Any,
          port: tuple[Any, Any]) -> Path:
    root = tmp_path_factory.mktemp("hub")
    cache = root / "cache"
    ours = root / "ours"
    small_model.save_pretrained(ours)
    tok.save_pretrained(ours)
    _cache_repo(cache, "acme/ofa-test", ours, refs=("main", "v1"))
    _cache_repo(cache, "OFA-Sys/ofa-test", hf.write_port(root / "port", *port))
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((ours / "config.json").read_text())  # the weights never arrived
    _cache_repo(cache, "acme/no-weights", broken)
    return cache


@pytest.fixture
def offline(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE=cache, as a user would set them (huggingface_hub reads its constants at
    import, so they are patched too)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _same_weights(a: Any, b: Any) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_our_layout_loads_by_id_branch_tag_and_commit(offline: Path, small_model: Any) -> None:
    for revision in (None, "main", "v1", COMMIT):
        assert _same_weights(ofa.load_checkpoint("acme/ofa-test", revision=revision), small_model), revision
    assert _same_weights(ofa.load_checkpoint("acme/ofa-test", cache_dir=offline), small_model)


def test_pipelines_by_id_predict_as_the_local_model_does(offline: Path, small_model: Any, tok: Any,
                                                        port: tuple[Any, Any], pil_image: Callable[..., Any]) -> None:
    images = [pil_image(1), pil_image(2, (40, 72))]
    # ours, and the HF port (pytorch_model.bin with HF names, vocab.json + merges.txt)
    for repo, local in (("acme/ofa-test", (small_model, tok)), ("OFA-Sys/ofa-test", port)):
        expected = [p.text for p in ofa.pipeline("caption", *local, **OPTIONS)(images)]
        runner = ofa.pipeline("caption", model=repo, **OPTIONS)
        assert [p.text for p in runner(images)] == expected, repo


def test_the_hf_ports_bart_style_tokenizer_gives_the_dictionarys_ids(offline: Path, port: tuple[Any, Any]) -> None:
    tok = port[1]
    port_tok = load_tokenizer("OFA-Sys/ofa-test")
    assert not (resolve_source("OFA-Sys/ofa-test") / "dict.txt").exists()
    assert len(port_tok) == len(tok) == 4 + 640 + 1 + 8192 + 1000
    for text in [" a red square on the left", " what colour is the circle?", " <bin_3> <code_7> region"]:
        assert port_tok.encode(text) == tok.encode(text), text
        assert port_tok.decode(tok.encode(text)) == tok.decode(tok.encode(text))


def test_cli_checkpoint_takes_a_hub_id_and_revision(offline: Path, pil_image: Callable[..., Any], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "a.png"
    pil_image(3).save(image)
    args = ["predict", "--task", "caption", "-o", "image_size=64", "-o", "max_len=6", str(image)]
    assert main([*args, "--checkpoint", "acme/ofa-test", "--revision", "v1"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["text"]
    assert main([*args, "--checkpoint", "acme/ofa-test", "--revision", "v9"]) == 2
    err = capsys.readouterr().err
    assert "'acme/ofa-test'" in err and "'v9'" in err and "Traceback" not in err


def test_a_wrong_revision_a_missing_file_and_an_unknown_repo_are_clear(offline: Path) -> None:
    with pytest.raises(CheckpointError, match="'acme/ofa-test'.*revision 'v9'.*not in the Hub cache.*HF_HUB_OFFLINE"):
        ofa.load_checkpoint("acme/ofa-test", revision="v9")
    with pytest.raises(CheckpointError, match="Hub repo 'acme/no-weights' at revision 'main'.*holds no weights"):
        ofa.load_checkpoint("acme/no-weights")
    with pytest.raises(CheckpointError, match="'acme/nothing-here'.*not in the Hub cache"):
        ofa.load_checkpoint("acme/nothing-here")


def test_local_paths_win_and_take_no_revision(offline: Path, tmp_path: Path, small_model: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    small_model.save_pretrained(tmp_path / "acme" / "ofa-test")  # a local folder shadowing the id
    assert not is_hub_id("acme/ofa-test") and is_hub_id("acme/other")
    assert resolve_source("acme/ofa-test") == Path("acme/ofa-test")
    with pytest.raises(CheckpointError, match="revision='v1' applies to Hub ids only"):
        ofa.load_checkpoint("acme/ofa-test", revision="v1")
    for not_an_id in ("/abs/a/b", "a/b/c", "../x", "a b/c"):
        assert not is_hub_id(not_an_id), not_an_id
    with pytest.raises(CheckpointError, match="'/abs/a/b' does not exist"):
        ofa.load_checkpoint("/abs/a/b")


def test_without_the_hub_extra_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(CheckpointError, match=r"pip install 'ofa-unified\[hub\]'"):
        ofa.load_checkpoint("acme/ofa-test")
