"""Market-1501 (Zheng et al., ICCV 2015) and DukeMTMC-reID (Ristani et al., ECCVW 2016; Zheng et al.,
ICCV 2017) folder layouts.

Rules as torchreid ``torchreid/data/datasets/image/market1501.py`` / ``dukemtmcreid.py`` read them:
identity and camera from the file name (regex ``([-\\d]+)_c(\\d)``); pid ``-1`` (junk boxes) dropped
everywhere; pid ``0`` (distractors) kept in query/gallery but dropped from training; camera ids
0-based (``c1`` -> 0); training identities relabelled ``0..P-1`` in sorted order, query/gallery keep
the file's ids. Any data set converted to this layout (e.g. ``cuhk03-detected``) loads the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

from unreid.data.datasets._util import list_images, one_line, relabel, report_unmatched, require, resolve_root
from unreid.data.datasets.base import ReIDData, Sample

MARKET_LAYOUT = """\
<root>/                          (e.g. Market-1501-v15.09.15/, or its parent)
  bounding_box_train/  PPPP_cCsS_FFFFFF_BB.jpg   training images (identity PPPP, camera C)
  query/               PPPP_cCsS_FFFFFF_BB.jpg
  bounding_box_test/   PPPP_cCsS_FFFFFF_BB.jpg   gallery; PPPP = -1 junk (dropped), 0000 distractors (kept)
no options
"""
DUKE_LAYOUT = """\
<root>/                          (e.g. DukeMTMC-reID/, or its parent)
  bounding_box_train/  PPPP_cC_fFFFFFFF.jpg      (identity PPPP, camera C)
  query/               PPPP_cC_fFFFFFFF.jpg
  bounding_box_test/   PPPP_cC_fFFFFFFF.jpg      gallery
no options
"""
#: identity (may be -1) and camera digit, as torchreid's Market-1501 / DukeMTMC-reID loaders
PATTERN = re.compile(r"([-\d]+)_c(\d)")
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
MARKET_FOLDERS = ("Market-1501-v15.09.15", "Market-1501", "market1501")
DUKE_FOLDERS = ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid", "dukemtmc")


def parse_folder(folder: Path, is_train: bool, name: str = "market1501") -> tuple[list[Sample], int]:
    """Samples of one Market/Duke-style folder.

    Args:
        folder: ``bounding_box_train/``, ``query/`` or ``bounding_box_test/``.
        is_train: drop distractors (pid 0) too.
        name: data set name for the warning about ignored files.

    Returns:
        ``(samples, skipped)``: samples with the file's pid and 0-based camid (in file-name order), and
        the number of image files whose name does not match :data:`PATTERN` (ignored, and logged as one
        warning naming a few of them).
    """
    out, skipped = [], []
    for p in list_images(folder):
        m = PATTERN.search(p.name)
        if m is None:
            skipped.append(p.name)
            continue
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1 or (is_train and pid == 0):
            continue
        out.append(Sample(str(p), pid, cam - 1))
    return out, report_unmatched(name, folder, skipped, "PPPP_cC... (identity_camera)")


def load_market_layout(root: Path, name: str, layout: str = MARKET_LAYOUT) -> ReIDData:
    """Load a folder in Market-1501 layout (see the module docstring for the rules).

    Args:
        root: the folder holding ``bounding_box_train/``, ``query/`` and ``bounding_box_test/``.
        name: data set name for ``ReIDData.name`` and error messages.
        layout: layout text shown in errors.

    Raises:
        FileNotFoundError: a split folder is missing, or no training image has a Market-style name.
    """
    require(root, SPLITS, name, layout)
    train, s1 = parse_folder(root / "bounding_box_train", True, name)
    if not train:
        raise FileNotFoundError(
            f"{name}: no image named like PPPP_cC... in {root / 'bounding_box_train'}. "
            f"Expected layout: {one_line(layout)}")
    query, s2 = parse_folder(root / "query", False, name)
    gallery, s3 = parse_folder(root / "bounding_box_test", False, name)
    return ReIDData(name, relabel(train), query, gallery,
                    info={"root": str(root), "protocol": "market", "skipped_files": s1 + s2 + s3})


def market1501(root: str) -> ReIDData:
    """Market-1501, or any data set in its layout (``MARKET_LAYOUT``); ``root`` = the folder or its parent.

    Raises:
        FileNotFoundError: a split folder is missing (the message shows the layout).
    """
    return load_market_layout(resolve_root(root, "bounding_box_train", MARKET_FOLDERS), "market1501")


def dukemtmc(root: str) -> ReIDData:
    """DukeMTMC-reID (``DUKE_LAYOUT``); ``root`` = the folder or its parent.

    Raises:
        FileNotFoundError: a split folder is missing (the message shows the layout).
    """
    return load_market_layout(resolve_root(root, "bounding_box_train", DUKE_FOLDERS), "dukemtmc", DUKE_LAYOUT)
