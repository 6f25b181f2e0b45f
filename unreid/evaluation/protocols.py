"""Evaluation protocols: query / gallery features and samples -> CMC, mAP, mINP in percent.

Every protocol has the signature ``fn(qf, gf, query, gallery, rerank=False) -> dict`` with ``qf`` a
``(Q, d)`` and ``gf`` a ``(G, d)`` float tensor of L2-normalised features and ``query`` / ``gallery``
lists of :class:`unreid.data.datasets.base.Sample` in the same order. The result holds ``mAP``,
``mINP``, ``rank1``, ``rank5``, ``rank10`` as percentages (floats; rank-r uses the last CMC value when
the gallery has fewer than r entries) and ``num_valid_queries`` (int).

Distance: cosine distance ``1 - q.g`` of the (re-normalised) features. torchreid's default is the
squared Euclidean distance, which for unit vectors is ``2 - 2 cos``: the same ranking, hence the same
CMC, mAP and mINP. With ``rerank=True`` the k-reciprocal re-ranking of :func:`re_ranking` (defaults
k1 20, k2 6, lambda 0.3) is applied to the squared Euclidean distances ``2 - 2 cos`` of query-gallery,
query-query and gallery-gallery pairs, as torchreid does with its default metric.

Protocols (ANCHORS.md "Evaluation protocols"; semantics in :mod:`unreid.evaluation.metrics`):

* ``market``: torchreid ``eval_market1501`` (same pid and same camid removed); Market-1501, DukeMTMC,
  MSMT17, CUHK03 (new protocol). ``veri``: VeRi-776 uses the same protocol (an alias).
* ``regdb``: AGW ``eval_regdb``, no camera filter (visible -> thermal as the dataset gives them).
* ``vehicleid``: VehicleID (Liu et al., CVPR 2016): no camera filter (the data set has no camera labels;
  query and gallery are disjoint draws of the test list, :mod:`unreid.data.datasets.vehicleid`). The same
  computation as ``regdb``, named for what it evaluates. fast-reid reaches the same result by giving every
  image its own camid (``fastreid/data/datasets/vehicleid.py``), so that its Market filter removes nothing.
* ``sysu``: SYSU-MM01 (AGW ``eval_sysu``): camera-3 queries ignore camera-2 gallery images; CMC over
  gallery identities de-duplicated in rank order; the gallery sampling (single-shot trials) is the
  dataset's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unreid.data.datasets.base import Sample
from unreid.evaluation.metrics import evaluate_rank
from unreid.evaluation.rerank import re_ranking


def _check(qf: torch.Tensor, gf: torch.Tensor, query: Sequence[Sample], gallery: Sequence[Sample], kw: dict,
           name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if kw:
        raise TypeError(f"protocol {name!r}: unexpected options {sorted(kw)} (only 'rerank' is accepted)")
    qf, gf = torch.as_tensor(qf), torch.as_tensor(gf)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f"protocol {name!r}: need qf (Q, d) and gf (G, d), got {tuple(qf.shape)} and "
                         f"{tuple(gf.shape)}")
    if qf.shape[0] != len(query) or gf.shape[0] != len(gallery):
        raise ValueError(f"protocol {name!r}: {qf.shape[0]} query features for {len(query)} query samples, "
                         f"{gf.shape[0]} gallery features for {len(gallery)} gallery samples")
    return F.normalize(qf.detach().float().cpu(), dim=1), F.normalize(gf.detach().float().cpu(), dim=1)


def query_gallery_distance(qf: torch.Tensor, gf: torch.Tensor, rerank: bool = False) -> np.ndarray:
    """The distance every protocol ranks by (module docstring, "Distance").

    Args:
        qf: ``(Q, d)`` float32 L2-normalised query features; gf: ``(G, d)`` gallery features.
        rerank: k-reciprocal re-ranking of the squared Euclidean distances ``2 - 2 cos`` (query-gallery,
            query-query, gallery-gallery), as torchreid.

    Returns:
        ``(Q, G)`` float32 numpy array, smaller = more similar: the cosine distance ``1 - q.g``, or the
        re-ranked distance.
    """
    qf, gf = torch.as_tensor(qf), torch.as_tensor(gf)
    cos_qg = qf @ gf.T
    if rerank:
        return re_ranking((2 - 2 * cos_qg).numpy(), (2 - 2 * qf @ qf.T).numpy(), (2 - 2 * gf @ gf.T).numpy())
    return (1 - cos_qg).numpy()


def _evaluate(qf: torch.Tensor, gf: torch.Tensor, query: Sequence[Sample], gallery: Sequence[Sample],
              camera_filter: str, unique_cmc: bool, rerank: bool) -> dict:
    dist = query_gallery_distance(qf, gf, rerank)
    res = evaluate_rank(
        dist,
        np.array([s.pid for s in query], dtype=np.int64),
        np.array([s.pid for s in gallery], dtype=np.int64),
        np.array([s.camid for s in query], dtype=np.int64),
        np.array([s.camid for s in gallery], dtype=np.int64),
        max_rank=50,
        camera_filter=camera_filter,
        unique_cmc=unique_cmc,
    )
    cmc = res["cmc"]
    out = {"mAP": 100.0 * res["mAP"], "mINP": 100.0 * res["mINP"]}
    for r in (1, 5, 10):
        out[f"rank{r}"] = 100.0 * float(cmc[min(r, len(cmc)) - 1])
    out["num_valid_queries"] = int(res["num_valid"])
    return out


def market(qf: torch.Tensor, gf: torch.Tensor, query: Sequence[Sample], gallery: Sequence[Sample],
           rerank: bool = False, **kw) -> dict:
    """Market-1501 protocol (torchreid ``eval_market1501``): same pid and same camid removed.

    Also used for DukeMTMC-reID, MSMT17, CUHK03 (new protocol) and VeRi-776 (alias ``"veri"``).
    See the module docstring for arguments, distance and result; raises ``ValueError`` on mismatched
    shapes or when no query has a valid match, ``TypeError`` on unknown keyword options.
    """
    qf, gf = _check(qf, gf, query, gallery, kw, "market")
    return _evaluate(qf, gf, query, gallery, "market", False, rerank)


def regdb(qf: torch.Tensor, gf: torch.Tensor, query: Sequence[Sample], gallery: Sequence[Sample],
          rerank: bool = False, **kw) -> dict:
    """RegDB protocol (AGW ``eval_regdb``): no camera filter; query / gallery modalities as given.

    See the module docstring for arguments, distance, result and errors.
    """
    qf, gf = _check(qf, gf, query, gallery, kw, "regdb")
    return _evaluate(qf, gf, query, gallery, "none", False, rerank)


def vehicleid(qf: torch.Tensor, gf: torch.Tensor, query: Sequence[Sample], gallery: Sequence[Sample],
              rerank: bool = False, **kw) -> dict:
    """VehicleID protocol: CMC, mAP and mINP with no camera filter (every gallery image of the query's id
    is a match; the query is never in the gallery: one draw puts one image per test id in the gallery and
    the others in the query set, :mod:`unreid.data.datasets.vehicleid`).

    See the module docstring for arguments, distance, result and errors.
    """
    qf, gf = _check(qf, gf, query, gallery, kw, "vehicleid")
    return _evaluate(qf, gf, query, gallery, "none", False, rerank)


def sysu(qf: torch.Tensor, gf: torch.Tensor, query: Sequence[Sample], gallery: Sequence[Sample],
         rerank: bool = False, **kw) -> dict:
    """SYSU-MM01 protocol (AGW ``eval_sysu``; official ``get_cmc_multi_cam.m``).

    Camera-3 queries (0-based camid 2) ignore camera-2 gallery images (camid 1); rank-r accuracies come
    from the CMC over gallery identities de-duplicated in rank order; mAP and mINP over the full filtered
    list. See the module docstring for arguments, distance, result and errors.
    """
    qf, gf = _check(qf, gf, query, gallery, kw, "sysu")
    return _evaluate(qf, gf, query, gallery, "sysu", True, rerank)


#: protocol name (``cfg.eval.protocol``) -> function
PROTOCOLS: dict[str, Callable[..., dict]] = {"market": market, "veri": market, "regdb": regdb, "sysu": sysu,
                                             "vehicleid": vehicleid}

#: protocol name -> the camera filter of :func:`unreid.evaluation.metrics.evaluate_rank` it uses
CAMERA_FILTER: dict[str, str] = {"market": "market", "veri": "market", "regdb": "none", "sysu": "sysu",
                                 "vehicleid": "none"}

__all__ = ["CAMERA_FILTER", "PROTOCOLS", "market", "query_gallery_distance", "regdb", "sysu", "vehicleid"]
