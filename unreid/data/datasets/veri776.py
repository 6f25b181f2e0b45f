"""VeRi-776 (Liu et al., ICME 2016 / ECCV 2016) layout: ``image_train/ image_query/ image_test/``, names
``VVVV_cCCC_NNNNNNNN_N.jpg``; evaluated with the Market protocol (same id + same camera removed), as
Cluster Contrast and fast-reid do."""

from __future__ import annotations

import re
from pathlib import Path

from unreid.data.datasets._util import list_images, relabel, require, resolve_root
from unreid.data.datasets.base import ReIDData, Sample

VERI_LAYOUT = """\
<root>/                          (e.g. VeRi/)
  image_train/  VVVV_cCCC_NNNNNNNN_N.jpg   (vehicle VVVV, camera CCC)
  image_query/  ...
  image_test/   ...                         gallery
"""
_PATTERN = re.compile(r"([-\d]+)_c(\d+)")


def _parse(folder: Path) -> list[Sample]:
    out = []
    for p in list_images(folder):
        m = _PATTERN.search(p.name)
        if m and int(m.group(1)) >= 0:
            out.append(Sample(str(p), int(m.group(1)), int(m.group(2)) - 1))
    return out


def veri776(root: str, **options) -> ReIDData:
    if options:
        raise ValueError(f"veri776 takes no data.options, got {sorted(options)}")
    r = resolve_root(root, "image_train", ["VeRi", "veri", "VeRi-776"])
    require(r, ["image_train", "image_query", "image_test"], "veri776", VERI_LAYOUT)
    return ReIDData("veri776", relabel(_parse(r / "image_train")), _parse(r / "image_query"),
                    _parse(r / "image_test"), info={"root": str(r), "protocol": "market"})
