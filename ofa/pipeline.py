"""Inference API: ``ofa.pipeline(task, model=..., tokenizer=...)(images, text=...)`` -> typed predictions."""

from __future__ import annotations

import logging
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from ofa.errors import InputError, OFAError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ofa.tasks.base import Example, Prediction, Task

# This module is imported by ``import ofa`` (see ofa/__init__.py), so it imports torch and the tasks lazily.

__all__ = ["Pipeline", "Failure", "pipeline", "load_tokenizer"]

logger = logging.getLogger(__name__)


def load_tokenizer(source: Any) -> Any:
    """An :class:`~ofa.tokenization.OFATokenizer`, or a directory with its files (``save_pretrained`` output,
    ``encoder.json`` + ``vocab.bpe`` + ``dict.txt``, or the HF port's ``vocab.json`` + ``merges.txt``), or a Hub
    id whose snapshot holds them."""
    # import cost: `import ofa` loads this module; torch and the tasks load on first use
    from ofa.hub import resolve_source
    from ofa.tokenization import OFATokenizer

    if isinstance(source, OFATokenizer):
        return source
    path = resolve_source(source)
    if (path / "tokenizer_config.json").is_file():
        return OFATokenizer.from_pretrained(path)
    return OFATokenizer.from_files(path)


def _load_model(source: Any, device: torch.device | str | None, dtype: torch.dtype | None = None) -> Any:
    # import cost: `import ofa` loads this module; torch and the tasks load on first use
    import torch

    # import cost: `import ofa` loads this module; torch and the tasks load on first use
    from ofa.checkpoint import load_checkpoint

    model = source if isinstance(source, torch.nn.Module) else load_checkpoint(source)
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise InputError(f"dtype must be a floating-point torch.dtype (torch.bfloat16, ...), got {dtype!r}")
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _is_per_input(name: str, value: Any, n: int) -> bool:
    """Whether a field of a batch call holds one value per input (a list of boxes, of premises, ...)."""
    if not isinstance(value, (list, tuple)):
        return False
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        return False  # a single box / vector, shared by every input
    if len(value) != n:
        raise InputError(f"field {name!r} has {len(value)} values for {n} inputs; pass one value or {n}")
    return True


@dataclass
class Failure:
    """An input :meth:`Pipeline.stream` could not predict for (with ``errors="record"``).

    Attributes:
        id: the input's index (the same id a prediction for it would have had).
        error: the :class:`~ofa.errors.OFAError` that stopped it (an unreadable image, bad text, ...).
    """

    id: int
    error: Exception

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "error": f"{type(self.error).__name__}: {self.error}"}


class Pipeline:
    """Runs one task end to end: raw inputs -> examples -> batches -> model -> predictions.

    Inputs are read a batch at a time (:meth:`stream`): images are decoded, resized and dropped batch by batch,
    so memory stays flat however many inputs there are.

    Args:
        task: a task object (see :func:`ofa.get_task`).
        model: an :class:`~ofa.model.OFAModel` or a checkpoint path.
        tokenizer: an :class:`~ofa.tokenization.OFATokenizer` or a directory.
        batch_size: inputs per forward pass.
        device: where to run (default: the model's device).
        progress: show a progress bar (default: when there are more inputs than one batch).
        literal_text: encode text with :meth:`~ofa.tokenization.OFATokenizer.as_literal`, so that a user's
            ``"<bin_12>"`` or ``"<code_5>"`` stays text instead of becoming a location or code token (default
            True; False for prompts that spell special tokens on purpose).
        dtype: cast the model to this dtype (e.g. ``torch.bfloat16``); images follow the model's dtype.
    """

    def __init__(self, task: Task, model: Any, tokenizer: Any, batch_size: int = 8,
                 device: torch.device | str | None = None, progress: bool | None = None,
                 literal_text: bool = True, dtype: torch.dtype | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size ({batch_size!r}) must be an int >= 1")
        self.task = task
        self.model = _load_model(model, device, dtype)
        self.tokenizer = load_tokenizer(tokenizer)
        if len(self.tokenizer) != self.model.config.vocab_size:
            raise InputError(f"the tokenizer has {len(self.tokenizer)} ids but the model's vocabulary has "
                             f"{self.model.config.vocab_size}")
        self.batch_size = batch_size
        self.progress = progress
        self.literal_text = literal_text
        self._encoder = self.tokenizer.as_literal() if literal_text else self.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _plan(self, inputs: Any, text: Any, fields: dict[str, Any]) -> tuple[int, Callable[[int], Example]]:
        """The number of inputs and a function building input ``i``'s example (loading its image then)."""
        # import cost: `import ofa` loads this module; torch and the tasks load on first use
        from ofa.data.images import load_image

        # import cost: `import ofa` loads this module; torch and the tasks load on first use
        from ofa.records import Example

        images: list[Any]
        if inputs is None:
            images = []
        elif isinstance(inputs, (list, tuple)):
            images = list(inputs)
        else:
            images = [inputs]
        texts: list[Any] = list(text) if isinstance(text, (list, tuple)) else ([] if text is None else [text])
        n = max(len(images), len(texts), 1 if fields else 0)
        if n == 0:
            raise InputError("no inputs: pass images and/or text")
        for name, values in (("images", images), ("text", texts)):
            if len(values) not in (0, 1, n):
                raise InputError(f"got {len(values)} {name} for {n} inputs; pass one or {n}")
        batched = isinstance(inputs, (list, tuple)) or isinstance(text, (list, tuple))
        per_input = {k for k, v in fields.items() if batched and _is_per_input(k, v, n)}

        def build(i: int) -> Example:
            image = images[i if len(images) > 1 else 0] if images else None
            item = texts[i if len(texts) > 1 else 0] if texts else None
            if item is not None:
                _check_user_text(item, i, n)
            extra = {k: (v[i] if k in per_input else v) for k, v in fields.items()}
            return Example(id=i, image=None if image is None else load_image(image), text=item, extra=extra)

        return n, build

    def examples(self, inputs: Any, text: Any = None, **fields: Any) -> list[Example]:
        """Build examples from images (PIL, paths, bytes) and/or texts; lists are zipped, scalars broadcast.

        ``fields`` become ``Example.extra`` (``region=``, ``premise=``, ...). When ``inputs`` or ``text`` is a
        list, a field given as a list of one value per input is split across the inputs; any other value
        (a string, a single box such as ``[x0, y0, x1, y1]``) is shared by all of them. Every image is loaded
        now; :meth:`stream` loads them a batch at a time instead.
        """
        n, build = self._plan(inputs, text, fields)
        return [build(i) for i in range(n)]

    def stream(self, inputs: Any = None, text: Any = None, *, errors: str = "raise",
               **fields: Any) -> Iterator[tuple[Example | None, Prediction | Failure]]:
        """Predict input by input, a batch at a time, in input order: yields ``(example, result)`` pairs.

        Images are loaded when their batch comes up and released after it, so memory does not grow with the
        number of inputs. With ``errors="record"`` an input that cannot be read or encoded yields a
        :class:`Failure` (``example`` is None when the input could not even be built) and the others still get
        predictions; with ``errors="raise"`` (default) the first such input raises its
        :class:`~ofa.errors.OFAError`. Arguments are as for :meth:`examples`.
        """
        if errors not in ("raise", "record"):
            raise InputError(f"errors={errors!r}; expected 'raise' or 'record'")
        n, build = self._plan(inputs, text, fields)
        for start in self._batch_starts(n):
            results: list[tuple[Example | None, Prediction | Failure | None]] = []
            samples = []
            for i in range(start, min(start + self.batch_size, n)):
                example: Example | None = None
                try:
                    example = build(i)
                    samples.append(self.task.encode(example, self._encoder, training=False))
                    results.append((example, None))
                except OFAError as err:
                    if errors == "raise":
                        raise
                    results.append((example, Failure(i, err)))
            if samples:
                predicted = iter(self._predict_samples(samples))
                results = [(ex, next(predicted) if res is None else res) for ex, res in results]
            for example, result in results:
                assert result is not None
                yield example, result

    def predict_examples(self, examples: Sequence[Example]) -> list[Prediction]:
        """Encode, batch and predict a list of examples (keeps their order and ids)."""
        # import cost: `import ofa` loads this module; torch and the tasks load on first use
        import torch

        with torch.no_grad():
            return self._predict_examples(examples)

    def _predict_examples(self, examples: Sequence[Example]) -> list[Prediction]:
        predictions: list[Prediction] = []
        for start in self._batch_starts(len(examples)):
            chunk = examples[start:start + self.batch_size]
            predictions.extend(self._predict_samples([self.task.encode(ex, self._encoder, training=False)
                                                      for ex in chunk]))
        return predictions

    def _batch_starts(self, n: int) -> Iterable[int]:
        """Batch offsets over ``n`` inputs, behind a progress bar when asked (default: more than one batch)."""
        starts: Iterable[int] = range(0, n, self.batch_size)
        if self.progress if self.progress is not None else n > self.batch_size:
            # import cost: `import ofa` loads this module; torch and the tasks load on first use
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"{self.task.name}", unit="batch")
        return starts

    def _predict_samples(self, samples: list[Any]) -> list[Prediction]:
        """Collate encoded samples into one batch on the model's device and predict it."""
        # import cost: `import ofa` loads this module; torch and the tasks load on first use
        import torch

        # import cost: `import ofa` loads this module; torch and the tasks load on first use
        from ofa.data.collate import collate
        from ofa.tasks.base import predict

        with torch.no_grad():
            batch = collate(samples, pad_id=self.tokenizer.pad_id).to(self.device)
            return predict(self.task, self.model, batch, self.tokenizer)

    def __call__(self, inputs: Any = None, text: Any = None, **fields: Any) -> Prediction | list[Prediction]:
        """Predict for one input (returns one prediction) or a list (returns a list); images are read a batch
        at a time, and the first input that cannot be read raises (use :meth:`stream` to go on past it)."""
        predictions = [result for _, result in self.stream(inputs, text, **fields)]
        single = not isinstance(inputs, (list, tuple)) and not isinstance(text, (list, tuple))
        return predictions[0] if single else predictions  # type: ignore[return-value]


def _check_user_text(text: Any, index: int, n: int) -> None:
    """A user's text must be a str of valid Unicode; errors name the input and the position in *its* text."""
    where = f"the text of input {index}" if n > 1 else "the text"
    if not isinstance(text, str):
        raise InputError(f"{where} is a {type(text).__name__} ({text!r:.60}); expected a str")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(f"{where} is not valid Unicode: character {text[err.start]!r} at index {err.start} of "
                         f"{text!r:.80} (undecodable bytes, e.g. from a non-UTF-8 terminal or file)") from None


def pipeline(task: str | Task, model: Any, tokenizer: Any = None, *, batch_size: int = 8,
             device: torch.device | str | None = None, progress: bool | None = None, literal_text: bool = True,
             dtype: torch.dtype | None = None, revision: str | None = None, **task_options: Any) -> Pipeline:
    """Build a :class:`Pipeline`.

    Args:
        task: a registered task name (``"caption"``, ``"refcoco"``, a plugin's name, ...) or a task object.
        model: an :class:`~ofa.model.OFAModel`, a checkpoint path, or a Hugging Face Hub id
            (``"OFA-Sys/ofa-base"``; the ``hub`` extra).
        tokenizer: a tokenizer or a directory; default: the checkpoint directory when ``model`` is a path or id.
        literal_text: see :class:`Pipeline` (user text never becomes special tokens unless this is False).
        dtype: cast the model to this dtype (``torch.bfloat16`` for the bf16 path).
        revision: the branch, tag or commit when ``model`` is a Hub id.
        **task_options: passed to the task's constructor (e.g. ``candidates=[...]`` for VQA).
    """
    # import cost: `import ofa` loads this module; torch and the tasks load on first use
    from ofa.tasks import get_task

    task_obj = get_task(task, **task_options) if isinstance(task, str) else task
    if isinstance(model, (str, os.PathLike)):
        # import cost: `import ofa` loads this module; the hub resolver loads on first use
        from ofa.hub import resolve_source

        model = resolve_source(model, revision=revision)
    if tokenizer is None:
        if isinstance(model, (str, os.PathLike)) and Path(model).is_dir():
            tokenizer = model
        else:
            raise InputError("pass tokenizer= (a tokenizer or a directory with its files)")
    return Pipeline(task_obj, model, tokenizer, batch_size=batch_size, device=device, progress=progress,
                    literal_text=literal_text, dtype=dtype)
