"""A plain folder of unlabeled images (training only): every image under ``root`` (recursive, sorted)
becomes a training sample with pid -1; the camera comes from an optional regex."""

from __future__ import annotations

import re
from pathlib import Path

from unreid.data.datasets._util import IMAGE_EXTS
from unreid.data.datasets.base import ReIDData, Sample

FOLDER_LAYOUT = """\
<root>/**/*.jpg|jpeg|png|bmp     any tree of images, no labels (training only; no query/gallery)
options: camera_pattern=<regex with one group giving the camera number in the file name>, e.g. "_c(\\d+)"
"""


def folder(root: str, camera_pattern: str | None = None) -> ReIDData:
    r = Path(root).expanduser()
    if not r.is_dir():
        raise FileNotFoundError(f"folder: {r} is not a directory.\nExpected layout:\n{FOLDER_LAYOUT}")
    paths = sorted(p for p in r.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not paths:
        raise FileNotFoundError(f"folder: no image (jpg/jpeg/png/bmp) under {r}")
    pat = re.compile(camera_pattern) if camera_pattern else None
    raw = []
    for p in paths:
        cam = 0
        if pat is not None:
            m = pat.search(p.name)
            if m is None:
                raise ValueError(f"folder: camera_pattern {camera_pattern!r} does not match {p.name}")
            cam = int(m.group(1))
        raw.append((p, cam))
    cams = {c: i for i, c in enumerate(sorted({c for _, c in raw}))}
    train = [Sample(str(p), -1, cams[c]) for p, c in raw]
    return ReIDData("folder", train, info={"root": str(r)})
