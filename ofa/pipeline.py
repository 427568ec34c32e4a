"""Inference API: ``ofa.pipeline(task, model=..., tokenizer=...)(images, text=...)`` -> typed predictions."""

from __future__ import annotations

import logging
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ofa.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ofa.tasks.base import Example, Prediction, Task

# This module is imported by ``import ofa`` (see ofa/__init__.py), so it imports torch and the tasks lazily.

__all__ = ["Pipeline", "pipeline", "load_tokenizer"]

logger = logging.getLogger(__name__)


def load_tokenizer(source: Any) -> Any:
    """An :class:`~ofa.tokenization.OFATokenizer`, or a directory with its files (``save_pretrained`` output or
    ``encoder.json`` + ``vocab.bpe`` + ``dict.txt``)."""
    # import cost: `import ofa` loads this module; torch and the tasks load on first use
    from ofa.tokenization import OFATokenizer

    if isinstance(source, OFATokenizer):
        return source
    path = Path(source)
    if (path / "tokenizer_config.json").is_file():
        return OFATokenizer.from_pretrained(path)
    return OFATokenizer.from_files(path)


def _load_model(source: Any, device: torch.device | str | None) -> Any:
    # import cost: `import ofa` loads this module; torch and the tasks load on first use
    import torch

    # import cost: `import ofa` loads this module; torch and the tasks load on first use
    from ofa.checkpoint import load_checkpoint

    model = source if isinstance(source, torch.nn.Module) else load_checkpoint(source)
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


class Pipeline:
    """Runs one task end to end: raw inputs -> examples -> batches -> model -> predictions.

    Args:
        task: a task object (see :func:`ofa.get_task`).
        model: an :class:`~ofa.model.OFAModel` or a checkpoint path.
        tokenizer: an :class:`~ofa.tokenization.OFATokenizer` or a directory.
        batch_size: inputs per forward pass.
        device: where to run (default: the model's device).
        progress: show a progress bar (default: when there are more inputs than one batch).
    """

    def __init__(self, task: Task, model: Any, tokenizer: Any, batch_size: int = 8,
                 device: torch.device | str | None = None, progress: bool | None = None) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size ({batch_size}) must be >= 1")
        self.task = task
        self.model = _load_model(model, device)
        self.tokenizer = load_tokenizer(tokenizer)
        if len(self.tokenizer) != self.model.config.vocab_size:
            raise InputError(f"the tokenizer has {len(self.tokenizer)} ids but the model's vocabulary has "
                             f"{self.model.config.vocab_size}")
        self.batch_size = batch_size
        self.progress = progress

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def examples(self, inputs: Any, text: Any = None, **fields: Any) -> list[Example]:
        """Build examples from images (PIL, paths, bytes) and/or texts; lists are zipped, scalars broadcast.

        ``fields`` become ``Example.extra`` (``region=``, ``premise=``, ...). When ``inputs`` or ``text`` is a
        list, a field given as a list of one value per input is split across the inputs; any other value
        (a string, a single box such as ``[x0, y0, x1, y1]``) is shared by all of them.
        """
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
        out = []
        for i in range(n):
            image = images[i if len(images) > 1 else 0] if images else None
            if image is not None and not hasattr(image, "convert"):
                image = load_image(image)
            elif image is not None:
                image = image.convert("RGB")
            extra = {k: (v[i] if k in per_input else v) for k, v in fields.items()}
            out.append(Example(id=i, image=image, text=texts[i if len(texts) > 1 else 0] if texts else None,
                               extra=extra))
        return out

    def predict_examples(self, examples: Sequence[Example]) -> list[Prediction]:
        """Encode, batch and predict a list of examples (keeps their order and ids)."""
        # import cost: `import ofa` loads this module; torch and the tasks load on first use
        import torch

        with torch.no_grad():
            return self._predict_examples(examples)

    def _predict_examples(self, examples: Sequence[Example]) -> list[Prediction]:
        # import cost: `import ofa` loads this module; torch and the tasks load on first use
        from ofa.data.collate import collate
        from ofa.tasks.base import predict

        tok = self.tokenizer
        predictions: list[Prediction] = []
        chunks = range(0, len(examples), self.batch_size)
        show = self.progress if self.progress is not None else len(examples) > self.batch_size
        iterator: Iterable[int] = chunks
        if show:
            # import cost: `import ofa` loads this module; torch and the tasks load on first use
            from tqdm.auto import tqdm

            iterator = tqdm(chunks, desc=f"{self.task.name}", unit="batch")
        for start in iterator:
            chunk = examples[start:start + self.batch_size]
            samples = [self.task.encode(ex, tok, training=False) for ex in chunk]
            batch = collate(samples, pad_id=tok.pad_id).to(self.device)
            predictions.extend(predict(self.task, self.model, batch, tok))
        return predictions

    def __call__(self, inputs: Any = None, text: Any = None, **fields: Any) -> Prediction | list[Prediction]:
        """Predict for one input (returns one prediction) or a list (returns a list)."""
        examples = self.examples(inputs, text, **fields)
        predictions = self.predict_examples(examples)
        single = not isinstance(inputs, (list, tuple)) and not isinstance(text, (list, tuple))
        return predictions[0] if single else predictions


def pipeline(task: str | Task, model: Any, tokenizer: Any = None, *, batch_size: int = 8,
             device: torch.device | str | None = None, progress: bool | None = None,
             **task_options: Any) -> Pipeline:
    """Build a :class:`Pipeline`.

    Args:
        task: a registered task name (``"caption"``, ``"refcoco"``, a plugin's name, ...) or a task object.
        model: an :class:`~ofa.model.OFAModel` or a checkpoint path.
        tokenizer: a tokenizer or a directory; default: the checkpoint directory when ``model`` is a path.
        **task_options: passed to the task's constructor (e.g. ``candidates=[...]`` for VQA).
    """
    # import cost: `import ofa` loads this module; torch and the tasks load on first use
    from ofa.tasks import get_task

    task_obj = get_task(task, **task_options) if isinstance(task, str) else task
    if tokenizer is None:
        if isinstance(model, (str, os.PathLike)) and Path(model).is_dir():
            tokenizer = model
        else:
            raise InputError("pass tokenizer= (a tokenizer or a directory with its files)")
    return Pipeline(task_obj, model, tokenizer, batch_size=batch_size, device=device, progress=progress)
