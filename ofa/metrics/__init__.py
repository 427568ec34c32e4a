"""Evaluation metrics: COCO caption scores, CIDEr-D (also the SCST reward), VQA accuracy, grounding Acc@0.5, accuracy.

Nothing heavy happens on import: ``pycocoevalcap`` (and Java) are only touched when a caption metric is computed.
"""

from __future__ import annotations

from ofa.metrics.caption import caption_scores, java_available, simple_tokenize
from ofa.metrics.cider import CiderDScorer, DocumentFrequency, cider_d
from ofa.metrics.classification import accuracy
from ofa.metrics.grounding import box_iou, box_iou_batch, grounding_accuracy, grounding_hit, grounding_hits
from ofa.metrics.vqa import normalize_answer, soft_score, vqa_accuracy, vqa_score

__all__ = [
    "caption_scores",
    "java_available",
    "simple_tokenize",
    "cider_d",
    "CiderDScorer",
    "DocumentFrequency",
    "accuracy",
    "box_iou",
    "box_iou_batch",
    "grounding_hit",
    "grounding_hits",
    "grounding_accuracy",
    "normalize_answer",
    "vqa_accuracy",
    "vqa_score",
    "soft_score",
]
