"""SYSU-MM01 (Wu et al., "RGB-Infrared Cross-Modality Person Re-Identification", ICCV 2017) with its
10-trial test protocol.

Layout (as the data set is distributed): ``cam1`` ... ``cam6/<pid, 4 digits>/<image, 4 digits>.jpg`` and
``exp/{train_id,val_id,test_id}.txt`` (each one line of comma-separated ids). Cameras 1, 2, 4, 5 are visible
(RGB), cameras 3 and 6 infrared. Camera ids are 0-based (``cam1`` -> 0, ..., ``cam6`` -> 5); modality
:data:`~unreid.data.datasets.base.INFRARED` for cameras 3 and 6, :data:`~unreid.data.datasets.base.VISIBLE`
otherwise.

Training: every image of the train + val ids (395 ids; AGW mangye16/ReID-Survey ``pre_process_sysu.py``,
MBCCM likewise), all six cameras, ids relabelled 0..394 in sorted order. Order: ids ascending, cameras 1..6,
files sorted by name.

Test (ANCHORS.md "Evaluation protocols"; official MATLAB ``evaluation_SYSU_MM01.m`` / ``get_testing_set``;
AGW ``data_manager.py`` ``process_query_sysu`` / ``process_gallery_sysu``):

* queries: every infrared image (cameras 3 and 6) of the 96 test ids, ids ascending, camera 3 then 6,
  files sorted (AGW ``process_query_sysu``), for both search modes;
* gallery of one trial: ``shots`` images per (test id, visible camera), cameras 1, 2, 4, 5 (``all``
  search) or 1, 2 (``indoor`` search); the protocol (``eval.protocol=sysu``,
  :func:`unreid.evaluation.protocols.sysu`) drops camera-2 gallery images for camera-3 queries and
  computes the CMC over de-duplicated gallery ids.
* trials: ``trials`` (default 10) galleries per search mode, one :class:`~unreid.data.datasets.base.Trial`
  each, groups ``all_search`` / ``indoor_search``; :mod:`unreid.evaluation.trials` reports the mean and
  the population std per group from one feature extraction.

How a gallery is drawn (trial ``t``, 0-based):

* default, AGW / MBCCM seeding (``process_gallery_sysu(..., trial=t)``, the loop ``for trial in range(10)``
  of AGW's ``test.py``): ``random.seed(t)`` (Python's global-state algorithm, reproduced with a private
  ``random.Random(t)``, which draws the same numbers); for every test id in ascending order, for every
  gallery camera in order, the files of ``cam<c>/<pid>/`` sorted by name: ``rng.choice(files)`` for
  single-shot (AGW's exact call, so trial ``t`` selects the same files as AGW's trial ``t``). Folders that
  are missing or empty are skipped without drawing (AGW: ``if os.path.isdir``; an empty folder would make
  AGW's ``random.choice`` raise). Multi-shot (``shots=10``) has no Python reference (AGW and MBCCM are
  single-shot only): we draw ``rng.sample(files, min(shots, len(files)))`` in the same loop (our choice).
  The gallery lists the draws in loop order (id, camera, draw order), as AGW's ``files_rgb``.
* ``perm_file=<path to rand_perm_cam.mat>``: the official fixed permutations (SYSU-MM01 release
  ``evaluation/data_split/rand_perm_cam.mat``). The structure assumed (as read by the Python ports of the
  official evaluation, e.g. the ``get_gallery_names`` helper of the "strong baseline" VI-ReID code
  bases: ``perm = loadmat(f)["rand_perm_cam"]; perm[cam - 1][0].squeeze()[pid - 1][trial][:shots]``):
  ``rand_perm_cam`` is a 6 x 1 cell (one per camera), each a cell over person ids 1..N (1-based: the cell
  of id ``p`` is entry ``p - 1``), each a ``trials x images`` matrix whose row ``t`` is a permutation of
  the 1-based image numbers of ``cam<c>/<pid>/`` (``0001.jpg`` is number 1); a trial's gallery takes the
  first ``shots`` numbers of row ``t``. An id whose cell is empty (no image in that camera) is skipped.
  This ordering and indexing is **assumed** from those ports (we could not read the MATLAB
  ``get_testing_set.m`` itself); the file is never modified.

``ReIDData.query`` / ``gallery`` are the first trial of the first search mode.
"""

from __future__ import annotations

import random
from pathlib import Path

from unreid.data.datasets._util import list_images, relabel, require, resolve_root
from unreid.data.datasets.base import INFRARED, VISIBLE, ReIDData, Sample, Trial

#: visible / infrared cameras (1-based folder numbers)
VISIBLE_CAMERAS = (1, 2, 4, 5)
INFRARED_CAMERAS = (3, 6)
#: gallery cameras of each search mode (official ``evaluation_SYSU_MM01.m``)
GALLERY_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
#: trial group name of each search mode
GROUP_NAMES = {"all": "all_search", "indoor": "indoor_search"}

SYSU_LAYOUT = """\
<root>/                                   (e.g. SYSU-MM01/, or its parent)
  cam1/ ... cam6/<pid 4 digits>/<4 digits>.jpg     cameras 1, 2, 4, 5 visible; 3, 6 infrared
  exp/train_id.txt  exp/val_id.txt  exp/test_id.txt   one line of comma-separated ids each
options: search (default "all": "all", "indoor" or "all,indoor"; one trial group each, first = headline),
         shots (1 single-shot, default, or 10 multi-shot), trials (default 10: galleries per search mode),
         perm_file (path of the official rand_perm_cam.mat: its fixed galleries instead of random.seed(trial))
"""


def read_ids(path: Path) -> list[int]:
    """Person ids of an ``exp/*_id.txt`` file (comma- and/or whitespace-separated integers).

    Raises:
        ValueError: a token is not an integer (the message names the file and the token).
    """
    out = []
    for tok in path.read_text().replace(",", " ").split():
        if not tok.isdigit():
            raise ValueError(f"{path}: expected comma-separated person ids, got {tok!r}; fix or re-extract the file")
        out.append(int(tok))
    return out


def _sample(root: Path, path: Path, pid: int, cam: int) -> Sample:
    return Sample(str(path), pid, cam - 1, INFRARED if cam in INFRARED_CAMERAS else VISIBLE)


def _files(root: Path, cam: int, pid: int) -> list[Path]:
    folder = root / f"cam{cam}" / f"{pid:04d}"
    return list_images(folder) if folder.is_dir() else []


def draw_gallery(root: Path, test_ids: list[int], cameras: tuple[int, ...], trial: int,
                 shots: int = 1, listing: dict[tuple[int, int], list[Path]] | None = None) -> list[Sample]:
    """One gallery with AGW / MBCCM's seeding (module docstring): ``random.Random(trial)``; ids ascending,
    cameras in order, files sorted; ``choice`` (``shots == 1``) or ``sample(files, min(shots, n))``.

    ``listing`` (optional): ``{(camera, pid): sorted image paths}`` already read, to list each folder once
    for all trials. Only image files count (:data:`~unreid.data.datasets._util.IMAGE_EXTS`); AGW lists
    every file of the folder, which is the same on the released data (only ``.jpg``)."""
    rng = random.Random(trial)
    out = []
    for pid in sorted(test_ids):
        for cam in cameras:
            files = listing[(cam, pid)] if listing is not None else _files(root, cam, pid)
            if not files:
                continue
            picks = [rng.choice(files)] if shots == 1 else rng.sample(files, min(shots, len(files)))
            out += [_sample(root, p, pid, cam) for p in picks]
    return out


def load_perm(perm_file: str | Path):
    """The ``rand_perm_cam`` cell array of the official ``rand_perm_cam.mat`` (scipy.io.loadmat).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no ``rand_perm_cam`` variable, or not one cell per camera 1..6.
    """
    from scipy.io import loadmat

    path = Path(perm_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"sysu_mm01: perm_file {path} not found; give the path of the official "
                                "rand_perm_cam.mat (SYSU-MM01 evaluation/data_split/) or leave perm_file unset")
    mat = loadmat(str(path))
    if "rand_perm_cam" not in mat or len(mat["rand_perm_cam"]) < 6:
        raise ValueError(f"sysu_mm01: {path} has no 6-camera 'rand_perm_cam' cell array (found "
                         f"{sorted(k for k in mat if not k.startswith('__'))}); is it the official rand_perm_cam.mat?")
    return mat["rand_perm_cam"]


def perm_gallery(root: Path, perm, test_ids: list[int], cameras: tuple[int, ...], trial: int,
                 shots: int = 1) -> list[Sample]:
    """One gallery from the official permutations (module docstring): for every id ascending, every camera in
    order, the first ``shots`` image numbers of row ``trial`` of ``perm[cam - 1][0].squeeze()[pid - 1]``.

    Raises:
        ValueError: the permutation names an image that is not on disk, or has fewer than ``trial + 1`` rows
            or fewer ids than a test id (the message names camera, id and image).
    """
    out = []
    for pid in sorted(test_ids):
        for cam in cameras:
            cells = perm[cam - 1][0].squeeze()
            if pid - 1 >= cells.size:
                raise ValueError(f"sysu_mm01: rand_perm_cam has {cells.size} ids for camera {cam}, test id {pid} "
                                 "is beyond them; is perm_file the official rand_perm_cam.mat?")
            rows = cells.reshape(-1)[pid - 1]
            if rows.size == 0:
                continue
            if rows.ndim != 2 or rows.shape[0] <= trial:
                raise ValueError(f"sysu_mm01: rand_perm_cam camera {cam} id {pid} has shape {rows.shape}, expected "
                                 f"(trials >= {trial + 1}, images); lower data.options.trials")
            for num in rows[trial][:shots].tolist():
                path = root / f"cam{cam}" / f"{pid:04d}" / f"{int(num):04d}.jpg"
                if not path.is_file():
                    raise ValueError(f"sysu_mm01: rand_perm_cam picks {path} (camera {cam}, id {pid}, trial {trial}), "
                                     "which does not exist; the data set copy and the permutation file disagree")
                out.append(_sample(root, path, pid, cam))
    return out


def _parse_search(search: str | list[str]) -> list[str]:
    modes = [m.strip() for m in (search.split(",") if isinstance(search, str) else search) if str(m).strip()]
    if not modes or any(m not in GALLERY_CAMERAS for m in modes) or len(set(modes)) != len(modes):
        raise ValueError(f"sysu_mm01: data.options.search must be 'all', 'indoor' or 'all,indoor', got {search!r}")
    return modes


def sysu_mm01(root: str, search: str | list[str] = "all", shots: int = 1, trials: int = 10,
              perm_file: str | None = None) -> ReIDData:
    """Load SYSU-MM01: train + val ids for training, ``trials`` galleries per search mode (module docstring).

    Args:
        root: the SYSU-MM01 folder (holding ``exp/``) or its parent.
        search: ``"all"`` (cameras 1, 2, 4, 5), ``"indoor"`` (1, 2) or both (``"all,indoor"`` or a list),
            one trial group each (``all_search`` / ``indoor_search``); the first is the headline.
        shots: gallery images per (id, camera): 1 (single-shot, default) or 10 (multi-shot).
        trials: galleries per search mode (default 10, the official count; trial ``t`` is seed ``t``).
        perm_file: path of the official ``rand_perm_cam.mat``; when given, trial ``t`` takes row ``t`` of its
            permutations instead of ``random.seed(t)``.

    Returns:
        :class:`ReIDData` with ``trials`` = ``[<group> trial 0, ..., trial trials-1]`` per search mode,
        ``query`` / ``gallery`` = the first trial, ``info["protocol"] = "sysu"``.

    Raises:
        ValueError: bad ``search`` / ``shots`` / ``trials``, a malformed id file, or a permutation file that
            does not fit the data (see :func:`perm_gallery`).
        FileNotFoundError: a camera folder, an id file or ``perm_file`` is missing (the message shows the layout).
    """
    modes = _parse_search(search)
    if isinstance(shots, bool) or str(shots) not in ("1", "10"):
        raise ValueError(f"sysu_mm01: data.options.shots must be 1 (single-shot) or 10 (multi-shot), got {shots!r}")
    if isinstance(trials, bool) or not str(trials).isdigit() or int(trials) < 1:
        raise ValueError(f"sysu_mm01: data.options.trials must be a positive integer, got {trials!r}")
    shots, trials = int(shots), int(trials)
    r = resolve_root(root, "exp", ["SYSU-MM01", "SYSU_MM01", "sysu-mm01", "sysu_mm01", "SYSU"])
    id_files = [f"exp/{s}_id.txt" for s in ("train", "val", "test")]
    require(r, [f"cam{c}" for c in range(1, 7)] + id_files, "sysu_mm01", SYSU_LAYOUT)
    train_ids = sorted(set(read_ids(r / id_files[0])) | set(read_ids(r / id_files[1])))
    test_ids = sorted(set(read_ids(r / id_files[2])))
    train = [_sample(r, p, pid, cam) for pid in train_ids for cam in range(1, 7) for p in _files(r, cam, pid)]
    query = [_sample(r, p, pid, cam) for pid in test_ids for cam in INFRARED_CAMERAS for p in _files(r, cam, pid)]
    perm = load_perm(perm_file) if perm_file else None
    listing = {(c, p): _files(r, c, p) for c in VISIBLE_CAMERAS for p in test_ids}
    out_trials = []
    for mode in modes:
        for t in range(trials):
            if perm is None:
                gallery = draw_gallery(r, test_ids, GALLERY_CAMERAS[mode], t, shots, listing)
            else:
                gallery = perm_gallery(r, perm, test_ids, GALLERY_CAMERAS[mode], t, shots)
            out_trials.append(Trial(GROUP_NAMES[mode], t, list(query), gallery))
    info = {"root": str(r), "protocol": "sysu", "search": modes, "shots": shots, "trials": trials,
            "gallery_draw": "rand_perm_cam" if perm is not None else "random.seed(trial)",
            "perm_file": str(perm_file) if perm_file else None}
    return ReIDData("sysu_mm01", relabel(train), out_trials[0].query, out_trials[0].gallery, info=info,
                    trials=out_trials)
