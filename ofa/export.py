"""Export an OFA model to ONNX or ``torch.export`` graphs, and decode with them through the same ``generate``.

Three graphs, all with dynamic batch and lengths:

* ``encoder``: ``(src_tokens [b, L], patch_images [b, 3, H, W], patch_masks [b])`` -> the per-source
  cross-attention state the decoder needs: ``pos_keys [b, h, s, d]``, ``pad_bias [b, 1, 1, s]`` and every
  layer's encoder keys and values ``[b, h, s, d]`` (the encoder run and :meth:`OFADecoder.prepare` in one);
  ``text_encoder``: the same for ``src_tokens`` alone (text-only inputs).
* ``decoder_step``: ``(tokens [n, 1], key_padding [n, p], pos_keys, pad_bias, cross k/v per layer, past k/v per
  layer [n, h, p, d])`` -> ``(logits [n, 1, V], key_padding [n, p + 1], present k/v per layer [n, h, p + 1, d])``:
  one incremental step with the KV cache as explicit inputs and outputs. The cross-attention inputs come per row
  (each row's source repeated), so one graph serves any rows-per-source ratio (beam, greedy, sampling).

:class:`ExportedModel` wraps the graphs (run by onnxruntime, or by the loaded ``torch.export`` programs) in the
:class:`~ofa.generation.contract.IncrementalModel` protocol, so :func:`ofa.generation.generate` (beam search,
sampling, constraints) runs over them unchanged. Scope: text outputs (captioning, grounding, VQA, entailment,
text tasks); image-code rows (text-to-image) stay on the eager model.

ONNX files are protobuf and load without running code; ``torch.export`` archives (``.pt2``) are read by
``torch.export.load``, which may unpickle, so :func:`load_exported` opens them only with ``trust_pickle=True``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ofa.config import OFAConfig
from ofa.errors import ConfigError, InputError
from ofa.nn.decoder import CrossState, DecoderCache

__all__ = ["EXPORT_FORMATS", "export_model", "load_exported", "ExportedModel", "ExportedEncoderState",
           "ExportedCache"]

EXPORT_FORMATS = ("onnx", "torch-export")
MANIFEST = "export.json"
_SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}


_ENCODER_INPUTS = ["src_tokens", "patch_images", "patch_masks"]
_TEXT_ENCODER_INPUTS = ["src_tokens"]


def _step_inputs(layers: int) -> list[str]:
    cross, past, _ = _names(layers)
    return ["tokens", "key_padding", "pos_keys", "pad_bias", *cross, *past]


def _flat(cross: CrossState) -> tuple[torch.Tensor, ...]:
    """An encoder graph's outputs: ``pos_keys``, ``pad_bias``, then each layer's keys and values."""
    return (cross.pos_keys, cross.pad_bias, *[t for kv in cross.kv for t in kv])


class _PastKV:
    """A layer's self-attention cache as explicit tensors: ``append`` concatenates and keeps the result."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys = torch.cat([self.keys, k], dim=2)
        self.values = torch.cat([self.values, v], dim=2)
        return self.keys, self.values


class _EncoderGraph(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_tokens: torch.Tensor, patch_images: torch.Tensor,
                patch_masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _flat(self.model.decoder.prepare(self.model.encoder(src_tokens, patch_images, patch_masks)))


class _TextEncoderGraph(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _flat(self.model.decoder.prepare(self.model.encoder(src_tokens, None, None)))


class _StepGraph(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.num_layers = len(model.decoder.layers)

    def forward(self, tokens: torch.Tensor, key_padding: torch.Tensor, pos_keys: torch.Tensor,
                pad_bias: torch.Tensor, *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layers = self.num_layers
        cross = CrossState(kv=[(kv[2 * i], kv[2 * i + 1]) for i in range(layers)], pos_keys=pos_keys,
                           pad_bias=pad_bias)
        past = [_PastKV(kv[2 * layers + 2 * i], kv[2 * layers + 2 * i + 1]) for i in range(layers)]
        length = key_padding.shape[1]
        code_masks = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        cache = DecoderCache(cross=cross, code_masks=code_masks, kv=past, length=length,  # type: ignore[arg-type]
                             key_padding=key_padding,
                             tables=self.decoder.position_tables(length + 1, [False], pos_keys.dtype))
        out = self.decoder(tokens, cross, code_masks, cache=cache, modes=[False], project=False)
        assert cache.key_padding is not None
        # the eager projection's few-rows form (W @ x^T), without its shape-dependent branch
        weight = self.decoder.output_projection.weight
        logits = torch.matmul(weight, out.features[:, 0, :].t()).t().unsqueeze(1)
        return (logits, cache.key_padding, *[t for buffer in past for t in (buffer.keys, buffer.values)])


def _names(layers: int) -> tuple[list[str], list[str], list[str]]:
    cross = [f"cross_{kind}_{i}" for i in range(layers) for kind in ("k", "v")]
    past = [f"past_{kind}_{i}" for i in range(layers) for kind in ("k", "v")]
    present = [f"present_{kind}_{i}" for i in range(layers) for kind in ("k", "v")]
    return cross, past, present


def _examples(model: Any, image_size: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Example inputs with every dynamic size distinct and >= 2 (exporters specialise sizes 0 and 1)."""
    config = model.config
    b, g, src_len, past = 2, 3, 7, 4
    src = torch.randint(4, config.vocab_size, (b, src_len))
    images = torch.zeros(b, 3, image_size, image_size)
    masks = torch.ones(b, dtype=torch.bool)
    with torch.no_grad():
        cross = [t.repeat_interleave(g, dim=0) for t in _EncoderGraph(model)(src, images, masks)]  # per row
    n, h = b * g, config.num_heads
    d = config.embed_dim // h
    kv = [torch.randn(n, h, past, d) for _ in range(2 * len(model.decoder.layers))]
    step = (torch.randint(4, config.vocab_size, (n, 1)), torch.zeros(n, past, dtype=torch.bool), *cross, *kv)
    return (src, images, masks), step


def _text_example(model: Any) -> tuple[torch.Tensor]:
    return (torch.randint(4, model.config.vocab_size, (2, 7)),)


def export_model(model: Any, out_dir: str | os.PathLike[str], *, format: str = "onnx",
                 image_size: int | None = None) -> Path:
    """Export ``model``'s encoder and incremental decoder step to ``out_dir`` (with ``export.json``).

    Args:
        model: an :class:`~ofa.model.OFAModel` (fp32; put it in eval mode, as here).
        format: ``"onnx"`` (``encoder.onnx``, ``decoder_step.onnx``; run with onnxruntime) or ``"torch-export"``
            (``encoder.pt2``, ``decoder_step.pt2``; :func:`torch.export.save`).
        image_size: side of the example images used for tracing (the graphs accept any size the encoder
            does); default ``config.patch_image_size``.

    Raises:
        ConfigError: an unknown format, or a model the graphs do not cover (no image encoder).
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"format={format!r}; expected one of {EXPORT_FORMATS}")
    config: OFAConfig = model.config
    if config.resnet is None and not hasattr(model.encoder, "embed_images"):
        raise ConfigError("the exported encoder takes images; this model has no image encoder")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    layers = len(model.decoder.layers)
    cross_names, past_names, present_names = _names(layers)
    enc_args, step_args = _examples(model, image_size or config.patch_image_size)
    batch, rows = torch.export.Dim("batch", min=1), torch.export.Dim("rows", min=1)
    encoded = torch.export.Dim("encoder_len", min=1)
    source = torch.export.Dim("source_len", min=1, max=config.max_positions)
    past = torch.export.Dim("past_len", min=0, max=config.max_positions - 1)
    height, width = torch.export.Dim("height", min=32), torch.export.Dim("width", min=32)
    row_state = {0: rows, 2: encoded}
    enc_shapes = ({0: batch, 1: source}, {0: batch, 2: height, 3: width}, {0: batch})
    step_shapes = ({0: rows}, {0: rows, 1: past}, row_state, {0: rows, 3: encoded},
                   (*[row_state for _ in cross_names], *[{0: rows, 2: past} for _ in past_names]))
    graphs = {
        "encoder": (_EncoderGraph(model), enc_args, enc_shapes, _ENCODER_INPUTS, ["pos_keys", "pad_bias", *cross_names]),
        "text_encoder": (_TextEncoderGraph(model), _text_example(model), ({0: batch, 1: source},),
                         _TEXT_ENCODER_INPUTS, ["pos_keys", "pad_bias", *cross_names]),
        "decoder_step": (_StepGraph(model), step_args, step_shapes, _step_inputs(layers),
                         ["logits", "present_key_padding", *present_names]),
    }
    files = {}
    for name, (graph, args, shapes, inputs, outputs) in graphs.items():
        path = out / f"{name}{_SUFFIX[format]}"
        with torch.no_grad():
            program = torch.export.export(graph, args, dynamic_shapes=shapes, strict=False)
            if format == "torch-export":
                torch.export.save(program, path)
            else:
                torch.onnx.export(program, args, str(path), input_names=inputs, output_names=outputs,
                                  dynamo=True, external_data=False, verbose=False)
        files[name] = path.name
    manifest = {"format": format, "files": files, "num_layers": layers, "config": config.to_dict()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


# --------------------------------------------------------------------------------------------------------------
# Running the exported graphs through the IncrementalModel protocol
# --------------------------------------------------------------------------------------------------------------
@dataclass
class ExportedEncoderState:
    """The encoder graph's outputs for ``batch_size`` sources."""

    pos_keys: torch.Tensor
    pad_bias: torch.Tensor
    kv: list[torch.Tensor]

    @property
    def batch_size(self) -> int:
        return int(self.pos_keys.shape[0])

    def index_select(self, index: torch.Tensor) -> "ExportedEncoderState":
        return ExportedEncoderState(self.pos_keys.index_select(0, index), self.pad_bias.index_select(0, index),
                                    [t.index_select(0, index) for t in self.kv])


@dataclass
class ExportedCache:
    """The decoder step's explicit state: each row's copy of its source's encoder state, the rows' past
    keys/values and padding."""

    cross: ExportedEncoderState
    past: list[torch.Tensor]
    key_padding: torch.Tensor

    @property
    def num_rows(self) -> int:
        return int(self.key_padding.shape[0])

    def reorder(self, row_index: torch.Tensor) -> None:
        """Rows continue from ``row_index`` (of the same source, so the per-row cross state stays as it is)."""
        self.past = [t.index_select(0, row_index) for t in self.past]
        self.key_padding = self.key_padding.index_select(0, row_index)

    def select_sources(self, source_index: torch.Tensor, row_index: torch.Tensor) -> None:
        self.cross = self.cross.index_select(row_index)
        self.reorder(row_index)


class ExportedModel:
    """Exported graphs as an :class:`~ofa.generation.contract.IncrementalModel`: pass it to ``generate``.

    Build it with :func:`load_exported`. ``run_encoder`` / ``run_step`` map input names to tensors and return the
    graph's outputs in order; they are onnxruntime sessions or ``torch.export`` programs underneath.
    """

    def __init__(self, config: OFAConfig, num_layers: int, run_encoder: Any, run_text_encoder: Any, run_step: Any,
                 backend: str) -> None:
        self.config = config
        self.num_layers = num_layers
        self._run_encoder = run_encoder
        self._run_text_encoder = run_text_encoder
        self._run_step = run_step
        self.backend = backend
        self._cross_names, self._past_names, _ = _names(num_layers)
        self._head_dim = config.embed_dim // config.num_heads

    def __repr__(self) -> str:
        return f"ExportedModel(backend={self.backend!r}, layers={self.num_layers}, vocab={self.config.vocab_size})"

    def encode(self, src_tokens: torch.Tensor, patch_images: torch.Tensor | None = None,
               patch_masks: torch.Tensor | None = None) -> ExportedEncoderState:
        if not isinstance(src_tokens, torch.Tensor) or src_tokens.dim() != 2 or src_tokens.is_floating_point():
            raise InputError(f"src_tokens must be an integer tensor [b, L], got {getattr(src_tokens, 'shape', src_tokens)}")
        if src_tokens.numel() and (int(src_tokens.min()) < 0 or int(src_tokens.max()) >= self.config.vocab_size):
            raise InputError(f"src_tokens has ids outside [0, {self.config.vocab_size})")
        b = src_tokens.shape[0]
        if patch_images is None:
            if patch_masks is not None and bool(patch_masks.any()):
                raise InputError("patch_masks marks images as present but patch_images is None")
            outputs = self._run_text_encoder({"src_tokens": src_tokens.long()})
            return ExportedEncoderState(outputs[0], outputs[1], list(outputs[2:]))
        if patch_images.dim() != 4 or patch_images.shape[0] != b or patch_images.shape[1] != 3:
            raise InputError(f"patch_images must be [{b}, 3, H, W], got {tuple(patch_images.shape)}")
        masks = torch.ones(b, dtype=torch.bool) if patch_masks is None else patch_masks.bool()
        outputs = self._run_encoder({"src_tokens": src_tokens.long(), "patch_images": patch_images.float(),
                                     "patch_masks": masks})
        return ExportedEncoderState(outputs[0], outputs[1], list(outputs[2:]))

    def init_cache(self, encoder_out: ExportedEncoderState, num_rows: int | None = None,
                   code_masks: torch.Tensor | None = None) -> ExportedCache:
        if code_masks is not None and bool(code_masks.any()):
            raise InputError("the exported decoder covers text rows only; image-code rows need the eager model")
        b = encoder_out.batch_size
        n = b if num_rows is None else num_rows
        if n % b:
            raise InputError(f"num_rows ({n}) must be a multiple of the {b} sources")
        rows = encoder_out.index_select(torch.arange(b).repeat_interleave(n // b))
        empty = torch.zeros(n, self.config.num_heads, 0, self._head_dim, dtype=encoder_out.pos_keys.dtype)
        return ExportedCache(rows, [empty] * (2 * self.num_layers), torch.zeros(n, 0, dtype=torch.bool))

    def decode_step(self, tokens: torch.Tensor, cache: ExportedCache) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[0] != cache.num_rows:
            raise InputError(f"decode_step expects tokens of shape [{cache.num_rows}, t], got {tuple(tokens.shape)}")
        logits = []
        for i in range(tokens.shape[1]):  # the graph takes one position; longer feeds go a token at a time
            feed = {"tokens": tokens[:, i:i + 1].long(), "key_padding": cache.key_padding,
                    "pos_keys": cache.cross.pos_keys, "pad_bias": cache.cross.pad_bias,
                    **dict(zip(self._cross_names, cache.cross.kv)), **dict(zip(self._past_names, cache.past))}
            outputs = self._run_step(feed)
            logits.append(outputs[0])
            cache.key_padding = outputs[1]
            cache.past = list(outputs[2:])
        return logits[0] if len(logits) == 1 else torch.cat(logits, dim=1)

    def max_decoder_length(self, code_rows: bool = False) -> int:
        return self.config.max_positions


def _onnx_runner(path: Path, providers: Sequence[str] | None) -> Any:
    try:
        import onnxruntime  # optional dependency: the `export` extra
    except ImportError:
        raise ConfigError("running an ONNX export needs onnxruntime: pip install 'ofa-unified[export]'") from None
    options = onnxruntime.SessionOptions()
    session = onnxruntime.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    names = [i.name for i in session.get_inputs()]

    def run(feed: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        outputs = session.run(None, {name: feed[name].numpy() for name in names})
        return [torch.from_numpy(o) for o in outputs]

    return run


def _program_runner(path: Path, input_order: list[str]) -> Any:
    program = torch.export.load(path).module()

    def run(feed: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(program(*[feed[name] for name in input_order]))

    return run


def load_exported(directory: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
                  trust_pickle: bool = False) -> ExportedModel:
    """Open what :func:`export_model` wrote: an :class:`ExportedModel` for ``generate``.

    Args:
        providers: onnxruntime execution providers (default CPU).
        trust_pickle: needed for ``torch-export`` archives, whose loader may unpickle (runs code from the file:
            only for exports you trust). ONNX needs nothing.

    Raises:
        ConfigError: no or an unreadable ``export.json``, a missing graph file, onnxruntime absent for ONNX, or a
            ``torch-export`` archive without ``trust_pickle``.
    """
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        fmt, files, layers = manifest["format"], manifest["files"], int(manifest["num_layers"])
        config = OFAConfig.from_dict(manifest["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{str(directory)!r} is not an export directory ({MANIFEST}: {exc})") from exc
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"{str(directory / MANIFEST)!r} names format {fmt!r}; expected one of {EXPORT_FORMATS}")
    paths = {name: directory / str(files.get(name, "")) for name in ("encoder", "text_encoder", "decoder_step")}
    for path in paths.values():
        if not path.is_file():
            raise ConfigError(f"export file {str(path)!r} is missing")
    if fmt == "onnx":
        return ExportedModel(config, layers, _onnx_runner(paths["encoder"], providers),
                             _onnx_runner(paths["text_encoder"], providers),
                             _onnx_runner(paths["decoder_step"], providers), "onnxruntime")
    if not trust_pickle:
        raise ConfigError(f"{str(directory)!r} holds torch.export archives, whose loader may unpickle (run code "
                          "from the files); pass trust_pickle=True for exports you trust, or export to ONNX")
    return ExportedModel(config, layers,
                         _program_runner(paths["encoder"], _ENCODER_INPUTS),
                         _program_runner(paths["text_encoder"], _TEXT_ENCODER_INPUTS),
                         _program_runner(paths["decoder_step"], _step_inputs(layers)), "torch.export")
