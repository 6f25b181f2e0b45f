"""CUHK03 (Li et al., CVPR 2014) with the new protocol (Zhong et al., CVPR 2017: 767 training / 700 test
identities), read as torchreid ``torchreid/data/datasets/image/cuhk03.py`` does:

* ``cuhk03_release/cuhk-03.mat`` (MATLAB v7.3 = HDF5, read with h5py): ``detected`` / ``labeled`` hold,
  per camera pair (5), a cell array (identities x 10) of images; images 1-5 are view 1, 6-10 view 2;
  empty cells are skipped. MATLAB v7.3 stores arrays transposed, hence the ``.T`` on every read. Each
  image is written once to ``images_<variant>/`` (next to the split files, torchreid's place) as
  ``{pair}_{pid:03d}_{view}_{img:02d}.png`` (1-based); an existing file is never overwritten, and
  extraction runs only when a file named by the split is missing.
* ``cuhk03_new_protocol_config_<variant>.mat`` (scipy.io): ``filelist`` (those names), ``labels``,
  ``train_idx``, ``query_idx``, ``gallery_idx`` (1-based), ``camId``. The camera is the view field of
  the file name minus 1 (torchreid); ``camId`` is checked against it.

Training ids are relabelled 0..P-1 (sorted); query / gallery keep ``labels``. A folder already in
Market-1501 layout (``bounding_box_train/`` ...; e.g. ``cuhk03-detected``) is loaded with the Market
rules instead (:mod:`unreid.data.datasets.market1501`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from unreid.data.datasets._util import one_line, relabel
from unreid.data.datasets.base import ReIDData, Sample
from unreid.data.datasets.market1501 import load_market_layout

log = logging.getLogger("unreid")

CUHK03_LAYOUT = """\
<root>/                          (e.g. cuhk03/, or its parent)
  cuhk03_release/cuhk-03.mat                    the official release (MATLAB v7.3; needs h5py)
  cuhk03_new_protocol_config_detected.mat       new-protocol splits (Zhong et al., CVPR 2017)
  cuhk03_new_protocol_config_labeled.mat
  images_detected/  images_labeled/             written on first use: {pair}_{pid:03d}_{view}_{img:02d}.png
options: variant=detected|labeled (default detected)
or a Market-1501-style conversion: bounding_box_train/ query/ bounding_box_test/ (e.g. cuhk03-detected/)
"""
VARIANTS = ("detected", "labeled")


def image_name(pair: int, pid: int, view: int, img: int) -> str:
    """torchreid's file name of an extracted image (all arguments 1-based)."""
    return f"{pair}_{pid:03d}_{view}_{img:02d}.png"


def extract_images(mat_path: Path, variant: str, out_dir: Path) -> int:
    """Write every non-empty image of ``variant`` in ``cuhk-03.mat`` to ``out_dir`` as PNG, skipping files
    that exist (each written to a temporary name, then renamed). Returns the number of files written.

    Raises:
        ImportError: h5py is not installed (``pip install h5py``).
    """
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            f"cuhk03: reading {mat_path} (MATLAB v7.3) needs h5py: pip install h5py "
            "(or pip install 'unreid[cuhk03]')"
        ) from err
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    with h5py.File(mat_path, "r") as mat:
        for pair, pair_ref in enumerate(np.asarray(mat[variant]).ravel()):
            cells = mat[pair_ref][:].T  # (identities, 10) object references
            for pid in range(cells.shape[0]):
                for k, ref in enumerate(cells[pid]):
                    path = out_dir / image_name(pair + 1, pid + 1, 1 if k < 5 else 2, k + 1)
                    if path.exists():
                        continue
                    img = mat[ref][:].T  # (H, W, 3)
                    if img.size == 0 or img.ndim < 3:
                        continue  # empty cell: some identities lack images in a view
                    tmp = path.with_name(path.name + ".part")
                    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(tmp, format="PNG")
                    os.replace(tmp, path)
                    written += 1
    return written


def _strings(arr) -> list[str]:
    out = []
    for x in np.asarray(arr, dtype=object).ravel():
        while isinstance(x, np.ndarray):
            x = x.ravel()[0]
        out.append(str(x))
    return out


def _locate(base: Path, variant: str) -> tuple[Path, Path, Path]:
    """``(dataset folder, cuhk-03.mat, split file)``; the folder may be ``base``, ``base/cuhk03`` or, when
    ``base`` is ``cuhk03_release/`` itself, its parent."""
    split_name = f"cuhk03_new_protocol_config_{variant}.mat"
    partial = None
    for d in (base, base / "cuhk03", base / "CUHK03", base.parent):
        mats = (d / "cuhk03_release" / "cuhk-03.mat", d / "cuhk-03.mat")
        mat = next((m for m in mats if m.is_file()), None)
        split = next((s for s in (d / split_name, d / "cuhk03_release" / split_name) if s.is_file()), None)
        if mat is not None and split is not None:
            return d, mat, split
        if partial is None and d != base.parent and (mat is not None or split is not None):
            partial = (d, "cuhk03_release/cuhk-03.mat" if mat is None else split_name)
    if partial is not None:
        raise FileNotFoundError(
            f"cuhk03: {partial[1]} not found under {partial[0]}. Expected layout: {one_line(CUHK03_LAYOUT)}")
    raise FileNotFoundError(
        f"cuhk03: neither cuhk03_release/cuhk-03.mat + {split_name} nor bounding_box_train/ found "
        f"under {base}."
        f" Expected layout: {one_line(CUHK03_LAYOUT)}. Set data.root to the data set folder or its parent")


def cuhk03(root: str, variant: str = "detected") -> ReIDData:
    """Load CUHK03 (new protocol, 767 / 700 ids) from the official files, or a Market-style conversion.

    Args:
        root: the ``cuhk03/`` folder (or its parent), or a Market-layout folder.
        variant: ``"detected"`` (detector boxes) or ``"labeled"`` (hand-drawn boxes).

    Raises:
        ValueError: unknown ``variant``; ``camId`` disagrees with the file names.
        FileNotFoundError: a required file is missing (the message shows the layout).
        ImportError: images must be extracted and h5py is missing.
    """
    if variant not in VARIANTS:
        raise ValueError(f"cuhk03: data.options.variant must be 'detected' or 'labeled', got {variant!r}")
    base = Path(root).expanduser()
    for cand in (base, base / f"cuhk03-{variant}", base / f"cuhk03_{variant}"):
        if (cand / "bounding_box_train").is_dir():
            data = load_market_layout(cand, "cuhk03", CUHK03_LAYOUT)
            data.info["variant"] = variant
            return data
    d, mat_path, split_path = _locate(base, variant)
    from scipy.io import loadmat

    split = loadmat(split_path)
    files = _strings(split["filelist"])
    labels = np.asarray(split["labels"]).ravel().astype(np.int64)
    cams = np.array([int(f.split("_")[2]) - 1 for f in files], dtype=np.int64)
    if "camId" in split:
        cam_ids = np.asarray(split["camId"]).ravel().astype(np.int64) - 1
        if cam_ids.shape == cams.shape and (cam_ids != cams).any():
            raise ValueError(f"cuhk03: camId in {split_path} disagrees with the view field of the filelist "
                             f"names; is this the {variant} split file?")
    img_dir = d / f"images_{variant}"
    if not all((img_dir / f).is_file() for f in files):
        log.info("cuhk03: extracting %s images from %s into %s (once)", variant, mat_path, img_dir)
        extract_images(mat_path, variant, img_dir)

    def subset(key: str) -> list[Sample]:
        idx = np.asarray(split[key]).ravel().astype(np.int64) - 1
        return [Sample(str(img_dir / files[i]), int(labels[i]), int(cams[i])) for i in idx]

    return ReIDData("cuhk03", relabel(subset("train_idx")), subset("query_idx"), subset("gallery_idx"),
                    info={"root": str(d), "variant": variant, "protocol": "market"})
