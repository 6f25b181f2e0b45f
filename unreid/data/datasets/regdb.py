"""RegDB (Nguyen et al., Sensors 2017) visible-thermal layout with the AGW / MBCCM index files:
``idx/{train,test}_{visible,thermal}_{trial}.txt``, lines ``relative/path label``. Visible images are
modality 0 / camera 0, thermal images modality 1 / camera 1. ``mode`` picks the query modality
(AGW default visible -> thermal)."""

from __future__ import annotations

from pathlib import Path

from unreid.data.datasets._util import relabel, require, resolve_root
from unreid.data.datasets.base import INFRARED, VISIBLE, ReIDData, Sample

REGDB_LAYOUT = """\
<root>/                          (e.g. RegDB/)
  Visible/...  Thermal/...        images
  idx/train_visible_{1..10}.txt  idx/train_thermal_{1..10}.txt
  idx/test_visible_{1..10}.txt   idx/test_thermal_{1..10}.txt      lines "relative/path label"
options: trial=1..10, mode=visible_to_thermal|thermal_to_visible
"""


def _read(path: Path, root: Path, modality: int) -> list[Sample]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'relative/path label', got {line!r}")
        out.append(Sample(str(root / parts[0]), int(parts[1]), modality, modality))
    return out


def regdb(root: str, trial: int = 1, mode: str = "visible_to_thermal") -> ReIDData:
    if mode not in ("visible_to_thermal", "thermal_to_visible"):
        raise ValueError(f"regdb: data.options.mode must be visible_to_thermal or thermal_to_visible, got {mode!r}")
    if not 1 <= int(trial) <= 10:
        raise ValueError(f"regdb: data.options.trial must be 1..10, got {trial}")
    r = resolve_root(root, "idx", ["RegDB", "regdb"])
    files = [f"idx/{s}_{m}_{trial}.txt" for s in ("train", "test") for m in ("visible", "thermal")]
    require(r, files, "regdb", REGDB_LAYOUT)
    train = _read(r / files[0], r, VISIBLE) + _read(r / files[1], r, INFRARED)
    vis, ir = _read(r / files[2], r, VISIBLE), _read(r / files[3], r, INFRARED)
    query, gallery = (vis, ir) if mode == "visible_to_thermal" else (ir, vis)
    return ReIDData("regdb", relabel(train), query, gallery,
                    info={"root": str(r), "trial": int(trial), "mode": mode, "protocol": "regdb"})
