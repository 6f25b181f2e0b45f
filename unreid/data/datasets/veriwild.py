"""VERI-Wild (Lou et al., "VERI-Wild: A Large Dataset and a New Method for Vehicle Re-Identification in the
Wild", CVPR 2019) with its small / medium / large test sets.

Layout (as distributed, and as fast-reid ``fastreid/data/datasets/veriwild.py`` reads it):
``images/<vid>/<imgid>.jpg``; ``train_test_split/`` holding ``train_list.txt``, ``test_<N>.txt`` and
``test_<N>_query.txt`` (N = 3000 / 5000 / 10000 test identities; one entry ``<vid>/<imgid>`` a line) and
``vehicle_info.txt`` (a header line, then ``<vid>/<imgid>;<camid>;<time>;...`` rows).

Protocol (fast-reid ``SmallVeRiWild`` / ``MediumVeRiWild`` / ``LargeVeRiWild`` and its
``fastreid/evaluation/rank.py`` ``eval_market1501``): query = ``test_<N>_query.txt``, gallery =
``test_<N>.txt``, which lists **every** test image of the N identities, the queries included (41,861 /
69,389 / 138,517 images, ANCHORS.md); the Market protocol (same vehicle id and same camera removed from
each query's gallery) removes the query's own image, and its id's other images of that camera, as
fast-reid does. Each requested size is one trial group (``small``, ``medium``, ``large``) of one trial.

Cameras: the ``camid`` column of ``vehicle_info.txt`` mapped to 0-based indices in ascending numeric order
of the camera ids present in that file (one mapping for train, query and gallery, so "same camera" is the
same relation as with fast-reid's raw ids); ``info["camera_ids"]`` lists the original id of each index.
Training ids (``train_list.txt``) are relabelled 0..P-1 (sorted); test ids keep the file's ids.
``ReIDData.query`` / ``gallery`` are those of the first requested size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unreid.data.datasets._util import parse_test_sizes, relabel, require, resolve_root
from unreid.data.datasets.base import ReIDData, Sample, Trial

#: test set name -> number of test identities (``test_<N>.txt``)
TEST_SETS = {"small": 3000, "medium": 5000, "large": 10000}

VERIWILD_LAYOUT = """\
<root>/                                    (e.g. VERI-Wild/, or its parent)
  images/<vid>/<imgid>.jpg
  train_test_split/train_list.txt          lines "<vid>/<imgid>"
  train_test_split/test_<N>.txt            gallery (all test images), N = 3000, 5000, 10000
  train_test_split/test_<N>_query.txt      query
  train_test_split/vehicle_info.txt        header, then "<vid>/<imgid>;<camid>;..." rows
options: test_sizes (default "3000": comma string or list of 3000/5000/10000 or small/medium/large)
"""


def read_vehicle_info(path: Path) -> dict[str, str]:
    """``{"<vid>/<imgid>": "<camid>"}`` of ``vehicle_info.txt`` (its first line, the header, skipped).

    Raises:
        ValueError: a malformed row (the message gives the file and line number).
    """
    out = {}
    for n, line in enumerate(path.read_text().splitlines()[1:], 2):
        if not line.strip():
            continue
        parts = line.strip().split(";")
        key = parts[0].strip()
        if len(parts) < 2 or key.count("/") != 1 or not parts[1].strip().isdigit():
            raise ValueError(f"{path}:{n}: expected '<vid>/<imgid>;<camid>;...', got {line!r}")
        out[key] = parts[1].strip()
    return out


def read_list(path: Path, image_dir: Path, cams: dict[str, int]) -> list[Sample]:
    """Samples of a VERI-Wild list (lines ``<vid>/<imgid>``): ``image_dir/<vid>/<imgid>.jpg``, pid ``int(vid)``,
    camid ``cams[entry]``.

    Raises:
        ValueError: a malformed line, or an entry missing from ``vehicle_info.txt`` (file and line named).
    """
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        vid, _, imgid = entry.partition("/")
        if not vid.isdigit() or not imgid or "/" in imgid:
            raise ValueError(f"{path}:{n}: expected '<vid>/<imgid>', got {line!r}")
        if entry not in cams:
            raise ValueError(f"{path}:{n}: {entry} has no row in train_test_split/vehicle_info.txt (its camera "
                             "is unknown); use the list files and vehicle_info.txt of the same release")
        out.append(Sample(str(image_dir / vid / f"{imgid}.jpg"), int(vid), cams[entry]))
    return out


def veriwild(root: str, test_sizes: int | str | Sequence[int | str] = "3000") -> ReIDData:
    """Load VERI-Wild: training list and the requested test sets (one trial group each).

    Args:
        root: the VERI-Wild folder (holding ``train_test_split/``) or its parent.
        test_sizes: test sets by size (3000 / 5000 / 10000) or name (small / medium / large), as a comma
            string or a list; the first is the headline. Default 3000 (small).

    Returns:
        :class:`ReIDData` with one :class:`~unreid.data.datasets.base.Trial` per size (groups ``small``,
        ``medium``, ``large``), ``query`` / ``gallery`` of the first; ``info["protocol"] = "market"``.

    Raises:
        ValueError: a bad ``test_sizes``, a malformed line, or a list entry without a vehicle_info row.
        FileNotFoundError: ``images/`` or a list file is missing (the message names it and shows the layout).
    """
    sizes = parse_test_sizes(test_sizes, tuple(TEST_SETS.values()), "veriwild", TEST_SETS)
    r = resolve_root(root, "train_test_split", ["VERI-Wild", "VeRi-Wild", "veriwild", "veri-wild"])
    split = "train_test_split"
    lists = [f"{split}/test_{n}{q}.txt" for n in sizes for q in ("_query", "")]
    require(r, ["images", f"{split}/train_list.txt", f"{split}/vehicle_info.txt", *lists], "veriwild",
            VERIWILD_LAYOUT)
    info_rows = read_vehicle_info(r / split / "vehicle_info.txt")
    camera_ids = sorted({int(c) for c in info_rows.values()})
    index = {c: i for i, c in enumerate(camera_ids)}
    cams = {k: index[int(c)] for k, c in info_rows.items()}
    images = r / "images"
    train = read_list(r / split / "train_list.txt", images, cams)
    names = {v: k for k, v in TEST_SETS.items()}
    trials = [Trial(names[n], 0, read_list(r / split / f"test_{n}_query.txt", images, cams),
                    read_list(r / split / f"test_{n}.txt", images, cams)) for n in sizes]
    return ReIDData("veriwild", relabel(train), trials[0].query, trials[0].gallery,
                    info={"root": str(r), "protocol": "market", "test_sizes": sizes, "camera_ids": camera_ids},
                    trials=trials)
