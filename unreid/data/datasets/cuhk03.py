"""CUHK03 (Li et al., CVPR 2014) with the new protocol (Zhong et al., CVPR 2017: 767 training / 700
test identities), as torchreid ``torchreid/data/datasets/image/cuhk03.py`` reads it:

* ``cuhk-03.mat`` (MATLAB v7.3 = HDF5, read with h5py): ``detected`` / ``labeled`` hold, per camera
  pair, a (pids x 10) array of image references; images 1-5 are view 1, 6-10 view 2. Each image is
  written once to ``<root>/images_<variant>/`` as ``{pair}_{pid:03d}_{view}_{img:02d}.png`` (never
  overwritten);
* ``cuhk03_new_protocol_config_<variant>.mat`` (scipy.io): ``filelist``, ``labels``, ``train_idx``,
  ``query_idx``, ``gallery_idx`` (1-based); the camera is the view field of the file name.

A folder already in Market-1501 layout (``bounding_box_train/`` ...; e.g. ``cuhk03-detected``) is
loaded with the Market rules instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unreid.data.datasets._util import relabel, require
from unreid.data.datasets.base import ReIDData, Sample
from unreid.data.datasets.market1501 import MARKET_LAYOUT, load_market_layout

CUHK03_LAYOUT = """\
<root>/                          (e.g. cuhk03_release/ or its parent)
  cuhk-03.mat                                   the official release (MATLAB v7.3)
  cuhk03_new_protocol_config_detected.mat       new-protocol splits (Zhong et al., CVPR 2017)
  cuhk03_new_protocol_config_labeled.mat
options: variant=detected|labeled
or a Market-1501-style conversion: bounding_box_train/ query/ bounding_box_test/
"""


def _extract_images(mat_path: Path, variant: str, out_dir: Path) -> None:
    try:
        import h5py
    except ImportError as err:
        raise ImportError("cuhk03: reading cuhk-03.mat needs h5py: pip install h5py") from err
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    with h5py.File(mat_path, "r") as mat:
        for pair, ref in enumerate(mat[variant][0]):
            camp = mat[ref]
            for pid in range(camp.shape[0]):
                for img_idx, img_ref in enumerate(camp[pid, :]):
                    img = np.asarray(mat[img_ref][:])
                    if img.size < 3 or img.ndim != 3:
                        continue  # empty slot
                    view = 1 if img_idx < 5 else 2
                    path = out_dir / f"{pair + 1}_{pid + 1:03d}_{view}_{img_idx + 1:02d}.png"
                    if not path.exists():
                        Image.fromarray(img.transpose(2, 1, 0).astype(np.uint8)).save(path)
    (out_dir / ".complete").touch()


def _names(arr) -> list[str]:
    out = []
    for x in np.asarray(arr).ravel():
        while isinstance(x, np.ndarray):
            x = x.ravel()[0]
        out.append(str(x))
    return out


def cuhk03(root: str, variant: str = "detected") -> ReIDData:
    """Load CUHK03 (new protocol) from the official files, or a Market-style conversion."""
    if variant not in ("detected", "labeled"):
        raise ValueError(f"cuhk03: data.options.variant must be 'detected' or 'labeled', got {variant!r}")
    base = Path(root).expanduser()
    for cand in (base, base / f"cuhk03-{variant}", base / f"cuhk03_{variant}"):
        if (cand / "bounding_box_train").is_dir():
            data = load_market_layout(cand, "cuhk03", MARKET_LAYOUT)
            data.info["variant"] = variant
            return data
    r = base if (base / "cuhk-03.mat").exists() else base / "cuhk03_release"
    split_name = f"cuhk03_new_protocol_config_{variant}.mat"
    if not (r / split_name).exists() and (base / split_name).exists():
        split_path = base / split_name
    else:
        split_path = r / split_name
    require(r, ["cuhk-03.mat"], "cuhk03", CUHK03_LAYOUT)
    if not split_path.exists():
        require(base, [split_name], "cuhk03", CUHK03_LAYOUT)
    img_dir = r / f"images_{variant}"
    if not (img_dir / ".complete").exists():
        _extract_images(r / "cuhk-03.mat", variant, img_dir)
    from scipy.io import loadmat

    split = loadmat(split_path)
    files = _names(split["filelist"])
    labels = np.asarray(split["labels"]).ravel().astype(int)

    def subset(key: str) -> list[Sample]:
        idx = np.asarray(split[key]).ravel().astype(int) - 1
        return [Sample(str(img_dir / files[i]), int(labels[i]), int(files[i].split("_")[2]) - 1) for i in idx]

    return ReIDData("cuhk03", relabel(subset("train_idx")), subset("query_idx"), subset("gallery_idx"),
                    info={"root": str(r), "variant": variant, "protocol": "market"})
