"""Evaluation protocols: each maps query / gallery features and samples to metrics in percent.

Distances are cosine distances ``1 - q.g`` of L2-normalised features (torchreid's default squared
Euclidean equals ``2 - 2 cos`` for normalised features: the same ranking).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from unreid.evaluation.metrics import evaluate_rank
from unreid.evaluation.rerank import re_ranking


def _run(qf: torch.Tensor, gf: torch.Tensor, query, gallery, camera_filter: str, unique_cmc: bool = False,
         rerank: bool = False) -> dict:
    qf, gf = qf.float(), gf.float()
    dist = (1 - qf @ gf.T).numpy()
    if rerank:
        dist = re_ranking(2 * dist, (2 - 2 * qf @ qf.T).numpy(), (2 - 2 * gf @ gf.T).numpy())
    res = evaluate_rank(dist, [s.pid for s in query], [s.pid for s in gallery], [s.camid for s in query],
                        [s.camid for s in gallery], camera_filter=camera_filter, unique_cmc=unique_cmc)
    cmc = res["cmc"]
    pick = lambda r: 100.0 * float(cmc[min(r, len(cmc)) - 1])  # noqa: E731
    return {"mAP": 100.0 * res["mAP"], "mINP": 100.0 * res["mINP"], "rank1": pick(1), "rank5": pick(5),
            "rank10": pick(10), "num_valid_queries": res["num_valid"]}


def market(qf, gf, query, gallery, rerank: bool = False, **_) -> dict:
    """Market-1501 protocol (also CUHK03, DukeMTMC, MSMT17, VeRi-776): same pid & camid removed."""
    return _run(qf, gf, query, gallery, "market", rerank=rerank)


def regdb(qf, gf, query, gallery, rerank: bool = False, **_) -> dict:
    """RegDB (AGW): visible <-> thermal, no camera filter."""
    return _run(qf, gf, query, gallery, "none", rerank=rerank)


def sysu(qf, gf, query, gallery, rerank: bool = False, **_) -> dict:
    """SYSU-MM01: camera-3 queries ignore camera-2 gallery images; CMC over unique gallery ids."""
    return _run(qf, gf, query, gallery, "sysu", unique_cmc=True, rerank=rerank)


PROTOCOLS: dict[str, Callable[..., dict]] = {"market": market, "veri": market, "regdb": regdb, "sysu": sysu}

__all__ = ["PROTOCOLS", "market", "regdb", "sysu"]
