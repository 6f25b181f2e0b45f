"""VeRi-776 (Liu et al., ICME 2016 / ECCV 2016) layout: ``image_train/ image_query/ image_test/``, file names
``VVVV_cCCC_NNNNNNNN_N.jpg`` (vehicle VVVV, camera CCC, 1-based -> 0-based), as fast-reid
``fastreid/data/datasets/veri.py`` and Cluster Contrast ``clustercontrast/datasets/veri.py`` read them.
Evaluated with the Market protocol (same id + same camera removed from the gallery). Training ids are
relabelled 0..P-1 (sorted); query / gallery keep the file's ids; ids ``-1`` are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

from unreid.data.datasets._util import list_images, one_line, relabel, report_unmatched, require, resolve_root
from unreid.data.datasets.base import ReIDData, Sample

VERI_LAYOUT = """\
<root>/                          (e.g. VeRi/, or its parent)
  image_train/  VVVV_cCCC_NNNNNNNN_N.jpg   (vehicle VVVV, camera CCC)
  image_query/  VVVV_cCCC_NNNNNNNN_N.jpg
  image_test/   VVVV_cCCC_NNNNNNNN_N.jpg   gallery
no options
"""
PATTERN = re.compile(r"([-\d]+)_c(\d+)")
SPLITS = ("image_train", "image_query", "image_test")


def _parse(folder: Path) -> tuple[list[Sample], int]:
    out, skipped = [], []
    for p in list_images(folder):
        m = PATTERN.search(p.name)
        if m is None:
            skipped.append(p.name)
        elif int(m.group(1)) >= 0:
            out.append(Sample(str(p), int(m.group(1)), int(m.group(2)) - 1))
    return out, report_unmatched("veri776", folder, skipped, "VVVV_cCCC_... (vehicle_camera)")


def veri776(root: str) -> ReIDData:
    """Load VeRi-776 or any folder in its layout (e.g. ``vehicle-2cam``); ``root`` = it or its parent.

    Raises:
        FileNotFoundError: a split folder is missing, or no training image is named like ``VVVV_cCCC_...``.
    """
    r = resolve_root(root, "image_train", ["VeRi", "VeRi-776", "veri", "veri776"])
    require(r, SPLITS, "veri776", VERI_LAYOUT)
    (train, s1), (query, s2), (gallery, s3) = (_parse(r / s) for s in SPLITS)
    if not train:
        raise FileNotFoundError(
            f"veri776: no image named like VVVV_cCCC_... in {r / 'image_train'}. "
            f"Expected layout: {one_line(VERI_LAYOUT)}")
    return ReIDData("veri776", relabel(train), query, gallery,
                    info={"root": str(r), "protocol": "market", "skipped_files": s1 + s2 + s3})
