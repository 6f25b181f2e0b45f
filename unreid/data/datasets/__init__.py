"""Dataset registry: ``build_dataset(name, root, **options) -> ReIDData``.

One small loader per family (DESIGN.md; after torchreid ``torchreid/data/datasets/dataset.py`` /
``image/market1501.py``, without its global registration side effects): each checks its folders before
loading (torchreid ``check_before_run``) and raises ``FileNotFoundError`` naming what is missing and
showing the expected layout. ``root`` may be the data set folder itself or its parent (the family's
usual folder names are tried). :data:`DATASETS` describes every family; ``unreid datasets`` prints it.

Image files are not opened here (listing 100k files must stay fast): an unreadable image is handled
by the loader (:mod:`unreid.data.loader`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unreid.data.datasets._util import check_options
from unreid.data.datasets.base import INFRARED, VISIBLE, ReIDData, Sample, Trial
from unreid.data.datasets.cuhk03 import CUHK03_LAYOUT, cuhk03
from unreid.data.datasets.folder import FOLDER_LAYOUT, folder
from unreid.data.datasets.market1501 import (
    DUKE_LAYOUT,
    MARKET_LAYOUT,
    dukemtmc,
    load_market_layout,
    market1501,
)
from unreid.data.datasets.msmt17 import MSMT_LAYOUT, msmt17
from unreid.data.datasets.regdb import REGDB_LAYOUT, regdb
from unreid.data.datasets.sysu_mm01 import SYSU_LAYOUT, sysu_mm01
from unreid.data.datasets.vehicleid import VEHICLEID_LAYOUT, vehicleid
from unreid.data.datasets.veri776 import VERI_LAYOUT, veri776
from unreid.data.datasets.veriwild import VERIWILD_LAYOUT, veriwild

SYNTHETIC_LAYOUT = """\
<root>/synthetic-<hash of the options and generator version>/   generated on first use, then reused
  .complete  bounding_box_train/  query/  bounding_box_test/     Market-1501 layout (PPPP_cCs1_FFFFFF_00.jpg)
options (config: data.synthetic.*): num_ids, num_test_ids, num_cameras, images_per_id_cam, height, width, seed
"""


def synthetic(root: str, **options) -> ReIDData:
    """The procedural data set of :mod:`unreid.data.synthetic`, generated once per option set.

    The folder ``<root>/synthetic-<key>/`` (``key`` = SHA-1 of the full option set, defaults filled in,
    and :data:`unreid.data.synthetic.GENERATOR_VERSION`) is reused when it holds the ``.complete``
    marker that :func:`unreid.data.synthetic.generate` writes last; otherwise it is generated.

    Args:
        root: parent folder of the generated data sets.
        **options: keyword arguments of :func:`unreid.data.synthetic.generate` (the fields of
            ``unreid.config.SyntheticConfig``).

    Raises:
        ValueError: an unknown option (the message lists the accepted ones) or an invalid value.
        FileExistsError: the target folder exists without the ``.complete`` marker (delete it).
    """
    from unreid.data.synthetic import COMPLETE_MARKER, GENERATOR_VERSION, generate

    params = inspect.signature(generate).parameters
    check_options("synthetic", generate, options)
    full = {k: p.default for k, p in params.items() if k != "root"} | options
    full = {k: int(v) for k, v in full.items()}
    text = json.dumps({"generator": GENERATOR_VERSION, **full}, sort_keys=True)
    key = hashlib.sha1(text.encode()).hexdigest()[:10]
    target = Path(root).expanduser() / f"synthetic-{key}"
    if not (target / COMPLETE_MARKER).is_file():
        if target.exists() and any(target.iterdir()):
            raise FileExistsError(f"synthetic: {target} exists but has no {COMPLETE_MARKER} marker (an "
                                  "interrupted or foreign folder); delete it and run again")
        try:
            generate(target, **full)
        except FileExistsError:  # another process generated it meanwhile
            if not (target / COMPLETE_MARKER).is_file():
                raise
    data = load_market_layout(target, "synthetic", SYNTHETIC_LAYOUT)
    data.info["options"] = full
    return data


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset family (what ``unreid datasets`` prints).

    Attributes:
        name: registry key (``data.name``).
        description: one line.
        layout: multi-line text: the expected tree, the file-name pattern and the options.
        loader: ``loader(root, **options) -> ReIDData``.
        published: the counts of the official release, ``{part: (ids, images)}`` with ``part`` one of
            ``train`` / ``query`` / ``gallery`` or a trial group (its first trial's query and gallery
            together, images de-duplicated); ``None`` when not recorded. ``unreid datasets --check``
            compares a loaded copy with them (:func:`compare_published`).
        published_source: where ``published`` comes from.
    """

    name: str
    description: str
    layout: str
    loader: Callable[..., ReIDData]
    published: dict[str, tuple[int, int]] | None = None
    published_source: str = ""


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("market1501", "Market-1501 (6 cameras, 751 / 750 ids); any folder in its layout",
                    MARKET_LAYOUT, market1501),
        DatasetInfo("dukemtmc", "DukeMTMC-reID (8 cameras, 702 / 1,110 ids)", DUKE_LAYOUT, dukemtmc),
        DatasetInfo("msmt17", "MSMT17 V1 / V2 (15 cameras, 1,041 / 3,060 ids), official or Market-style",
                    MSMT_LAYOUT, msmt17),
        DatasetInfo("cuhk03", "CUHK03 new protocol, detected or labeled (767 / 700 ids), or Market-style",
                    CUHK03_LAYOUT, cuhk03),
        DatasetInfo("veri776", "VeRi-776 vehicles (20 cameras, 576 / 200 ids)", VERI_LAYOUT, veri776,
                    published={"train": (576, 37778), "query": (200, 1678), "gallery": (200, 11579)},
                    published_source="Liu et al., ECCV 2016 (VeRi-776 release); issue 30"),
        DatasetInfo("vehicleid", "PKU VehicleID (no cameras; 13,164 train ids; test 800-13,164 ids, 10 "
                    "seeded gallery draws each)", VEHICLEID_LAYOUT, vehicleid,
                    published={"train": (13164, 113346), "test_800": (800, 6493), "test_1600": (1600, 13377),
                               "test_2400": (2400, 19777)},
                    published_source="Liu et al., CVPR 2016; ANCHORS.md \"Evaluation protocols\""),
        DatasetInfo("veriwild", "VERI-Wild vehicles (174 cameras; 30,671 train ids; test 3,000 / 5,000 / "
                    "10,000 ids)", VERIWILD_LAYOUT, veriwild,
                    published={"train": (30671, 277797), "small": (3000, 41861), "medium": (5000, 69389),
                               "large": (10000, 138517)},
                    published_source="Lou et al., CVPR 2019; fast-reid fastreid/data/datasets/veriwild.py "
                                     "docstrings; ANCHORS.md \"Evaluation protocols\""),
        DatasetInfo("regdb", "RegDB visible-thermal persons (10 trials, 206 / 206 ids)", REGDB_LAYOUT, regdb),
        DatasetInfo("sysu_mm01", "SYSU-MM01 visible-infrared persons (4 visible + 2 infrared cameras; 395 / 96 ids; "
                    "10 gallery trials, all / indoor search)", SYSU_LAYOUT, sysu_mm01,
                    published={"train": (395, 34167), "all_search": (96, 3803 + 301),
                               "indoor_search": (96, 3803 + 112)},
                    published_source="Wu et al., ICCV 2017 (22,258 visible + 11,909 infrared training images; "
                                     "3,803 infrared queries; single-shot galleries of 301 / 112 images)"),
        DatasetInfo("folder", "any folder of unlabeled images (training only)", FOLDER_LAYOUT, folder),
        DatasetInfo("synthetic", "procedural identities seen by differing cameras (tests, demo)",
                    SYNTHETIC_LAYOUT, synthetic),
    )
}


def observed_counts(data: ReIDData) -> dict[str, tuple[int, int]]:
    """``{part: (ids, images)}`` of a loaded data set, in the parts of :attr:`DatasetInfo.published`:
    ``train``, ``query``, ``gallery`` (distinct pids, samples), and per trial group the first trial's
    query and gallery together (distinct pids, distinct image paths)."""
    out = {"train": (len({s.pid for s in data.train}), len(data.train))}
    if data.query:
        out["query"] = (len({s.pid for s in data.query}), len(data.query))
    if data.gallery:
        out["gallery"] = (len({s.pid for s in data.gallery}), len(data.gallery))
    for group, trials in data.groups().items():
        both = trials[0].query + trials[0].gallery
        out[group] = (len({s.pid for s in both}), len({s.path for s in both}))
    return out


def compare_published(data: ReIDData, published: dict[str, tuple[int, int]]) -> tuple[str, list[str]]:
    """Compare a loaded data set with published counts.

    Args:
        data: the loaded data set.
        published: ``{part: (ids, images)}`` (:attr:`DatasetInfo.published`).

    Returns:
        ``(table, differences)``: a text table of every published part (loaded vs published ids and
        images; a part the options did not load, e.g. a test size not requested, is marked so), and one
        line per difference naming the part, the count and both values (empty when all loaded parts match).
    """
    seen = observed_counts(data)
    rows = ["  part       |    ids (published) |    images (published) | ",
            "  -----------+--------------------+-----------------------+---"]
    diffs = []
    for part, (p_ids, p_imgs) in published.items():
        if part not in seen:
            rows.append(f"  {part:<10} | {'-':>6} ({p_ids:>9}) | {'-':>8} ({p_imgs:>10}) | not loaded with these options")
            continue
        ids, imgs = seen[part]
        mark = []
        for what, got, want in (("ids", ids, p_ids), ("images", imgs, p_imgs)):
            if got != want:
                mark.append(what)
                diffs.append(f"{part}: {got} {what} loaded, {want} published ({got - want:+d})")
        rows.append(f"  {part:<10} | {ids:>6} ({p_ids:>9}) | {imgs:>8} ({p_imgs:>10}) | "
                    + ("differs: " + ", ".join(mark) if mark else "ok"))
    return "\n".join(rows), diffs


def build_dataset(name: str, root: str, **options) -> ReIDData:
    """Load data set family ``name`` from ``root`` (the data set folder or its parent).

    Args:
        name: a key of :data:`DATASETS`.
        root: folder path (``~`` expanded).
        **options: the family's options (``data.options`` in the config; see ``unreid datasets``).

    Returns:
        :class:`ReIDData` with train (ids relabelled 0..P-1, or -1 when unlabeled), query and gallery.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        ValueError: an option the family does not take, or a bad option value.
        FileNotFoundError: a required folder or file is missing (the message shows the layout).
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (see `unreid datasets`)")
    loader = DATASETS[name].loader
    check_options(name, loader, options)
    return loader(root, **options)


__all__ = ["DATASETS", "INFRARED", "VISIBLE", "DatasetInfo", "ReIDData", "Sample", "Trial", "build_dataset",
           "compare_published", "observed_counts"]
