"""Our own checkpoint directory format: ``config.json`` (a format tag + the model config) and ``model.pt`` (the
state dict, no pickled objects), both written atomically.

It sits below the model so that :meth:`OFAModel.save_pretrained` needs nothing above it; reading (and every
other format) is :mod:`ofa.checkpoint`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ofa.errors import CheckpointError

__all__ = ["FORMAT_NAME", "WEIGHTS_NAME", "CONFIG_NAME", "MANIFEST_NAME", "write_pretrained", "check_torch_file", "read_torch_file",
           "fsync_path", "write_manifest", "verify_manifest"]

FORMAT_NAME = "ofa-unified"
WEIGHTS_NAME = "model.pt"
CONFIG_NAME = "config.json"
MANIFEST_NAME = "manifest.json"


def write_pretrained(directory: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor],
                     config: Mapping[str, Any]) -> Path:
    """Write ``state_dict`` to ``model.pt`` and ``{"format": ..., "config": config}`` to ``config.json``.

    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    torch.save(dict(state_dict), tmp)
    os.replace(tmp, directory / WEIGHTS_NAME)
    tmp_config = directory / (CONFIG_NAME + ".tmp")
    tmp_config.write_text(json.dumps({"format": FORMAT_NAME, "config": dict(config)}, indent=2))
    os.replace(tmp_config, directory / CONFIG_NAME)
    return directory


def check_torch_file(path: str | os.PathLike[str], *, allowed: Callable[[str], bool] = lambda name: False,
                     trust_pickle: bool = False, opt_in: str = "trust_pickle=True (CLI: --trust-pickle)") -> list[str]:
    """Check a torch file without unpickling it: it exists, is a zip archive whose every entry passes its CRC
    check, and pickles no global beyond torch's weights-only allowlist except those ``allowed`` accepts.

    torch's own reader checks no CRCs, so a flipped byte inside a tensor would otherwise load silently.

    Args:
        path: the file.
        allowed: which extra globals (``"module.Name"``) the caller can rebuild without running code.
        trust_pickle: skip the globals check (the file will be unpickled in full); legacy non-zip files pass.
        opt_in: how the caller's user opts in to unpickling, for the error message.

    Returns:
        The extra globals the file pickles (all of them ``allowed``, or any when ``trust_pickle``).

    Raises:
        CheckpointError: naming the file, and the damaged entry or the refused globals.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):
        if trust_pickle:
            return []
        raise CheckpointError(f"{str(path)!r} is not a torch checkpoint (zip) file: it is truncated, damaged, or a legacy "
                              f"pickle (those need {opt_in}, which runs code from the file: only for files you "
                              "trust)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise CheckpointError(f"could not read {str(path)!r}: it is truncated or damaged ({exc})") from exc
    if bad is not None:
        raise CheckpointError(f"{str(path)!r} is damaged: its entry {bad!r} fails its CRC check")
    try:
        extra = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as exc:  # a zip that is not torch's layout
        raise CheckpointError(f"could not read {str(path)!r}: it is not a torch file ({exc})") from exc
    refused = [name for name in extra if not allowed(name)]
    if refused and not trust_pickle:
        raise CheckpointError(
            f"{str(path)!r} pickles objects other than tensors and plain containers ({', '.join(refused)}); "
            f"loading it could run code. Pass {opt_in} to read it (this runs code from the file: only for files "
            "you trust)")
    return extra


def read_torch_file(path: str | os.PathLike[str], *, trust_pickle: bool = False,
                    map_location: str | torch.device = "cpu") -> Any:
    """Load a torch file (checked by :func:`check_torch_file` first), by default refusing pickled objects other
    than tensors and plain containers.

    Args:
        path: the file.
        trust_pickle: unpickle arbitrary objects (runs code from the file: only for files you trust).
        map_location: where tensors are placed.

    Raises:
        CheckpointError: If the file is absent, truncated, damaged (a CRC mismatch), not a torch file, or pickles
            other objects while ``trust_pickle`` is False (the message names the file and the refused globals).
    """
    check_torch_file(path, trust_pickle=trust_pickle)
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust_pickle)
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        raise CheckpointError(f"could not read {str(path)!r}: it is truncated or not a torch file ({exc})") from exc


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file, or a directory entry table, to the disk (directories: where the OS allows it)."""
    path = Path(path)
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open directories; the files themselves were synced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def write_manifest(directory: str | os.PathLike[str]) -> Path:
    """Sync every file under ``directory``, then write ``manifest.json`` (relative path -> size and sha256) last,
    synced too: a directory whose manifest verifies was completely on disk."""
    directory = Path(directory)
    entries = {}
    files = _files(directory)
    for path in files:
        fsync_path(path)
        entries[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = directory / MANIFEST_NAME
    tmp = manifest.with_name(MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps({"files": entries}, indent=1, sort_keys=True))
    fsync_path(tmp)
    os.replace(tmp, manifest)
    for sub in sorted({p.parent for p in files} | {directory}):
        fsync_path(sub)
    return manifest


def verify_manifest(directory: str | os.PathLike[str], *, required: bool = True) -> bool:
    """Check every file ``manifest.json`` lists (size, then sha256).

    Returns:
        True when the manifest verifies; False when there is none and ``required`` is False (a checkpoint
        written before manifests existed).

    Raises:
        CheckpointError: a missing, resized or altered file (named), an unreadable manifest, or no manifest when
            ``required``.
    """
    directory = Path(directory)
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        if required:
            raise CheckpointError(f"checkpoint {str(directory)!r} has no {MANIFEST_NAME}: it was not completely "
                                  "written")
        return False
    try:
        entries = json.loads(manifest.read_text())["files"]
        items = [(str(name), int(e["size"]), str(e["sha256"])) for name, e in entries.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{str(manifest)!r} is unreadable ({exc})") from exc
    for name, size, sha in items:
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {str(path)!r} is missing (listed in {MANIFEST_NAME})")
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(f"checkpoint file {str(path)!r} has {actual} bytes, {MANIFEST_NAME} says {size}: "
                                  "it is truncated or was overwritten")
        if _sha256(path) != sha:
            raise CheckpointError(f"checkpoint file {str(path)!r} does not match its sha256 in {MANIFEST_NAME}: "
                                  "it is damaged")
    return True
