"""Market-1501 (Zheng et al., ICCV 2015) and DukeMTMC-reID (Ristani et al., ECCVW 2016; Zheng et al.,
ICCV 2017) folder layouts, following torchreid ``torchreid/data/datasets/image/market1501.py`` and
``dukemtmcreid.py``: pid -1 (junk) is dropped everywhere, pid 0 (distractors) is kept in the gallery
only, camera ids are 0-based, training identities are relabelled 0..P-1."""

from __future__ import annotations

import re
from pathlib import Path

from unreid.data.datasets._util import list_images, relabel, require, resolve_root
from unreid.data.datasets.base import ReIDData, Sample

MARKET_LAYOUT = """\
<root>/                          (e.g. Market-1501-v15.09.15/)
  bounding_box_train/  PPPP_cCsS_FFFFFF_BB.jpg   training images (identity PPPP, camera C)
  query/               PPPP_cCsS_FFFFFF_BB.jpg
  bounding_box_test/   PPPP_cCsS_FFFFFF_BB.jpg   gallery; PPPP = -1 junk (dropped), 0000 distractors
"""
DUKE_LAYOUT = """\
<root>/                          (e.g. DukeMTMC-reID/)
  bounding_box_train/  PPPP_cC_fFFFFFFF.jpg
  query/               PPPP_cC_fFFFFFFF.jpg
  bounding_box_test/   PPPP_cC_fFFFFFFF.jpg
"""
_PATTERN = re.compile(r"([-\d]+)_c(\d+)")
SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def parse_folder(folder: Path, is_train: bool) -> list[Sample]:
    """Samples of one Market/Duke-style folder (junk dropped; distractors dropped from train)."""
    out = []
    for p in list_images(folder):
        m = _PATTERN.search(p.name)
        if m is None:
            continue
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1 or (is_train and pid == 0):
            continue
        out.append(Sample(str(p), pid, cam - 1))
    return out


def load_market_layout(root: Path, name: str, layout: str) -> ReIDData:
    require(root, SPLITS, name, layout)
    train = relabel(parse_folder(root / "bounding_box_train", True))
    if not train:
        raise FileNotFoundError(f"{name}: no image named like PPPP_cC... in {root / 'bounding_box_train'}\n{layout}")
    return ReIDData(name, train, parse_folder(root / "query", False), parse_folder(root / "bounding_box_test", False),
                    info={"root": str(root), "protocol": "market"})


def market1501(root: str, **options) -> ReIDData:
    """Market-1501 layout (also any data set converted to it, e.g. ``cuhk03-detected``)."""
    _no_options("market1501", options)
    r = resolve_root(root, "bounding_box_train", ["Market-1501-v15.09.15", "market1501", "Market-1501"])
    return load_market_layout(r, "market1501", MARKET_LAYOUT)


def dukemtmc(root: str, **options) -> ReIDData:
    """DukeMTMC-reID layout."""
    _no_options("dukemtmc", options)
    r = resolve_root(root, "bounding_box_train", ["DukeMTMC-reID", "dukemtmcreid", "dukemtmc"])
    return load_market_layout(r, "dukemtmc", DUKE_LAYOUT)


def _no_options(name: str, options: dict) -> None:
    if options:
        raise ValueError(f"{name} takes no data.options, got {sorted(options)}")
