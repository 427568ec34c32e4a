"""Our own checkpoint directory format: ``config.json`` (a format tag + the model config) and the weights as
``model.safetensors`` (or, past ``max_shard_size``, ``model-0000i-of-0000n.safetensors`` shards listed in
``model.safetensors.index.json``, the layout transformers uses), every file written atomically.

Reading never unpickles: safetensors is a JSON header plus raw bytes. Directories written before 0.3 hold a
``model.pt`` (a zip-format torch state dict); :func:`read_weights` still reads it, through the weights-only reader.
Tied weights (the shared token embedding) are stored once and named again in the header's ``ofa.aliases``; a
``ofa.sha256`` digest of the tensor bytes in the header catches a flipped byte, which safetensors itself cannot.

It sits below the model so that :meth:`OFAModel.save_pretrained` needs nothing above it; reading (and every
other format) is :mod:`ofa.checkpoint`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import safetensors
import safetensors.torch
import torch

from ofa.errors import CheckpointError

__all__ = ["FORMAT_NAME", "WEIGHTS_NAME", "SAFE_WEIGHTS_NAME", "SAFE_INDEX_NAME", "CONFIG_NAME", "MANIFEST_NAME",
           "DEFAULT_MAX_SHARD_SIZE", "write_pretrained", "write_weights", "read_weights", "has_weights",
           "check_torch_file", "read_torch_file", "fsync_path", "write_manifest", "verify_manifest"]

FORMAT_NAME = "ofa-unified"
WEIGHTS_NAME = "model.pt"  # the layout before 0.3; still read
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
MANIFEST_NAME = "manifest.json"
DEFAULT_MAX_SHARD_SIZE = 5 * 1024**3  # bytes; OFA-Huge in fp32 (3.7 GB) stays one file
_SHARD_PATTERN = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def write_pretrained(directory: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor],
                     config: Mapping[str, Any], *, max_shard_size: int = DEFAULT_MAX_SHARD_SIZE) -> Path:
    """Write ``state_dict`` as safetensors (:func:`write_weights`) and ``{"format": ..., "config": config}`` to
    ``config.json``.

    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    directory = Path(directory)
    write_weights(directory, state_dict, max_shard_size=max_shard_size)
    tmp_config = directory / (CONFIG_NAME + ".tmp")
    tmp_config.write_text(json.dumps({"format": FORMAT_NAME, "config": dict(config)}, indent=2))
    os.replace(tmp_config, directory / CONFIG_NAME)
    return directory


def _storage_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    return (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype)


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and raw bytes of ``tensors`` in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def write_weights(directory: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor], *,
                  max_shard_size: int = DEFAULT_MAX_SHARD_SIZE) -> list[Path]:
    """Write ``state_dict`` to ``model.safetensors``, or to shards plus ``model.safetensors.index.json`` when it
    exceeds ``max_shard_size`` bytes (a tensor larger than that gets a shard of its own).

    Keys that name the very same tensor (tied weights) are written once; the others are recorded as aliases.
    Weight files of an earlier save in ``directory`` (``model.pt``, shards no longer listed) are removed, so the
    directory never holds two disagreeing copies.

    Returns:
        The weight files written.

    Raises:
        CheckpointError: a value that is not a tensor, or a ``max_shard_size`` that is not a positive integer.
    """
    if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, int) or max_shard_size <= 0:
        raise CheckpointError(f"max_shard_size must be a positive number of bytes, got {max_shard_size!r}")
    bad = sorted(f"{k} ({type(v).__name__})" for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f"state dict entries that are not tensors cannot be saved: {', '.join(bad[:10])}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    canonical: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, value in state_dict.items():
        key = _storage_key(value)
        if key in canonical:
            aliases[name] = canonical[key]
            continue
        canonical[key] = name
        t = value.detach().cpu().contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in storages:  # overlapping views that are not aliases: safetensors
            t = t.clone()                                 # refuses two entries over one storage
        if t.numel():
            storages.add(t.untyped_storage().data_ptr())
        tensors[name] = t
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    names = ([SAFE_WEIGHTS_NAME] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    written = []
    for file_name, shard in zip(names, shards):
        shard_aliases = {a: c for a, c in aliases.items() if c in shard}
        metadata = {"format": "pt", "ofa.aliases": json.dumps(shard_aliases, sort_keys=True),
                    "ofa.sha256": _tensor_digest(shard)}
        tmp = directory / (file_name + ".tmp")
        safetensors.torch.save_file(shard, str(tmp), metadata=metadata)
        os.replace(tmp, directory / file_name)
        written.append(directory / file_name)
    index = directory / SAFE_INDEX_NAME
    if len(shards) > 1:
        weight_map = {name: file_name for file_name, shard in zip(names, shards) for name in shard}
        weight_map.update({a: weight_map[c] for a, c in aliases.items()})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        tmp = directory / (SAFE_INDEX_NAME + ".tmp")
        tmp.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2,
                                  sort_keys=True))
        os.replace(tmp, index)
    stale = [directory / WEIGHTS_NAME] + [p for p in directory.glob("model-*-of-*.safetensors")
                                          if _SHARD_PATTERN.fullmatch(p.name) and p not in written]
    if len(shards) == 1:
        stale += [index]
    for path in stale:
        path.unlink(missing_ok=True)
    return written


def has_weights(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds weights in our layout (safetensors, sharded safetensors or legacy ``model.pt``)."""
    directory = Path(directory)
    return any((directory / name).is_file() for name in (SAFE_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME))


def _read_safetensors(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    """One safetensors file with its aliases restored, its digest (when it has one) checked."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError: a truncated or foreign file
        raise CheckpointError(f"could not read {str(path)!r}: it is truncated or not a safetensors file ({exc})") \
            from exc
    expected = metadata.get("ofa.sha256")
    if expected is not None and _tensor_digest(tensors) != expected:
        raise CheckpointError(f"{str(path)!r} is damaged: its tensors do not match the sha256 in its header")
    try:
        aliases = json.loads(metadata.get("ofa.aliases", "{}"))
        if not isinstance(aliases, dict) or any(not isinstance(v, str) for v in aliases.values()):
            raise ValueError("not an object of names")
    except ValueError as exc:
        raise CheckpointError(f"{str(path)!r} has an unreadable 'ofa.aliases' entry in its header ({exc})") from exc
    missing = sorted(set(aliases.values()) - set(tensors))
    if missing:
        raise CheckpointError(f"{str(path)!r} names aliases of tensors it does not hold: {missing[:10]}")
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    tensors.update({alias: tensors[target] for alias, target in aliases.items()})
    return tensors


def read_weights(directory: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
                 trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read the weights :func:`write_weights` wrote (sharded or not), or a legacy ``model.pt``, into one dict.

    Safetensors is preferred when both are present; it is read without unpickling anything. Tied keys come back
    as the same tensor.

    Raises:
        CheckpointError: no weights in ``directory``, a missing or damaged shard (named), an unreadable index, or a
            shard whose tensors disagree with the index.
    """
    directory = Path(directory)
    index = directory / SAFE_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("'weight_map' is not an object of file names")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{str(index)!r} is not a readable safetensors index ({exc})") from exc
        state: dict[str, torch.Tensor] = {}
        for file_name in sorted(set(weight_map.values())):
            if Path(file_name).name != file_name:
                raise CheckpointError(f"{str(index)!r} lists {file_name!r}, which is not a file in the directory")
            shard = _read_safetensors(directory / file_name, map_location)
            listed = {k for k, v in weight_map.items() if v == file_name}
            if set(shard) != listed:
                extra, lost = sorted(set(shard) - listed), sorted(listed - set(shard))
                raise CheckpointError(f"{str(directory / file_name)!r} does not hold what {SAFE_INDEX_NAME} lists "
                                      f"(missing: {lost[:10]}, not listed: {extra[:10]})")
            state.update(shard)
        return state
    if (directory / SAFE_WEIGHTS_NAME).is_file():
        return _read_safetensors(directory / SAFE_WEIGHTS_NAME, map_location)
    if (directory / WEIGHTS_NAME).is_file():
        state = read_torch_file(directory / WEIGHTS_NAME, map_location=map_location, trust_pickle=trust_pickle)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{str(directory / WEIGHTS_NAME)!r} does not hold a state dict")
        return dict(state)
    raise CheckpointError(f"directory {str(directory)!r} holds no weights; looked for {SAFE_INDEX_NAME}, "
                          f"{SAFE_WEIGHTS_NAME} and {WEIGHTS_NAME}")


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
