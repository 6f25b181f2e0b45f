"""MSMT17 (Wei et al., CVPR 2018): the official V1 / V2 layouts with list files, and the Market-style
converted layout. Follows torchreid ``torchreid/data/datasets/image/msmt17.py``: training = list_train +
list_val; camera = third underscore field of the file name (1-based)."""

from __future__ import annotations

from pathlib import Path

from unreid.data.datasets._util import relabel, require
from unreid.data.datasets.base import ReIDData, Sample
from unreid.data.datasets.market1501 import MARKET_LAYOUT, load_market_layout

MSMT_LAYOUT = """\
<root>/MSMT17_V1/   (V2: MSMT17_V2/ with mask_train_v2/ and mask_test_v2/)
  train/<PPPP>/PPPP_SSS_CC_*.jpg     test/<PPPP>/PPPP_SSS_CC_*.jpg
  list_train.txt  list_val.txt  list_query.txt  list_gallery.txt   lines "relative/path.jpg pid"
or the Market-style conversion: bounding_box_train/ query/ bounding_box_test/ (PPPP_cC_*.jpg)
options: version=v1|v2 (auto-detected when omitted)
"""
_DIRS = {"v1": ("MSMT17_V1", "train", "test"), "v2": ("MSMT17_V2", "mask_train_v2", "mask_test_v2")}


def _read_list(path: Path, img_dir: Path) -> list[Sample]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rel, pid = line.split()
            cam = int(Path(rel).name.split("_")[2]) - 1
        except (ValueError, IndexError) as err:
            raise ValueError(f"{path}:{n}: expected 'relative/PPPP_SSS_CC_....jpg pid', got {line!r}") from err
        out.append(Sample(str(img_dir / rel), int(pid), cam))
    return out


def msmt17(root: str, version: str | None = None) -> ReIDData:
    """Load MSMT17 V1 / V2 (official lists) or its Market-style conversion."""
    base = Path(root).expanduser()
    for cand in (base, base / "MSMT17_V1", base / "MSMT17_V2", base / "msmt17"):
        if (cand / "bounding_box_train").is_dir():
            data = load_market_layout(cand, "msmt17", MARKET_LAYOUT)
            return data
    versions = [version] if version else ["v1", "v2"]
    for v in versions:
        if v not in _DIRS:
            raise ValueError(f"msmt17: data.options.version must be v1 or v2, got {v!r}")
        folder, train_dir, test_dir = _DIRS[v]
        r = base if base.name == folder else base / folder
        if (r / "list_train.txt").exists() or version:
            require(r, [train_dir, test_dir, "list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"],
                    f"msmt17 ({v})", MSMT_LAYOUT)
            train = _read_list(r / "list_train.txt", r / train_dir) + _read_list(r / "list_val.txt", r / train_dir)
            query = _read_list(r / "list_query.txt", r / test_dir)
            gallery = _read_list(r / "list_gallery.txt", r / test_dir)
            return ReIDData("msmt17", relabel(train), query, gallery,
                            info={"root": str(r), "version": v, "protocol": "market"})
    require(base / "MSMT17_V1", ["list_train.txt"], "msmt17", MSMT_LAYOUT)
    raise AssertionError("unreachable")
