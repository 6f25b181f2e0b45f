"""Dataset registry: ``build_dataset(name, root, **options) -> ReIDData``.

One small loader per family (DESIGN.md; after torchreid's ``dataset.py`` / ``market1501.py``): each
checks its folders first and raises ``FileNotFoundError`` naming what is missing and the expected
layout. ``DATASETS`` describes every family (``unreid datasets`` prints it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unreid.data.datasets.base import INFRARED, VISIBLE, ReIDData, Sample
from unreid.data.datasets.cuhk03 import CUHK03_LAYOUT, cuhk03
from unreid.data.datasets.folder import FOLDER_LAYOUT, folder
from unreid.data.datasets.market1501 import DUKE_LAYOUT, MARKET_LAYOUT, dukemtmc, market1501
from unreid.data.datasets.msmt17 import MSMT_LAYOUT, msmt17
from unreid.data.datasets.regdb import REGDB_LAYOUT, regdb
from unreid.data.datasets.veri776 import VERI_LAYOUT, veri776

SYNTHETIC_LAYOUT = """\
generated on first use into <root>/synthetic-<hash of the options>/ in Market-1501 layout
options (data.synthetic.*): num_ids, num_test_ids, num_cameras, images_per_id_cam, height, width, seed
"""


def synthetic(root: str, **options) -> ReIDData:
    """The procedural data set of :mod:`unreid.data.synthetic`, generated once per option set."""
    from unreid.data.datasets.market1501 import load_market_layout
    from unreid.data.synthetic import generate

    allowed = {"num_ids", "num_test_ids", "num_cameras", "images_per_id_cam", "height", "width", "seed"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"synthetic: unknown options {sorted(unknown)}; allowed: {sorted(allowed)}")
    key = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    folder_ = Path(root).expanduser() / f"synthetic-{key}"
    if not folder_.exists():
        generate(folder_, **options)
    data = load_market_layout(folder_, "synthetic", MARKET_LAYOUT)
    data.info["options"] = dict(options)
    return data


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset family: its loader, a one-line description and the expected layout."""

    name: str
    loader: Callable[..., ReIDData]
    description: str
    layout: str


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("market1501", market1501, "Market-1501 (6 cameras, 751 / 750 ids); any Market-layout folder",
                    MARKET_LAYOUT),
        DatasetInfo("dukemtmc", dukemtmc, "DukeMTMC-reID (8 cameras, 702 / 1,110 ids)", DUKE_LAYOUT),
        DatasetInfo("msmt17", msmt17, "MSMT17 V1 / V2 (15 cameras, 1,041 / 3,060 ids)", MSMT_LAYOUT),
        DatasetInfo("cuhk03", cuhk03, "CUHK03 new protocol, detected or labeled (767 / 700 ids)", CUHK03_LAYOUT),
        DatasetInfo("veri776", veri776, "VeRi-776 vehicles (20 cameras, 576 / 200 ids)", VERI_LAYOUT),
        DatasetInfo("regdb", regdb, "RegDB visible-thermal (10 trials, 206 / 206 ids)", REGDB_LAYOUT),
        DatasetInfo("folder", folder, "any folder of unlabeled images (training only)", FOLDER_LAYOUT),
        DatasetInfo("synthetic", synthetic, "procedural identities and cameras (tests, demo)", SYNTHETIC_LAYOUT),
    )
}


def build_dataset(name: str, root: str, **options) -> ReIDData:
    """Load dataset ``name`` from ``root`` (the data set folder or its parent).

    Raises:
        KeyError: unknown name (the message lists the known ones).
        FileNotFoundError: a required folder or file is missing (the message shows the layout).
        ValueError: a wrong option.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (see `unreid datasets`)")
    try:
        return DATASETS[name].loader(root, **options)
    except TypeError as err:
        raise ValueError(f"{name}: bad data.options {options}: {err}") from err


__all__ = ["DATASETS", "INFRARED", "VISIBLE", "DatasetInfo", "ReIDData", "Sample", "build_dataset"]
