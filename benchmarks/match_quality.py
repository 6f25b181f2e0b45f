"""The quality of a run's last cross-modality (or cross-camera) cluster matching, from the true identities.

Reads ``checkpoint_last.pth`` of a run (the labels and matches of its last labelling, in the method state)
and the run's training set (``config.yaml``'s data section; ground truth used for this report only), and
prints the number of matched cluster pairs and the share whose two clusters have the same majority identity
(:func:`unreid.pseudo_labels.quality.matching_precision`). Runs since the ``match_precision`` key was added
log it every epoch in ``metrics.jsonl``; this reads it back for older runs. Usage::

    python benchmarks/match_quality.py runs/vis_mbccm_s1 [runs/vis_mbccm_s2 ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def match_quality(run: Path) -> dict:
    """``{"run", "epoch", "matched_pairs", "match_precision"}`` of ``run``'s last labelling.

    Raises:
        FileNotFoundError: no ``checkpoint_last.pth`` / ``config.yaml`` in ``run``.
        ValueError: the checkpoint holds no matches (not a run with ``pseudo_labels.association=matches``).
    """
    from unreid.config import load_config
    from unreid.engine.checkpoint import load_checkpoint
    from unreid.engine.trainer import load_data
    from unreid.pseudo_labels.quality import matching_precision

    ck = load_checkpoint(run / "checkpoint_last.pth")
    state = ck["method"]
    if state.get("matches") is None:
        raise ValueError(f"{run}: the last labelling kept no matches (pseudo_labels.association=matches?)")
    cfg = load_config(run / "config.yaml")
    gt = np.asarray([s.pid for s in load_data(cfg).train])
    res = matching_precision(np.asarray(state["labels"]), np.asarray(state["matches"]), gt)
    return {"run": str(run), "epoch": int(ck["epoch"]) - 1, **res}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args(argv)
    print("| run | last labelled epoch | matched pairs | same person |")
    print("|---|---|---|---|")
    for run in args.runs:
        r = match_quality(run)
        share = "–" if r["match_precision"] is None else f"{100 * r['match_precision']:.1f} %"
        print(f"| {r['run']} | {r['epoch']} | {r['matched_pairs']} | {share} |")


if __name__ == "__main__":
    main()
