"""Rank-list pictures: a query image followed by its top-k gallery images.

Public API (kept small; ``unreid search``, ``unreid eval --visualize`` and the run report use it):

* :func:`draw_rank_list` draws one query and its ranked gallery images into a PNG;
* :func:`ranked_gallery` gives the top-k gallery indices of one query under a protocol's camera filter;
* :func:`average_precision` gives every query's AP (the per-query terms of mAP);
* :func:`select_queries` picks the queries worth looking at: the best and worst by AP and random ones.

The picture follows torchreid's ``visualize_ranked_results`` (``torchreid/utils/reidtools.py``): the
query on the left, then the gallery images by rank, each framed green when it shows the query's identity
and red otherwise. Ours: a neutral grey frame when identities are unknown (a folder of images), the rank
and distance written under each image, drawn with PIL only (no OpenCV).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: frame colours (RGB): same identity as the query, another identity, identity unknown, the query itself
GREEN, RED, GREY, BLUE = (0, 170, 0), (220, 0, 0), (150, 150, 150), (40, 90, 220)


def _tile(path: str, size: tuple[int, int]) -> Image.Image:
    """``path`` resized to ``size = (H, W)``; a dark tile with a cross when the file cannot be decoded."""
    h, w = size
    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
    except Exception:
        tile = Image.new("RGB", (w, h), (40, 40, 40))
        d = ImageDraw.Draw(tile)
        d.line([(0, 0), (w - 1, h - 1)], fill=RED, width=2)
        d.line([(0, h - 1), (w - 1, 0)], fill=RED, width=2)
        return tile


def draw_rank_list(query_path: str | os.PathLike, gallery_paths: Sequence[str | os.PathLike],
                   distances: Sequence[float], out_path: str | os.PathLike, query_pid: int | None = None,
                   gallery_pids: Sequence[int] | None = None, size: tuple[int, int] = (128, 64),
                   border: int = 4, title: str | None = None) -> Path:
    """Draw a query and its ranked gallery images side by side and save the picture as a PNG.

    Args:
        query_path: the query image file.
        gallery_paths: the gallery image files in rank order (rank 1 first); any number, may be empty.
        distances: one distance per gallery image (any metric; written under the image with 3 decimals).
        out_path: the PNG to write (parent folders are created); written to a temporary file of the same
            folder and renamed, so an interrupted call never leaves half a picture.
        query_pid: the query's identity, or ``None`` when unknown.
        gallery_pids: the gallery images' identities, or ``None`` when unknown. With both ``query_pid`` and
            ``gallery_pids`` given (and ``query_pid != -1``), a gallery image is framed green when its
            identity equals the query's and red otherwise (torchreid ``visualize_ranked_results``); else
            every gallery frame is grey. The query's frame is blue.
        size: ``(H, W)`` in pixels of every image in the picture (default 128 x 64, the person aspect).
        border: frame width in pixels.
        title: a line of text above the images (default: the query file's name).

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`. The picture is ``(1 + k)`` tiles wide, each tile
        ``W + 2 * border`` pixels plus a gap, and ``H + 2 * border`` plus two text lines high.

    Raises:
        ValueError: ``distances`` (or ``gallery_pids``) and ``gallery_paths`` differ in length.
        OSError: ``out_path`` cannot be written.

    An image that cannot be decoded is drawn as a dark tile with a red cross (never an error).
    """
    gallery_paths = [str(p) for p in gallery_paths]
    distances = [float(d) for d in distances]
    if len(distances) != len(gallery_paths):
        raise ValueError(f"draw_rank_list: {len(distances)} distances for {len(gallery_paths)} gallery images")
    if gallery_pids is not None and len(gallery_pids) != len(gallery_paths):
        raise ValueError(f"draw_rank_list: {len(gallery_pids)} gallery pids for {len(gallery_paths)} images")
    known = query_pid is not None and int(query_pid) != -1 and gallery_pids is not None
    h, w = size
    gap, text_h = 6, 14
    cell_w, cell_h = w + 2 * border, h + 2 * border
    width = (1 + len(gallery_paths)) * (cell_w + gap) + gap + 8
    height = text_h + gap + cell_h + 2 * text_h + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((gap, 2), title if title is not None else Path(query_path).name, fill=(0, 0, 0), font=font)
    top = text_h + gap

    def put(i: int, path: str, colour: tuple[int, int, int], lines: list[str]) -> None:
        x = gap + i * (cell_w + gap) + (8 if i > 0 else 0)  # a wider gap after the query
        draw.rectangle([x, top, x + cell_w - 1, top + cell_h - 1], fill=colour)
        canvas.paste(_tile(path, size), (x + border, top + border))
        for j, line in enumerate(lines):
            draw.text((x, top + cell_h + 1 + j * text_h), line, fill=(0, 0, 0), font=font)

    put(0, str(query_path), BLUE, ["query"] + ([f"id {int(query_pid)}"] if known else []))
    for r, (path, dist) in enumerate(zip(gallery_paths, distances), start=1):
        if known:
            same = int(gallery_pids[r - 1]) == int(query_pid)  # type: ignore[index]
            colour = GREEN if same else RED
        else:
            colour = GREY
        put(r, path, colour, [f"#{r}", f"{dist:.3f}"])
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            canvas.save(fh, format="PNG")
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def _keep_mask(q_pid: int, q_cam: int, g_pids: np.ndarray, g_cams: np.ndarray, camera_filter: str) -> np.ndarray:
    """Gallery entries a query is ranked against (the semantics of :mod:`unreid.evaluation.metrics`)."""
    keep = np.ones(len(g_pids), dtype=bool)
    if camera_filter == "market":  # torchreid eval_market1501: same identity seen by the same camera is junk
        keep &= ~((g_pids == q_pid) & (g_cams == q_cam))
    elif camera_filter == "sysu":  # AGW eval_sysu: camera-3 queries ignore camera-2 gallery images (0-based 2, 1)
        if q_cam == 2:
            keep &= g_cams != 1
    elif camera_filter != "none":
        raise ValueError(f"unknown camera_filter {camera_filter!r}; choose market, sysu or none")
    return keep


def ranked_gallery(dist_row: np.ndarray, k: int, q_pid: int | None = None, q_cam: int | None = None,
                   g_pids: np.ndarray | None = None, g_cams: np.ndarray | None = None,
                   camera_filter: str = "none") -> np.ndarray:
    """Indices of the ``k`` gallery entries nearest to one query, nearest first.

    Args:
        dist_row: ``(G,)`` distances of the query to every gallery entry (smaller = more similar).
        k: how many to return (fewer when fewer entries remain).
        q_pid, q_cam, g_pids, g_cams: identities / cameras, needed only with a camera filter.
        camera_filter: ``"none"`` (every gallery entry), ``"market"`` (entries with the query's identity
            *and* camera left out, torchreid ``eval_market1501``) or ``"sysu"`` (camera-3 queries skip
            camera-2 entries, AGW ``eval_sysu``), as :func:`unreid.evaluation.metrics.evaluate_rank`.

    Returns:
        ``(min(k, kept),)`` int64 indices into the gallery; ties broken by index (stable sort).
    """
    dist_row = np.asarray(dist_row)
    if camera_filter == "none":
        idx = np.arange(len(dist_row))
    else:
        idx = np.flatnonzero(_keep_mask(int(q_pid), int(q_cam), np.asarray(g_pids), np.asarray(g_cams),
                                        camera_filter))
    order = np.argsort(dist_row[idx], kind="stable")[: max(int(k), 0)]
    return idx[order].astype(np.int64)


def average_precision(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids,
                      camera_filter: str = "market") -> np.ndarray:
    """Average precision of every query (the terms whose mean is mAP).

    Same semantics as :func:`unreid.evaluation.metrics.evaluate_rank`: gallery pid ``-1`` entries are
    dropped, the camera filter removes junk (see :func:`ranked_gallery`), ties are ranked by gallery index,
    and ``AP = mean over the query's true matches of precision at that match's rank`` (torchreid
    ``eval_market1501``).

    Args:
        distmat: ``(Q, G)`` float distances.
        q_pids, g_pids, q_camids, g_camids: ``(Q,)`` / ``(G,)`` integer identities and cameras.
        camera_filter: ``"market"``, ``"sysu"`` or ``"none"``.

    Returns:
        ``(Q,)`` float64 AP in [0, 1]; NaN for a query without any true match left in the gallery (such
        queries do not count in mAP either).
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    known = g_pids != -1
    ap = np.full(distmat.shape[0], np.nan)
    for i in range(distmat.shape[0]):
        keep = known & _keep_mask(int(q_pids[i]), int(q_camids[i]), g_pids, g_camids, camera_filter)
        idx = np.flatnonzero(keep)
        order = idx[np.argsort(distmat[i, idx], kind="stable")]
        hits = g_pids[order] == q_pids[i]
        if hits.any():
            ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the true matches
            ap[i] = float(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return ap


def select_queries(ap: np.ndarray, k: int, seed: int = 0) -> list[tuple[int, str]]:
    """Choose ``k`` queries to draw: the best and the worst by AP, and random ones.

    ``ceil(k / 3)`` best (highest AP, ties by index), then ``ceil((k - best) / 2)`` worst (lowest AP) among
    the others, then the rest drawn uniformly without replacement from the remaining queries
    (``numpy.random.default_rng(seed)``). Queries with NaN AP (no true match) are never chosen. Ours:
    torchreid draws the first ``topk`` queries; best / worst / random shows successes and failures.

    Args:
        ap: ``(Q,)`` per-query AP (:func:`average_precision`).
        k: how many queries (fewer when fewer valid queries exist; 0 gives none).
        seed: seed of the random choice.

    Returns:
        ``[(query index, "best" | "worst" | "random"), ...]``: best first (highest AP first), then worst
        (lowest first), then random; no index twice.
    """
    ap = np.asarray(ap, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(ap))
    k = min(max(int(k), 0), len(valid))
    n_best = math.ceil(k / 3)
    n_worst = math.ceil((k - n_best) / 2)
    by_ap = valid[np.argsort(-ap[valid], kind="stable")]
    best = by_ap[:n_best].tolist()
    rest = [int(i) for i in valid if int(i) not in set(best)]
    worst = sorted(rest, key=lambda i: (ap[i], i))[:n_worst]
    remaining = [i for i in rest if i not in set(worst)]
    rng = np.random.default_rng(seed)
    rand = rng.choice(remaining, size=k - n_best - n_worst, replace=False).tolist() if remaining else []
    return ([(int(i), "best") for i in best] + [(int(i), "worst") for i in worst]
            + [(int(i), "random") for i in rand])


__all__ = ["average_precision", "draw_rank_list", "ranked_gallery", "select_queries"]


def draw_rank_lists(qf: Any, gf: Any, query: Sequence[Any], gallery: Sequence[Any], k: int,
                    out_dir: str | os.PathLike, protocol: str = "market", rerank: bool = False, seed: int = 0,
                    size: tuple[int, int] = (128, 64), topk: int = 10) -> list[dict]:
    """Rank lists of ``k`` queries (:func:`select_queries`: best, worst and random by AP) drawn as PNGs in
    ``out_dir`` with the protocol's distance and camera filter (what ``unreid eval --visualize`` and the run
    report show).

    Args:
        qf, gf: ``(Q, d)`` / ``(G, d)`` float features in ``query`` / ``gallery`` order.
        query, gallery: the samples (``path``, ``pid``, ``camid``).
        k: queries to draw (>= 1).
        out_dir: created if missing; files ``NN_<kind>_q<index>_<name>.png``.
        protocol: ``eval.protocol`` (its camera filter, :data:`unreid.evaluation.protocols.CAMERA_FILTER`).
        rerank: k-reciprocal re-ranking of the distances.
        seed: of the random picks.
        size: ``(H, W)`` of a tile.
        topk: gallery entries per list.

    Returns:
        ``[{"kind", "query_index", "query", "ap", "gallery" (the top-k paths), "ranklist" (the PNG path)}]``.
    """
    from unreid.evaluation.protocols import CAMERA_FILTER, query_gallery_distance

    dist = query_gallery_distance(qf, gf, rerank)
    q_pids, g_pids = np.array([s.pid for s in query]), np.array([s.pid for s in gallery])
    q_cams, g_cams = np.array([s.camid for s in query]), np.array([s.camid for s in gallery])
    camera_filter = CAMERA_FILTER.get(protocol, "market")
    ap = average_precision(dist, q_pids, g_pids, q_cams, g_cams, camera_filter)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for n, (i, kind) in enumerate(select_queries(ap, k, seed=seed)):
        order = ranked_gallery(dist[i], topk, q_pids[i], q_cams[i], g_pids, g_cams, camera_filter)
        png = out / f"{n:02d}_{kind}_q{i}_{Path(query[i].path).stem}.png"
        draw_rank_list(query[i].path, [gallery[j].path for j in order], dist[i, order], png,
                       query_pid=int(q_pids[i]), gallery_pids=g_pids[order].tolist(), size=size,
                       title=f"{kind} query {i}: AP {100 * ap[i]:.1f}  ({Path(query[i].path).name})")
        drawn.append({"kind": kind, "query_index": i, "query": query[i].path, "ap": float(ap[i]),
                      "gallery": [gallery[j].path for j in order], "ranklist": str(png)})
    return drawn
