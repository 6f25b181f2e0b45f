"""MSMT17 (Wei et al., CVPR 2018): the official V1 / V2 layouts with list files, and the Market-style
converted layout.

Official layout as torchreid ``torchreid/data/datasets/image/msmt17.py`` reads it: list lines
``relative/path pid`` relative to the train / test image folder; the camera is the third underscore
field of the file name ``PPPP_SSS_CC_...jpg`` (1-based -> 0-based). Training = ``list_train`` +
``list_val`` (32,621 images), as Cluster Contrast's loader (inherited from MMT / SpCL
``datasets/msmt17.py``) does and as published unsupervised results use; torchreid adds ``list_val``
only with ``combineall``. Training ids are relabelled 0..P-1; query / gallery keep the list's ids.
"""

from __future__ import annotations

from pathlib import Path

from unreid.data.datasets._util import one_line, relabel, require
from unreid.data.datasets.base import ReIDData, Sample
from unreid.data.datasets.market1501 import load_market_layout

MSMT_LAYOUT = """\
<root>/MSMT17_V1/   (or MSMT17_V1/ itself; V2: MSMT17_V2/ with mask_train_v2/ and mask_test_v2/)
  train/<PPPP>/PPPP_SSS_CC_*.jpg     test/<PPPP>/PPPP_SSS_CC_*.jpg      (identity PPPP, camera CC)
  list_train.txt  list_val.txt  list_query.txt  list_gallery.txt   lines "PPPP/PPPP_SSS_CC_*.jpg pid"
or the Market-style conversion: bounding_box_train/ query/ bounding_box_test/ (PPPP_cC_*.jpg)
options: version=v1|v2 (default: detected from the folders)
"""
#: version -> (folder name, train image folder, test image folder)
VERSIONS = {"v1": ("MSMT17_V1", "train", "test"), "v2": ("MSMT17_V2", "mask_train_v2", "mask_test_v2")}
_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")


def read_list(path: Path, img_dir: Path) -> list[Sample]:
    """Samples of one MSMT17 list file (``relative/path pid`` per line; blank lines ignored).

    Raises:
        ValueError: a malformed line (the message gives file and line number).
    """
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rel, pid = line.split()
            cam = int(Path(rel).name.split("_")[2]) - 1
            out.append(Sample(str(img_dir / rel), int(pid), cam))
        except (ValueError, IndexError) as err:
            raise ValueError(f"{path}:{n}: expected 'PPPP/PPPP_SSS_CC_....jpg pid', got {line!r}") from err
    return out


def _find_official(base: Path, version: str | None) -> tuple[Path, str] | None:
    versions = [version] if version else list(VERSIONS)
    cands = [base] + [p / VERSIONS[v][0] for p in (base, base / "MSMT17", base / "msmt17") for v in versions]
    for r in cands:
        if not (r / "list_train.txt").is_file():
            continue
        if version:
            return r, version
        for v in versions:  # the version whose image folders are here; else the folder's name decides
            if (r / VERSIONS[v][1]).is_dir():
                return r, v
        return r, "v2" if r.name == VERSIONS["v2"][0] else "v1"
    return None


def msmt17(root: str, version: str | None = None) -> ReIDData:
    """Load MSMT17 V1 / V2 (official lists) or its Market-style conversion (the folder or its parent).

    Args:
        root: ``MSMT17_V1/`` (or ``_V2``), a folder holding it, or a Market-style conversion.
        version: ``"v1"`` | ``"v2"``; ``None`` detects it (V1 first when both are under ``root``).

    Raises:
        ValueError: unknown ``version``; a malformed list line.
        FileNotFoundError: no list file / image folder found (the message shows the layout).
    """
    if version is not None and version not in VERSIONS:
        raise ValueError(f"msmt17: data.options.version must be 'v1' or 'v2', got {version!r}")
    base = Path(root).expanduser()
    for cand in (base, base / "MSMT17", base / "msmt17", base / "MSMT17_V1", base / "MSMT17_V2"):
        if (cand / "bounding_box_train").is_dir():
            data = load_market_layout(cand, "msmt17", MSMT_LAYOUT)
            data.info["version"] = "market-style"
            return data
    found = _find_official(base, version)
    if found is None:
        tried = [base] + [base / VERSIONS[v][0] for v in ([version] if version else VERSIONS)]
        raise FileNotFoundError(
            f"msmt17: list_train.txt (official layout) or bounding_box_train/ (Market-style) not found in "
            f"{', '.join(map(str, tried))}. Expected layout: {one_line(MSMT_LAYOUT)}. "
            "Set data.root to the data set folder or its parent")
    r, v = found
    _, train_dir, test_dir = VERSIONS[v]
    require(r, [train_dir, test_dir, *_LISTS], f"msmt17 ({v})", MSMT_LAYOUT)
    train = read_list(r / "list_train.txt", r / train_dir) + read_list(r / "list_val.txt", r / train_dir)
    query = read_list(r / "list_query.txt", r / test_dir)
    gallery = read_list(r / "list_gallery.txt", r / test_dir)
    return ReIDData("msmt17", relabel(train), query, gallery,
                    info={"root": str(r), "version": v, "protocol": "market"})
