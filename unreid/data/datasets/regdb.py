"""RegDB (Nguyen et al., Sensors 2017) visible-thermal layout with the index files used by AGW
(mangye16/ReID-Survey ``data_loader.py`` / ``data_manager.py``) and MBCCM:
``idx/{train,test}_{visible,thermal}_{trial}.txt``, lines ``relative/path label`` relative to the RegDB
folder. Visible images are modality 0 / camera 0, thermal images modality 1 / camera 1. Training ids
(shared by both modalities) are relabelled 0..P-1; query = the test images of the query modality,
gallery = the test images of the other one (``mode``, AGW default visible -> thermal).

Both directions are evaluated from one feature extraction: ``trials`` holds two groups of one trial each,
``mode`` first (the headline: flat ``mAP``, ``rank1``, ...) and the other direction second
(``thermal_to_visible/mAP``, ...; :mod:`unreid.evaluation.trials`). AGW evaluates one direction per run
(``--mode``); the numbers of each direction are the same as that run's.
"""

from __future__ import annotations

from pathlib import Path

from unreid.data.datasets._util import relabel, require, resolve_root
from unreid.data.datasets.base import INFRARED, VISIBLE, ReIDData, Sample, Trial

REGDB_LAYOUT = """\
<root>/                          (e.g. RegDB/, or its parent)
  Visible/...  Thermal/...        images (paths as written in the index files)
  idx/train_visible_{1..10}.txt  idx/train_thermal_{1..10}.txt
  idx/test_visible_{1..10}.txt   idx/test_thermal_{1..10}.txt      lines "relative/path label"
options: trial=1..10 (default 1), mode=visible_to_thermal|thermal_to_visible (default visible_to_thermal)
"""
MODES = ("visible_to_thermal", "thermal_to_visible")


def read_index(path: Path, root: Path, modality: int) -> list[Sample]:
    """Samples of one index file; ``camid = modality`` (visible 0, thermal 1).

    Raises:
        ValueError: a malformed line (the message gives file and line number).
    """
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{n}: expected 'relative/path label', got {line!r}")
        out.append(Sample(str(root / parts[0]), int(parts[1]), modality, modality))
    return out


def regdb(root: str, trial: int = 1, mode: str = "visible_to_thermal") -> ReIDData:
    """Load one RegDB trial; ``root`` = the RegDB folder (holding ``idx/``) or its parent.

    ``query`` / ``gallery`` follow ``mode``; ``trials`` holds both directions, ``mode`` first (module
    docstring). ``trial`` (the index files' split, 1..10) is not a :class:`Trial`: AGW trains one model
    per split.

    Raises:
        ValueError: ``trial`` not in 1..10, unknown ``mode``, or a malformed index line.
        FileNotFoundError: an index file is missing (the message names it and shows the layout).
    """
    if mode not in MODES:
        raise ValueError(f"regdb: data.options.mode must be one of {MODES}, got {mode!r}")
    if isinstance(trial, bool) or not str(trial).isdigit() or not 1 <= int(trial) <= 10:
        raise ValueError(f"regdb: data.options.trial must be an integer in 1..10, got {trial!r}")
    trial = int(trial)
    r = resolve_root(root, "idx", ["RegDB", "regdb"])
    files = [f"idx/{s}_{m}_{trial}.txt" for s in ("train", "test") for m in ("visible", "thermal")]
    require(r, files, "regdb", REGDB_LAYOUT)
    train = read_index(r / files[0], r, VISIBLE) + read_index(r / files[1], r, INFRARED)
    vis, ir = read_index(r / files[2], r, VISIBLE), read_index(r / files[3], r, INFRARED)
    v2t, t2v = Trial("visible_to_thermal", 0, vis, ir), Trial("thermal_to_visible", 0, ir, vis)
    trials = [v2t, t2v] if mode == "visible_to_thermal" else [t2v, v2t]
    return ReIDData("regdb", relabel(train), trials[0].query, trials[0].gallery,
                    info={"root": str(r), "trial": trial, "mode": mode, "protocol": "regdb"}, trials=trials)
