"""Evaluation: CMC / mAP / mINP (:mod:`.metrics`), k-reciprocal re-ranking (:mod:`.rerank`), the
datasets' protocols (:mod:`.protocols`) and feature extraction (:mod:`.features`)."""

from unreid.evaluation.features import extract_features
from unreid.evaluation.metrics import evaluate_rank
from unreid.evaluation.protocols import PROTOCOLS
from unreid.evaluation.rerank import re_ranking

__all__ = ["PROTOCOLS", "evaluate_rank", "extract_features", "re_ranking"]
