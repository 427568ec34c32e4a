"""``ofa demo``: a gradio page like OFA's Spaces: upload an image, pick captioning, grounding (the box drawn on the
image) or VQA, read the answer.

The three tasks share one loaded model; their pipelines are built on first use. Options apply to every task
(``image_size=480``) or to one (``refcoco.max_image_size=512``).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from ofa.apps.visualize import draw_prediction
from ofa.checkpoint import load_checkpoint
from ofa.errors import OFAError
from ofa.pipeline import Pipeline, load_tokenizer, pipeline

__all__ = ["TASKS", "build_demo", "split_options"]

logger = logging.getLogger(__name__)

# label shown on the page -> (task name, what the text box is for, or None when the task takes no text)
TASKS: dict[str, tuple[str, str | None]] = {
    "Caption": ("caption", None),
    "Grounding": ("refcoco", "the referring expression, e.g. 'the man on the left'"),
    "VQA": ("vqa_gen", "the question, e.g. 'what colour is the car?'"),
}


def split_options(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"image_size": 480, "refcoco.max_image_size": 512}`` -> the options of each task name."""
    names = {name for name, _ in TASKS.values()}
    per_task: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in options.items():
        task, dot, option = key.rpartition(".")
        if not dot:
            for name in names:
                per_task[name][key] = value
        elif task in names:
            per_task[task][option] = value
        else:
            raise OFAError(f"option {key!r} names task {task!r}; the demo's tasks are {sorted(names)}")
    return per_task


def build_demo(checkpoint: str, tokenizer: str | None = None, *, options: dict[str, Any] | None = None,
               device: str | None = None) -> gr.Blocks:
    """The demo page for ``checkpoint`` (``.launch()`` serves it)."""
    model = load_checkpoint(checkpoint)
    if device is not None:
        model = model.to(device)
    tok = load_tokenizer(tokenizer or checkpoint)
    per_task = split_options(options or {})
    runners: dict[str, Pipeline] = {}

    def runner(name: str) -> Pipeline:
        if name not in runners:
            runners[name] = pipeline(name, model, tok, batch_size=1, progress=False, **per_task[name])
        return runners[name]

    def run(image: Any, label: str, text: str) -> tuple[Any, str]:
        if image is None:
            raise gr.Error("upload an image first")
        name, prompt = TASKS[label]
        if prompt is not None and not (text or "").strip():
            raise gr.Error(f"{label} needs text: {prompt}")
        try:
            prediction = runner(name)(image, text=text) if prompt is not None else runner(name)(image)
        except OFAError as exc:
            raise gr.Error(str(exc)) from None
        box = getattr(prediction, "box", None)
        if box is not None:
            answer = "box: [" + ", ".join(f"{v:.0f}" for v in box) + "]"
        else:
            answer = str(getattr(prediction, "text", "") or getattr(prediction, "answer", ""))
        return draw_prediction(image, prediction), answer

    def hint(label: str) -> Any:
        prompt = TASKS[label][1]
        return gr.update(placeholder=prompt or "(not used by this task)", interactive=prompt is not None)

    with gr.Blocks(title="OFA demo") as demo:
        gr.Markdown("## OFA: captioning, visual grounding and VQA\nUpload an image, pick a task, press Run.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image", elem_id="ofa-image")
                task = gr.Radio(list(TASKS), value="Caption", label="Task", elem_id="ofa-task")
                text = gr.Textbox(label="Text", placeholder="(not used by this task)", interactive=False,
                                  elem_id="ofa-text")
                button = gr.Button("Run", variant="primary", elem_id="ofa-run")
            with gr.Column():
                shown = gr.Image(type="pil", label="Result", elem_id="ofa-result", interactive=False)
                answer = gr.Textbox(label="Answer", elem_id="ofa-answer", interactive=False)
        task.change(hint, task, text)
        button.click(run, [image, task, text], [shown, answer])
    return demo
