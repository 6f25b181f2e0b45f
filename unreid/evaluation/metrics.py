"""CMC, mAP and mINP, vectorised over queries.

Semantics of torchreid's ``eval_market1501`` (``torchreid/metrics/rank.py``; ANCHORS.md): per query,
gallery entries with the query's pid **and** camid are removed (``camera_filter="market"``);
queries without any remaining match are skipped; CMC(r) = fraction of valid queries whose first
match is within rank r; AP = mean over the matches of the precision at each match; mINP (Ye et
al., AGW, TPAMI 2021, ``eval_metrics.py``) = number of matches / 1-based rank of the last match.
Ties in the distance keep ``numpy.argsort``'s order (torchreid uses the same call), so the numbers
are identical to torchreid's on the same distance matrix.

``camera_filter="none"``: nothing removed (RegDB, AGW). ``"sysu"``: a camera-3 query (camid 2)
ignores camera-2 gallery images (camid 1), and with ``unique_cmc`` the CMC is computed over the
gallery identities de-duplicated in rank order (AGW / MBCCM ``eval_sysu``, official MATLAB code);
mAP and mINP over the full filtered list.
"""

from __future__ import annotations

import numpy as np


def _keep_mask(order_pids, order_cams, q_pids, q_cams, camera_filter):
    if camera_filter == "market":
        return ~((order_pids == q_pids[:, None]) & (order_cams == q_cams[:, None]))
    if camera_filter == "none":
        return np.ones(order_pids.shape, dtype=bool)
    if camera_filter == "sysu":
        return ~((q_cams[:, None] == 2) & (order_cams == 1))
    raise ValueError(f"unknown camera_filter {camera_filter!r}; choose market, none or sysu")


def evaluate_rank(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                  camera_filter: str = "market", unique_cmc: bool = False, chunk: int = 256) -> dict:
    """Rank-based metrics of a ``(Q, G)`` distance matrix (smaller = more similar).

    Returns:
        ``{"cmc": (max_rank,) float array, "mAP": float, "mINP": float, "num_valid": int}`` as
        fractions in [0, 1].

    Raises:
        ValueError: no query has a valid match (e.g. every gallery image shares the query camera).
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    nq, ng = distmat.shape
    max_rank = min(max_rank, ng)
    cmc_hits = np.zeros(max_rank)
    ap_sum = inp_sum = 0.0
    valid = 0
    for s in range(0, nq, chunk):
        d = distmat[s:s + chunk]
        order = np.argsort(d, axis=1)
        op, oc = g_pids[order], g_camids[order]
        qp, qc = q_pids[s:s + chunk], q_camids[s:s + chunk]
        keep = _keep_mask(op, oc, qp, qc, camera_filter)
        match = (op == qp[:, None]) & keep
        pos = np.cumsum(keep, axis=1)  # 1-based rank among kept entries
        num_rel = match.sum(1)
        ok = num_rel > 0
        if not ok.any():
            continue
        match, pos, num_rel, keep = match[ok], pos[ok], num_rel[ok], keep[ok]
        valid += int(ok.sum())
        cum = np.cumsum(match, axis=1)
        ap_sum += float((np.where(match, cum / np.maximum(pos, 1), 0.0).sum(1) / num_rel).sum())
        last = np.where(match, pos, 0).max(1)
        inp_sum += float((num_rel / last).sum())
        if unique_cmc:
            for row in range(match.shape[0]):
                kp = op[ok][row][keep[row]]
                _, first = np.unique(kp, return_index=True)
                hit = (kp[np.sort(first)] == qp[ok][row])
                r = int(np.argmax(hit)) if hit.any() else max_rank
                if r < max_rank:
                    cmc_hits[r:] += 1
        else:
            first = np.where(match, pos, np.iinfo(np.int64).max).min(1)
            for r in range(max_rank):
                cmc_hits[r] += float((first <= r + 1).sum())
    if valid == 0:
        raise ValueError("no query has a valid match in the gallery under this protocol")
    return {"cmc": cmc_hits / valid, "mAP": ap_sum / valid, "mINP": inp_sum / valid, "num_valid": valid}
