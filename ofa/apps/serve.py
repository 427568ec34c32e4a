"""``ofa serve``: a task behind LitServe, with dynamic batching across clients.

Why LitServe: it is a thin layer over FastAPI/uvicorn whose one job is what a generation model needs from a
server, collecting concurrent requests into one batch (``max_batch_size``, ``batch_timeout``) and running the
model in a worker process per device, with no cluster to stand up. Ray Serve does that too but brings a Ray
cluster; it is the choice only when one deployment must span machines. TorchServe needs a model archive and Java.

Requests are JSON: ``{"image": "<base64 PNG/JPEG>", "text": "...", "fields": {...}}`` (``text`` and ``fields``
as the task needs: a referring expression, a question, ``{"region": [x0, y0, x1, y1]}``, ...). Images come in the
request body only, never as URLs the server would fetch. The answer is the prediction's JSON
(``{"text": ..., "score": ...}``, ``{"box": [...], ...}``). A body that is not such an object (bad JSON, a missing
image, an unknown key, a wrong type) gets 422 from FastAPI's validation, an image URL 400, an input the task
cannot use (an unreadable image, text it refuses) 422; every error carries a ``detail`` message and the server
keeps serving.
"""

# No `from __future__ import annotations`: LitServe and FastAPI read decode_request's annotation at runtime to
# validate the request body.
import logging
import math
from typing import Any

import litserve as ls
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ofa import runtime
from ofa.data.images import decode_base64_image
from ofa.errors import OFAError
from ofa.pipeline import Failure, Pipeline, pipeline

__all__ = ["OFAServeAPI", "build_server", "MAX_IMAGE_BASE64_CHARS"]

logger = logging.getLogger(__name__)

MAX_IMAGE_BASE64_CHARS = 40_000_000  # ~30 MB of image bytes


class PredictRequest(BaseModel):
    """The JSON body of ``POST /predict``; anything else is answered 422 by FastAPI, naming the offending key."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="the image file (PNG, JPEG, ...), base64-encoded", max_length=MAX_IMAGE_BASE64_CHARS)
    text: str | None = Field(default=None, description="the text input: an expression, a question, ...")
    fields: dict[str, Any] = Field(default_factory=dict, description="other example fields, e.g. region")


class OFAServeAPI(ls.LitAPI):
    """One task of one checkpoint as a LitServe API (``POST /predict``).

    Args:
        task: a registered task name (``caption``, ``refcoco``, ``vqa_gen``, a plugin's).
        checkpoint: a checkpoint directory, file or Hub id; loaded once per worker in :meth:`setup`.
        tokenizer: the tokenizer directory (default: the checkpoint's).
        max_batch_size: most requests predicted together; ``batch_timeout``: seconds to wait for a batch to fill.
        task_options: task constructor options (``beam_size``, ``image_size``, ``candidates``, ...).
        keep_freed_memory: each worker calls :func:`ofa.runtime.keep_freed_memory` in :meth:`setup` (faster
            batched generation, memory kept at its peak; ``ofa serve`` does unless ``--system-malloc``).
    """

    def __init__(self, task: str, checkpoint: str, tokenizer: str | None = None, *, max_batch_size: int = 8,
                 batch_timeout: float = 0.01, task_options: dict[str, Any] | None = None,
                 keep_freed_memory: bool = False, log_level: int = logging.WARNING) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.keep_freed_memory = keep_freed_memory
        self.log_level = log_level
        self.task_name = task
        self.checkpoint = checkpoint
        self.tokenizer = tokenizer
        self.task_options = dict(task_options or {})
        self.runner: Pipeline | None = None

    def setup(self, device: str) -> None:
        # setup runs in the worker process, whose logging is its own
        logging.basicConfig(level=self.log_level, format="%(levelname)s %(name)s[%(process)d]: %(message)s")
        # the allocator setting is per process: it is made here, in the worker, not in the process that starts it
        kept = self.keep_freed_memory and runtime.keep_freed_memory()
        logger.info("freed memory kept for reuse: %s", "yes" if kept else "no")  # tests read this line
        self.runner = pipeline(self.task_name, model=self.checkpoint, tokenizer=self.tokenizer,
                               batch_size=self.max_batch_size, device=device, progress=False, **self.task_options)
        logger.info("serving %s from %s on %s", self.task_name, self.checkpoint, device)

    def decode_request(self, request: PredictRequest) -> dict[str, Any]:
        """Decode the image of a request FastAPI has validated; 400 for a URL, 422 for an unreadable image."""
        if request.image.startswith(("http://", "https://", "file:")):
            raise HTTPException(400, "'image' is a URL; send the image itself, base64-encoded (the server fetches "
                                     "nothing)")
        try:
            decoded = decode_base64_image(request.image)
        except OFAError as exc:
            raise HTTPException(422, f"'image' could not be read: {exc}") from None
        return {"image": decoded, "text": request.text, "fields": dict(request.fields)}

    def batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(inputs)

    def unbatch(self, output: list[Any]) -> list[Any]:
        return list(output)

    def predict(self, inputs: list[dict[str, Any]] | dict[str, Any]) -> Any:
        """Predict a batch; requests with the same kind of input (text or not, the same field names) share one
        model call, and one bad input fails alone. With ``max_batch_size=1`` LitServe passes single requests."""
        if isinstance(inputs, dict):
            return self._predict_batch([inputs])[0]
        return self._predict_batch(inputs)

    def _predict_batch(self, inputs: list[dict[str, Any]]) -> list[Any]:
        assert self.runner is not None, "setup() was not called"
        logger.info("predicting a batch of %d requests", len(inputs))  # tests read this line
        results: list[Any] = [None] * len(inputs)
        groups: dict[tuple[bool, tuple[str, ...]], list[int]] = {}
        for i, item in enumerate(inputs):
            groups.setdefault((item["text"] is not None, tuple(sorted(item["fields"]))), []).append(i)
        for (has_text, names), members in groups.items():
            images = [inputs[i]["image"] for i in members]
            texts = [inputs[i]["text"] for i in members] if has_text else None
            fields = {name: [inputs[i]["fields"][name] for i in members] for name in names}
            try:
                stream = list(self.runner.stream(images, texts, errors="record", **fields))
            except OFAError as exc:  # a field the task cannot take: every member of the group gets the error
                stream = [(None, Failure(j, exc)) for j in range(len(members))]
            for i, (_, result) in zip(members, stream):
                results[i] = result
        return results

    def encode_response(self, output: Any) -> dict[str, Any]:
        if isinstance(output, Failure):
            raise HTTPException(422, str(output.error))
        record = output.to_dict()
        record.pop("id", None)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def build_server(task: str, checkpoint: str, tokenizer: str | None = None, *, max_batch_size: int = 8,
                 batch_timeout: float = 0.01, accelerator: str = "auto", workers_per_device: int = 1,
                 task_options: dict[str, Any] | None = None, keep_freed_memory: bool = False,
                 log_level: int = logging.WARNING) -> ls.LitServer:
    """A LitServer for :class:`OFAServeAPI` (``server.run(host=..., port=...)`` starts it)."""
    api = OFAServeAPI(task, checkpoint, tokenizer, max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                      task_options=task_options, keep_freed_memory=keep_freed_memory, log_level=log_level)
    return ls.LitServer(api, accelerator=accelerator, workers_per_device=workers_per_device, timeout=120)
