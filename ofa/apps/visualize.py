"""Draw predictions on images (boxes, captions, answers) for ``ofa predict --draw``."""

from __future__ import annotations

from typing import Any

from PIL import ImageDraw

__all__ = ["draw_prediction"]


def draw_prediction(image: Any, prediction: Any, color: str = "red") -> Any:
    """Return a copy of a PIL image with the prediction's box (if any) and text (caption / answer) drawn."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(min(canvas.size) / 150))
    box = getattr(prediction, "box", None)
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        # A model may emit x0 > x1 or y0 > y1; PIL refuses such rectangles, so draw the corners' hull.
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=color, width=width)
    text = getattr(prediction, "text", None) or getattr(prediction, "answer", None)
    confidence = getattr(prediction, "confidence", None)
    label = " ".join(x for x in [text or "", f"({confidence:.2f})" if confidence is not None else ""] if x)
    if label:
        left, top, right, bottom = draw.textbbox((0, 0), label)
        draw.rectangle([0, 0, right - left + 8, bottom - top + 8], fill="black")
        draw.text((4, 4), label, fill="white")
    return canvas
