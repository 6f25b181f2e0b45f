"""Evaluation: CMC / mAP / mINP (:mod:`.metrics`), k-reciprocal re-ranking (:mod:`.rerank`), the
datasets' protocols (:mod:`.protocols`), feature extraction (:mod:`.features`) and rank-list pictures
(:mod:`.visualize`)."""

from unreid.evaluation.features import extract_features
from unreid.evaluation.metrics import evaluate_rank
from unreid.evaluation.protocols import PROTOCOLS
from unreid.evaluation.rerank import re_ranking
from unreid.evaluation.visualize import draw_rank_list

__all__ = ["PROTOCOLS", "draw_rank_list", "evaluate_rank", "extract_features", "re_ranking"]
