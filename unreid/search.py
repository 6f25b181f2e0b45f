"""Search a gallery with a trained model: ``unreid search`` (and its Python form :func:`search`).

For each query image the ``topk`` nearest gallery images are listed with their distances (printed as a
table, written to ``<out>/results.json``) and drawn as a rank list (``<out>/ranklists/*.png``,
:func:`unreid.evaluation.visualize.draw_rank_list`).

Inputs:

* ``--gallery``: a folder of images (searched recursively for jpg / jpeg / png / bmp, identities
  unknown: grey frames) or ``NAME:ROOT``, a data set of ``unreid datasets`` and its root, whose gallery
  split is used (identities known: green / red frames). An existing folder always wins over the
  ``NAME:ROOT`` reading.
* ``--query``: one image, a folder of images, or ``NAME:ROOT`` (that data set's query split).

Distances: cosine distance ``1 - q.g`` of the L2-normalised features, as the evaluation protocols
(:mod:`unreid.evaluation.protocols`); with ``rerank`` the k-reciprocal re-ranked distance (Zhong et al.,
CVPR 2017; :func:`unreid.evaluation.rerank.re_ranking` on ``2 - 2 cos``, as evaluation). Every gallery
image is ranked (no camera filter: a search is not a benchmark).

Gallery-feature cache: ``<out>/gallery_features.npz`` (features, paths, pids, camids and the key). The
key is the SHA-256 of: the checkpoint's size and the SHA-256 of its whole content (a touched but
unchanged file reuses the cache, a re-saved one with other weights does not); the config's ``model``
section, input size and seed; and every gallery file's absolute path, size and modification time (ns),
identity and camera, in sorted order. A different key recomputes the features and replaces that file
(it is this command's own file). Nothing is ever written under the gallery or query folders: ``--out``
inside them is refused.

Camera BN models (``model.camera_bn``): the gallery is embedded with each of its cameras' statistics,
as ``unreid extract`` does; the queries with their own cameras' statistics (a camera with a single query
image falls back to the model's running statistics, with a warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unreid.config import Config, ConfigError, from_dict, load_config, to_dict
from unreid.data.datasets.base import Sample

log = logging.getLogger("unreid")

#: written into the cache key; bump when the cached content changes meaning
CACHE_FORMAT = "unreid-gallery-cache-1"
#: name of the gallery-feature cache inside ``--out``
CACHE_NAME = "gallery_features.npz"


class InputError(ValueError):
    """A command-line input (checkpoint, gallery, query, output path) is missing or unusable; the message is
    one line naming the input, what was expected and what to do. The CLI prints it and exits with 2."""


@dataclass
class ImageSet:
    """Images to search in or with.

    Attributes:
        samples: the images, in a fixed order (sorted paths for a folder; the data set's order otherwise).
        known_ids: whether ``samples``' pids are real identities (a data set) or unknown (-1, a folder).
        folders: the user's folders the images come from (never written to).
        description: the input as the user gave it, for messages.
    """

    samples: list[Sample]
    known_ids: bool
    folders: list[Path] = field(default_factory=list)
    description: str = ""


def _image_files(folder: Path) -> list[Path]:
    from unreid.data.datasets._util import IMAGE_EXTS

    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def resolve_images(spec: str, cfg: Config, split: str) -> ImageSet:
    """The images of a ``--gallery`` / ``--query`` argument (see the module docstring for the forms).

    Args:
        spec: a folder, an image file (``split="query"`` only) or ``NAME:ROOT``.
        cfg: gives the options of ``NAME`` when it is the config's data set (``data.options``) or
            ``synthetic`` (``data.synthetic``).
        split: ``"gallery"`` or ``"query"``: the data set split used for ``NAME:ROOT``, and the option name
            in messages.

    Raises:
        InputError: no such folder / file / data set, or no image in it.
    """
    from unreid.data.datasets import DATASETS, build_dataset

    flag = f"--{split}"
    path = Path(spec).expanduser()
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise InputError(f"{flag} {spec}: no image (jpg/jpeg/png/bmp) in this folder or below it; pass a "
                             "folder holding images or NAME:ROOT of a data set (see `unreid datasets`)")
        return ImageSet([Sample(str(p), -1, 0) for p in files], False, [path], spec)
    if path.is_file() and split == "query":
        return ImageSet([Sample(str(path), -1, 0)], False, [], spec)  # out may sit beside one image
    name, sep, root = spec.partition(":")
    if sep and name in DATASETS:
        options: dict[str, Any] = dict(cfg.data.options) if name == cfg.data.name else {}
        if name == "synthetic":
            options = {**asdict(cfg.data.synthetic), **options}
        try:
            data = build_dataset(name, root, **options)
        except (FileNotFoundError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise InputError(f"{flag} {spec}: cannot load data set {name!r} from {root!r} ({first}); see "
                             f"`unreid datasets` for its layout") from err
        samples = list(getattr(data, split))
        if not samples:
            raise InputError(f"{flag} {spec}: data set {name!r} has no {split} split; pass a folder of images "
                             "or another data set")
        roots = [Path(data.info["root"])] if "root" in data.info else []
        roots.append(Path(root).expanduser())
        return ImageSet(samples, name != "folder", roots, spec)
    what = "image file, folder" if split == "query" else "folder"
    raise InputError(f"{flag} {spec}: no such {what}, nor NAME:ROOT of a known data set ({', '.join(DATASETS)}); "
                     f"pass an existing {what} of images or e.g. market1501:/data/Market-1501")


def check_decodable(images: ImageSet, split: str = "query") -> None:
    """Decode every image of ``images`` once; the first that fails raises :class:`InputError` naming it."""
    from unreid.data.loader import read_image

    for s in images.samples:
        try:
            read_image(s.path)
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise InputError(f"--{split}: cannot decode image {s.path} ({type(err).__name__}: {first}); pass "
                             "readable JPEG / PNG / BMP images") from err


def config_for_checkpoint(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
                          overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config to rebuild a checkpoint's model with: ``config`` (a YAML) when given, else the config
    ``unreid train`` stored in the checkpoint (its ``device`` replaced by ``auto`` unless ``device=...`` is
    among the overrides: the training machine's GPU may not exist here); ``overrides`` (``key=value``) on
    top of either.

    Raises:
        InputError: the checkpoint file does not exist, or holds no config and none was given.
        unreid.engine.checkpoint.CheckpointError: the file is not a readable checkpoint.
        unreid.config.ConfigError: a bad override.
    """
    from omegaconf import OmegaConf

    from unreid.engine.checkpoint import load_checkpoint

    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}; pass --checkpoint the model_best.pth or "
                         "checkpoint_last.pth that `unreid train` wrote in its output_dir")
    if config is not None:
        return load_config(config, overrides)
    saved = load_checkpoint(path, mmap=True).get("config")
    if not isinstance(saved, dict):
        raise InputError(f"{path} holds no config (not written by `unreid train`?); pass --config with the YAML "
                         "the model was trained with")
    if not any(o.startswith("device=") for o in overrides):
        saved = {**saved, "device": "auto"}  # the training machine's device may not exist here
    try:
        merged = OmegaConf.merge(OmegaConf.create(saved), OmegaConf.from_dotlist(list(overrides)))
    except Exception as err:
        raise ConfigError(f"bad override in {list(overrides)}: {str(err).splitlines()[0]}") from err
    return from_dict(OmegaConf.to_container(merged))  # type: ignore[arg-type]


def file_digest(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of the whole content of ``path`` (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def gallery_cache_key(checkpoint: str | os.PathLike, samples: list[Sample], cfg: Config) -> str:
    """The cache key of the gallery features (module docstring, "Gallery-feature cache"): a SHA-256 hex digest.

    Raises:
        OSError: the checkpoint or a gallery file cannot be stat'ed / read.
    """
    ckpt = Path(checkpoint)
    files = []
    for s in sorted(samples, key=lambda s: os.path.abspath(s.path)):
        st = os.stat(s.path)
        files.append([os.path.abspath(s.path), st.st_size, st.st_mtime_ns, int(s.pid), int(s.camid)])
    payload = {
        "format": CACHE_FORMAT,
        "checkpoint": [ckpt.stat().st_size, file_digest(ckpt)],
        "model": to_dict(cfg)["model"],
        "input": [cfg.data.height, cfg.data.width],
        "seed": cfg.seed,
        "files": files,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _save_npz_atomic(path: Path, **arrays: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _DropUnreadable(logging.Filter):
    """Drops the loader's per-file "unreadable image" warnings (search reports them in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("unreadable image")


def _embed(model: torch.nn.Module, samples: list[Sample], cfg: Config, device: torch.device,
           what: str) -> tuple[np.ndarray, list[Sample]]:
    """Features of ``samples`` without the unreadable ones (warned about; all unreadable -> InputError)."""
    from unreid.data.loader import unreadable_images
    from unreid.engine.trainer import extract

    quiet = _DropUnreadable()  # one summary line below instead of one warning per file
    log.addFilter(quiet)
    try:
        feats = extract(model, samples, cfg, device).numpy()
    finally:
        log.removeFilter(quiet)
    bad = unreadable_images() & {s.path for s in samples}
    if bad:
        if len(bad) == len(samples):
            raise InputError(f"--{what}: none of its {len(samples)} images can be decoded (e.g. {sorted(bad)[0]}); "
                             "pass readable JPEG / PNG / BMP images")
        log.warning("%s: %d unreadable image(s) left out, e.g. %s", what, len(bad), sorted(bad)[0])
        keep = [i for i, s in enumerate(samples) if s.path not in bad]
        return feats[keep], [samples[i] for i in keep]
    return feats, samples


def gallery_features(model: torch.nn.Module, gallery: ImageSet, cfg: Config, device: torch.device,
                     checkpoint: str | os.PathLike, out: str | os.PathLike) -> tuple[np.ndarray, list[Sample], bool]:
    """The gallery's features, from ``<out>/gallery_features.npz`` when its key matches, else computed
    (and the cache written, atomically).

    Returns:
        ``(features (G, d) float32 L2-normalised, samples (G,), from_cache)``; unreadable gallery images
        are left out (warned about).

    Raises:
        InputError: no gallery image can be decoded.
    """
    cache = Path(out) / CACHE_NAME
    key = gallery_cache_key(checkpoint, gallery.samples, cfg)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    samples = [Sample(str(p), int(i), int(c)) for p, i, c in zip(z["paths"], z["pids"], z["camids"])]
                    return z["features"].astype(np.float32), samples, True
        except Exception as err:  # an unreadable cache is recomputed, never an error
            log.warning("ignoring unreadable cache %s (%s)", cache, err)
    feats, samples = _embed(model, gallery.samples, cfg, device, "gallery")
    _save_npz_atomic(cache, key=np.asarray(key), features=feats.astype(np.float32),
                     paths=np.asarray([s.path for s in samples]), pids=np.asarray([s.pid for s in samples]),
                     camids=np.asarray([s.camid for s in samples]))
    return feats, samples, False


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def search(checkpoint: str | os.PathLike, gallery: str, query: str, out: str | os.PathLike, topk: int = 10,
           rerank: bool = False, config: str | os.PathLike | None = None,
           overrides: list[str] | tuple[str, ...] = (), device: str | torch.device | None = None,
           draw: bool = True) -> dict[str, Any]:
    """Rank the gallery for every query image with the model of ``checkpoint``.

    Args:
        checkpoint: a ``model_best.pth`` / ``checkpoint_last.pth`` of ``unreid train``.
        gallery, query: see the module docstring ("Inputs").
        out: output folder: ``results.json``, ``ranklists/NNNN_<query name>.png`` and the gallery cache are
            written there, and only those: a previous search's ``results.json`` and rank lists of the same
            names are replaced (other files in it are left alone; ``results.json`` names this run's).
        topk: gallery images per query (>= 1; fewer when the gallery is smaller).
        rerank: k-reciprocal re-ranking (module docstring, "Distances").
        config, overrides: the config (default: the checkpoint's) and ``key=value`` overrides.
        device: where the model runs (default: the config's ``device``).
        draw: write the rank-list PNGs.

    Returns:
        ``{"queries": [{"query", "query_pid", "query_camid", "ranklist", "matches": [{"rank", "path",
        "distance", "pid", "camid", "same_id"}]}], "known_ids": bool, "from_cache": bool, "gallery_size": G}``;
        ``pid`` / ``same_id`` are ``None`` when identities are unknown.

    Raises:
        InputError: a missing checkpoint, gallery or query; an empty or unreadable gallery; a query image
            that cannot be decoded; ``--out`` inside the gallery or query folders; ``topk < 1``.
        unreid.engine.checkpoint.CheckpointError: an unreadable checkpoint, or one of another architecture.
    """
    from unreid.engine.checkpoint import load_trained_model
    from unreid.engine.trainer import resolve_device
    from unreid.evaluation.protocols import query_gallery_distance
    from unreid.evaluation.visualize import draw_rank_list

    if topk < 1:
        raise InputError(f"--topk {topk}: must be at least 1")
    cfg = config_for_checkpoint(checkpoint, config, overrides)
    gal = resolve_images(gallery, cfg, "gallery")
    qry = resolve_images(query, cfg, "query")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder (created when missing) for the search results")
    for folder in gal.folders + qry.folders:
        if _inside(out, folder):
            raise InputError(f"--out {out} is inside the input folder {folder}; choose an output folder outside "
                             "it (nothing is ever written into a gallery or query folder)")
    check_decodable(qry, "query")
    model, warnings = load_trained_model(checkpoint, cfg)
    for w in warnings:
        log.warning("%s", w)
    dev = torch.device(device) if device is not None else resolve_device(cfg.device)
    model.to(dev)
    gf, g_samples, from_cache = gallery_features(model, gal, cfg, dev, checkpoint, out)
    qf, q_samples = _embed(model, qry.samples, cfg, dev, "query")
    dist = query_gallery_distance(torch.from_numpy(qf), torch.from_numpy(gf), rerank)
    known = gal.known_ids
    results = []
    for i, q in enumerate(q_samples):
        order = np.argsort(dist[i], kind="stable")[:topk]
        q_known = qry.known_ids and known and q.pid != -1
        matches = [{"rank": r, "path": g_samples[j].path, "distance": float(dist[i, j]),
                    "pid": int(g_samples[j].pid) if known else None, "camid": int(g_samples[j].camid),
                    "same_id": (g_samples[j].pid == q.pid) if q_known else None}
                   for r, j in enumerate(order.tolist(), start=1)]
        entry = {"query": q.path, "query_pid": int(q.pid) if qry.known_ids else None, "query_camid": int(q.camid),
                 "matches": matches, "ranklist": None}
        if draw:
            png = out / "ranklists" / f"{i:04d}_{Path(q.path).stem}.png"
            draw_rank_list(q.path, [m["path"] for m in matches], [m["distance"] for m in matches], png,
                           query_pid=q.pid if q_known else None,
                           gallery_pids=[m["pid"] for m in matches] if q_known else None,
                           size=(cfg.data.height, cfg.data.width))
            entry["ranklist"] = str(png)
        results.append(entry)
    res = {"queries": results, "known_ids": bool(known and qry.known_ids), "from_cache": from_cache,
           "gallery_size": len(g_samples), "rerank": bool(rerank),
           "distance": "k-reciprocal re-ranked" if rerank else "cosine distance 1 - cos"}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, out / "results.json")
    return res


def format_results(res: dict[str, Any]) -> str:
    """The table ``unreid search`` prints: one block per query, one row per rank."""
    lines = []
    n = len(res["queries"])
    for i, q in enumerate(res["queries"], start=1):
        pid = f" (id {q['query_pid']})" if q["query_pid"] is not None else ""
        lines.append(f"query {i}/{n}: {q['query']}{pid}")
        known = res["known_ids"]
        lines.append(f"  {'rank':>4}  {'distance':>8}  {'id':>6}  {'cam':>3}  " + ("match  " if known else "") + "path")
        for m in q["matches"]:
            pid = "-" if m["pid"] is None else str(m["pid"])
            mark = ("yes    " if m["same_id"] else "no     ") if known else ""
            lines.append(f"  {m['rank']:>4}  {m['distance']:>8.4f}  {pid:>6}  {m['camid']:>3}  {mark}{m['path']}")
        if q["ranklist"]:
            lines.append(f"  rank list: {q['ranklist']}")
    return "\n".join(lines)


__all__ = ["CACHE_NAME", "ImageSet", "InputError", "config_for_checkpoint", "file_digest", "format_results",
           "gallery_cache_key", "gallery_features", "resolve_images", "search"]
