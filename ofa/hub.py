"""Hugging Face Hub ids: ``"OFA-Sys/ofa-base"`` wherever a checkpoint or tokenizer path is accepted.

A source that exists on disk is used as it is. Anything else shaped like ``org/name`` is resolved through
``huggingface_hub`` (the optional ``hub`` extra) into a local snapshot folder, which the loaders then read like
any directory: ours (``config.json`` + ``model.safetensors``) or the HF-format port's (``config.json`` +
``pytorch_model.bin`` + ``vocab.json``/``merges.txt``, spec §7.4). ``huggingface_hub`` supplies what its users
expect: ``HF_HOME``/``HF_HUB_CACHE`` or ``cache_dir`` for the cache, ``HF_TOKEN`` or the saved login for private
repos, ``HF_HUB_OFFLINE=1`` to read the cache without any network access.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ofa.errors import CheckpointError

__all__ = ["HUB_FILE_PATTERNS", "is_hub_id", "resolve_source"]

# Files a model directory can need: the config, weights in any layout we read, tokenizer files.
HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "pytorch_model.bin", "merges.txt", "vocab.bpe", "dict.txt"]
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_hub_id(source: Any) -> bool:
    """Whether ``source`` is a string shaped like a Hub repo id (``org/name``) that is not a path on disk."""
    if not isinstance(source, str) or os.path.exists(source):
        return False
    return _HUB_ID.fullmatch(source) is not None and ".." not in source


def resolve_source(source: str | os.PathLike[str], *, revision: str | None = None,
                   cache_dir: str | os.PathLike[str] | None = None, token: str | bool | None = None) -> Path:
    """A local path for ``source``: the path itself, or the cached snapshot of a Hub repo (downloaded if needed).

    Args:
        source: a file or directory on disk, or a Hub repo id such as ``"OFA-Sys/ofa-base"``.
        revision: a branch, tag or commit of the repo (default ``main``); only for Hub ids.
        cache_dir: the Hub cache (default: ``huggingface_hub``'s, from ``HF_HUB_CACHE``/``HF_HOME``).
        token: for private repos (default: ``HF_TOKEN`` or the saved login).

    Raises:
        CheckpointError: a path that does not exist and is no Hub id; ``huggingface_hub`` not installed; a repo,
            revision or file the Hub (or, offline, the cache) does not have. The message names the id and revision.
    """
    if not is_hub_id(source):
        if revision is not None:
            raise CheckpointError(f"revision={revision!r} applies to Hub ids only; {os.fspath(source)!r} is a local "
                                  "path")
        path = Path(source)
        if not path.exists():
            raise CheckpointError(f"checkpoint {os.fspath(source)!r} does not exist (neither a local path nor a Hub "
                                  "id of the form 'org/name')")
        return path
    repo = str(source)
    try:
        # optional dependency: the `hub` extra
        import huggingface_hub
        from huggingface_hub import constants as hub_constants
        from huggingface_hub import errors as hub_errors
    except ImportError as exc:
        raise CheckpointError(f"{repo!r} is not a local path; to load it as a Hugging Face Hub id install the "
                              "'hub' extra (pip install 'ofa-unified[hub]')") from exc
    where = f"{repo!r} is not a local path; as a Hub repo at revision {revision or 'main'!r} it"
    offline = hub_constants.HF_HUB_OFFLINE
    try:
        folder = huggingface_hub.snapshot_download(repo, revision=revision, token=token,
                                                   cache_dir=None if cache_dir is None else Path(cache_dir),
                                                   allow_patterns=HUB_FILE_PATTERNS)
    except hub_errors.RevisionNotFoundError as exc:
        raise CheckpointError(f"{where} has no such revision (a branch, tag or commit)") from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise CheckpointError(f"{where} does not exist, or it is private and no token was given (HF_TOKEN or "
                              "`huggingface-cli login`)") from exc
    except hub_errors.LocalEntryNotFoundError as exc:
        if offline:
            cache = cache_dir or hub_constants.HF_HUB_CACHE
            raise CheckpointError(f"{where} is not in the Hub cache ({cache}) and HF_HUB_OFFLINE=1 forbids "
                                  "downloading it: check the id and revision, or download it while online") from exc
        raise CheckpointError(f"{where} could not be downloaded and is not in the cache ({exc})") from exc
    except (hub_errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(f"{where} could not be resolved ({exc})") from exc
    return Path(folder)
