"""A plain folder of unlabeled images (training only, e.g. footage of one's own cameras): every image
under ``root`` (recursive, sorted by path) becomes a training sample with pid -1. The camera comes from
an optional regular expression on the file name (its group 1), mapped to dense 0-based ids in sorted
order of the captured values (numerically when all are integers); without it every image is camera 0.
"""

from __future__ import annotations

import re
from pathlib import Path

from unreid.data.datasets._util import IMAGE_EXTS, one_line
from unreid.data.datasets.base import ReIDData, Sample

FOLDER_LAYOUT = """\
<root>/**/*.jpg|jpeg|png|bmp     any tree of images, no labels (training only; no query / gallery)
options: camera_pattern=<regex whose group 1 is the camera in the file name>, e.g. "_c(\\d+)"
         (default: every image is camera 0)
"""


def folder(root: str, camera_pattern: str | None = None) -> ReIDData:
    """Every image under ``root`` as an unlabeled training sample.

    Raises:
        FileNotFoundError: ``root`` is not a folder or holds no image.
        ValueError: ``camera_pattern`` is not a valid regex with a group, or does not match a file name.
    """
    r = Path(root).expanduser()
    if not r.is_dir():
        raise FileNotFoundError(f"folder: {r} is not a directory. Expected layout: {one_line(FOLDER_LAYOUT)}")
    paths = sorted(p for p in r.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not paths:
        raise FileNotFoundError(f"folder: no image (jpg/jpeg/png/bmp) under {r}")
    cams: list[str] = ["0"] * len(paths)
    if camera_pattern:
        try:
            pat = re.compile(camera_pattern)
        except re.error as err:
            raise ValueError(f"folder: camera_pattern {camera_pattern!r} is not a regex: {err}") from err
        if pat.groups < 1:
            raise ValueError(f"folder: camera_pattern {camera_pattern!r} needs a group, e.g. '_c(\\d+)'")
        for i, p in enumerate(paths):
            m = pat.search(p.name)
            if m is None:
                raise ValueError(f"folder: camera_pattern {camera_pattern!r} does not match {p}")
            cams[i] = m.group(1)
    values = sorted(set(cams), key=lambda c: (0, int(c), c) if c.isdigit() else (1, 0, c))
    index = {c: i for i, c in enumerate(values)}
    train = [Sample(str(p), -1, index[c]) for p, c in zip(paths, cams)]
    return ReIDData("folder", train, info={"root": str(r), "cameras": values})
