"""PKU VehicleID (Liu et al., "Deep Relative Distance Learning: Tell the Difference Between Similar
Vehicles", CVPR 2016) with its test protocol repeated over seeded gallery draws.

Layout (as the data set is distributed, and as fast-reid ``fastreid/data/datasets/vehicleid.py`` reads
it): ``image/<name>.jpg`` and ``train_test_split/{train_list.txt, test_list_<N>.txt}`` with lines
``<name> <vehicle id>`` (the image name without ``.jpg``), N in 800 / 1,600 / 2,400 / 3,200 / 6,000 /
13,164 test identities.

Protocol (ANCHORS.md "Evaluation protocols"; the project's issue 30): for each test identity one image is
drawn at random as its gallery image and all its other images are queries; CMC and mAP with **no camera
filter** (protocol ``vehicleid``, :func:`unreid.evaluation.protocols.vehicleid`). The draw is repeated
``draws`` times with seeds ``0 .. draws-1`` and the evaluation reports the mean and std over the draws per
test size (:mod:`unreid.evaluation.trials`; groups ``test_800``, ``test_1600``, ...). fast-reid draws
once with an unseeded ``random.shuffle``, so its numbers are one sample of this distribution.

A draw (seed ``k``): ``rng = numpy.random.default_rng(k)``; for every test id in ascending order, with its
images in list-file order, ``rng.integers(n)`` picks the gallery image; the gallery lists those picks in id
order, the queries are the other images in list-file order. An identity with a single image puts it in
the gallery and has no query (it is a distractor for the other queries). The same seeds are used for every
test size.

VehicleID has no camera labels: every image gets ``camid 0`` (camera-aware options see one camera) and
the protocol ignores cameras. Training ids are relabelled 0..P-1 (sorted); test ids keep the file's ids.
``ReIDData.query`` / ``gallery`` are the first trial (first test size, seed 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unreid.data.datasets._util import parse_test_sizes, relabel, require, resolve_root
from unreid.data.datasets.base import ReIDData, Sample, Trial

#: the test lists the data set ships (number of test identities)
TEST_SIZES = (800, 1600, 2400, 3200, 6000, 13164)

VEHICLEID_LAYOUT = """\
<root>/                                    (e.g. VehicleID_V1.0/, or its parent)
  image/<name>.jpg
  train_test_split/train_list.txt          lines "<name> <vehicle id>" (name without .jpg)
  train_test_split/test_list_<N>.txt       N = 800, 1600, 2400, 3200, 6000, 13164; same lines
options: test_sizes (default "800,1600,2400": comma string or list; one evaluation group each),
         draws (default 10: gallery draws per size, seeds 0..draws-1)
"""


def read_list(path: Path, image_dir: Path) -> list[Sample]:
    """Samples of a VehicleID list file: lines ``<name> <vehicle id>`` -> ``image_dir/<name>.jpg``, camid 0.

    Raises:
        ValueError: a malformed line (the message gives the file and line number).
    """
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{n}: expected '<image name> <vehicle id>', got {line!r}")
        out.append(Sample(str(image_dir / f"{parts[0]}.jpg"), int(parts[1]), 0))
    return out


def draw_gallery(samples: Sequence[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """One VehicleID draw: ``(query, gallery)`` with one gallery image per identity (module docstring).

    Args:
        samples: the test list's samples, in file order.
        seed: seed of ``numpy.random.default_rng``.
    """
    rng = np.random.default_rng(seed)
    by_pid: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_pid.setdefault(s.pid, []).append(i)
    picked = [idx[int(rng.integers(len(idx)))] for _, idx in sorted(by_pid.items())]
    chosen = set(picked)
    return [s for i, s in enumerate(samples) if i not in chosen], [samples[i] for i in picked]


def vehicleid(root: str, test_sizes: int | str | Sequence[int | str] = "800,1600,2400", draws: int = 10) -> ReIDData:
    """Load VehicleID: training list, and ``draws`` seeded gallery draws of each test list in ``test_sizes``.

    Args:
        root: the VehicleID folder (holding ``train_test_split/``) or its parent.
        test_sizes: which ``test_list_<N>.txt`` are evaluated, one trial group ``test_<N>`` each; the first
            is the headline. Default 800, 1,600, 2,400 (the sizes papers report).
        draws: gallery draws per size (default 10, seeds 0..draws-1: the project's protocol, issue 30;
            one draw reproduces fast-reid's single unseeded draw in distribution only).

    Returns:
        :class:`ReIDData` with ``trials`` = ``[test_<N> draw 0, ..., draw draws-1]`` per size and
        ``query`` / ``gallery`` = the first trial; ``info["protocol"] = "vehicleid"``.

    Raises:
        ValueError: a bad ``test_sizes`` or ``draws`` value, or a malformed list line.
        FileNotFoundError: ``image/`` or a list file is missing (the message names it and shows the layout).
    """
    sizes = parse_test_sizes(test_sizes, TEST_SIZES, "vehicleid")
    if isinstance(draws, bool) or not str(draws).isdigit() or int(draws) < 1:
        raise ValueError(f"vehicleid: data.options.draws must be a positive integer, got {draws!r}")
    draws = int(draws)
    r = resolve_root(root, "train_test_split", ["VehicleID_V1.0", "VehicleID", "vehicleid", "PKU-VehicleID"])
    lists = {n: f"train_test_split/test_list_{n}.txt" for n in sizes}
    require(r, ["image", "train_test_split/train_list.txt", *lists.values()], "vehicleid", VEHICLEID_LAYOUT)
    train = read_list(r / "train_test_split/train_list.txt", r / "image")
    trials = []
    for n, rel in lists.items():
        test = read_list(r / rel, r / "image")
        for k in range(draws):
            query, gallery = draw_gallery(test, k)
            trials.append(Trial(f"test_{n}", k, query, gallery))
    return ReIDData("vehicleid", relabel(train), trials[0].query, trials[0].gallery,
                    info={"root": str(r), "protocol": "vehicleid", "test_sizes": sizes, "draws": draws},
                    trials=trials)
