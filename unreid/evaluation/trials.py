"""Multi-trial evaluation: one feature extraction, one protocol run per trial, mean and std per group.

Some protocols evaluate several query / gallery splits of the same test images
(:class:`unreid.data.datasets.base.Trial`): VehicleID's 10 random gallery draws per test size, VERI-Wild's
small / medium / large test sets, RegDB's two directions, SYSU-MM01's 10 gallery draws. The images are
embedded once (:func:`union_samples`: every trial's query and gallery samples, de-duplicated by path);
each trial is then evaluated with the data set's protocol on its rows of that feature matrix, and the
results are aggregated per group (:func:`aggregate`).

Result keys (percentages as floats, like a single-split protocol result):

* ``"<group>/<metric>"``: mean over the group's trials of ``mAP``, ``mINP``, ``rank1``, ``rank5``,
  ``rank10`` and ``num_valid_queries``;
* ``"<group>/<metric>_std"``: their **population** standard deviation (``numpy.std`` with ``ddof=0``,
  i.e. ``sqrt(mean((x - mean)^2))``; 0 for a group of one trial): the spread of the reported draws
  themselves, not an estimate of the spread of the mean;
* ``"<group>/trials"``: the number of trials in the group;
* the flat headline keys ``mAP``, ``mINP``, ``rank1``, ``rank5``, ``rank10``, ``num_valid_queries`` =
  the means of the **first** group (what ``metrics.jsonl``, the log line, ``test_selected`` and the
  best-model choice read, :data:`unreid.engine.hooks.METRIC_KEYS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from unreid.data.datasets.base import Sample, Trial

#: the per-trial result keys that are averaged per group
TRIAL_KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10", "num_valid_queries")


def union_samples(trials: Sequence[Trial]) -> tuple[list[Sample], list[tuple[list[int], list[int]]]]:
    """The samples of all ``trials`` de-duplicated by path, and each trial's rows in that list.

    Returns:
        ``(samples, rows)``: ``samples`` in order of first appearance (trial by trial, query then
        gallery); ``rows[i] = (query_rows, gallery_rows)``, the positions in ``samples`` of trial ``i``'s
        query and gallery samples, in the trial's order. A path seen twice gets the row of its first
        appearance (its features are the same whatever split it is in).
    """
    index: dict[str, int] = {}
    samples: list[Sample] = []
    rows = []
    for t in trials:
        split_rows = []
        for split in (t.query, t.gallery):
            r = []
            for s in split:
                if s.path not in index:
                    index[s.path] = len(samples)
                    samples.append(s)
                r.append(index[s.path])
            split_rows.append(r)
        rows.append((split_rows[0], split_rows[1]))
    return samples, rows


def aggregate(results: Sequence[tuple[str, dict]]) -> dict[str, float]:
    """Per-group mean and population std of per-trial results (the keys of the module docstring).

    Args:
        results: ``(group, result)`` pairs in trial order; ``result`` is a protocol's dict
            (:data:`TRIAL_KEYS` present; other keys ignored).

    Returns:
        The flat headline keys (means of the first group) and the ``"<group>/..."`` keys, floats.

    Raises:
        ValueError: ``results`` is empty.
    """
    if not results:
        raise ValueError("aggregate: no trial results to aggregate")
    groups: dict[str, list[dict]] = {}
    for group, res in results:
        groups.setdefault(group, []).append(res)
    out: dict[str, float] = {}
    per_group: dict[str, dict[str, float]] = {}
    for group, rs in groups.items():
        g: dict[str, float] = {}
        for k in TRIAL_KEYS:
            vals = np.asarray([float(r[k]) for r in rs if k in r], dtype=np.float64)
            if len(vals):
                g[k] = float(vals.mean())
                g[f"{k}_std"] = float(vals.std(ddof=0))
        g["trials"] = float(len(rs))
        per_group[group] = g
    first = next(iter(per_group.values()))
    out.update({k: first[k] for k in TRIAL_KEYS if k in first})
    for group, g in per_group.items():
        out.update({f"{group}/{k}": v for k, v in g.items()})
    return out


def evaluate_trials(features: torch.Tensor, rows: Sequence[tuple[Sequence[int], Sequence[int]]],
                    trials: Sequence[Trial], protocol: Callable[..., dict], rerank: bool = False) -> dict[str, float]:
    """Run ``protocol`` on every trial with rows of one feature matrix, then :func:`aggregate`.

    Args:
        features: ``(N, d)`` float features of the samples of :func:`union_samples` (L2-normalised, or
            normalised by the protocol).
        rows: :func:`union_samples`'s ``rows``, one ``(query_rows, gallery_rows)`` per trial.
        trials: the trials, in the order of ``rows``.
        protocol: a function of :data:`unreid.evaluation.protocols.PROTOCOLS`.
        rerank: passed to the protocol (k-reciprocal re-ranking per trial).

    Returns:
        The aggregated dict of the module docstring.

    Raises:
        ValueError: ``rows`` and ``trials`` differ in length, or a protocol error (no valid query...).
    """
    if len(rows) != len(trials):
        raise ValueError(f"evaluate_trials: {len(rows)} row sets for {len(trials)} trials")
    results = []
    for t, (q, g) in zip(trials, rows, strict=True):
        qf = features[torch.as_tensor(list(q), dtype=torch.long)]
        gf = features[torch.as_tensor(list(g), dtype=torch.long)]
        results.append((t.group, protocol(qf, gf, t.query, t.gallery, rerank=rerank)))
    return aggregate(results)


def format_groups(res: dict[str, float], keys: Sequence[str] = ("mAP", "rank1", "rank5", "rank10", "mINP")) -> str:
    """A table of the per-group ``mean ± std`` of ``res`` (an :func:`aggregate` result), one row a group;
    an empty string when ``res`` has no group keys."""
    groups = list(dict.fromkeys(k.split("/", 1)[0] for k in res if "/" in k))
    if not groups:
        return ""
    width = max(len("group"), *(len(g) for g in groups))
    head = f"{'group':<{width}} | trials | " + " | ".join(f"{k:>13}" for k in keys)
    lines = [head, "-" * len(head)]
    for g in groups:
        cells = []
        for k in keys:
            m, s = res.get(f"{g}/{k}"), res.get(f"{g}/{k}_std")
            cells.append(f"{'-':>13}" if m is None else f"{m:6.2f} ± {s or 0.0:4.2f}")
        lines.append(f"{g:<{width}} | {int(res.get(f'{g}/trials', 0)):6d} | " + " | ".join(cells))
    return "\n".join(lines)


__all__ = ["TRIAL_KEYS", "aggregate", "evaluate_trials", "format_groups", "union_samples"]
