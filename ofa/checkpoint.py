"""Loading and saving OFA weights: official fairseq checkpoints, HF-format ports, and our own format.

* **fairseq** (the official release files): ``torch.save`` of a dict with ``model`` (the state dict) and
  ``cfg`` (an OmegaConf container) or ``args`` (an ``argparse.Namespace``). They are unpickled with
  ``torch.load(weights_only=True)``; the config objects are rebuilt as inert data holders from an explicit
  allowlist of module prefixes (``omegaconf.``, ``fairseq.``, ...), so no code from the file runs. Anything else
  in the pickle is refused unless the caller passes ``trust_pickle=True``.
* **HF** (``OFA-Sys/ofa-*`` on the hub): ``config.json`` + ``pytorch_model.bin`` with renamed keys (spec §7.4).
* **ours**: :func:`save_pretrained` writes ``config.json`` + ``model.safetensors`` (or shards with an index);
  directories from before 0.3 hold ``model.pt`` (state dict only) and still load.

The architecture comes from the tensor shapes (layers, widths, heads, backbone depth, bucket sizes) and, for
what shapes cannot tell (``attn_scale_factor``, dropout rates), from the stored config.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ofa.builders import build_ofa
from ofa.config import OFAConfig, ResNetConfig, with_overrides
from ofa.errors import CheckpointError, ConfigError
from ofa.hub import is_hub_id, resolve_source
from ofa.nn.rel_pos import decoder_image_position_ids, image_bucket_index, token_rel_positions
from ofa.serialization import (
    CONFIG_NAME,
    DEFAULT_MAX_SHARD_SIZE,
    FORMAT_NAME,
    SAFE_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_NAME,
    check_torch_file,
    has_weights,
    read_weights,
    write_pretrained,
)

__all__ = [
    "load_checkpoint",
    "save_pretrained",
    "read_checkpoint",
    "infer_config",
    "convert_hf_state_dict",
    "FORMAT_NAME",
]

logger = logging.getLogger(__name__)


# Module prefixes whose pickled objects (config containers, enums) are rebuilt as inert data holders.
_STUB_PREFIXES = ("omegaconf.", "fairseq.", "hydra.", "typing.", "enum.", "pathlib.", "collections.")
# Buffers the reference stores but derives from the config: checked or rebuilt, never loaded as weights.
_DERIVED_BUFFERS = ("version", "token_rp_bucket", "image_rp_bucket", "image_position_idx")
# fairseq -> HF renames (spec §7.4); applied in reverse to read HF files.
_HF_RENAMES_DECODER = ((".self_attn_ln.", ".self_attn_mid_layer_norm."),
                       (".cross_attn_ln.", ".cross_attn_mid_layer_norm."),
                       (".encoder_attn_layer_norm.", ".cross_attn_layer_norm."),
                       (".encoder_attn.", ".cross_attn."))
_HF_RENAMES_ENCODER = ((".attn_ln.", ".self_attn_mid_layer_norm."),)
_HF_RENAMES_BOTH = ((".ffn_layernorm.", ".ffn_layer_norm."),)


# --------------------------------------------------------------------------------------------------------------
# Safe unpickling
# --------------------------------------------------------------------------------------------------------------
class PickledStub:
    """Inert stand-in for a pickled object of an allowlisted foreign class (an OmegaConf node, an enum, ...).

    It records the constructor arguments and the pickled state; :func:`_plain` turns it into dicts and values.
    """

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self._qualname}>"


def _stub_class(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (PickledStub,), {"_qualname": qualname})


def _plain(obj: Any) -> Any:
    """Turn stubs, namespaces and containers from a checkpoint's config into plain Python data."""
    if isinstance(obj, argparse.Namespace):
        return {k: _plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, PickledStub):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, dict):
            if "_content" in state:  # an OmegaConf container
                return _plain(state["_content"])
            if "_val" in state:  # an OmegaConf value node
                return _plain(state["_val"])
            return {k: _plain(v) for k, v in state.items() if not str(k).startswith("_")}
        if obj.args:
            return _plain(obj.args[0]) if len(obj.args) == 1 else [_plain(a) for a in obj.args]
        return None
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _read_config_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({exc}); it should hold the model config that "
                              "save_pretrained writes") from exc


def _allowed_config_global(name: str) -> bool:
    return name == "argparse.Namespace" or name.startswith(_STUB_PREFIXES)


def _torch_load(path: Path, trust_pickle: bool, map_location: str | torch.device) -> Any:
    """Load a checkpoint file: fully unpickled with ``trust_pickle``, else only tensors, plain containers,
    ``argparse.Namespace`` and config objects (rebuilt as inert stubs) from the allowlisted packages."""
    extra = check_torch_file(path, allowed=_allowed_config_global, trust_pickle=trust_pickle)
    if trust_pickle:
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # pickle can raise anything
            raise CheckpointError(f"could not read {str(path)!r} as a torch checkpoint: {exc}") from exc
    safe: list[Any] = [argparse.Namespace] + [(_stub_class(name), name) for name in extra
                                              if name != "argparse.Namespace"]
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"could not read {str(path)!r}: it is truncated or not a torch checkpoint ({exc})") from exc


# --------------------------------------------------------------------------------------------------------------
# Reading the three formats into (state dict with our/fairseq names, flat config dict, format name)
# --------------------------------------------------------------------------------------------------------------
def convert_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an HF-format OFA state dict (optionally with a ``model.`` prefix) to the official fairseq names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("model."):
            key = key[len("model."):]
        renames = _HF_RENAMES_BOTH + (_HF_RENAMES_DECODER if key.startswith("decoder.") else _HF_RENAMES_ENCODER)
        for fairseq_name, hf_name in renames:
            key = key.replace(hf_name, fairseq_name)
        out[key] = value
    return out


def _is_hf(state_dict: Mapping[str, Any]) -> bool:
    return any("mid_layer_norm" in k or ".ffn_layer_norm." in k or ".cross_attn." in k for k in state_dict)


def _flat_fairseq_config(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    cfg = _plain(checkpoint.get("cfg"))
    args = _plain(checkpoint.get("args"))
    flat: dict[str, Any] = {}
    if isinstance(args, dict):
        flat.update(args)
    if isinstance(cfg, dict):
        if isinstance(cfg.get("model"), dict):  # nested fairseq config groups
            flat.update(cfg.get("task") or {})
            flat.update(cfg["model"])
        else:
            flat.update(cfg)
    return flat


def read_checkpoint(
    path: str | os.PathLike[str], *, trust_pickle: bool = False, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Read any supported checkpoint into ``(state_dict with official names, flat config dict, format)``.

    ``format`` is ``"ofa-unified"``, ``"fairseq"`` or ``"hf"``. Raises :class:`CheckpointError` for missing,
    truncated or foreign files.
    """
    path = Path(path)
    if path.is_dir():
        config_file = path / CONFIG_NAME
        config = _read_config_json(config_file) if config_file.is_file() else {}
        if not isinstance(config, Mapping):
            raise CheckpointError(f"{str(config_file)!r} holds a JSON {type(config).__name__}; expected an object "
                                  "(the model config)")
        if config.get("format") == FORMAT_NAME:
            if not isinstance(config.get("config"), Mapping):
                raise CheckpointError(f"{str(config_file)!r} has format {FORMAT_NAME!r} but no 'config' object")
            return read_weights(path, map_location=map_location, trust_pickle=trust_pickle), dict(config), \
                FORMAT_NAME
        if has_weights(path) and not (path / WEIGHTS_NAME).is_file():  # an HF port saved as safetensors
            return convert_hf_state_dict(read_weights(path, map_location=map_location)), _hf_config(config), "hf"
        candidates = [path / WEIGHTS_NAME, path / "pytorch_model.bin", path / "checkpoint.pt"]
        weights = next((c for c in candidates if c.is_file()), None)
        if weights is None:
            raise CheckpointError(
                f"directory {str(path)!r} holds no weights; looked for "
                f"{[SAFE_INDEX_NAME, SAFE_WEIGHTS_NAME] + [c.name for c in candidates]}")
        if weights.name == "checkpoint.pt":
            return read_checkpoint(weights, trust_pickle=trust_pickle, map_location=map_location)
        state = _torch_load(weights, trust_pickle, map_location)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{str(weights)!r} does not hold a state dict")
        return convert_hf_state_dict(state), _hf_config(config), "hf"

    checkpoint = _torch_load(path, trust_pickle, map_location)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{str(path)!r} holds a {type(checkpoint).__name__}, not an OFA checkpoint dict")
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        state = dict(checkpoint["model"])
        if _is_hf(state):
            return convert_hf_state_dict(state), _flat_fairseq_config(checkpoint), "hf"
        return state, _flat_fairseq_config(checkpoint), "fairseq"
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()) and checkpoint:
        state = dict(checkpoint)
        return (convert_hf_state_dict(state), {}, "hf") if _is_hf(state) else (state, {}, "fairseq")
    raise CheckpointError(
        f"{str(path)!r} is not an OFA checkpoint: expected a dict with a 'model' state dict (fairseq), a bare "
        f"state dict, or a directory with {CONFIG_NAME}; found keys {sorted(map(str, checkpoint))[:10]}")


def _hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Map HF ``config.json`` names to fairseq argument names (shapes decide the sizes anyway)."""
    names = {"d_model": "encoder_embed_dim", "encoder_ffn_dim": "encoder_ffn_embed_dim",
             "encoder_attention_heads": "encoder_attention_heads", "encoder_layers": "encoder_layers",
             "decoder_layers": "decoder_layers", "resnet_type": "resnet_type",
             "attn_scale_factor": "attn_scale_factor", "dropout": "dropout",
             "attention_dropout": "attention_dropout", "activation_dropout": "activation_dropout",
             "encoder_drop_path_rate": "encoder_drop_path_rate", "decoder_drop_path_rate": "decoder_drop_path_rate",
             "resnet_drop_path_rate": "resnet_drop_path_rate", "code_image_size": "code_image_size",
             "token_bucket_size": "token_bucket_size", "image_bucket_size": "image_bucket_size"}
    out = {fs: config[hf] for hf, fs in names.items() if hf in config}
    if "normformer" in config:
        out["scale_attn"] = out["scale_fc"] = bool(config["normformer"])
    return out


# --------------------------------------------------------------------------------------------------------------
# Architecture inference
# --------------------------------------------------------------------------------------------------------------
def _count_indexed(state: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def _any_key(state: Mapping[str, Any], suffixes: tuple[str, ...]) -> bool:
    return any(k.endswith(suffixes) for k in state if k.startswith(("encoder.layers.", "decoder.layers.")))


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"checkpoint lacks {key!r}, needed to infer the architecture")
    return tuple(state[key].shape)


def infer_config(state: Mapping[str, torch.Tensor], stored: Mapping[str, Any] | None = None) -> OFAConfig:
    """Derive an :class:`OFAConfig` from tensor shapes, using ``stored`` (fairseq args/cfg) for the rest.

    Raises :class:`CheckpointError` when the stored config contradicts the shapes.
    """
    stored = dict(stored or {})
    vocab_size, embed_dim = _shape(state, "encoder.embed_tokens.weight")
    token_rows, num_heads = _shape(state, "encoder.token_rel_pos_table_list.0.weight")
    image_pos_rows = _shape(state, "encoder.embed_image_positions.weight")[0]
    image_bucket = int(round(math.sqrt(image_pos_rows - 1)))
    if image_bucket**2 + 1 != image_pos_rows:
        raise CheckpointError(f"encoder.embed_image_positions has {image_pos_rows} rows, not a square grid + 1")
    resnet = None
    if any(k.startswith("encoder.embed_images.") for k in state):
        layers = tuple(_count_indexed(state, f"encoder.embed_images.layer{i}.") for i in (1, 2, 3))
        if any(k.startswith("encoder.embed_images.layer4.") for k in state) or 0 in layers:
            raise CheckpointError(f"unsupported image stem: stages {layers} (expected 3 stages, no layer4)")
        width = _shape(state, "encoder.embed_images.conv1.weight")[0]
        frozen = not any(k.endswith("num_batches_tracked") for k in state if k.startswith("encoder.embed_images."))
        resnet = ResNetConfig(layers=layers, width=width,  # type: ignore[arg-type]
                              drop_path_rate=float(stored.get("resnet_drop_path_rate") or 0.0),
                              frozen_bn=bool(stored.get("freeze_resnet")) and frozen)
    values: dict[str, Any] = dict(
        vocab_size=vocab_size,
        embed_dim=embed_dim,
        num_heads=num_heads,
        encoder_layers=_count_indexed(state, "encoder.layers."),
        decoder_layers=_count_indexed(state, "decoder.layers."),
        ffn_dim=_shape(state, "encoder.layers.0.fc1.weight")[0],
        resnet=resnet,
        token_bucket_size=(token_rows + 1) // 2,
        image_bucket_size=image_bucket,
        max_positions=_shape(state, "encoder.embed_positions.weight")[0] - 2,
        # Any layer decides, so that one lost key is reported as missing rather than flipping the architecture.
        scale_attn=_any_key(state, (".attn_ln.weight", ".self_attn_ln.weight", ".cross_attn_ln.weight")),
        scale_fc=_any_key(state, (".ffn_layernorm.weight",)),
        scale_heads=_any_key(state, (".c_attn",)),
        layernorm_embedding="encoder.layernorm_embedding.weight" in state,
        patch_layernorm_embedding="encoder.patch_layernorm_embedding.weight" in state or resnet is None,
        code_layernorm_embedding="decoder.code_layernorm_embedding.weight" in state,
        add_type_embedding="encoder.type_embedding.weight" in state,
    )
    if "decoder.image_position_idx" in state:
        length = state["decoder.image_position_idx"].shape[0]
        grid = int(round(math.sqrt(max(length - 1 - 769, 0))))
        if grid < 1 or 1 + grid**2 + 769 != length:
            raise CheckpointError(
                f"decoder.image_position_idx has {length} entries, not 1 + grid**2 + 769 for a square code grid")
        values["code_image_size"] = 8 * grid
    elif stored.get("code_image_size"):
        values["code_image_size"] = int(stored["code_image_size"])
    checks = {"encoder_embed_dim": "embed_dim", "encoder_attention_heads": "num_heads",
              "encoder_layers": "encoder_layers", "decoder_layers": "decoder_layers",
              "encoder_ffn_embed_dim": "ffn_dim", "token_bucket_size": "token_bucket_size",
              "image_bucket_size": "image_bucket_size"}
    for arg, field_name in checks.items():
        if stored.get(arg) is not None and int(stored[arg]) != int(values[field_name]):
            raise CheckpointError(
                f"the checkpoint's config says {arg}={stored[arg]} but its tensors imply {field_name}="
                f"{values[field_name]}")
    if stored.get("resnet_type") and resnet is not None:
        expected = ResNetConfig.named(str(stored["resnet_type"])).layers
        if expected != resnet.layers:
            raise CheckpointError(
                f"the checkpoint's config says resnet_type={stored['resnet_type']} {expected} but its tensors "
                f"have stages {resnet.layers}")
    for name in ("attn_scale_factor", "dropout", "attention_dropout", "activation_dropout",
                 "encoder_drop_path_rate", "decoder_drop_path_rate"):
        if stored.get(name) is not None:
            values[name] = float(stored[name])
    if stored.get("entangle_position_embedding"):
        values["entangle_position_embedding"] = True
    if stored.get("patch_image_size") is not None:
        values["patch_image_size"] = int(stored["patch_image_size"])
    for arg in ("pad", "bos", "eos"):
        if isinstance(stored.get(arg), int):
            values[f"{arg}_id"] = stored[arg]
    try:
        return OFAConfig(**values)
    except ConfigError as exc:
        raise CheckpointError(f"the checkpoint describes an unsupported model: {exc}") from exc


# --------------------------------------------------------------------------------------------------------------
# Matching a state dict to a model
# --------------------------------------------------------------------------------------------------------------
def _check_derived_buffers(state: Mapping[str, torch.Tensor], config: OFAConfig) -> None:
    """Compare stored bucket tables with our formulas: a mismatch means a foreign or corrupted file."""
    for prefix in ("encoder", "decoder"):
        key = f"{prefix}.token_rp_bucket"
        if key in state:
            stored = state[key]
            n = stored.shape[0]
            pos = torch.arange(n)
            expected = token_rel_positions(pos, pos, config.token_bucket_size, max_positions=n)
            if stored.shape != expected.shape or not torch.equal(stored.long(), expected):
                raise CheckpointError(f"{key} does not match the text relative-position buckets of this config")
        key = f"{prefix}.image_rp_bucket"
        if key in state:
            stored = state[key]
            ids = torch.arange(config.num_image_positions)
            expected = image_bucket_index(ids, ids, config.image_bucket_size)
            if stored.shape != expected.shape or not torch.equal(stored.long(), expected):
                raise CheckpointError(f"{key} does not match the image relative-position buckets of this config")


def _summarise(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _kind(tensor: torch.Tensor) -> str:
    if tensor.is_complex():
        return "complex"
    if tensor.is_floating_point():
        return "float"
    return "bool" if tensor.dtype == torch.bool else "int"


def load_state_dict_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Load official-named weights into ``model``, checking every key and shape.

    Derived buffers are checked (bucket tables) or dropped (``version``, ``image_position_idx``);
    ``num_batches_tracked`` may be absent (frozen-BN checkpoints); ``classification_heads.*`` are ignored.
    Raises :class:`CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    config: OFAConfig = model.config  # type: ignore[assignment]
    not_tensors = sorted(f"{k} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"checkpoint entries that are not tensors: {_summarise(not_tensors)}")
    _check_derived_buffers(state, config)
    incoming = {k: v for k, v in state.items()
                if k.rsplit(".", 1)[-1] not in _DERIVED_BUFFERS and not k.startswith("classification_heads.")}
    ignored = sorted(k for k in state if k.startswith("classification_heads."))
    if ignored:
        logger.warning("ignoring %d classification-head keys (%s)", len(ignored), _summarise(ignored, 3))
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in incoming and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in incoming if k not in expected)
    mis_shaped = sorted(f"{k} (checkpoint {tuple(incoming[k].shape)}, model {tuple(expected[k].shape)})"
                        for k in incoming if k in expected and incoming[k].shape != expected[k].shape)
    # A cast may change precision (fp16 -> fp32, fp32 -> bf16), never kind: complex, bool or float values in an
    # integer buffer (or the reverse) would be silently rounded or truncated.
    wrong_kind = sorted(f"{k} (checkpoint {incoming[k].dtype}, model {expected[k].dtype})"
                        for k in incoming if k in expected and _kind(incoming[k]) != _kind(expected[k]))
    if wrong_kind:
        raise CheckpointError(f"checkpoint values of the wrong kind: {_summarise(wrong_kind)}")
    if strict and (missing or unexpected or mis_shaped):
        parts = []
        if missing:
            parts.append(f"missing keys: {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_summarise(unexpected)}")
        if mis_shaped:
            parts.append(f"mis-shaped keys: {_summarise(mis_shaped)}")
        raise CheckpointError("checkpoint does not match the model; " + "; ".join(parts))
    with torch.no_grad():
        for key, target in expected.items():
            if key in incoming and incoming[key].shape == target.shape:
                target.copy_(incoming[key].to(target.dtype))
            elif key.endswith("num_batches_tracked"):
                target.zero_()


def _to_empty_keeping_ties(model: torch.nn.Module, device: str | torch.device) -> Any:
    """``model.to_empty(device)``, then re-tie parameters shared by several modules (the tied embedding).

    ``to_empty`` gives every module its own new tensor, which would silently untie ``output_projection``.
    """
    owners: dict[int, list[tuple[torch.nn.Module, str]]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append((module, name))
    model = model.to_empty(device=device)
    for (first, first_name), *others in owners.values():
        for module, name in others:
            setattr(module, name, getattr(first, first_name))
    return model


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    map_location: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    attention_backend: str = "sdpa",
    strict: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    **overrides: Any,
) -> Any:
    """Load an OFA model from an official fairseq checkpoint, an HF-format port, or our own directory.

    Args:
        path: a ``.pt`` file (fairseq or bare state dict) or a directory (ours: ``config.json`` +
            ``model.safetensors``, sharded or not, or the older ``model.pt``; HF: ``config.json`` +
            ``pytorch_model.bin`` or ``model.safetensors``), or a Hugging Face Hub id such as
            ``"OFA-Sys/ofa-base"`` (needs the ``hub`` extra; see :mod:`ofa.hub`).
        trust_pickle: unpickle arbitrary objects (runs code from the file). Off by default: official files load
            without it.
        map_location: device the tensors are read to.
        dtype: cast the model to this dtype after loading (default: keep fp32).
        attention_backend: attention backend of the returned model.
        strict: raise on missing/unexpected/mis-shaped keys (the default; turn off only to inspect a file).
        revision, cache_dir, token: for Hub ids: the branch/tag/commit, the cache folder, the access token
            (defaults: ``main``, then ``huggingface_hub``'s own environment: ``HF_HUB_CACHE``, ``HF_TOKEN``).
        **overrides: config fields that shapes cannot tell, e.g. ``dropout=0.0``; unknown keys raise.

    Returns:
        an :class:`~ofa.model.OFAModel` in eval mode.

    Raises:
        CheckpointError: unreadable, truncated or foreign file; weights that do not fit the architecture.
    """
    source = path
    path = resolve_source(path, revision=revision, cache_dir=cache_dir, token=token)
    try:
        state, stored, fmt = read_checkpoint(path, trust_pickle=trust_pickle, map_location=map_location)
    except CheckpointError as exc:
        if is_hub_id(source):
            raise CheckpointError(f"Hub repo {source!r} at revision {revision or 'main'!r} (cached in {str(path)!r}):"
                                  f" {exc}") from exc
        raise
    try:
        config = OFAConfig.from_dict(stored["config"]) if fmt == FORMAT_NAME else infer_config(state, stored)
    except ConfigError as exc:
        raise ConfigError(f"the model config of {os.fspath(path)!r}: {exc}") from exc
    if overrides:
        config = with_overrides(config, overrides)
    with torch.device("meta"):
        model = build_ofa(config, attention_backend=attention_backend)
    model = _to_empty_keeping_ties(model, map_location)
    model.decoder.image_position_idx.copy_(
        decoder_image_position_ids(config.code_grid_size, config.image_bucket_size))
    try:
        load_state_dict_into(model, state, strict=strict)
    except CheckpointError as exc:
        raise CheckpointError(f"{os.fspath(path)!r}: {exc}") from exc
    if dtype is not None:
        model = model.to(dtype)
    logger.info("loaded %s checkpoint %s (%d parameters)", fmt, path, model.num_parameters())
    return model.eval()


def save_pretrained(model: Any, directory: str | os.PathLike[str], *,
                    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE) -> None:
    """Write ``config.json`` (format tag + :meth:`OFAConfig.to_dict`) and ``model.safetensors`` (shards plus
    ``model.safetensors.index.json`` past ``max_shard_size`` bytes), each file atomically."""
    write_pretrained(directory, model.state_dict(), model.config.to_dict(), max_shard_size=max_shard_size)
